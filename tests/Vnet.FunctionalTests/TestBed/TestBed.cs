using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Vnet.Tests.TestBed;

/// <summary>
/// Builds a network topology out of namespaces for one end-to-end test and tears all of it down on
/// Dispose.
/// </summary>
/// <remarks>
/// <para>Ownership: every namespace is named <c>{Prefix}-{short name}</c> with a prefix such as
/// <c>vt0421</c> that this instance reserves (an flock on a file in /tmp) for its lifetime, so two
/// test hosts on one machine never share names. Every interface is made inside those namespaces,
/// never in the host's own, so deleting the namespaces removes all links and bridges, and
/// interface names need no prefix (the 15-character limit is the caller's to keep).</para>
/// <para>Methods accept a namespace by the short name given to <see cref="Namespace"/> or by the
/// full name it returned, and refuse any other: the bed never touches what it did not make.</para>
/// <para>Clean-up: Dispose stops every process started with <see cref="Start(string, string, string, string[])"/>
/// (whole tree), SIGKILLs anything else still running in its namespaces, then deletes them. It also
/// runs if set-up throws half-way inside <see cref="Create"/>, and at test host exit for beds a test
/// forgot to dispose.</para>
/// <para>Logs: commands and their results go to <c>testbed.log</c>, each background process's output
/// to <c>{name}.log</c>, in <see cref="LogDirectory"/> (under $VNET_TEST_LOGS, else
/// /tmp/vnet-test-logs), and the commands also to the test's output when one is given.</para>
/// </remarks>
internal sealed partial class TestBed : IDisposable
{
    private const int MaxInterfaceName = 15;
    private static readonly TimeSpan DisposeGrace = TimeSpan.FromSeconds(3);
    private static readonly object LiveGate = new();
    private static readonly HashSet<TestBed> Live = [];
    private static int s_instances;

    private readonly object _gate = new();
    private readonly FileStream _reservation;
    private readonly StreamWriter _log;
    private readonly ITestOutputHelper? _output;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<string> _namespaces = [];
    private readonly Dictionary<string, string> _byShortName = new(StringComparer.Ordinal);
    private readonly HashSet<string> _withIpv6 = new(StringComparer.Ordinal);
    private readonly List<BackgroundProcess> _processes = [];
    private bool _disposed;

    static TestBed() => AppDomain.CurrentDomain.ProcessExit += (_, _) => DisposeLeftovers();

    /// <param name="output">The test's output, to which set-up commands are echoed; optional.</param>
    /// <param name="testName">Names the log directory; the calling test method by default.</param>
    public TestBed(ITestOutputHelper? output = null, [CallerMemberName] string testName = "")
    {
        TestBedGuard.ThrowIfUnavailable();
        _output = output;
        (Prefix, _reservation) = ReservePrefix();
        try
        {
            var root = Environment.GetEnvironmentVariable("VNET_TEST_LOGS") is { Length: > 0 } configured
                ? configured
                : Path.Combine(Path.GetTempPath(), "vnet-test-logs");
            LogDirectory = Path.Combine(root, $"{SafeFileName(testName)}.{Prefix}");
            Directory.CreateDirectory(LogDirectory);
            _log = new StreamWriter(new FileStream(Path.Combine(LogDirectory, "testbed.log"), FileMode.Create, FileAccess.Write, FileShare.ReadWrite))
            {
                AutoFlush = true,
            };
        }
        catch
        {
            _reservation.Dispose();
            throw;
        }
        Log($"test bed {Prefix} for {testName}, logs in {LogDirectory}");
        lock (LiveGate)
            Live.Add(this);
    }

    /// <summary>
    /// Makes a bed and runs <paramref name="setUp"/> on it, disposing the bed if set-up throws.
    /// Use it in a test class constructor, whose Dispose xunit never calls when the constructor throws.
    /// </summary>
    public static TestBed Create(Action<TestBed> setUp, ITestOutputHelper? output = null, [CallerMemberName] string testName = "")
    {
        ArgumentNullException.ThrowIfNull(setUp);
        var bed = new TestBed(output, testName);
        try
        {
            setUp(bed);
            return bed;
        }
        catch
        {
            bed.Dispose();
            throw;
        }
    }

