using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Interfaces;
using Vnet.Links;
using Vnet.Peers;

namespace Vnet.Vms;

/// <summary>Settings of the VM directory (defaults for a real daemon; tests shorten them).</summary>
public sealed record DirectoryOptions
{
    /// <summary>
    /// How often each side looks at its maps: a source sends a digest where its version changed
    /// since its last one (or the session is new), a replica asks for a snapshot when a digest
    /// differs or a gap before a held-back delta stayed open for a whole interval.
    /// </summary>
    public TimeSpan AntiEntropyInterval { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>
    /// Every session gets a digest at least this often, changed or not (the multiples of it on the
    /// monotonic clock): the bound on healing a divergence that neither a change nor a gap reveals.
    /// </summary>
    public TimeSpan DigestHeartbeat { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>After a VM moved away, its late frames here must not pull it back for this long.</summary>
    public TimeSpan MoveHoldDown { get; init; } = TimeSpan.FromSeconds(3);
}

/// <summary>Why a replica asked its source for a snapshot.</summary>
public enum RepairKind
{
    /// <summary>The digest showed the same version with other entries, or another incarnation.</summary>
    Diverged,

    /// <summary>The digest was ahead of the replica: deltas were lost.</summary>
    Behind,

    /// <summary>A digest or delta came on a session whose snapshot never arrived.</summary>
    NoSnapshot,

    /// <summary>A delta could not be placed (another incarnation, or too many held back).</summary>
    Unplaceable,

    /// <summary>Deltas waited for a missing predecessor for a whole anti-entropy interval: the ones between were lost.</summary>
    Gap,
}

/// <summary>One self-repair: which map, from whom, why. A repair in a healthy run is a bug.</summary>
public sealed record RepairRecord(DateTimeOffset At, string Peer, MapTopic Topic, RepairKind Kind);

/// <summary>One replica this daemon keeps of another's map, or one map it publishes to a peer.</summary>
public sealed record ReplicaStatus(string Peer, MapTopic Topic, string? Version, int Entries, int Buffered);

/// <summary>The VM directory as <c>vnet directory</c> shows it: versions, replicas and repairs.</summary>
public sealed record DirectoryStatus(
    string Daemon,
    string LocalVersion,
    int LocalVms,
    string LocationsVersion,
    int Locations,
    IReadOnlyList<ReplicaStatus> Replicas,
    long Repairs,
    IReadOnlyList<RepairRecord> RecentRepairs);

/// <summary>
/// Where every VM lives, as this daemon knows it, and the rules that follow from it. One owner on
/// the control loop; the data path only reads the published table and sources.
/// <code>
/// A VM appearing on a host:
///  1. Its first frame from a learning interface reaches the LearningGate (data path), which posts
///     (interface, MAC) to the loop and lets the frame go on: the interface's default rule carries
///     it to the Proxy.
///  2. The loop checks the MAC is a VM (not the host's own device, not held down after a move, the
///     interface's limit), adds it to the local map (version +1) and installs its rules.
///  3. The delta goes to the Proxy over the star (only on a session that already had a snapshot).
///  4. The Proxy applies it to its replica of the host's map if it is the next version, records a
///     claim (the newest claim of a MAC wins), points its rule at the host, and sends every host
///     the delta of its location map.
///  5. A host whose local VM is now placed elsewhere forgets it and holds it down for a while.
/// Anti-entropy: every AntiEntropyInterval each source sends a digest (version, count, hash) of its
/// map where it changed since the last one (and on every session each DigestHeartbeat); a replica
/// that differs, or whose gap before a held-back delta stayed open an interval, asks for a
/// snapshot, and the repair is counted and logged.
/// </code>
/// See docs/convergence.md for why this converges whatever the interleaving.
/// </summary>
public sealed partial class VmDirectory
{
    private readonly DaemonConfig _config;
    private readonly DirectoryOptions _options;
    private readonly VirtualSwitch _switch;
    private readonly RuleBook _rules;
    private readonly InterfaceService _interfaces;
    private readonly PeerChannel _peers;
    private readonly LinkManager _links;
    private readonly ControlLoop _loop;
    private readonly ILogger _logger;
    private readonly MapPublisher _local;
    private readonly DigestSchedule<LinkSession> _digests;
    private readonly Dictionary<MacAddress, long> _heldDown = [];
    private readonly Queue<RepairRecord> _recentRepairs = new();

    // A peer can ask for snapshots as often as it likes; the log says so a few times a minute.
    private readonly LogLimiter _syncLog = new();
    private HashSet<MacAddress> _localDevices = [];
    private long _localDevicesRead = long.MinValue;
    private long _learnRefused;
    private long _repairs;

    public VmDirectory(DaemonConfig config, DirectoryOptions options, VirtualSwitch sw, RuleBook rules, InterfaceService interfaces,
        PeerChannel peers, LinkManager links, ControlLoop loop, ILogger logger)
    {
        _config = config;
        _options = options;
        _switch = sw;
        _rules = rules;
        _interfaces = interfaces;
        _peers = peers;
        _links = links;
        _loop = loop;
        _logger = logger;
        var epoch = NewEpoch();
        _local = new MapPublisher(epoch);
        _digests = new DigestSchedule<LinkSession>(options.DigestHeartbeat, static s => s.IsClosed);
        _locations = new MapPublisher(epoch);
        Gate = new LearningGate((iface, mac) => _loop.Post(() => OnSourceSeen(iface, mac)));
    }

    public string Name => _config.Name;

    public bool IsProxy => _config.Role == DaemonRole.Proxy;

    /// <summary>The data path's entry (the switch's new-source handler).</summary>
    public LearningGate Gate { get; }

    /// <summary>The local VMs' map version (what the Proxy should have of this daemon).</summary>
    public MapVersion LocalVersion => _local.Version;

    /// <summary>Replicas that found themselves wrong and asked for a snapshot, since start.</summary>
    public long Repairs => Interlocked.Read(ref _repairs);

    /// <summary>VMs refused because an interface reached its learning limit.</summary>
    public long LearnRefused => Interlocked.Read(ref _learnRefused);

    /// <summary>
    /// Where each VM lives, as this daemon knows it (the Proxy: its own map; a host: its replica of
    /// the Proxy's). Control loop only.
    /// </summary>
    public IReadOnlyDictionary<MacAddress, string> Locations => IsProxy ? _locations.Entries : _proxyView.Entries;

    /// <summary>
    /// Location changes (control loop): on the Proxy, its own decisions; on a host, what its replica
    /// of the Proxy's map learned. A null daemon: the VM is gone.
    /// </summary>
    public event Action<IReadOnlyList<MapChange>>? LocationsChanged;

    public void Start()
    {
        _interfaces.Opened += OnInterfaceOpened;
        _interfaces.Closed += OnInterfaceClosed;
        _peers.PeerUp += OnPeerUp;
        _peers.PeerDown += OnPeerDown;
        _peers.On(PeerMessageType.Digest, OnDigest);
        _peers.On(PeerMessageType.Sync, OnSync);
        if (IsProxy)
            _peers.On(PeerMessageType.Vms, OnHostVms);
        else
            _peers.On(PeerMessageType.Locations, OnProxyLocations);
        _switch.NewSourceHandler = Gate.OnNewSource;
        _loop.Every(_options.AntiEntropyInterval, OnAntiEntropyTick);
    }

    // ---------------------------------------------------------------- queries

    public int CountOn(string iface)
    {
        var n = 0;
        foreach (var (_, on) in _local.Entries)
        {
            if (on == iface)
                n++;
        }
        return n;
    }

    public int LocalCount => _local.Entries.Count;

    /// <summary>Every VM this daemon knows of: its own (with their interface), then the others by location.</summary>
    public IReadOnlyList<VmStatus> List()
    {
        var list = new List<VmStatus>();
        foreach (var (mac, iface) in _local.Entries)
            list.Add(new VmStatus(mac, Name, iface, true));
        foreach (var (mac, daemon) in Locations)
        {
            if (!_local.Entries.ContainsKey(mac))
                list.Add(new VmStatus(mac, daemon, null, false));
        }
        list.Sort(static (a, b) => a.Mac.CompareTo(b.Mac));
        return list;
    }

    /// <summary>MACs of the VMs on one interface, sorted (for state dumps).</summary>
    public List<MacAddress> VmsOn(string iface)
    {
        var list = new List<MacAddress>();
        foreach (var (mac, on) in _local.Entries)
        {
            if (on == iface)
                list.Add(mac);
        }
        list.Sort();
        return list;
    }

    public IReadOnlyList<RepairRecord> RecentRepairs => [.. _recentRepairs];

    /// <summary>Versions, replicas and repairs (control loop).</summary>
    public DirectoryStatus Status()
    {
        var replicas = new List<ReplicaStatus>();
        if (IsProxy)
        {
            foreach (var (host, view) in _hosts.OrderBy(h => h.Key, StringComparer.Ordinal))
                replicas.Add(new ReplicaStatus(host, MapTopic.Vms, view.Replica.Version?.ToString(), view.Replica.Entries.Count, view.Replica.Buffered));
        }
        else
        {
            replicas.Add(new ReplicaStatus(_config.ProxyName, MapTopic.Locations, _proxyView.Version?.ToString(), _proxyView.Entries.Count, _proxyView.Buffered));
        }
        var locations = IsProxy ? _locations.Version.ToString() : _proxyView.Version?.ToString() ?? "-";
        return new DirectoryStatus(Name, _local.Version.ToString(), _local.Entries.Count, locations, Locations.Count, replicas, Repairs, RecentRepairs);
    }

    // ---------------------------------------------------------------- interfaces

    private void OnInterfaceOpened(LocalInterface i)
    {
        if (i.Learns && !IsProxy)
        {
            // Frames from a VM not yet learned (its first frames) go where its default rule will:
            // the Proxy. Learning happens on the control loop and must not hold them back.
            _rules.Edit(e => e.Add(new Rule
            {
                Source = MacMatch.Any,
                Destination = MacMatch.None,
                Ingress = i.Port.Name,
                Action = RuleAction.To(ProxyLink),
                Origin = RuleOrigin.System,
            }));
        }
        foreach (var mac in i.Config.Macs)
            Pin(i.Name, mac);
        PublishSources();
    }

    private void OnInterfaceClosed(LocalInterface i)
    {
        var gone = VmsOn(i.Name);
        foreach (var mac in gone)
            Forget(i.Name, mac);
        PublishSources();
    }

    // ---------------------------------------------------------------- learning (control loop)

    private PortRef ProxyLink => PortRef.Link(_config.ProxyName);

    /// <summary>The gate saw a frame from <paramref name="mac"/> on a learning interface.</summary>
    private void OnSourceSeen(string iface, MacAddress mac)
    {
        if (_interfaces.Find(iface) is not { Learns: true } state)
            return;
        if (_local.TryGet(mac, out var on) && on == iface)
        {
            Gate.Forget(mac);
            return;
        }
        if (_heldDown.TryGetValue(mac, out var until))
        {
            var left = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), until);
            if (left > TimeSpan.Zero)
            {
                Gate.Quiet(mac, left);
                return;
            }
            _heldDown.Remove(mac);
        }
        if (state.OwnMac == mac || IsLocalDevice(mac))
        {
            Gate.Quiet(mac, TimeSpan.FromSeconds(10));
            return;
        }
        if (CountOn(iface) >= _config.MaxLearnedPerInterface)
        {
            Interlocked.Increment(ref _learnRefused);
            Gate.Quiet(mac, TimeSpan.FromSeconds(10));
            return;
        }
        Learn(iface, mac);
        Log.VmLearned(_logger, mac, iface);
    }

