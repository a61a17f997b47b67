using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Daemon;

/// <summary>A daemon as <c>vnet status</c> shows it.</summary>
public sealed record DaemonStatus(
    string Name,
    DaemonRole Role,
    string Listen,
    string Version,
    double UptimeSeconds,
    long ForwardedFrames,
    IReadOnlyDictionary<string, long> Drops,
    int Rules,
    int Links,
    int LinksUp,
    int Interfaces,
    int LocalVms,
    int KnownVms,
    int BuffersCreated,
    int BuffersInPool,
    long UdpRejected,
    long AllocatedBytes,
    int Gen0Collections,
    long DirectoryRepairs = 0,
    long BadPeerMessages = 0,
    long LearnRefused = 0,
    long PeerBytesSent = 0,
    long PeerBytesReceived = 0,
    double ControlLoopBusySeconds = 0,
    long PeersCutForFlooding = 0,
    long PeerRequestsRefused = 0,
    long ToolSessionsRefused = 0,
    IReadOnlyDictionary<string, long>? OffloadFaults = null,
    long ControlLoopPending = 0,
    LinkSecurityStatus? Security = null);

/// <summary>
/// What the link layer refused, for <c>vnet status</c>: handshakes (as WireGuard counts handshake
/// failures) and sealed messages that did not authenticate, with the key steps (rekeys) and the
/// datagrams that made the UDP receiver fault. Per-session counters are summed over the current
/// sessions (a session's counts go with it); <c>vnet link list</c> has them per link. Of the
/// handshakes refused, InitsRefused were refused before any Diffie-Hellman (bad mac1, malformed)
/// and ConnectionsWithoutInit were closed without an INIT (late, or crowded out).
/// </summary>
public sealed record LinkSecurityStatus(
    long HandshakesRefused,
    long HandshakesRateLimited,
    long AuthenticationFailures,
    long Rekeys,
    long UdpReceiveFaults,
    long InitsRefused = 0,
    long ConnectionsWithoutInit = 0);

public sealed record LinkStatus(
    string Peer,
    string? Emulation,
    LinkTransport Transport,
    bool Star,
    string? Dial,
    bool Up,
    string? Remote,
    DateTimeOffset? Since,
    double? RttMs,
    long TxFrames,
    long TxBytes,
    long RxFrames,
    long RxBytes,
    long TxDrops,
    long RxErrors,
    int Queued,
    long Sessions,
    string? LastDownReason,
    RuleOrigin Origin = RuleOrigin.User,
    long? AuthenticationFailures = null,
    long? Rekeys = null,
    string? DatagramRemote = null,
    long? Roams = null,
    int Streams = 1,
    int StreamsUp = 0,
    IReadOnlyList<long>? StreamTxFrames = null,
    IReadOnlyList<long>? StreamRxFrames = null,
    long StreamSessions = 0);

public sealed record InterfaceStatus(
    string Name,
    InterfaceKind Kind,
    int Mtu,
    bool Up,
    OffloadSet Offloads,
    bool Lan,
    bool Learn,
    int Vms,
    long TxFrames,
    long TxBytes,
    long RxFrames,
    long RxBytes,
    long TxDrops,
    long RxErrors,
    int Queues = 1,
    IReadOnlyList<long>? QueueRxFrames = null,
    bool Waiting = false);

/// <summary>
/// A VM as <c>vm.list</c> shows it: where it lives (<see cref="Daemon"/>, also as <see cref="Site"/>),
/// the IPv4 address its ARP and DHCP frames showed (or null), and, for a VM ordered through the
/// Proxy, its name, size, kind and state (null for a VM the overlay only learned).
/// </summary>
public sealed record VmStatus(
    MacAddress Mac,
    string Daemon,
    string? Interface,
    bool Local,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.Never)] string? Address = null,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.Never)] string? Name = null,
    string? Size = null,
    string? Kind = null,
    string? State = null)
{
    /// <summary>The site (host daemon) the VM is on: the same as <see cref="Daemon"/>, under the name the web front uses.</summary>
    public string Site => Daemon;
}