    /// <summary>"vt" and four digits; starts every namespace name this bed makes.</summary>
    public string Prefix { get; }

    public string LogDirectory { get; }

    /// <summary>Full names of the namespaces made so far, in order.</summary>
    public IReadOnlyList<string> Namespaces
    {
        get
        {
            lock (_gate)
                return [.. _namespaces];
        }
    }

    /// <summary>Names of all network namespaces on the machine (the first word of each `ip netns list` line).</summary>
    public static IReadOnlyList<string> ListNamespaces()
    {
        var r = Sh.TryExec("ip", ["netns", "list"], 10);
        if (!r.Ok)
            throw new InvalidOperationException($"'ip netns list' failed: {r.Stderr.Trim()}");
        return [.. r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(line => line.Split(' ')[0])];
    }

    /// <summary>
    /// Makes namespace <c>{Prefix}-{shortName}</c> with loopback up and returns its full name. IPv6 is
    /// off unless asked for, so that router solicitations and MLD reports do not show up among the
    /// frames a test counts; with it on, duplicate address detection is off so addresses work at once.
    /// </summary>
    public string Namespace(string shortName, bool ipv6 = false)
    {
        ThrowIfDisposed();
        if (!ShortNamePattern().IsMatch(shortName))
            throw new ArgumentException($"namespace short name '{shortName}' must be 1-12 of [a-z0-9_] starting with a letter or digit", nameof(shortName));
        var full = $"{Prefix}-{shortName}";
        lock (_gate)
        {
            if (_byShortName.ContainsKey(shortName))
                throw new ArgumentException($"namespace '{shortName}' already made by this bed", nameof(shortName));
        }
        Ip("netns", "add", full);
        lock (_gate)
        {
            _namespaces.Add(full);
            _byShortName[shortName] = full;
            if (ipv6)
                _withIpv6.Add(full);
        }
        Ip("-n", full, "link", "set", "lo", "up");
        var sysctls = ipv6
            ? "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad; echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad"
            // A kernel booted with ipv6.disable=1 has no such files and nothing to switch off.
            : "[ -d /proc/sys/net/ipv6 ] || exit 0; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6";
        Run(full, sysctls);
        return full;
    }

    /// <summary>Joins two namespaces (or one to itself) by a veth pair, both ends up.</summary>
    public void Veth(string nsA, string ifA, string nsB, string ifB, int? mtu = null)
    {
        var a = Resolve(nsA);
        var b = Resolve(nsB);
        CheckInterfaceName(ifA);
        CheckInterfaceName(ifB);
        Ip("-n", a, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b);
        if (mtu is { } m)
        {
            Ip("-n", a, "link", "set", ifA, "mtu", m.ToString(CultureInfo.InvariantCulture));
            Ip("-n", b, "link", "set", ifB, "mtu", m.ToString(CultureInfo.InvariantCulture));
        }
        Ip("-n", a, "link", "set", ifA, "up");
        Ip("-n", b, "link", "set", ifB, "up");
    }

    /// <summary>Makes a Linux bridge (no STP, so ports forward at once), up.</summary>
    public void Bridge(string ns, string name)
    {
        var n = Resolve(ns);
        CheckInterfaceName(name);
        Ip("-n", n, "link", "add", name, "type", "bridge", "stp_state", "0");
        Ip("-n", n, "link", "set", name, "up");
    }

    /// <summary>Makes <paramref name="ifname"/> a port of <paramref name="bridge"/> and brings it up.</summary>
    public void Attach(string ns, string ifname, string bridge)
    {
        var n = Resolve(ns);
        CheckInterfaceName(ifname);
        CheckInterfaceName(bridge);
        Ip("-n", n, "link", "set", ifname, "master", bridge);
        Ip("-n", n, "link", "set", ifname, "up");
    }