    /// <summary>Declares a VM on an interface (configuration, change sets), as if learned.</summary>
    public void Pin(string iface, MacAddress mac)
    {
        if (_interfaces.Find(iface) is null)
            throw new DaemonCommandException($"no interface {iface}");
        if (_local.TryGet(mac, out var on) && on == iface)
            return;
        Learn(iface, mac);
    }

    /// <summary>Forgets a VM of an interface (change sets, a closed interface); its next frame makes it known again.</summary>
    public void Forget(string iface, MacAddress mac)
    {
        if (!_local.TryGet(mac, out var on) || on != iface)
            return;
        Unlearn(mac);
    }

    private void Learn(string iface, MacAddress mac)
    {
        var port = PortRef.Interface(iface);
        _rules.Edit(e =>
        {
            RemoveLocalVmRules(e, mac);
            e.Add(new Rule
            {
                Source = MacMatch.Any,
                Destination = MacMatch.Exact(mac),
                Action = RuleAction.To(port),
                Origin = RuleOrigin.System,
            });
            if (!IsProxy)
            {
                e.Add(new Rule
                {
                    Source = MacMatch.Exact(mac),
                    Destination = MacMatch.None,
                    Action = RuleAction.To(ProxyLink),
                    Origin = RuleOrigin.System,
                });
            }
        });
        _heldDown.Remove(mac);
        // The map first: the sources the switch knows are read from it.
        var delta = _local.Set(mac, iface);
        PublishSources();
        Gate.Forget(mac);
        OnLocalChanged(delta);
    }

