using System.Globalization;
using System.Runtime.InteropServices;

namespace Vnet.Benchmarks.Scale;

/// <summary>What /proc says of one process at one moment: CPU used since it started, memory, threads, open files.</summary>
internal sealed record ProcSample(double CpuSeconds, long RssBytes, long PeakRssBytes, int Threads, int Files)
{
    public static readonly ProcSample None = new(0, 0, 0, 0, 0);
}

/// <summary>
/// Reads /proc/PID/stat and /proc/PID/status, and sends signals: the few things the scale run needs
/// from the kernel that .NET does not give (Process.Kill only sends SIGKILL, and a daemon that gets
/// SIGTERM closes its links and removes its socket).
/// </summary>
internal static partial class ProcStats
{
    public const int SigTerm = 15;

    private const int ScClkTck = 2;

    private static readonly double TicksPerSecond = Math.Max(1, (long)SysConf(ScClkTck));

    /// <summary>A sample of <paramref name="pid"/>, or null when the process is gone.</summary>
    public static ProcSample? Read(int pid)
    {
        try
        {
            // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces, so
            // count from the last ')'.
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
            long rss = 0, peak = 0;
            var threads = 0;
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    rss = Kilobytes(line) * 1024;
                else if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    peak = Kilobytes(line) * 1024;
                else if (line.StartsWith("Threads:", StringComparison.Ordinal))
                    threads = int.Parse(line.AsSpan(8).Trim(), CultureInfo.InvariantCulture);
            }
            var files = Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd").Count();
            return new ProcSample(ticks / TicksPerSecond, rss, peak, threads, files);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }

    /// <summary>
    /// CPU seconds of each live thread of <paramref name="pid"/>, by thread id, with the kind of
    /// thread its name says (<see cref="KindOf"/>). Threads that ended are missing, so sums of
    /// differences undercount a little (thread-pool threads come and go).
    /// </summary>
    public static Dictionary<int, (string Kind, double CpuSeconds)> ReadThreads(int pid)
    {
        var threads = new Dictionary<int, (string, double)>();
        try
        {
            foreach (var dir in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                try
                {
                    var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                    var open = stat.IndexOf('(', StringComparison.Ordinal);
                    var close = stat.LastIndexOf(')');
                    var fields = stat[(close + 2)..].Split(' ');
                    var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
                    var tid = int.Parse(Path.GetFileName(dir), CultureInfo.InvariantCulture);
                    threads[tid] = (KindOf(stat[(open + 1)..close]), ticks / TicksPerSecond);
                }
                catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
                {
                    // The thread ended while we read it.
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        return threads;
    }

    /// <summary>CPU seconds per kind of thread between two readings of <see cref="ReadThreads"/>.</summary>
    public static SortedDictionary<string, double> ThreadCpu(Dictionary<int, (string Kind, double CpuSeconds)> before,
        Dictionary<int, (string Kind, double CpuSeconds)> after)
    {
        var sums = new SortedDictionary<string, double>(StringComparer.Ordinal);
        foreach (var (tid, (kind, cpu)) in after)
        {
            var spent = cpu - (before.TryGetValue(tid, out var b) ? b.CpuSeconds : 0);
            if (spent > 0)
                sums[kind] = sums.GetValueOrDefault(kind) + spent;
        }
        return sums;
    }

    /// <summary>
    /// What a thread is for, from its name (15 characters at most): a link session's sender or
    /// receiver, the thread pool (the control loop runs there, and so do JSON and the control
    /// socket), the JIT's tiering, the socket engine, the rest.
    /// </summary>
    public static string KindOf(string name) => name switch
    {
        _ when name.StartsWith("link-", StringComparison.Ordinal) && name.EndsWith("-tx", StringComparison.Ordinal) => "link tx",
        _ when name.StartsWith("link-", StringComparison.Ordinal) && name.EndsWith("-rx", StringComparison.Ordinal) => "link rx",
        _ when name.StartsWith("if-", StringComparison.Ordinal) => "interface",
        ".NET TP Worker" => "thread pool",
        ".NET Tiered Com" => "jit",
        ".NET Sockets" => "sockets",
        _ => "other",
    };

    /// <summary>The 1-minute load average (how busy the machine was, other workers included).</summary>
    public static double LoadAverage()
    {
        try
        {
            var text = File.ReadAllText("/proc/loadavg");
            return double.Parse(text.AsSpan(0, text.IndexOf(' ')), CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or FormatException)
        {
            return double.NaN;
        }
    }

    /// <summary>Sends a signal; false when the process is gone.</summary>
    public static bool Signal(int pid, int signal) => Kill(pid, signal) == 0;

    private static long Kilobytes(string line) =>
        long.Parse(line.AsSpan(line.IndexOf(':') + 1).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int sig);

    [LibraryImport("libc", EntryPoint = "sysconf")]
    private static partial nint SysConf(int name);
}
