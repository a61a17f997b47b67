using System.Runtime.CompilerServices;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Engine;

/// <summary>
/// The forwarding core of a daemon.
/// <code>
/// Flow of one frame (Forward):
///  1. A port's reader (TAP, pcap, link receiver) fills a pooled Frame and calls Forward on its own thread.
///  2. Source and destination MAC are read from the first 12 bytes; malformed frames are dropped.
///  3. A frame from a learning port (a VM-facing interface) with a source MAC not yet known there
///     reports a new VM first, so its rules exist before the lookup.
///  4. The current ForwardingTable version (immutable, swapped atomically) is looked up: the strongest
///     matching rules win, ties all apply. No match: the miss handler may change the rules and the
///     lookup runs once more; otherwise the frame is dropped and counted.
///  5. Each winning rule counts a hit; its action adds a port, or for flood the flooding tree's ports.
///     The arrival port is never a target (split horizon); duplicates are removed.
///  6. The frame is handed to each target port with one reference each (Port.Transmit never blocks).
/// </code>
/// Nothing here allocates, locks or logs per frame.
/// </summary>
public sealed class VirtualSwitch
{
    private const int MaxTargets = 256;

    private readonly Lock _portsLock = new();
    private readonly long[] _drops = new long[Enum.GetValues<DropReason>().Length];
    private readonly long[] _offloadFaults = new long[Enum.GetValues<OffloadFault>().Length];
    private Port?[] _ports = [];
    private PortNames _names = PortNames.Empty;
    // Ids of removed ports that a published table may still name (id → the removal's number); a new
    // port gets none of them until a table compiled after that removal is live (PublishRules).
    private readonly Dictionary<int, long> _retired = [];
    private long _removals;
    private int[] _treePorts = [];
    private int[] _interfacePorts = [];
    private ForwardingTable _table = ForwardingTable.Empty;
    private SourceFilter? _sources;
    private long _forwarded;

    /// <summary>
    /// Called when no rule matches; returns true when it changed the table (for example it learned a
    /// new VM's MAC) so that the lookup should run once more. Runs on the data-path thread.
    /// </summary>
    public Func<Frame, MacAddress, MacAddress, bool>? MissHandler { get; set; }

    /// <summary>
    /// Called for a frame from a learning port whose source MAC is not among the known sources (a VM
    /// appeared). Runs on the data-path thread before the lookup, so rules it installs apply to this
    /// frame already.
    /// </summary>
    public Action<Frame, MacAddress>? NewSourceHandler { get; set; }

    /// <summary>Observes every frame forwarded from a local interface (source, destination, bytes): the traffic matrix hooks in here.</summary>
    public ITrafficObserver? Observer { get; set; }

    /// <summary>Learns the IPv4 address of each MAC from ARP and DHCPACK frames (only those are looked at).</summary>
    public Vms.AddressBook? Addresses { get; set; }

    public ForwardingTable Table => Volatile.Read(ref _table);

    public long ForwardedFrames => Volatile.Read(ref _forwarded);

    public long Dropped(DropReason reason) => Volatile.Read(ref _drops[(int)reason]);

    /// <summary>
    /// The daemon's hop limit (<c>hop_limit</c>): a frame from a link keeps at most this many hops,
    /// whatever its sender wrote, so a peer cannot make frames circle longer than the daemon allows.
    /// </summary>
    public byte HopLimit { get; init; } = 8;

    /// <summary>Frames from links dropped as <see cref="DropReason.BadOffload"/>, by the check they failed (zero for <see cref="OffloadFault.None"/>).</summary>
    public long OffloadFaults(OffloadFault fault) => Volatile.Read(ref _offloadFaults[(int)fault]);

    public IReadOnlyList<Port> Ports
    {
        get
        {
            var ports = Volatile.Read(ref _ports);
            var list = new List<Port>(ports.Length);
            foreach (var p in ports)
            {
                if (p is not null)
                    list.Add(p);
            }
            return list;
        }
    }

