using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Links;

namespace Vnet.Benchmarks.Scale;

/// <summary>
/// <c>scale</c>: the VM directory at the size of a real overlay. One Proxy (its own process, the
/// published CLI) and N hosts in this process, 10 VMs each, started at once; then 10% of the VMs
/// migrate live. For each phase it measures the time until every daemon's view of every VM's
/// location (each host's <c>Vms.List()</c>, the Proxy's <c>vm.list</c>) equals the truth, and what
/// the Proxy spent meanwhile (CPU from /proc, its control loop's busy time, control bytes, memory,
/// threads). A plain timed run, not a BenchmarkDotNet one: see docs/benchmarks.md.
/// <code>
/// 1. vnet keygen into a 0600 file; the Proxy starts and answers on its control socket.
/// 2. N hosts start at once; every VM sends a small frame every 200 ms from its host's TAP.
/// 3. Poll (every 250 ms) until every view equals the truth, or the timeout: then say who disagrees.
/// 4. A quiet window of two anti-entropy intervals: the cost of standing still, and no repair.
/// 5. 10% of the VMs migrate at once (send from a new host, and for one more period from the old).
/// 6. Poll again; another quiet window; repairs and warnings of every daemon are collected.
/// </code>
/// Every wait is bounded, and Ctrl-C (or SIGTERM) stops the hosts and the Proxy and removes the
/// key, socket and log before it exits.
/// </summary>
internal static class ScaleCommand
{
    private sealed record Options(string VnetDll, int Hosts, int VmsPerHost, TimeSpan FramePeriod, double Migrate, TimeSpan Timeout,
        LinkTransport Transport, string? WorkDir, string? Json, string? ProxyLog, int Seed);

    public static async Task<int> RunAsync(IReadOnlyList<string> args)
    {
        Options options;
        try
        {
            options = Parse(args);
        }
        catch (ArgumentException e)
        {
            await Console.Error.WriteLineAsync($"scale: {e.Message}\n{Usage}");
            return 2;
        }
        using var cancel = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c =>
        {
            c.Cancel = true;
            cancel.Cancel();
        });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c =>
        {
            c.Cancel = true;
            cancel.Cancel();
        });
        var ownDir = options.WorkDir is null;
        var work = options.WorkDir ?? Directory.CreateTempSubdirectory("vnet-scale-").FullName;
        Directory.CreateDirectory(work);
        var run = new ScaleRun(options.VnetDll, options.Hosts, options.VmsPerHost, options.FramePeriod, options.Migrate, options.Timeout, options.Transport,
            work, options.ProxyLog, options.Seed);
        try
        {
            var result = await run.RunAsync(cancel.Token);
            if (options.Json is { } json)
                await File.WriteAllTextAsync(json, JsonSerializer.Serialize(result, ScaleJson.Default.ScaleResult), CancellationToken.None);
            Console.WriteLine();
            Console.Write(ScaleTable.Format([result]));
            return result.Problems.Count == 0 ? 0 : 1;
        }
        catch (Exception e) when (!cancel.IsCancellationRequested && e is ControlException or InvalidOperationException or TimeoutException)
        {
            // The Proxy left, or stopped answering its control socket: no result to give.
            await Console.Error.WriteLineAsync($"scale: the run failed: {e.Message}");
            return 1;
        }
        catch (Exception) when (cancel.IsCancellationRequested)
        {
            // Whatever the interrupted wait threw (a cancelled delay, a Proxy that got the same
            // Ctrl-C and left), the run was stopped on purpose.
            Console.WriteLine("scale: interrupted; stopping the hosts and the Proxy");
            return 130;
        }
        finally
        {
            await run.DisposeAsync();
            if (ownDir)
                Directory.Delete(work, recursive: true);
        }
    }

    private const string Usage =
        "usage: scale --vnet PUBLISHED/vnet.dll [--hosts 50] [--vms-per-host 10] [--frame-period-ms 1000] [--migrate 0.1] [--timeout 120] " +
        "[--transport tcp|udp] [--work-dir DIR] [--json FILE] [--proxy-log FILE] [--seed 1]";

    private static Options Parse(IReadOnlyList<string> args)
    {
        string? vnet = null, workDir = null, json = null, proxyLog = null;
        int hosts = 50, vmsPerHost = 10, periodMs = 1000, seed = 1;
        double migrate = 0.1, timeout = 120;
        var transport = LinkTransport.Tcp;
        for (var i = 0; i < args.Count; i++)
        {
            var value = i + 1 < args.Count ? args[i + 1] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--vnet":
                    vnet = value;
                    break;
                case "--hosts":
                    hosts = Int(args[i], value, 2, 2000);
                    break;
                case "--vms-per-host":
                    vmsPerHost = Int(args[i], value, 1, 256);
                    break;
                case "--frame-period-ms":
                    periodMs = Int(args[i], value, 10, 60_000);
                    break;
                case "--migrate":
                    migrate = double.TryParse(value, CultureInfo.InvariantCulture, out var m) && m is >= 0 and <= 1
                        ? m : throw new ArgumentException("--migrate is a fraction of the VMs, 0 to 1");
                    break;
                case "--timeout":
                    timeout = Int(args[i], value, 1, 3600);
                    break;
                case "--transport":
                    transport = value switch
                    {
                        "tcp" => LinkTransport.Tcp,
                        "udp" => LinkTransport.Udp,
                        _ => throw new ArgumentException("--transport is tcp or udp"),
                    };
                    break;
                case "--work-dir":
                    workDir = Path.GetFullPath(value);
                    break;
                case "--json":
                    json = Path.GetFullPath(value);
                    break;
                case "--proxy-log":
                    proxyLog = Path.GetFullPath(value);
                    break;
                case "--seed":
                    seed = Int(args[i], value, 0, int.MaxValue);
                    break;
                default:
                    throw new ArgumentException($"unknown option {args[i]}");
            }
            i++;
        }
        if (vnet is null || !File.Exists(vnet))
            throw new ArgumentException("--vnet must name the vnet.dll of a published CLI (dotnet publish src/Vnet.Cli -o DIR)");
        return new Options(Path.GetFullPath(vnet), hosts, vmsPerHost, TimeSpan.FromMilliseconds(periodMs), migrate, TimeSpan.FromSeconds(timeout), transport, workDir, json, proxyLog, seed);
    }

    private static int Int(string option, string value, int min, int max) =>
        int.TryParse(value, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max
            ? n : throw new ArgumentException($"{option} must be a whole number from {min} to {max}");
}

