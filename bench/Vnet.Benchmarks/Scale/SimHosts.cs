using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Frames;
using Vnet.Interfaces;
using Vnet.Links.Security;
using Vnet.Links;
using Vnet.Peers;
using Vnet.Vms;

namespace Vnet.Benchmarks.Scale;

/// <summary>
/// What the Proxy sent the hosts, counted as they received it (the Proxy only counts bytes), and
/// the requests it made of them with the bytes of their responses.
/// </summary>
internal sealed record InboundCounts(long LocationSnapshots, long LocationDeltas, long LocationEntries, long Digests, long Syncs, long Other,
    long Requests, long ResponseBytes)
{
    public InboundCounts Minus(InboundCounts o) => new(LocationSnapshots - o.LocationSnapshots, LocationDeltas - o.LocationDeltas,
        LocationEntries - o.LocationEntries, Digests - o.Digests, Syncs - o.Syncs, Other - o.Other, Requests - o.Requests,
        ResponseBytes - o.ResponseBytes);
}

/// <summary>
/// The hosts of the scale run, in this process: real <see cref="VnetDaemon"/>s on loopback that dial
/// the Proxy, each with one in-memory TAP (<see cref="Tap"/>) carrying its VMs, a small frame pool
/// and the normal <see cref="DirectoryOptions"/>. A pump makes every VM send a small frame every
/// <see cref="Period"/> from the TAP of the host it is on now. The hosts' sends are spread over the
/// period; the VMs that started on one host send in the same slot, so that a TAP's reader wakes
/// once for all of them (with 2,000 VMs, one wake-up per frame cost the simulation a core the
/// Proxy would then lack). The run's own record of where each VM is (<see cref="Truth"/>) is what
/// every daemon must converge to.
/// </summary>
internal sealed class SimHosts : IAsyncDisposable
{
    public const string Tap = "vms0";


    /// <summary>Where VM frames go: a machine on the user's LAN (the Proxy has no LAN here, so it drops them).</summary>
    public static readonly MacAddress LanHost = MacAddress.Parse("02:aa:00:00:00:01");

    private const int Slots = 10;
    private const ulong VmPrefix = 0x0200_0000_0000UL;

    private readonly VnetDaemon[] _hosts;
    private readonly MemoryInterfaceFactory[] _devices;
    private readonly HostLog _log = new();
    private readonly int[] _at;
    private readonly int[] _leaving;
    private readonly int _vmsPerHost;
    private readonly CancellationTokenSource _stop = new();
    private readonly long[] _inbound = new long[8];
    private readonly Thread _pump;
    private long _sent;
    private long _refused;
    private long _longestGap;
    private readonly long[] _lastControl;
    private long _silenceTimeouts;
    private long _silenceWhileControlFlowed;

    public SimHosts(int hosts, int vmsPerHost, TimeSpan period, StaticKeyPair[] identities, PublicKeyId proxyKey, IPEndPoint proxy, LinkTransport transport)
    {
        Period = period;
        _hosts = new VnetDaemon[hosts];
        _devices = new MemoryInterfaceFactory[hosts];
        _at = new int[hosts * vmsPerHost];
        _leaving = new int[_at.Length];
        _vmsPerHost = vmsPerHost;
        _pump = new Thread(Pump) { IsBackground = true, Name = "vm-pump" };
        _lastControl = new long[hosts];
        Array.Fill(_leaving, -1);
        for (var v = 0; v < _at.Length; v++)
            _at[v] = v / vmsPerHost;
        var directory = new DirectoryOptions();
        for (var h = 0; h < hosts; h++)
        {
            var config = new DaemonConfig
            {
                Name = NameOf(h),
                Role = DaemonRole.Host,
                Listen = new IPEndPoint(IPAddress.Loopback, 0),
                Identity = identities[h],
                ProxyKey = proxyKey,
                ProxyAddress = proxy,
                ProxyTransport = transport,
                Interfaces = [new InterfaceConfig { Name = Tap, Kind = InterfaceKind.Tap }],
            }.Validated();
            _devices[h] = new MemoryInterfaceFactory();
            var daemon = new VnetDaemon(config, _log, new DaemonOptions
            {
                // Small pools: 200 daemons in one process, each forwarding a few frames at a time.
                Pool = new FramePool(64),
                Interfaces = _devices[h],
                Directory = directory,
            });
            daemon.Peers.Commands = new CountedCommands(DaemonControl.Attach(daemon), this);
            daemon.Links.Events = new WatchedLinks(daemon.Peers, this, h);
            daemon.Peers.InboundDelay = (_, m) =>
            {
                Count(m);
                return TimeSpan.Zero;
            };
            _hosts[h] = daemon;
        }
    }