    /// <summary>
    /// Publishes which ports learn sources and which source MACs are already known there; a frame
    /// from such a port with an unknown source goes to <see cref="NewSourceHandler"/> first.
    /// </summary>
    public void PublishSources(IReadOnlyCollection<int> learningPorts, IEnumerable<MacAddress> known)
    {
        var ports = PortFlags(learningPorts);
        var set = new HashSet<ulong>();
        foreach (var mac in known)
            set.Add(mac.Value);
        Volatile.Write(ref _sources, new SourceFilter(ports, set));
    }

    private sealed record SourceFilter(bool[] Ports, HashSet<ulong> Known);

    // By port id: the Proxy's LAN interfaces, the only ports whose DHCPACKs teach addresses.
    private bool[] _lanPorts = [];

    /// <summary>Publishes which ports are the user's LAN (<see cref="Addresses"/> trusts DHCP answers from them only).</summary>
    public void PublishLanPorts(IReadOnlyCollection<int> lanPorts) => Volatile.Write(ref _lanPorts, PortFlags(lanPorts));

    /// <summary>A flag per port id, true for the given ids (a port not yet added, id -1, has none).</summary>
    private static bool[] PortFlags(IReadOnlyCollection<int> ids)
    {
        var max = 0;
        foreach (var p in ids)
            max = Math.Max(max, p + 1);
        var flags = new bool[max];
        foreach (var p in ids)
        {
            if (p >= 0)
                flags[p] = true;
        }
        return flags;
    }

    /// <summary>
    /// Publishes a table built elsewhere (tests, benchmarks); readers switch to it on their next
    /// frame. Ids of removed ports stay retired: the switch cannot tell which ports it was built against.
    /// </summary>
    public void Publish(ForwardingTable table) => Volatile.Write(ref _table, table);

    /// <summary>
    /// Compiles <paramref name="rules"/> against the current ports and publishes the table; readers
    /// switch to it on their next frame. The ports removed before the compile are no longer named
    /// by the live table, so their ids may now go to new ports.
    /// </summary>
    public void PublishRules(IEnumerable<Rule> rules, Func<long, RuleStats> statsOf)
    {
        var names = Volatile.Read(ref _names);
        Volatile.Write(ref _table, new ForwardingTable(rules, names.Resolve, statsOf));
        lock (_portsLock)
        {
            foreach (var (id, removal) in _retired)
            {
                if (removal <= names.Removals)
                    _retired.Remove(id);
            }
        }
    }

    /// <summary>The id of the port <paramref name="name"/>, or -1: one hash probe, for every rule a table compiles.</summary>
    public int ResolvePort(PortRef name) => Volatile.Read(ref _names).Resolve(name);

    public Port? FindPort(PortRef name) => Volatile.Read(ref _names).Find(name);

    /// <summary>Adds a port and gives it the lowest free id that no published table names. The caller republishes the table.</summary>
    public void AddPort(Port port)
    {
        lock (_portsLock)
        {
            if (FindPort(port.Name) is not null)
                throw new InvalidOperationException($"port {port.Name} already exists");
            var ports = _ports;
            var id = FreeId(ports);
            if (id < 0)
            {
                id = ports.Length;
                if (id >= MaxTargets)
                    throw new InvalidOperationException($"a daemon has at most {MaxTargets} ports");
                Array.Resize(ref ports, ports.Length + 1);
            }
            else
            {
                ports = (Port?[])ports.Clone();
            }
            port.Id = id;
            ports[id] = port;
            PublishPorts(ports);
        }
    }

    private int FreeId(Port?[] ports)
    {
        for (var id = 0; id < ports.Length; id++)
        {
            if (ports[id] is null && !_retired.ContainsKey(id))
                return id;
        }
        return -1;
    }