    /// <summary>Adds an address such as 10.0.0.1/24 or fd00::1/64 (the latter without DAD).</summary>
    public void Address(string ns, string ifname, string cidr)
    {
        var n = Resolve(ns);
        CheckInterfaceName(ifname);
        if (!IsCidr(cidr))
            throw new ArgumentException($"'{cidr}' is not an address with a prefix length", nameof(cidr));
        if (cidr.Contains(':', StringComparison.Ordinal))
        {
            bool ipv6;
            lock (_gate)
                ipv6 = _withIpv6.Contains(n);
            if (!ipv6)
                throw new InvalidOperationException($"namespace {n} was made without IPv6; make it with Namespace(name, ipv6: true)");
            Ip("-n", n, "addr", "add", cidr, "dev", ifname, "nodad");
        }
        else
        {
            Ip("-n", n, "addr", "add", cidr, "dev", ifname);
        }
    }

    public void Up(string ns, string ifname)
    {
        var n = Resolve(ns);
        CheckInterfaceName(ifname);
        Ip("-n", n, "link", "set", ifname, "up");
    }

    public void Down(string ns, string ifname)
    {
        var n = Resolve(ns);
        CheckInterfaceName(ifname);
        Ip("-n", n, "link", "set", ifname, "down");
    }

    public void SetMac(string ns, string ifname, string mac)
    {
        var n = Resolve(ns);
        CheckInterfaceName(ifname);
        if (!MacPattern().IsMatch(mac))
            throw new ArgumentException($"'{mac}' is not a MAC address like 02:00:00:00:00:01", nameof(mac));
        Ip("-n", n, "link", "set", ifname, "address", mac);
    }