    /// <summary>How often each VM sends a frame.</summary>
    public TimeSpan Period { get; }

    public int HostCount => _hosts.Length;

    public int VmCount => _at.Length;

    public IReadOnlyList<VnetDaemon> Daemons => _hosts;

    /// <summary>Frames the VMs handed their TAPs (and frames a full TAP refused).</summary>
    public (long Sent, long Refused) Frames => (Interlocked.Read(ref _sent), Interlocked.Read(ref _refused));

    /// <summary>
    /// The longest time between two rounds of the pump since the last call, and starts anew: when
    /// this process's thread pool is saturated (200 daemons share it, where real hosts have one
    /// each), the VMs fall silent and so do the hosts' keep-alives, which run on the pool too.
    /// </summary>
    public TimeSpan TakeLongestPumpGap() =>
        TimeSpan.FromSeconds(Interlocked.Exchange(ref _longestGap, 0) / (double)Stopwatch.Frequency);

    /// <summary>Lines the hosts logged at warning level or worse.</summary>
    public HostLog Log => _log;

    public static string NameOf(int host) => $"h{host:000}";

    public static MacAddress MacOf(int vm) => new(VmPrefix | (uint)(vm + 1));

    /// <summary>The VM a MAC belongs to, or -1 when it is none of the run's.</summary>
    public int VmOf(MacAddress mac)
    {
        var n = (long)(mac.Value ^ VmPrefix) - 1;
        return n >= 0 && n < _at.Length ? (int)n : -1;
    }

    /// <summary>Where each VM is now, by host index.</summary>
    public int[] Truth()
    {
        var copy = new int[_at.Length];
        for (var v = 0; v < copy.Length; v++)
            copy[v] = Volatile.Read(ref _at[v]);
        return copy;
    }

    /// <summary>Starts every host at once; their VMs send from the moment their TAP exists.</summary>
    public async Task StartAsync()
    {
        _pump.Start();
        await Task.WhenAll(_hosts.Select(h => Task.Run(h.StartAsync)));
    }

    /// <summary>Star sessions the hosts have begun, ever (one each when nothing went wrong).</summary>
    public long StarSessions()
    {
        long sessions = 0;
        foreach (var h in _hosts)
            sessions += h.Links.Find(h.Config.ProxyName)?.SessionsStarted ?? 0;
        return sessions;
    }

    /// <summary>Hosts whose star link to the Proxy is up.</summary>
    public int StarsUp()
    {
        var up = 0;
        foreach (var h in _hosts)
        {
            if (h.Links.Find(h.Config.ProxyName) is { IsUp: true })
                up++;
        }
        return up;
    }

    /// <summary>
    /// Live migration of <paramref name="count"/> VMs at once, each to another host picked at
    /// random: a VM sends from its new host from now on, and from its old one for one more
    /// <paramref name="linger"/> (a live migration leaves the source running until it is done).
    /// </summary>
    public List<(int Vm, int From, int To)> Migrate(int count, Random random, TimeSpan linger)
    {
        var moves = new List<(int, int, int)>(count);
        var chosen = new HashSet<int>();
        while (chosen.Count < count)
        {
            var vm = random.Next(_at.Length);
            if (!chosen.Add(vm))
                continue;
            var from = _at[vm];
            var to = random.Next(_hosts.Length - 1);
            if (to >= from)
                to++;
            moves.Add((vm, from, to));
        }
        foreach (var (vm, from, to) in moves)
        {
            Volatile.Write(ref _leaving[vm], from);
            Volatile.Write(ref _at[vm], to);
        }
        _ = Task.Delay(linger, _stop.Token).ContinueWith(_ =>
        {
            foreach (var (vm, _, _) in moves)
                Volatile.Write(ref _leaving[vm], -1);
        }, TaskScheduler.Default);
        return moves;
    }

    /// <summary>How long a host's control loop may take to answer the run (a loop that does not is reported, not waited for).</summary>
    public static readonly TimeSpan LoopTimeout = TimeSpan.FromSeconds(10);

    /// <summary>One host's view of every VM (<c>Vms.List()</c>, on its control loop); a <see cref="TimeoutException"/> after <see cref="LoopTimeout"/>.</summary>
    public Task<IReadOnlyList<VmStatus>> ViewOf(int host)
    {
        var d = _hosts[host];
        return d.Run(d.Vms.List).WaitAsync(LoopTimeout);
    }