    public void RemovePort(Port port)
    {
        lock (_portsLock)
        {
            var ports = (Port?[])_ports.Clone();
            if (port.Id < 0 || port.Id >= ports.Length || !ReferenceEquals(ports[port.Id], port))
                return;
            ports[port.Id] = null;
            // Rules may still name the port in the live table (the owner republishes at the end of
            // its turn): its id must not send their frames to a port added before that.
            _retired[port.Id] = ++_removals;
            PublishPorts(ports);
        }
    }

    /// <summary>Recomputes the flooding tree after a port changed its tree membership.</summary>
    public void RefreshFloodTree()
    {
        lock (_portsLock)
            PublishPorts(_ports);
    }

    private void PublishPorts(Port?[] ports)
    {
        var tree = new List<int>();
        var interfaces = new List<int>();
        foreach (var p in ports)
        {
            if (p is null)
                continue;
            if (p.InFloodTree)
                tree.Add(p.Id);
            if (p.Name.Kind == PortKind.Interface)
                interfaces.Add(p.Id);
        }
        Volatile.Write(ref _treePorts, [.. tree]);
        Volatile.Write(ref _interfacePorts, [.. interfaces]);
        Volatile.Write(ref _names, new PortNames(ports, _removals));
        Volatile.Write(ref _ports, ports);
    }

    /// <summary>
    /// The ports by name, built from one version of the port array and swapped with it, so that
    /// compiling a table costs one probe per rule rather than a scan of the ports; with the number
    /// of removals it reflects, which says which retired ids a table compiled against it releases.
    /// </summary>
    private sealed class PortNames
    {
        public static readonly PortNames Empty = new([], 0);

        private readonly Dictionary<PortRef, Port> _byName;

        public PortNames(Port?[] ports, long removals)
        {
            _byName = new Dictionary<PortRef, Port>(ports.Length);
            foreach (var p in ports)
            {
                if (p is not null)
                    _byName[p.Name] = p;
            }
            Removals = removals;
        }

        public long Removals { get; }

        public Port? Find(PortRef name) => _byName.GetValueOrDefault(name);

        public int Resolve(PortRef name) => _byName.TryGetValue(name, out var p) ? p.Id : -1;
    }