/// <summary>One run of the scale simulation (see <see cref="ScaleCommand"/>); disposing it stops everything it started.</summary>
internal sealed class ScaleRun(string vnetDll, int hosts, int vmsPerHost, TimeSpan framePeriod, double migrate, TimeSpan timeout, LinkTransport transport,
    string work, string? proxyLog, int seed) : IAsyncDisposable
{
    /// <summary>Bound on stopping the hosts (200 daemons leave at once).</summary>
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);

    /// <summary>How often the views are compared with the truth (the resolution of the times measured).</summary>
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(250);

    /// <summary>Two anti-entropy intervals and a little: every digest has been compared at least once.</summary>
    private static readonly TimeSpan QuietWindow = TimeSpan.FromSeconds(7);

    private readonly Stopwatch _since = Stopwatch.StartNew();
    private readonly List<string> _problems = [];
    private readonly string _keyFile = Path.Combine(work, "proxy.key");
    private readonly string _hostsFile = Path.Combine(work, "hosts");
    private readonly string _pidFile = Path.Combine(work, "proxy.pid");
    private readonly string _logFile = Path.Combine(work, "proxy.log");
    private ProxyProcess? _proxy;
    private SimHosts? _hosts;
    private int _loopTimeouts;
    private int _proxyTimeouts;

    private ProxyProcess Proxy => _proxy!;

    private SimHosts Hosts => _hosts!;

    public async Task<ScaleResult> RunAsync(CancellationToken ct)
    {
        var loadStart = ProcStats.LoadAverage();
        Say($"{hosts} hosts x {vmsPerHost} VMs (a frame each every {framePeriod.TotalMilliseconds:0} ms) over {transport} star links; {Environment.ProcessorCount} cores, load average {loadStart:0.00}");
        var keys = ProxyProcess.MakeKeys(_keyFile, _hostsFile, hosts);
        _proxy = ProxyProcess.Start(vnetDll, _keyFile, _hostsFile, Path.Combine(work, "proxy.sock"), _logFile);
        // For bench/scale.sh: if this process dies without cleaning up, the script stops the Proxy.
        await File.WriteAllTextAsync(_pidFile, Proxy.Pid.ToString(CultureInfo.InvariantCulture), ct);
        await Proxy.WaitReadyAsync(TimeSpan.FromSeconds(30), ct);
        Say($"Proxy pid {Proxy.Pid} listening on {Proxy.Listen}");
        // One process stands in for N machines: with the workstation GC, each of its collections stops
        // every host at once, and at 200 hosts the pauses outlast a star link's 3 s of silence.
        if (!System.Runtime.GCSettings.IsServerGC)
            Say("note: the hosts' process runs the workstation GC; its pauses stall every host at once (DOTNET_gcServer=1, as bench/scale.sh sets)");
        // Real hosts each have a thread pool of their own; here they share one, whose control loops,
        // timers (keep-alives) and the VMs' pump would otherwise wait behind each other while the
        // pool grows by a thread or two a second. One thread per daemon may start at once.
        ThreadPool.GetMinThreads(out var workers, out var io);
        ThreadPool.SetMinThreads(Math.Max(workers, hosts), io);
        _hosts = new SimHosts(hosts, vmsPerHost, framePeriod, keys.Hosts, keys.Proxy.Public, Proxy.Listen, transport);

        // ---- start
        var before = await Mark(ct);
        var clock = Stopwatch.StartNew();
        try
        {
            await Hosts.StartAsync().WaitAsync(timeout, ct);
            Say($"{hosts} hosts started in {clock.Elapsed.TotalSeconds:0.00} s; waiting for every view to equal the truth");
        }
        catch (TimeoutException)
        {
            // The polls below say who is missing; the hosts that did start go on.
            Say($"the hosts did not all start within {timeout.TotalSeconds:0} s");
        }
        var converged = await WaitConvergedAsync(clock, trackStars: true, ct);
        var start = await Phase(before, converged, 0, starting: true, ct);
        Say(converged.Ok
            ? $"start converged in {converged.Seconds:0.00} s (every star link up at one poll: {(converged.StarsUp is { } up ? $"{up:0.00} s" : "never")})"
            : $"start did NOT converge within {timeout.TotalSeconds:0} s; who disagrees is listed below");
        SteadyResult? steady = null, after = null;
        PhaseResult? migration = null;
        if (converged.Ok)
        {
            steady = await Quiet("after the start", ct);

            // ---- migration
            var count = (int)Math.Round(Hosts.VmCount * migrate);
            before = await Mark(ct);
            Hosts.TakeLongestPumpGap();
            clock.Restart();
            Hosts.Migrate(count, new Random(seed), Hosts.Period);
            converged = await WaitConvergedAsync(clock, trackStars: false, ct);
            migration = await Phase(before, converged, count, starting: false, ct);
            Say(converged.Ok
                ? $"{count} migrations converged in {converged.Seconds:0.00} s"
                : $"{count} migrations did NOT converge within {timeout.TotalSeconds:0} s");
            if (converged.Ok)
                after = await Quiet("after the migrations", ct);
        }
        foreach (var line in start.Disagreements.Concat(migration?.Disagreements ?? []))
            Console.WriteLine($"    {line}");

        // ---- health: a repair or a warning in a run where nothing fails is a bug.
        var health = await Hosts.HealthAsync();
        var directory = await Proxy.DirectoryAsync(ct);
        var status = await Proxy.StatusAsync(ct);
        if (!converged.Ok)
            _problems.Add(migration is null ? "the start did not converge" : "the migrations did not converge");
        if (steady is { StillConverged: false } || after is { StillConverged: false })
            _problems.Add("a converged view changed while nothing moved");
        if (directory.Repairs > 0 || health.Repairs > 0)
            _problems.Add($"directory repairs: Proxy {directory.Repairs}, hosts {health.Repairs}");
        if (status.BadPeerMessages + health.BadMessages > 0)
            _problems.Add($"bad peer messages: Proxy {status.BadPeerMessages}, hosts {health.BadMessages}");
        var reconnects = start.StarReconnects + (migration?.StarReconnects ?? 0) + (steady?.StarReconnects ?? 0) + (after?.StarReconnects ?? 0);
        if (reconnects > 0)
            _problems.Add($"{reconnects} star links went down and came back (hosts' log: {string.Join("; ", Hosts.Log.Tally.Top(3))})");
        if (_loopTimeouts + _proxyTimeouts > 0)
            _problems.Add($"views not given within their timeout: hosts {_loopTimeouts}, Proxy {_proxyTimeouts}");
        if (health.LearnRefused > 0)
            _problems.Add($"{health.LearnRefused} VMs refused over an interface's limit");
        foreach (var r in directory.RecentRepairs)
            Console.WriteLine($"    proxy repair: {r.Topic} from {r.Peer}: {r.Kind} at {r.At:HH:mm:ss.fff}");
        foreach (var r in health.Recent)
            Console.WriteLine($"    host repair: {r}");
        foreach (var w in Proxy.Tally.Top(10))
            Console.WriteLine($"    proxy log: {w}");
        foreach (var w in Hosts.Log.Tally.Top(10))
            Console.WriteLine($"    hosts' log: {w}");
        var frames = Hosts.Frames;
        if (frames.Refused > 0)
            Say($"note: {frames.Refused} of {frames.Sent + frames.Refused} VM frames found their TAP's queue full");
        var self = ProcStats.Read(Environment.ProcessId) ?? ProcSample.None;
        return new ScaleResult(DateTimeOffset.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture), hosts, vmsPerHost,
            Hosts.VmCount, framePeriod.TotalMilliseconds, System.Runtime.GCSettings.IsServerGC, transport.ToString().ToLowerInvariant(), Environment.ProcessorCount, loadStart, ProcStats.LoadAverage(),
            start, steady, migration, after, directory.Repairs, health.Repairs, Proxy.WarningCount, Hosts.Log.Count,
            status.BadPeerMessages + health.BadMessages, health.LearnRefused, self.Threads, self.Files, Proxy.Tally.Top(10), Hosts.Log.Tally.Top(10),
            [.. _problems]);
    }

    // ---------------------------------------------------------------- convergence

    private sealed record Convergence(bool Ok, double Seconds, double? StarsUp, List<string> Lines);

    /// <summary>
    /// Polls until every host's view and the Proxy's equal the truth. Hosts are checked in turn
    /// starting from the one that disagreed last time, and a poll stops at the first that still
    /// disagrees, so that checking does not steal the CPU the daemons converge with; the Proxy is
    /// asked only once every host agrees (its answer is 2,000 VMs of JSON). At the timeout, every
    /// daemon is checked and the disagreements listed.
    /// </summary>
    private async Task<Convergence> WaitConvergedAsync(Stopwatch clock, bool trackStars, CancellationToken ct)
    {
        double? starsUp = null;
        var first = 0;
        while (true)
        {
            if (trackStars && starsUp is null && Hosts.StarsUp() == Hosts.HostCount)
                starsUp = clock.Elapsed.TotalSeconds;
            var truth = Hosts.Truth();
            var disagreeing = await FirstDisagreeing(truth, first);
            if (disagreeing < 0 && await ProxyAgrees(truth, ct))
                return new Convergence(true, clock.Elapsed.TotalSeconds, starsUp, []);
            if (disagreeing >= 0)
                first = disagreeing;
            if (clock.Elapsed > timeout || Proxy.HasExited)
            {
                var lines = await Disagreements(truth, ct);
                if (Proxy.HasExited)
                    lines.Insert(0, "the Proxy exited: " + string.Join(" | ", Proxy.Tail.TakeLast(5)));
                if (trackStars && Hosts.StarsUp() is var up && up < Hosts.HostCount)
                    lines.Insert(0, $"only {up} of {Hosts.HostCount} star links are up");
                return new Convergence(false, clock.Elapsed.TotalSeconds, starsUp, lines);
            }
            await Task.Delay(Poll, ct);
        }
    }

    /// <summary>
    /// The first host (in turn from <paramref name="first"/>) whose view differs from the truth, or
    /// -1. A host whose control loop does not answer within <see cref="SimHosts.LoopTimeout"/> disagrees.
    /// </summary>
    private async Task<int> FirstDisagreeing(int[] truth, int first)
    {
        for (var i = 0; i < Hosts.HostCount; i++)
        {
            var h = (first + i) % Hosts.HostCount;
            if (await ViewOf(h) is not { } view || Compare(SimHosts.NameOf(h), view, truth, null) > 0)
                return h;
        }
        return -1;
    }

    private async Task<IReadOnlyList<VmStatus>?> ViewOf(int host)
    {
        try
        {
            return await Hosts.ViewOf(host);
        }
        catch (TimeoutException)
        {
            _loopTimeouts++;
            return null;
        }
    }

    /// <summary>Whether the Proxy's <c>vm.list</c> equals the truth; a Proxy that does not answer in time does not agree.</summary>
    private async Task<bool> ProxyAgrees(int[] truth, CancellationToken ct)
    {
        try
        {
            return Compare("proxy", await Proxy.VmsAsync(ct), truth, null) == 0;
        }
        catch (ControlException e) when (!Proxy.HasExited)
        {
            _proxyTimeouts++;
            Say($"the Proxy did not answer vm.list: {e.Message}");
            return false;
        }
    }

    /// <summary>Every daemon's disagreements: a count per daemon, the first lines, and how the replicas' versions stand.</summary>
    private async Task<List<string>> Disagreements(int[] truth, CancellationToken ct)
    {
        var lines = new List<string>();
        var detail = new List<string>();
        var wrongHosts = 0;
        for (var h = 0; h < Hosts.HostCount; h++)
        {
            if (await ViewOf(h) is not { } view)
            {
                wrongHosts++;
                lines.Add($"{SimHosts.NameOf(h)}: its control loop did not answer within {SimHosts.LoopTimeout.TotalSeconds:0} s");
                continue;
            }
            var wrong = Compare(SimHosts.NameOf(h), view, truth, detail.Count < 20 ? detail : null);
            if (wrong > 0)
            {
                wrongHosts++;
                if (wrongHosts <= 20)
                {
                    var s = await Hosts.StatusOf(h);
                    lines.Add($"{SimHosts.NameOf(h)}: {wrong} VMs wrong; its locations at {s.LocationsVersion} ({s.Locations}), its own VMs {s.LocalVms} at {s.LocalVersion}");
                }
            }
        }
        try
        {
            var wrong = Compare("proxy", await Proxy.VmsAsync(ct), truth, detail);
            var directory = await Proxy.DirectoryAsync(ct);
            lines.Add($"proxy: {wrong} VMs wrong; its locations at {directory.LocationsVersion} ({directory.Locations})");
            foreach (var r in directory.Replicas.Where(r => r.Buffered > 0).Take(10))
                lines.Add($"proxy's replica of {r.Peer}: {r.Version}, {r.Entries} entries, {r.Buffered} deltas held back");
        }
        catch (ControlException e)
        {
            lines.Add($"proxy: no answer ({e.Message})");
        }
        lines.Insert(0, $"{wrongHosts} of {Hosts.HostCount} hosts disagree with the truth");
        lines.AddRange(detail);
        return lines;
    }

    /// <summary>How many VMs a view places wrong (unknown, elsewhere, or not a VM of the run); the first few as lines.</summary>
    private int Compare(string who, IReadOnlyList<VmStatus> view, int[] truth, List<string>? lines)
    {
        var seen = new bool[truth.Length];
        var wrong = 0;
        foreach (var vm in view)
        {
            var v = Hosts.VmOf(vm.Mac);
            if (v < 0)
            {
                wrong++;
                Add(lines, $"{who} places {vm.Mac} on {vm.Daemon}; it is no VM of the run");
                continue;
            }
            seen[v] = true;
            var host = SimHosts.NameOf(truth[v]);
            if (vm.Daemon != host)
            {
                wrong++;
                Add(lines, $"{who} places {vm.Mac} on {vm.Daemon}; it is on {host}");
            }
        }
        for (var v = 0; v < seen.Length; v++)
        {
            if (!seen[v])
            {
                wrong++;
                Add(lines, $"{who} does not know {SimHosts.MacOf(v)} (on {SimHosts.NameOf(truth[v])})");
            }
        }
        return wrong;
    }

    private static void Add(List<string>? lines, string line)
    {
        if (lines is not null && lines.Count < 20)
            lines.Add(line);
    }

    // ---------------------------------------------------------------- measurements

    private sealed record Marker(ProxySample Proxy, Dictionary<int, (string Kind, double CpuSeconds)> ProxyThreads, ProcSample Self,
        InboundCounts Inbound, (long Sent, long Received) HostBytes, long StarSessions, (long Timeouts, long WhileControlFlowed) Silences,
        TimeSpan GcPause, int Gen2);

    private async Task<Marker> Mark(CancellationToken ct) =>
        new(await Proxy.SampleAsync(ct), ProcStats.ReadThreads(Proxy.Pid), ProcStats.Read(Environment.ProcessId) ?? ProcSample.None,
            Hosts.Inbound(), Hosts.PeerBytes(), Hosts.StarSessions(), Hosts.SilenceTimeouts(), GC.GetTotalPauseDuration(), GC.CollectionCount(2));

    private static string Split(IReadOnlyDictionary<string, double> cpu) =>
        string.Join(", ", cpu.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value:0.00}"));

    private async Task<PhaseResult> Phase(Marker before, Convergence converged, int moved, bool starting, CancellationToken ct)
    {
        var end = await Mark(ct);
        var (p0, p1) = (before.Proxy, end.Proxy);
        var sent = p1.Status.PeerBytesSent - p0.Status.PeerBytesSent;
        var received = p1.Status.PeerBytesReceived - p0.Status.PeerBytesReceived;
        var inbound = end.Inbound.Minus(before.Inbound);
        var vms = (double)Hosts.VmCount;
        var byThread = ProcStats.ThreadCpu(before.ProxyThreads, end.ProxyThreads);
        Say($"  Proxy: CPU {p1.Proc.CpuSeconds - p0.Proc.CpuSeconds:0.00} s ({Split(byThread)}; control loop {p1.Status.ControlLoopBusySeconds - p0.Status.ControlLoopBusySeconds:0.00} s), " +
            $"sent {sent} B ({sent / vms:0} B/VM), received {received} B ({received / vms:0} B/VM), RSS {p1.Proc.RssBytes >> 20} MiB, {p1.Proc.Threads} threads, {p1.Proc.Files} open files");
        Say($"  hosts received {inbound.LocationSnapshots} location snapshots, {inbound.LocationDeltas} deltas ({inbound.LocationEntries} entries), " +
            $"{inbound.Digests} digests, {inbound.Syncs} syncs, {inbound.Other} others, " +
            $"{inbound.Requests} requests (answered with {inbound.ResponseBytes} B); hosts sent {end.HostBytes.Sent - before.HostBytes.Sent} B, " +
            $"received {end.HostBytes.Received - before.HostBytes.Received} B; hosts' process CPU {end.Self.CpuSeconds - before.Self.CpuSeconds:0.0} s");
        // At the start every host begins one star session; any other is a star link that went down and came back.
        var reconnects = end.StarSessions - before.StarSessions - (starting ? Hosts.HostCount : 0);
        var gap = Hosts.TakeLongestPumpGap();
        var silences = end.Silences.Timeouts - before.Silences.Timeouts;
        var whileControl = end.Silences.WhileControlFlowed - before.Silences.WhileControlFlowed;
        var gcPause = (end.GcPause - before.GcPause).TotalSeconds;
        Say($"  star sessions begun: {end.StarSessions - before.StarSessions} ({reconnects} reconnections); hosts that ended their star " +
            $"for silence: {silences} ({whileControl} with control messages from the Proxy in the second before); " +
            $"the VMs' longest silence in this process: {gap.TotalSeconds:0.00} s; its GC paused it {gcPause:0.00} s ({end.Gen2 - before.Gen2} full collections)");
        return new PhaseResult(converged.Ok, converged.Seconds, converged.StarsUp, moved, reconnects, silences, whileControl,
            p1.Proc.CpuSeconds - p0.Proc.CpuSeconds, byThread, p1.Status.ControlLoopBusySeconds - p0.Status.ControlLoopBusySeconds,
            sent, received, sent / vms, received / vms, p1.Status.ForwardedFrames - p0.Status.ForwardedFrames + Dropped(p1.Status) - Dropped(p0.Status),
            p1.Proc.CpuSeconds, p1.Proc.RssBytes, p1.Proc.PeakRssBytes, p1.Proc.Threads, p1.Proc.Files, end.Self.CpuSeconds - before.Self.CpuSeconds,
            gap.TotalSeconds, gcPause, inbound, converged.Lines);
    }

    /// <summary>A window in which nothing moves: the cost of standing still, then a full check that nothing drifted.</summary>
    private async Task<SteadyResult> Quiet(string what, CancellationToken ct)
    {
        var before = await Mark(ct);
        Hosts.TakeLongestPumpGap();
        var clock = Stopwatch.StartNew();
        await Task.Delay(QuietWindow, ct);
        var end = await Mark(ct);
        var seconds = clock.Elapsed.TotalSeconds;
        var truth = Hosts.Truth();
        var still = await FirstDisagreeing(truth, 0) < 0 && await ProxyAgrees(truth, ct);
        var (p0, p1) = (before.Proxy, end.Proxy);
        var vms = (double)Hosts.VmCount;
        var byThread = ProcStats.ThreadCpu(before.ProxyThreads, end.ProxyThreads);
        var gap = Hosts.TakeLongestPumpGap();
        var reconnects = end.StarSessions - before.StarSessions;
        var silences = end.Silences.Timeouts - before.Silences.Timeouts;
        var result = new SteadyResult(seconds,
            100 * (p1.Proc.CpuSeconds - p0.Proc.CpuSeconds) / seconds,
            byThread.ToDictionary(kv => kv.Key, kv => 100 * kv.Value / seconds, StringComparer.Ordinal),
            100 * (p1.Status.ControlLoopBusySeconds - p0.Status.ControlLoopBusySeconds) / seconds,
            (p1.Status.PeerBytesSent - p0.Status.PeerBytesSent) / vms / seconds,
            (p1.Status.PeerBytesReceived - p0.Status.PeerBytesReceived) / vms / seconds,
            (p1.Status.ForwardedFrames - p0.Status.ForwardedFrames + Dropped(p1.Status) - Dropped(p0.Status)) / seconds,
            100 * (end.Self.CpuSeconds - before.Self.CpuSeconds) / seconds,
            gap.TotalSeconds, (end.GcPause - before.GcPause).TotalSeconds, reconnects, silences, still, p1.Proc.RssBytes, p1.Proc.Threads,
            end.Inbound.Minus(before.Inbound));
        Say($"quiet {seconds:0.0} s {what}: Proxy CPU {result.ProxyCpuPercent:0.0}% ({Split(byThread)} s; control loop {result.ProxyLoopBusyPercent:0.0}%), " +
            $"{result.BytesSentPerVmPerSecond:0.0} B/s per VM sent, {result.BytesReceivedPerVmPerSecond:0.0} received, " +
            $"{result.ProxyFramesPerSecond:0} frames/s, {result.HostsReceived.Requests} requests to hosts; " +
            $"hosts' process {result.HostsCpuPercent:0}% CPU (longest silence of its VMs {gap.TotalSeconds:0.00} s, GC pauses {result.HostsGcPauseSeconds:0.00} s); " +
            $"star reconnections {reconnects} ({silences} for silence); still converged: {still}");
        return result;
    }

    /// <summary>Frames the Proxy read and dropped (the VMs' frames are for a LAN it does not have here).</summary>
    private static long Dropped(DaemonStatus s) => s.Drops.Values.Sum();

    private void Say(string line) => Console.WriteLine($"[{_since.Elapsed.TotalSeconds,7:0.0} s] {line}");

    /// <summary>Stops the hosts (bounded), then the Proxy, and removes the key, socket, log and pid files.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_hosts is not null)
        {
            try
            {
                await _hosts.DisposeAsync().AsTask().WaitAsync(StopTimeout);
            }
            catch (TimeoutException)
            {
                Console.Error.WriteLine($"scale: the hosts did not stop within {StopTimeout.TotalSeconds:0} s");
            }
        }
        if (_proxy is not null)
        {
            if (_proxy.HasExited)
                Console.Error.WriteLine($"scale: the Proxy had exited; its last lines:\n{string.Join('\n', _proxy.Tail)}");
            await _proxy.StopAsync(proxyLog);
        }
        foreach (var file in (string[])[_keyFile, _hostsFile, _pidFile, _logFile])
            File.Delete(file);
    }
}