    /// <summary>One host's directory status, bounded as <see cref="ViewOf"/>.</summary>
    public Task<DirectoryStatus> StatusOf(int host)
    {
        var d = _hosts[host];
        return d.Run(d.Vms.Status).WaitAsync(LoopTimeout);
    }

    /// <summary>Self-repairs of the hosts' replicas, and VMs refused over an interface's limit.</summary>
    public async Task<(long Repairs, long BadMessages, long LearnRefused, List<string> Recent)> HealthAsync()
    {
        long repairs = 0, bad = 0, refused = 0;
        var recent = new List<string>();
        for (var h = 0; h < _hosts.Length; h++)
        {
            var d = _hosts[h];
            var status = await StatusOf(h);
            repairs += status.Repairs;
            bad += d.Peers.BadMessages;
            refused += d.Vms.LearnRefused;
            foreach (var r in status.RecentRepairs)
            {
                if (recent.Count < 20)
                    recent.Add($"{d.Name}: {r.Topic} from {r.Peer}: {r.Kind} at {r.At:HH:mm:ss.fff}");
            }
        }
        return (repairs, bad, refused, recent);
    }

    /// <summary>Control bytes the hosts sent and received (the Proxy's received and sent, seen from the other end).</summary>
    public (long Sent, long Received) PeerBytes()
    {
        long sent = 0, received = 0;
        foreach (var d in _hosts)
        {
            var t = d.Peers.Traffic;
            sent += t.BytesSent;
            received += t.BytesReceived;
        }
        return (sent, received);
    }

    public InboundCounts Inbound() => new(Interlocked.Read(ref _inbound[0]), Interlocked.Read(ref _inbound[1]),
        Interlocked.Read(ref _inbound[2]), Interlocked.Read(ref _inbound[3]), Interlocked.Read(ref _inbound[4]), Interlocked.Read(ref _inbound[5]),
        Interlocked.Read(ref _inbound[6]), Interlocked.Read(ref _inbound[7]));

    private void Count(PeerMessage m)
    {
        switch (m.Type)
        {
            case PeerMessageType.Locations:
                Interlocked.Increment(ref _inbound[m.Full ? 0 : 1]);
                Interlocked.Add(ref _inbound[2], m.Entries?.Count ?? 0);
                break;
            case PeerMessageType.Digest:
                Interlocked.Increment(ref _inbound[3]);
                break;
            case PeerMessageType.Sync:
                Interlocked.Increment(ref _inbound[4]);
                break;
            default:
                Interlocked.Increment(ref _inbound[5]);
                break;
        }
    }

    /// <summary>
    /// Star links a host dropped for silence (no keep-alive or frame for 3 s), and of those, how
    /// many had control messages from the Proxy arriving until less than a second before: those
    /// messages prove the Proxy alive but do not count as a sign of life, and the keep-alives queue
    /// behind them.
    /// </summary>
    public (long Timeouts, long WhileControlFlowed) SilenceTimeouts() =>
        (Interlocked.Read(ref _silenceTimeouts), Interlocked.Read(ref _silenceWhileControlFlowed));

    /// <summary>A host's link events on their way to its <see cref="PeerChannel"/>, watched.</summary>
    private sealed class WatchedLinks(ILinkEvents inner, SimHosts hosts, int host) : ILinkEvents
    {
        public void OnLinkUp(LinkPort port, LinkSession session) => inner.OnLinkUp(port, session);

        public void OnLinkDown(LinkPort port, LinkSession session, string reason)
        {
            if (port.Star && reason.StartsWith("no message", StringComparison.Ordinal))
            {
                Interlocked.Increment(ref hosts._silenceTimeouts);
                var since = Stopwatch.GetElapsedTime(Interlocked.Read(ref hosts._lastControl[host]));
                if (since < TimeSpan.FromSeconds(1))
                    Interlocked.Increment(ref hosts._silenceWhileControlFlowed);
            }
            inner.OnLinkDown(port, session, reason);
        }

        public void OnControl(LinkPort port, LinkSession session, byte[] payload)
        {
            if (port.Star)
                Interlocked.Exchange(ref hosts._lastControl[host], Stopwatch.GetTimestamp());
            inner.OnControl(port, session, payload);
        }
    }

    /// <summary>
    /// The host's command dispatcher, counting the Proxy's requests and the bytes of the responses
    /// (a response is serialized here once more, as <see cref="PeerChannel"/> will, to know its size).
    /// </summary>
    private sealed class CountedCommands(ICommandHandler inner, SimHosts hosts) : ICommandHandler
    {
        public async Task<CommandResult> HandleAsync(string command, System.Text.Json.Nodes.JsonObject? args)
        {
            var result = await inner.HandleAsync(command, args);
            var size = new PeerMessage { Type = PeerMessageType.Response, Id = 1, Ok = result.Ok, Data = result.Data, Error = result.Error }.Serialize().Length;
            Interlocked.Increment(ref hosts._inbound[6]);
            Interlocked.Add(ref hosts._inbound[7], size);
            return result;
        }
    }