    /// <summary>Forwards one frame, taking over the caller's reference to it.</summary>
    [SkipLocalsInit]
    public void Forward(Frame frame)
    {
        if (frame.Length < 14)
        {
            Drop(frame, DropReason.Malformed);
            return;
        }
        var head = frame.Buffer.AsSpan(frame.Offset, 12);
        var dst = MacAddress.Read(head);
        var src = MacAddress.Read(head.Slice(6));
        if (src.IsGroup)
        {
            Drop(frame, DropReason.Malformed);
            return;
        }

        var ingress = frame.IngressPort;
        if (Addresses is { } addresses && Vms.AddressBook.IsCandidate(frame.Data))
        {
            var lan = Volatile.Read(ref _lanPorts);
            addresses.Observe(frame.Data, fromLan: (uint)ingress < (uint)lan.Length && lan[ingress]);
        }

        var sources = Volatile.Read(ref _sources);
        if (sources is not null && (uint)ingress < (uint)sources.Ports.Length && sources.Ports[ingress] &&
            !sources.Known.Contains(src.Value))
        {
            NewSourceHandler?.Invoke(frame, src);
        }
        // The ports before the table: a port that took a removed port's id is only added once a
        // table that no longer names the removed one is live, so these ports never pair a new port
        // with an older table's rules for its id.
        var ports = Volatile.Read(ref _ports);
        var result = Volatile.Read(ref _table).Lookup(src, dst, ingress);
        if (result.IsEmpty)
        {
            var miss = MissHandler;
            if (miss is null || !miss(frame, src, dst))
            {
                Drop(frame, DropReason.NoMatch);
                return;
            }
            result = Volatile.Read(ref _table).Lookup(src, dst, ingress);
            if (result.IsEmpty)
            {
                Drop(frame, DropReason.NoMatch);
                return;
            }
        }

        Span<int> targets = stackalloc int[MaxTargets];
        var count = 0;
        var ingressInTree = true;
        var fromInterface = false;
        if (ingress >= 0 && ingress < ports.Length && ports[ingress] is { } arrival)
        {
            ingressInTree = arrival.InFloodTree;
            fromInterface = arrival.IsInterface;
        }

        var n = result.Count;
        for (var i = 0; i < n; i++)
        {
            var rule = result[i];
            rule.Stats.Hit(frame.Length);
            if (rule.IsFlood)
            {
                // Off-tree arrivals (direct links) are flooded to local interfaces only: the frame
                // already travelled the tree on its way to the sender of that link.
                var flood = ingressInTree ? Volatile.Read(ref _treePorts) : Volatile.Read(ref _interfacePorts);
                foreach (var id in flood)
                    count = AddTarget(targets, count, id, ingress, ports);
            }
            else if (rule.ActionPort >= 0)
            {
                count = AddTarget(targets, count, rule.ActionPort, ingress, ports);
            }
        }

        if (count == 0)
        {
            Drop(frame, DropReason.NoRoute);
            return;
        }

        // Only frames that leave are observed: the traffic matrix must not count what was dropped.
        // Only frames that enter here from a local interface: each VM's traffic is counted once, at
        // the daemon that hosts it, not again at every daemon it crosses.
        if (fromInterface)
            Observer?.Record(src, dst, frame.Length);
        Interlocked.Increment(ref _forwarded);
        for (var i = 0; i < count; i++)
        {
            if (i < count - 1)
                frame.AddReference();
            ports[targets[i]]!.Transmit(frame);
        }
    }

    /// <summary>
    /// Forwards a frame that a peer sent over a link, taking over the caller's reference. Its offload
    /// header and hop limit came off the wire: the header is checked (and <c>DATA_VALID</c> stripped)
    /// before anything acts on it, a bad one drops the frame (counted, never logged: a peer could
    /// send millions), and the hop limit is clamped to <see cref="HopLimit"/>.
    /// </summary>
    public void ForwardFromLink(Frame frame, byte hopLimit)
    {
        // Any field set, not only flags or a GSO type: a kernel reads the rest of a header too.
        if (frame.Offload != VirtioNetHeader.None)
        {
            var fault = OffloadCheck.FromPeer(ref frame.Offload, frame.Data);
            if (fault != OffloadFault.None)
            {
                Interlocked.Increment(ref _offloadFaults[(int)fault]);
                Drop(frame, DropReason.BadOffload);
                return;
            }
        }
        var limit = HopLimit;
        frame.HopLimit = hopLimit < limit ? hopLimit : limit;
        Forward(frame);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int AddTarget(Span<int> targets, int count, int id, int ingress, Port?[] ports)
    {
        // A table or flood list compiled before a port was removed may still name it; such a target
        // is skipped here so that a frame with no live target is counted as NoRoute, not as sent.
        if (id == ingress || (uint)id >= (uint)ports.Length || ports[id] is null)
            return count;
        for (var i = 0; i < count; i++)
        {
            if (targets[i] == id)
                return count;
        }
        targets[count] = id;
        return count + 1;
    }

    /// <summary>Counts and releases a frame that goes nowhere.</summary>
    public void Drop(Frame frame, DropReason reason)
    {
        Interlocked.Increment(ref _drops[(int)reason]);
        frame.Release();
    }

    /// <summary>Counts a frame that could not even be read into a buffer.</summary>
    public void CountDrop(DropReason reason) => Interlocked.Increment(ref _drops[(int)reason]);
}

/// <summary>Sees every frame forwarded from a local interface; must not block or allocate.</summary>
public interface ITrafficObserver
{
    void Record(MacAddress source, MacAddress destination, int bytes);
}