    private void Unlearn(MacAddress mac)
    {
        _rules.Edit(e => RemoveLocalVmRules(e, mac));
        // The map first: a MAC left among the switch's known sources would never be learned again.
        var delta = _local.Remove(mac);
        PublishSources();
        OnLocalChanged(delta);
    }

    /// <summary>A local VM lives elsewhere now: forget it and ignore its late frames for a while.</summary>
    private void MovedAway(MacAddress mac, string home)
    {
        if (!_local.Entries.ContainsKey(mac))
            return;
        _heldDown[mac] = Stopwatch.GetTimestamp() + (long)(_options.MoveHoldDown.TotalSeconds * Stopwatch.Frequency);
        Gate.Quiet(mac, _options.MoveHoldDown);
        Unlearn(mac);
        Log.VmMovedAway(_logger, mac, home);
    }

    private void OnLocalChanged(MapDelta? delta)
    {
        if (delta is null)
            return;
        if (IsProxy)
            ApplyClaims(Name, delta.Changes);
        else
            SendLocalDelta(delta);
    }

    /// <summary>Removes the system rules that make <paramref name="mac"/> a VM of this daemon.</summary>
    private static void RemoveLocalVmRules(RuleBook.Editor e, MacAddress mac)
    {
        var exact = MacMatch.Exact(mac);
        e.RemoveWhere(mac, r => r.Origin == RuleOrigin.System && (
            (r.Destination == exact && !r.Action.IsFlood && r.Action.Port.Kind == PortKind.Interface) ||
            (r.Source == exact && r.Destination.Kind == MacMatchKind.None)));
    }

