using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Vnet.Benchmarks.Scale;

/// <summary>
/// One phase of the run (the start, or the migrations): how long until every daemon's view equals
/// the truth, and what it cost the Proxy meanwhile. Bytes are the Proxy's control messages (the
/// JSON payloads its <c>status</c> counts), per VM of the whole run.
/// </summary>
internal sealed record PhaseResult(
    bool Converged,
    double Seconds,
    double? StarsUpSeconds,
    int VmsMoved,
    long StarReconnects,
    long HostSilenceTimeouts,
    long HostSilenceTimeoutsWhileControlFlowed,
    double ProxyCpuSeconds,
    IReadOnlyDictionary<string, double> ProxyCpuByThread,
    double ProxyLoopBusySeconds,
    long ProxyBytesSent,
    long ProxyBytesReceived,
    double BytesSentPerVm,
    double BytesReceivedPerVm,
    long ProxyFrames,
    double ProxyCpuTotalSeconds,
    long ProxyRssBytes,
    long ProxyPeakRssBytes,
    int ProxyThreads,
    int ProxyFiles,
    double HostsCpuSeconds,
    double PumpLongestGapSeconds,
    double HostsGcPauseSeconds,
    InboundCounts HostsReceived,
    IReadOnlyList<string> Disagreements);

/// <summary>A quiet window after a phase converged: what keeping 2,000 VMs in place costs, and whether it stays put.</summary>
internal sealed record SteadyResult(
    double Seconds,
    double ProxyCpuPercent,
    IReadOnlyDictionary<string, double> ProxyCpuPercentByThread,
    double ProxyLoopBusyPercent,
    double BytesSentPerVmPerSecond,
    double BytesReceivedPerVmPerSecond,
    double ProxyFramesPerSecond,
    double HostsCpuPercent,
    double PumpLongestGapSeconds,
    double HostsGcPauseSeconds,
    long StarReconnects,
    long HostSilenceTimeouts,
    bool StillConverged,
    long ProxyRssBytes,
    int ProxyThreads,
    InboundCounts HostsReceived);

/// <summary>Everything one run measured, as <c>scale --json</c> writes it and <c>scale-table</c> reads it.</summary>
internal sealed record ScaleResult(
    string Date,
    int Hosts,
    int VmsPerHost,
    int Vms,
    double FramePeriodMs,
    bool HostsServerGc,
    string Transport,
    int Cores,
    double LoadAverageStart,
    double LoadAverageEnd,
    PhaseResult Start,
    SteadyResult? Steady,
    PhaseResult? Migration,
    SteadyResult? After,
    long ProxyRepairs,
    long HostRepairs,
    int ProxyWarnings,
    int HostWarnings,
    long BadPeerMessages,
    long LearnRefused,
    int BenchThreads,
    int BenchFiles,
    IReadOnlyList<string> ProxyWarningKinds,
    IReadOnlyList<string> HostWarningKinds,
    IReadOnlyList<string> Problems);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(ScaleResult))]
internal sealed partial class ScaleJson : JsonSerializerContext;

/// <summary><c>scale-table FILE...</c>: the results of several runs as the Markdown tables of docs/benchmarks.md.</summary>
internal static class ScaleTable
{
    public static int Print(IReadOnlyList<string> files)
    {
        if (files.Count == 0)
        {
            Console.Error.WriteLine("usage: scale-table RESULT.json...");
            return 2;
        }
        var runs = new List<ScaleResult>();
        foreach (var f in files)
        {
            var run = JsonSerializer.Deserialize(File.ReadAllText(f), ScaleJson.Default.ScaleResult);
            if (run is not null)
                runs.Add(run);
        }
        runs.Sort((a, b) => a.Hosts.CompareTo(b.Hosts));
        Console.Write(Format(runs));
        return 0;
    }

