using System.Net;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Links;

/// <summary>
/// A link to one peer daemon as a switch port. The port outlives its sessions: rules that name it
/// stay valid while the link is down (frames to it are dropped and counted) and work again as soon
/// as the dialer or the peer brings up a new session.
/// </summary>
public sealed class LinkPort : Port
{
    private LinkSession? _session;
    private long _sessionsStarted;
    private string _lastDownReason = "";

    public LinkPort(string peer, LinkTransport transport, bool star, IPEndPoint? dial)
        : base(PortRef.Link(peer))
    {
        Peer = peer;
        Transport = transport;
        Star = star;
        DialAddress = dial;
    }

    public string Peer { get; }

    public LinkTransport Transport { get; }

    /// <summary>A link of the resilient star (host to Proxy): part of the flooding tree.</summary>
    public bool Star { get; }

    /// <summary>Where this daemon dials the peer; null for links the peer dials.</summary>
    public IPEndPoint? DialAddress { get; }

    public LinkSession? Session => Volatile.Read(ref _session);

    public override bool IsUp => Session is { IsClosed: false };

    public override bool InFloodTree => Star;

    public long SessionsStarted => Interlocked.Read(ref _sessionsStarted);

    /// <summary>Who made the link: configuration and users, or adaptation (which may remove it again).</summary>
    public Forwarding.RuleOrigin Origin { get; set; } = Forwarding.RuleOrigin.User;

    /// <summary>Delay, loss and rate imposed on what this daemon sends over the link; null: none.</summary>
    public LinkEmulation? Emulation
    {
        get => Volatile.Read(ref _emulation);
        set => Volatile.Write(ref _emulation, value is null || value.IsNone ? null : value);
    }

    private LinkEmulation? _emulation;

    public string LastDownReason => _lastDownReason;

    /// <summary>Makes <paramref name="session"/> current; returns the one it replaces.</summary>
    internal LinkSession? Attach(LinkSession session)
    {
        Interlocked.Increment(ref _sessionsStarted);
        return Interlocked.Exchange(ref _session, session);
    }

    /// <summary>Clears the current session if it is <paramref name="session"/>.</summary>
    internal bool Detach(LinkSession session, string reason)
    {
        if (Interlocked.CompareExchange(ref _session, null, session) != session)
            return false;
        _lastDownReason = reason;
        return true;
    }

    public override void Transmit(Frame frame)
    {
        var session = Volatile.Read(ref _session);
        if (session is null || frame.HopLimit == 0 || !session.Enqueue(frame))
        {
            Counters.CountTxDrop();
            frame.Release();
        }
    }
}