    public void SetMtu(string ns, string ifname, int mtu)
    {
        var n = Resolve(ns);
        CheckInterfaceName(ifname);
        Ip("-n", n, "link", "set", ifname, "mtu", mtu.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>Whether the namespace has this interface; not logged, so that it can be polled (a TAP a QEMU makes).</summary>
    public bool HasInterface(string ns, string ifname)
    {
        var n = Resolve(ns);
        CheckInterfaceName(ifname);
        return Sh.TryExec("ip", ["-n", n, "link", "show", "dev", ifname], 10).Ok;
    }

    /// <summary>The interface's MAC address, lower case with colons.</summary>
    public string Mac(string ns, string ifname)
    {
        var n = Resolve(ns);
        CheckInterfaceName(ifname);
        // /sys shows the namespace of whoever mounted it; ip netns exec mounts the target's.
        return Run(n, $"cat /sys/class/net/{ifname}/address").Trim();
    }

    /// <summary>
    /// Moves an interface between two of this bed's namespaces, e.g. a daemon's TAP into the
    /// namespace that plays the VM. It comes out down and without addresses.
    /// </summary>
    public void MoveLink(string fromNs, string ifname, string toNs)
    {
        var from = Resolve(fromNs);
        var to = Resolve(toNs);
        CheckInterfaceName(ifname);
        Ip("-n", from, "link", "set", ifname, "netns", to);
    }

    /// <summary>Runs a /bin/sh command line inside the namespace; does not throw on failure.</summary>
    /// <remarks>Meant for commands that end; start anything long-lived with Start.</remarks>
    public Sh.Result Exec(string ns, string command, int timeoutSeconds = 30)
    {
        var n = Resolve(ns);
        return Logged($"[{n}] {command}", () => Sh.TryExec("ip", ["netns", "exec", n, "/bin/sh", "-c", command], timeoutSeconds));
    }

    /// <summary>As <see cref="Exec"/>, but throws when the command fails; returns its stdout.</summary>
    public string Run(string ns, string command, int timeoutSeconds = 30)
    {
        var r = Exec(ns, command, timeoutSeconds);
        if (!r.Ok)
            throw new InvalidOperationException($"[{Resolve(ns)}] '{command}' failed ({r.ExitCode}): {r.Stderr.Trim()} {r.Stdout.Trim()}");
        return r.Stdout;
    }

    /// <summary>True when <paramref name="count"/> echo replies come back within <paramref name="timeoutSeconds"/>.</summary>
    public bool Ping(string ns, string ip, int count = 1, int timeoutSeconds = 5)
    {
        var n = Resolve(ns);
        if (!IPAddress.TryParse(ip, out _))
            throw new ArgumentException($"'{ip}' is not an IP address", nameof(ip));
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(timeoutSeconds, 1);
        // -w is a deadline for the whole run: ping ends early once count replies arrived.
        string[] argv = ["netns", "exec", n, "ping", "-n", "-q", "-c", $"{count}", "-i", "0.2", "-w", $"{timeoutSeconds}", ip];
        var r = Logged($"[{n}] ping {ip}", () => Sh.TryExec("ip", argv, timeoutSeconds + 10));
        return r.Ok;
    }

    /// <summary>Starts a program inside the namespace; see <see cref="BackgroundProcess"/>.</summary>
    public BackgroundProcess Start(string ns, string name, string fileName, params string[] args) =>
        Start(ns, name, fileName, args, environment: null);

    /// <summary>
    /// Starts a program inside the namespace with extra environment variables. <paramref name="name"/>
    /// names its log file and appears in failure messages.
    /// </summary>
    /// <param name="input">Keep the program's stdin open for <see cref="BackgroundProcess.WriteLine"/>.</param>
    public BackgroundProcess Start(
        string ns, string name, string fileName, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment,
        bool input = false)
    {
        ThrowIfDisposed();
        var n = Resolve(ns);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(args);
        string logPath;
        lock (_gate)
        {
            var baseName = SafeFileName(name);
            logPath = Path.Combine(LogDirectory, baseName + ".log");
            for (var i = 2; File.Exists(logPath) && i < 1000; i++)
                logPath = Path.Combine(LogDirectory, $"{baseName}.{i}.log");
        }
        var p = BackgroundProcess.Start(n, name, fileName, args, environment, logPath, input);
        lock (_gate)
            _processes.Add(p);
        Log($"started '{name}' (pid {p.Pid}): {p.CommandLine} > {logPath}");
        return p;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
        }
        lock (LiveGate)
            Live.Remove(this);

        BackgroundProcess[] processes;
        string[] namespaces;
        lock (_gate)
        {
            processes = [.. _processes];
            namespaces = [.. _namespaces];
        }
        // Processes first: a namespace only dies once nothing runs in it.
        for (var i = processes.Length - 1; i >= 0; i--)
        {
            var p = processes[i];
            try
            {
                if (!p.HasExited)
                    Log($"stopping '{p.Name}' (pid {p.Pid})");
                p.Stop(DisposeGrace);
                p.Dispose();
            }
            catch (Exception e) when (e is InvalidOperationException or IOException)
            {
                Log($"stopping '{p.Name}' failed: {e.Message}");
            }
        }

        for (var i = namespaces.Length - 1; i >= 0; i--)
        {
            var ns = namespaces[i];
            KillStragglers(ns);
            var r = Sh.TryExec("ip", ["netns", "delete", ns], 30);
            Log(r.Ok ? $"deleted {ns}" : $"deleting {ns} failed ({r.ExitCode}): {r.Stderr.Trim()}");
        }

        _log.Dispose();
        _reservation.Dispose();
    }

    /// <summary>SIGKILLs processes left in the namespace by Exec ("cmd &amp;") or by a test's own means.</summary>
    private void KillStragglers(string ns)
    {
        var r = Sh.TryExec("ip", ["netns", "pids", ns], 10);
        if (!r.Ok)
            return;
        foreach (var word in r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            // The test host itself may have a thread parked in the namespace (Netns.Enter).
            if (int.TryParse(word, CultureInfo.InvariantCulture, out var pid) && pid != Environment.ProcessId)
            {
                Log($"killing pid {pid} left in {ns}");
                TestNative.Kill(pid, TestNative.SIGKILL);
            }
        }
    }

    private static void DisposeLeftovers()
    {
        TestBed[] left;
        lock (LiveGate)
            left = [.. Live];
        foreach (var bed in left)
            bed.Dispose();
    }

    /// <summary>
    /// Picks "vt" + 4 digits, spread by pid so parallel test hosts rarely probe the same ones, and
    /// holds an exclusive flock on a file of that name; the kernel drops it if the host dies. A prefix
    /// whose namespaces still exist (left by a killed run, or not ours) is passed over, not reused.
    /// </summary>
    private static (string Prefix, FileStream Reservation) ReservePrefix()
    {
        var lockDir = Path.Combine(Path.GetTempPath(), "vnet-testbed-locks");
        Directory.CreateDirectory(lockDir);
        var start = (Environment.ProcessId * 37 + Interlocked.Increment(ref s_instances)) % 10000;
        for (var i = 0; i < 10000; i++)
        {
            var prefix = $"vt{(start + i) % 10000:D4}";
            if (NamespacesExist(prefix))
                continue;
            FileStream reservation;
            try
            {
                // .NET takes flock(LOCK_EX | LOCK_NB) for FileShare.None.
                reservation = new FileStream(Path.Combine(lockDir, prefix + ".lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException)
            {
                continue;
            }
            if (!NamespacesExist(prefix))
                return (prefix, reservation);
            reservation.Dispose();
        }
        throw new InvalidOperationException($"no free test bed prefix vt0000-vt9999 (locks in {lockDir})");
    }

    private static bool NamespacesExist(string prefix) =>
        Directory.Exists("/run/netns") && Directory.EnumerateFileSystemEntries("/run/netns", prefix + "-*").Any();

    private string Resolve(string ns)
    {
        ThrowIfDisposed();
        ArgumentException.ThrowIfNullOrEmpty(ns);
        lock (_gate)
        {
            if (_byShortName.TryGetValue(ns, out var full))
                return full;
            if (_namespaces.Contains(ns))
                return ns;
        }
        throw new ArgumentException($"namespace '{ns}' was not made by test bed {Prefix}", nameof(ns));
    }

    private static void CheckInterfaceName(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name.Length > MaxInterfaceName || !InterfaceNamePattern().IsMatch(name))
            throw new ArgumentException($"'{name}' is not a usable interface name (at most {MaxInterfaceName} of [A-Za-z0-9_.-])", nameof(name));
    }

    private void Ip(params string[] args)
    {
        var r = Logged("ip " + string.Join(' ', args), () => Sh.TryExec("ip", args, 30));
        if (!r.Ok)
            throw new InvalidOperationException($"'ip {string.Join(' ', args)}' failed ({r.ExitCode}): {r.Stderr.Trim()}");
    }

    private Sh.Result Logged(string what, Func<Sh.Result> run)
    {
        var r = run();
        var detail = r.Ok ? "" : $" -> {r.ExitCode}: {r.Stderr.Trim()}";
        Log(what + detail);
        return r;
    }

    private void Log(string text)
    {
        var line = string.Create(CultureInfo.InvariantCulture, $"{_clock.Elapsed.TotalSeconds,8:0.000} {text}");
        lock (_gate)
        {
            try
            {
                if (_log.BaseStream.CanWrite)
                    _log.WriteLine(line);
            }
            catch (IOException)
            {
                // Logging must not fail a test.
            }
        }
        try
        {
            _output?.WriteLine(line);
        }
        catch (InvalidOperationException)
        {
            // xunit refuses output once the test has finished (e.g. clean-up at host exit).
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    // IPNetwork.TryParse refuses host bits (10.0.0.1/24), which an interface address has.
    private static bool IsCidr(string cidr)
    {
        var slash = cidr.IndexOf('/', StringComparison.Ordinal);
        return slash > 0
            && IPAddress.TryParse(cidr.AsSpan(0, slash), out var address)
            && int.TryParse(cidr.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var length)
            && length <= (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? 128 : 32);
    }

    private static string SafeFileName(string name)
    {
        var safe = new string([.. name.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_')]);
        return safe.Length == 0 ? "test" : safe;
    }

    [GeneratedRegex("^[a-z0-9][a-z0-9_]{0,11}$")]
    private static partial Regex ShortNamePattern();

    [GeneratedRegex("^[A-Za-z0-9_.-]+$")]
    private static partial Regex InterfaceNamePattern();

    [GeneratedRegex("^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")]
    private static partial Regex MacPattern();
}