/// <summary>A rule as tools show it, with its hit counters.</summary>
public sealed record RuleStatus(
    long Id,
    MacMatch Source,
    MacMatch Destination,
    PortRef? Ingress,
    RuleAction Action,
    RuleOrigin Origin,
    int Priority,
    long Frames,
    long Bytes)
{
    public Rule ToRule() => new()
    {
        Id = Id,
        Source = Source,
        Destination = Destination,
        Ingress = Ingress,
        Action = Action,
        Origin = Origin,
    };

    public static RuleStatus Of(Rule r, RuleStats s) =>
        new(r.Id, r.Source, r.Destination, r.Ingress, r.Action, r.Origin, r.Priority, s.Frames, s.Bytes);
}

/// <summary>A command the daemon refused, with the reason shown to the user.</summary>
public sealed class DaemonCommandException : Exception
{
    public DaemonCommandException()
    {
    }

    public DaemonCommandException(string message)
        : base(message)
    {
    }

    public DaemonCommandException(string message, Exception inner)
        : base(message, inner)
    {
    }

    /// <summary>
    /// The command was sent to another daemon but no answer came (it went away, or did not answer
    /// in time): unlike a refusal, it may have been done there all the same.
    /// </summary>
    public bool OutcomeUnknown { get; init; }
}

/// <summary>
/// Everything a daemon is, for dumps, diffs and traces: what the Proxy gathers from each daemon.
/// <see cref="Version"/> is a digest of what change sets change (interfaces, links, user and
/// adaptation rules): a change set sent with it is refused if the daemon changed in between.
/// </summary>
public sealed record DaemonState(
    string Name,
    DaemonRole Role,
    string? Listen,
    IReadOnlyList<InterfaceState> Interfaces,
    IReadOnlyList<LinkState> Links,
    IReadOnlyList<RuleStatus> Rules,
    string Version = "")
{
    /// <summary>
    /// What a state received from another daemon lacks, or null when it is whole. JSON null (or a
    /// missing field) gets past the record's shape, and the Proxy's dump, diff and trace read every
    /// list, entry and name.
    /// </summary>
    public string? Malformation()
    {
        if (!Names.IsValid(Name))
            return "no valid daemon name";
        if (Interfaces is null || Links is null || Rules is null || Version is null)
            return "interfaces, links, rules or version missing";
        foreach (var i in Interfaces)
        {
            if (i is null || !Names.IsValid(i.Name) || i.Vms is null)
                return "an interface without a valid name or VM list";
        }
        foreach (var l in Links)
        {
            if (l is null || !Names.IsValid(l.Peer))
                return "a link without a valid peer name";
        }
        foreach (var r in Rules)
        {
            if (r is null || r.Ingress is { Name: null } || (!r.Action.IsFlood && r.Action.Port.Name is null))
                return "a rule without its ports";
        }
        return null;
    }
}

/// <summary>
/// An interface as its daemon has it. <paramref name="OrderedVm"/> names the ordered VM whose
/// interface it is (<c>vm-NAME</c>, made and closed by <c>vnet vm</c>), null for the user's: such an
/// interface belongs to the VM, not to a description, so dumps leave it out and apply never touches it.
/// </summary>
public sealed record InterfaceState(string Name, InterfaceKind Kind, int Mtu, string? Bridge, bool Lan, IReadOnlyList<MacAddress> Vms,
    string? OrderedVm = null);

/// <summary>A link as this daemon has it: <c>Dial</c> is where it dials the peer, null when the peer dials in.</summary>
public sealed record LinkState(string Peer, LinkTransport Transport, bool Star, string? Dial, bool Up, string? Remote, RuleOrigin Origin = RuleOrigin.User,
    int Streams = 1);

/// <summary>The Proxy's smoothed global matrix, for <c>vnet vttif matrix</c>.</summary>
public sealed record VttifMatrix(double PeriodSeconds, double TimeConstantSeconds, IReadOnlyList<MatrixCell> Cells);

public sealed record MatrixCell(MacAddress Src, MacAddress Dst, double BytesPerSecond, string? SrcDaemon, string? DstDaemon);

/// <summary>The inferred application topology, and the overlay that would serve it, as a description.</summary>
public sealed record VttifTopology(DateTimeOffset Since, IReadOnlyList<TopologyEdge> Edges, string Description);

public sealed record TopologyEdge(MacAddress A, MacAddress B, double BytesPerSecond, double Normalized);

/// <summary>One change of the inferred topology.</summary>
public sealed record VttifEvent(long Id, DateTimeOffset At, IReadOnlyList<string> Added, IReadOnlyList<string> Removed, IReadOnlyList<TopologyEdge> Edges);
