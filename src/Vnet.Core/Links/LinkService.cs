using System.Net;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Engine;
using Vnet.Forwarding;

namespace Vnet.Links;

/// <summary>
/// The daemon's link commands and settings on the control loop: add, expect and remove links
/// (never a star link, never one a user rule still names), per-peer link emulation, and what a
/// link needs when its session comes up. The links themselves are the <see cref="LinkManager"/>'s.
/// </summary>
public sealed partial class LinkService
{
    private readonly DaemonConfig _config;
    private readonly LinkManager _links;
    private readonly RuleBook _rules;
    private readonly IPeerKeys _keys;
    private readonly ILogger _logger;
    private readonly Dictionary<string, LinkEmulation> _emulation = new(StringComparer.Ordinal);

    public LinkService(DaemonConfig config, LinkManager links, RuleBook rules, IPeerKeys keys, ILogger logger)
    {
        _config = config;
        _links = links;
        _rules = rules;
        _keys = keys;
        _logger = logger;
        foreach (var (peer, emulation) in config.Emulation)
            _emulation[peer] = emulation;
    }

    private bool IsProxy => _config.Role == DaemonRole.Proxy;

    /// <summary>Dials the configured links (the star first) at start.</summary>
    public void Start()
    {
        if (!IsProxy)
            _links.AddLink(_config.ProxyName, _config.ProxyTransport, star: true, _config.ProxyAddress, _config.ProxyStreams);
        foreach (var l in _config.Links)
            _links.AddLink(l.Peer, l.Transport, star: false, l.Address, l.Streams);
    }

    /// <summary>A session came up (control loop): the port may be new (the peer dialed in), and emulation applies to it.</summary>
    public void OnPeerUp(LinkPort port, LinkSession session)
    {
        port.Emulation = EmulationFor(port.Peer);
        _rules.Republish();
    }

    public IReadOnlyList<LinkStatus> List()
    {
        var list = new List<LinkStatus>();
        foreach (var p in _links.Links)
        {
            var s = p.Session;
            var c = p.Counters;
            var rtt = s?.SmoothedRttMicros is long r && r >= 0 ? r / 1000.0 : (double?)null;
            // Per stream only when the link has several: what each connection carried since it came up.
            long[]? streamTx = null, streamRx = null;
            if (p.Width > 1)
            {
                streamTx = new long[p.Width];
                streamRx = new long[p.Width];
                for (var i = 0; i < p.Width; i++)
                {
                    streamTx[i] = p.SessionOf(i)?.SentFrames ?? 0;
                    streamRx[i] = p.SessionOf(i)?.ReceivedFrames ?? 0;
                }
            }
            list.Add(new LinkStatus(p.Peer, p.Emulation?.ToString(), s?.Transport ?? p.Transport, p.Star, p.DialAddress?.ToString(),
                p.IsUp, s?.RemoteEndPoint, s?.Started, rtt, c.TxFrames, c.TxBytes, c.RxFrames, c.RxBytes, c.TxDrops, c.RxErrors,
                s?.QueuedFrames ?? 0, p.SessionsStarted, p.LastDownReason.Length == 0 ? null : p.LastDownReason, p.Origin,
                s?.RefusedMessages, s?.Rekeys, s?.DatagramEndPoint, s?.DatagramRoams, p.Width, p.StreamsUp, streamTx, streamRx, p.StreamSessionsStarted));
        }
        list.Sort(static (a, b) => string.CompareOrdinal(a.Peer, b.Peer));
        return list;
    }

    /// <summary>Adds a link this daemon dials; refused when the peer is this daemon or the link exists.</summary>
    public void Add(string peer, IPEndPoint address, LinkTransport transport, RuleOrigin origin = RuleOrigin.User, int streams = 1)
    {
        if (streams is < 1 or > LinkPort.MaxStreams)
            throw new DaemonCommandException($"streams {streams} is out of range (1..{LinkPort.MaxStreams})");
        if (!Names.IsValid(peer))
            throw new DaemonCommandException($"'{peer}' is not a valid daemon name");
        if (peer == _config.Name)
            throw new DaemonCommandException("a daemon cannot link to itself");
        if (_links.Find(peer) is not null)
            throw new DaemonCommandException($"link {peer} already exists");
        if (DialRefusal(peer) is { } why)
            throw new DaemonCommandException(why);
        Dial(peer, address, transport, origin, streams);
    }

    /// <summary>Puts back a link a change set removed, when the set is undone: what was there before comes back as it was.</summary>
    public void Restore(string peer, IPEndPoint address, LinkTransport transport, RuleOrigin origin, int streams = 1)
    {
        if (_links.Find(peer) is null)
            Dial(peer, address, transport, origin, streams);
    }