    /// <summary>Tells the switch which ports learn and which sources it already knows.</summary>
    private void PublishSources()
    {
        var ports = new List<int>();
        var named = new List<(int, string)>();
        var known = new List<MacAddress>(_local.Entries.Keys);
        foreach (var i in _interfaces.All)
        {
            if (i.OwnMac is { } own)
                known.Add(own);
            if (i.Learns && i.Port.Id >= 0)
            {
                ports.Add(i.Port.Id);
                named.Add((i.Port.Id, i.Name));
            }
        }
        Gate.SetLearningPorts(named);
        _switch.PublishSources(ports, known);
    }

    /// <summary>
    /// Whether a MAC belongs to a network device of this machine (a bridge, a veth): the host's own
    /// traffic (IGMP reports, ARP) is not a VM. /sys/class/net is read at most once a second.
    /// </summary>
    private bool IsLocalDevice(MacAddress mac)
    {
        if (_localDevices.Contains(mac))
            return true;
        if (Stopwatch.GetElapsedTime(_localDevicesRead) < TimeSpan.FromSeconds(1))
            return false;
        _localDevicesRead = Stopwatch.GetTimestamp();
        var devices = new HashSet<MacAddress>();
        try
        {
            foreach (var dir in System.IO.Directory.EnumerateDirectories("/sys/class/net"))
            {
                var text = File.ReadAllText(Path.Combine(dir, "address")).Trim();
                if (MacAddress.TryParse(text, out var m) && m != MacAddress.Zero)
                    devices.Add(m);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        _localDevices = devices;
        return devices.Contains(mac);
    }

    // ---------------------------------------------------------------- anti-entropy

    private void OnPeerUp(LinkPort port, LinkSession session)
    {
        if (IsProxy && port.Star)
            OnHostUp(port, session);
        else if (!IsProxy && port.Star && port.Peer == _config.ProxyName)
            OnProxyUp(session);
    }

    private void OnPeerDown(LinkPort port, LinkSession session, string reason)
    {
        if (IsProxy)
            _syncedHosts.Remove(session);
        else if (_syncedStar == session)
            _syncedStar = null;
    }

    private void OnAntiEntropyTick()
    {
        Gate.Purge();
        _digests.BeginTick(Stopwatch.GetTimestamp());
        if (IsProxy)
        {
            SendLocationDigests();
            CheckHostGaps();
        }
        else
        {
            SendLocalDigest();
            CheckLocationGap();
        }
    }

    /// <summary>
    /// A replica's gap: deltas held back for a missing predecessor at this tick and the one before
    /// (an interval at least). On a stream nothing overtakes, so the ones between were lost; the
    /// source's digest would show it only after its next change or heartbeat, so ask now.
    /// </summary>
    private static bool GapStayedOpen(MapReplica replica, ref int ticks)
    {
        ticks = replica.Buffered > 0 ? ticks + 1 : 0;
        if (ticks < 2)
            return false;
        ticks = 0;
        return true;
    }

    private void OnDigest(PeerEnvelope m)
    {
        switch (m.Message.Topic)
        {
            case MapTopic.Vms when IsProxy:
                CheckHostDigest(m);
                return;
            case MapTopic.Locations when !IsProxy:
                CheckLocationDigest(m);
                return;
        }
    }

    private void OnSync(PeerEnvelope m)
    {
        switch (m.Message.Topic)
        {
            case MapTopic.Vms when !IsProxy:
                LogSyncAsked(m);
                _peers.Send(m.Session, PeerMessage.ForSnapshot(PeerMessageType.Vms, _local.Snapshot()));
                _syncedStar = m.Session;
                return;
            case MapTopic.Locations when IsProxy:
                LogSyncAsked(m);
                SendLocations([m.Session], PeerMessage.ForSnapshot(PeerMessageType.Locations, _locations.Snapshot()));
                _syncedHosts.Add(m.Session);
                return;
        }
    }

    private void LogSyncAsked(PeerEnvelope m)
    {
        if (!_logger.IsEnabled(LogLevel.Information) || !_syncLog.TryAcquire("sync", out var suppressed))
            return;
        if (suppressed > 0)
            Log.SyncAskedSuppressed(_logger, suppressed);
        var peer = LogText.Safe(m.Peer);
        var reason = LogText.Safe(m.Message.Reason);
        Log.SyncAsked(_logger, peer, m.Message.Topic ?? MapTopic.Vms, reason);
    }

    /// <summary>Asks a source for a snapshot (at most once per anti-entropy interval per replica), counting the repair.</summary>
    private void RequestSnapshot(LinkSession session, string peer, MapTopic topic, RepairKind kind, ref long lastAsked)
    {
        var now = Stopwatch.GetTimestamp();
        if (lastAsked != 0 && Stopwatch.GetElapsedTime(lastAsked, now) < _options.AntiEntropyInterval)
            return;
        lastAsked = now;
        Interlocked.Increment(ref _repairs);
        _recentRepairs.Enqueue(new RepairRecord(DateTimeOffset.UtcNow, peer, topic, kind));
        while (_recentRepairs.Count > 32)
            _recentRepairs.Dequeue();
        Log.Repair(_logger, topic, peer, kind);
        _peers.Send(session, new PeerMessage { Type = PeerMessageType.Sync, Topic = topic, Reason = kind.ToString() });
    }

    private static ulong NewEpoch()
    {
        Span<byte> bytes = stackalloc byte[8];
        System.Security.Cryptography.RandomNumberGenerator.Fill(bytes);
        return System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(bytes);
    }
}