    public static string Format(IReadOnlyList<ScaleResult> runs)
    {
        var text = new StringBuilder();
        Line(text, "Start (every host and its VMs at once):");
        Line(text, "");
        Line(text, "| hosts | VMs | stars up s | star reconnections (for silence) | converged s | Proxy CPU s | control loop busy s | Proxy sent B/VM | Proxy received B/VM | Proxy RSS MiB (peak) | Proxy threads | hosts' CPU s | load avg |");
        Line(text, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in runs)
        {
            var s = r.Start;
            Line(text, $"| {r.Hosts} | {r.Vms} | {S(s.StarsUpSeconds)} | {s.StarReconnects} ({s.HostSilenceTimeouts}) | {Converged(s)} | {s.ProxyCpuSeconds:0.00} | {s.ProxyLoopBusySeconds:0.00} | " +
                $"{s.BytesSentPerVm:0} | {s.BytesReceivedPerVm:0} | {MiB(s.ProxyRssBytes)} ({MiB(s.ProxyPeakRssBytes)}) | {s.ProxyThreads} | " +
                $"{s.HostsCpuSeconds:0.0} | {r.LoadAverageStart:0.0} |");
        }
        Line(text, "");
        Line(text, "Migration (VMs moving at once, live):");
        Line(text, "");
        Line(text, "| hosts | VMs moved | star reconnections (for silence) | converged s | Proxy CPU s | control loop busy s | Proxy sent B/VM | Proxy received B/VM | Proxy RSS MiB (peak) | Proxy threads | hosts' CPU s |");
        Line(text, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in runs)
        {
            if (r.Migration is not { } m)
                continue;
            Line(text, $"| {r.Hosts} | {m.VmsMoved} | {m.StarReconnects} ({m.HostSilenceTimeouts}) | {Converged(m)} | {m.ProxyCpuSeconds:0.00} | {m.ProxyLoopBusySeconds:0.00} | " +
                $"{m.BytesSentPerVm:0} | {m.BytesReceivedPerVm:0} | {MiB(m.ProxyRssBytes)} ({MiB(m.ProxyPeakRssBytes)}) | {m.ProxyThreads} | {m.HostsCpuSeconds:0.0} |");
        }
        Line(text, "");
        Line(text, "Quiet windows (VMs sending, nothing moving; the first one still has the JIT tiering up the Proxy's code):");
        Line(text, "");
        Line(text, "| hosts | after | window s | Proxy CPU % | control loop busy % | Proxy sent B/s per VM | Proxy received B/s per VM | frames/s at the Proxy | hosts' CPU % | star reconnections | still converged |");
        Line(text, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        foreach (var r in runs)
        {
            foreach (var (after, w) in (ReadOnlySpan<(string, SteadyResult?)>)[("start", r.Steady), ("migrations", r.After)])
            {
                if (w is not { } s)
                    continue;
                Line(text, $"| {r.Hosts} | {after} | {s.Seconds:0.0} | {s.ProxyCpuPercent:0.0} | {s.ProxyLoopBusyPercent:0.0} | {s.BytesSentPerVmPerSecond:0.0} | " +
                    $"{s.BytesReceivedPerVmPerSecond:0.0} | {s.ProxyFramesPerSecond:0} | {s.HostsCpuPercent:0} | {s.StarReconnects} | {(s.StillConverged ? "yes" : "NO")} |");
            }
        }
        Line(text, "");
        Line(text, "Where the Proxy's CPU went, by thread (seconds in the phase; % of a core in the quiet window after the migrations; threads that ended during the phase are not counted):");
        Line(text, "");
        Line(text, "| hosts | phase | Proxy CPU | link senders | link receivers | thread pool (control loop, JSON) | JIT tiering | other |");
        Line(text, "|---:|---|---:|---:|---:|---:|---:|---:|");
        foreach (var r in runs)
        {
            Line(text, Kinds(r.Hosts, "start", r.Start.ProxyCpuSeconds, r.Start.ProxyCpuByThread, "0.00"));
            if (r.Migration is { } m)
                Line(text, Kinds(r.Hosts, "migration", m.ProxyCpuSeconds, m.ProxyCpuByThread, "0.00"));
            if (r.After is { } a)
                Line(text, Kinds(r.Hosts, "quiet, %", a.ProxyCpuPercent, a.ProxyCpuPercentByThread, "0.0"));
        }
        Line(text, "");
        Line(text, "| hosts | repairs (Proxy / hosts) | warnings (Proxy / hosts) | bad peer messages | VMs refused | hosts' process: longest stall s, GC pauses s (start / migration) | Proxy open files | hosts' process threads / open files | load avg at end | problems |");
        Line(text, "|---:|---|---|---:|---:|---|---:|---|---:|---|");
        foreach (var r in runs)
        {
            var problems = r.Problems.Count == 0 ? "none" : string.Join("; ", r.Problems);
            Line(text, $"| {r.Hosts} | {r.ProxyRepairs} / {r.HostRepairs} | {r.ProxyWarnings} / {r.HostWarnings} | {r.BadPeerMessages} | {r.LearnRefused} | " +
                $"{r.Start.PumpLongestGapSeconds:0.00}, {r.Start.HostsGcPauseSeconds:0.00} / {S(r.Migration?.PumpLongestGapSeconds)}, {S(r.Migration?.HostsGcPauseSeconds)} | {r.Start.ProxyFiles} | {r.BenchThreads} / {r.BenchFiles} | {r.LoadAverageEnd:0.0} | {problems} |");
        }
        return text.ToString();
    }

    private static string Kinds(int hosts, string phase, double total, IReadOnlyDictionary<string, double> cpu, string format)
    {
        string Of(string kind) => cpu.GetValueOrDefault(kind).ToString(format, CultureInfo.InvariantCulture);
        var known = (string[])["link tx", "link rx", "thread pool", "jit"];
        var other = cpu.Where(kv => !known.Contains(kv.Key)).Sum(kv => kv.Value).ToString(format, CultureInfo.InvariantCulture);
        return $"| {hosts} | {phase} | {total.ToString(format, CultureInfo.InvariantCulture)} | {Of("link tx")} | {Of("link rx")} | {Of("thread pool")} | {Of("jit")} | {other} |";
    }

    private static string Converged(PhaseResult p) => p.Converged ? p.Seconds.ToString("0.00", CultureInfo.InvariantCulture) : $"NO (> {p.Seconds:0})";

    private static string S(double? seconds) => seconds is { } s ? s.ToString("0.00", CultureInfo.InvariantCulture) : "-";

    private static string MiB(long bytes) => (bytes / 1048576.0).ToString("0", CultureInfo.InvariantCulture);

    private static void Line(StringBuilder text, string line) => text.Append(line).Append('\n');
}