    private void Dial(string peer, IPEndPoint address, LinkTransport transport, RuleOrigin origin, int streams = 1)
    {
        var port = _links.AddLink(peer, transport, star: !IsProxy && peer == _config.ProxyName, address, streams);
        port.Origin = origin;
        _rules.Republish();
        Log.LinkAdded(_logger, peer, address, transport);
    }

    /// <summary>
    /// Why this daemon could never complete a link it dials to <paramref name="peer"/>, or null: a
    /// dialer without the peer's key never sends an INIT, and a Proxy's INIT is refused by every
    /// host. Such a link would only retry for ever; it is refused up front, as a change set is.
    /// </summary>
    public string? DialRefusal(string peer)
    {
        if (IsProxy)
            return $"the Proxy dials no daemon (hosts refuse it): add the link at {peer}, dialing the Proxy";
        if (_keys.KeyOf(peer) is null)
            return $"no public key is known for {peer}: hosts learn each other's keys from the Proxy over the star, so {peer} must be admitted there ('vnet host admit {peer} KEY') and the star up; or pin it in this daemon's configuration ([[link]] public_key)";
        return null;
    }

    /// <summary>A port for a link the peer dials; rules may name it before the peer arrives.</summary>
    public void Expect(string peer, LinkTransport transport, RuleOrigin origin = RuleOrigin.User)
    {
        if (_links.Find(peer) is not null)
            return;
        _links.AddLink(peer, transport, star: false, dial: null).Origin = origin;
        _rules.Republish();
    }

    /// <summary>
    /// Removes a link; refused for the star, for a link the peer dials while it is up, and while user
    /// or adaptation rules still name it.
    /// </summary>
    public void Remove(string peer)
    {
        if (_links.Find(peer) is not { } port)
            throw new DaemonCommandException($"no link {peer}");
        if (port.Star)
            throw new DaemonCommandException(StarLinkRefusal(peer));
        // The peer dials it and dials again at once: removing this end would answer "removed" and
        // change nothing. A link the peer dials that is down (an expectation) may go.
        if (port.DialAddress is null && port.IsUp)
            throw new DaemonCommandException($"{peer} dials the link to {_config.Name} and would dial it again at once: remove it at {peer} ('vnet link del {_config.Name} --at {peer}')");
        if (_rules.UsersOf(PortRef.Link(peer)) is { Count: > 0 } users)
            throw new DaemonCommandException($"link {peer} is used by rule(s) {string.Join(", ", users)}; remove them first");
        RemoveForce(peer);
    }

    /// <summary>Removes a link and every non-user rule that uses it (user rules were checked by the caller).</summary>
    public void RemoveForce(string peer)
    {
        var port = PortRef.Link(peer);
        _rules.Edit(e => e.RemoveWhere(r => r.Origin != RuleOrigin.User && r.Uses(port)));
        _links.RemoveLink(peer);
        _rules.Republish();
        Log.LinkRemoved(_logger, peer);
    }

    /// <summary>
    /// Why a star link cannot be removed: at a host it is the host's own configuration, and at the
    /// Proxy it is the host's (removing it would only cut the host off until it re-dials).
    /// </summary>
    public string StarLinkRefusal(string peer) => IsProxy
        ? $"the star link to {peer} is part of {peer}'s configuration"
        : $"the star link to {peer} is part of {_config.Name}'s configuration";

    /// <summary>The emulation for links to a peer: its own entry, else the <c>*</c> entry, else none.</summary>
    private LinkEmulation? EmulationFor(string peer) =>
        _emulation.TryGetValue(peer, out var e) ? e : _emulation.GetValueOrDefault("*");

    /// <summary>Sets (or with "none" clears) the emulation of links to a peer, or of every link ("*").</summary>
    public string SetEmulation(string peer, string settings)
    {
        if (peer != "*" && !Names.IsValid(peer))
            throw new DaemonCommandException($"'{peer}' is not a daemon name or *");
        LinkEmulation emulation;
        try
        {
            emulation = LinkEmulation.Parse(settings);
        }
        catch (FormatException e)
        {
            throw new DaemonCommandException(e.Message);
        }
        _emulation[peer] = emulation;
        foreach (var port in _links.Links)
            port.Emulation = EmulationFor(port.Peer);
        var text = emulation.ToString();
        Log.EmulationSet(_logger, peer, text);
        return text;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 40, Level = LogLevel.Information, Message = "Link {Peer} added ({Address}, {Transport})")]
        public static partial void LinkAdded(ILogger logger, string peer, IPEndPoint address, LinkTransport transport);

        [LoggerMessage(EventId = 41, Level = LogLevel.Information, Message = "Link {Peer} removed")]
        public static partial void LinkRemoved(ILogger logger, string peer);

        [LoggerMessage(EventId = 44, Level = LogLevel.Information, Message = "Links to {Peer} now emulate {Emulation}")]
        public static partial void EmulationSet(ILogger logger, string peer, string emulation);
    }
}