    /// <summary>
    /// Every VM sends one frame per period, in the slot of the host it started on. A thread of its
    /// own: VMs do not wait for their host daemon's thread pool, and here 200 daemons share one.
    /// </summary>
    private void Pump()
    {
        var frame = new byte[60];
        LanHost.Write(frame);
        frame[12] = 0x88;
        frame[13] = 0xb5;
        var tick = (long)(Stopwatch.Frequency * (Period / Slots).TotalSeconds);
        var slot = 0;
        var last = Stopwatch.GetTimestamp();
        var due = last + tick;
        while (!_stop.IsCancellationRequested)
        {
            var wait = (due - Stopwatch.GetTimestamp()) * 1000 / Stopwatch.Frequency;
            if (wait > 0 && _stop.Token.WaitHandle.WaitOne((int)wait))
                break;
            var now = Stopwatch.GetTimestamp();
            if (now - last > Interlocked.Read(ref _longestGap))
                Interlocked.Exchange(ref _longestGap, now - last);
            last = now;
            // A late round does not make up for the rounds it missed (as a PeriodicTimer).
            due = Math.Max(due + tick, now);
            for (var first = slot * _vmsPerHost; first < _at.Length; first += Slots * _vmsPerHost)
            {
                for (var v = first; v < first + _vmsPerHost; v++)
                {
                    MacOf(v).Write(frame.AsSpan(6));
                    Send(Volatile.Read(ref _at[v]), frame);
                    if (Volatile.Read(ref _leaving[v]) is var old and >= 0)
                        Send(old, frame);
                }
            }
            slot = (slot + 1) % Slots;
        }
    }

    private void Send(int host, byte[] frame)
    {
        // Until its daemon has opened the TAP, a VM's frames go nowhere (as before QEMU attaches).
        if (!_devices[host].TryGet(Tap, out var tap) || tap.IsClosed)
            return;
        if (tap.Inject(frame))
            Interlocked.Increment(ref _sent);
        else
            Interlocked.Increment(ref _refused);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        if (_pump.IsAlive)
            _pump.Join();
        // Hosts leave the Proxy all at once, as their start was.
        await Task.WhenAll(_hosts.Select(h => h.DisposeAsync().AsTask()));
        _stop.Dispose();
    }

    /// <summary>
    /// The hosts' logs, counted by what they say: warnings and worse only (a repair is logged as a
    /// warning); the hosts log VMs learned at information level, which 2,000 VMs would turn into noise.
    /// </summary>
    internal sealed class HostLog : ILoggerFactory
    {
        private int _count;

        public int Count => Volatile.Read(ref _count);

        /// <summary>Every line, counted by what it says (host names and numbers left out).</summary>
        public LogTally Tally { get; } = new();

        public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose()
        {
        }

        private void Add(string category, LogLevel level, string message)
        {
            Tally.Add($"{level} {category}: {message}");
            Interlocked.Increment(ref _count);
        }

        private sealed class Logger(HostLog log, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (IsEnabled(logLevel))
                    log.Add(category, logLevel, formatter(state, exception) + (exception is null ? "" : " " + exception.Message));
            }
        }
    }
}

/// <summary>Log lines counted by what they say: daemon names, addresses and numbers become '#'.</summary>
internal sealed partial class LogTally
{
    private readonly ConcurrentDictionary<string, int> _counts = new(StringComparer.Ordinal);

    public void Add(string line)
    {
        var key = Digits().Replace(HostName().Replace(line, "#"), "#");
        _counts.AddOrUpdate(key, 1, (_, n) => n + 1);
    }

    /// <summary>The most frequent kinds of line, with their counts.</summary>
    public IReadOnlyList<string> Top(int count) =>
        [.. _counts.OrderByDescending(kv => kv.Value).Take(count).Select(kv => $"{kv.Value} x {kv.Key}")];

    [System.Text.RegularExpressions.GeneratedRegex(@"\bh\d{3}\b")]
    private static partial System.Text.RegularExpressions.Regex HostName();

    [System.Text.RegularExpressions.GeneratedRegex(@"\d+(\.\d+)*(:\d+)?")]
    private static partial System.Text.RegularExpressions.Regex Digits();
}
