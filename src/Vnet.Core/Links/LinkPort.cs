using System.Net;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Links;

/// <summary>
/// A link to one peer daemon as a switch port. The port outlives its sessions: rules that name it
/// stay valid while the link is down (frames to it are dropped and counted) and work again as soon
/// as the dialer or the peer brings up a new session.
/// <code>
/// Streams (a link with streams = N, TCP or UDP): up to N sessions at once, each its own connection,
/// handshake, keys and threads, in slots 0..N-1. Slot 0 is the link's session as it always was:
/// control messages, up and down events and IsUp follow it. Transmit picks a slot by the frame's
/// flow (FlowHash) over the slots this link has used (its own N, or more when the peer dialed more),
/// so a flow keeps one connection and its order; a flow whose slot is down goes to the first slot
/// that is up, from 0, and back to its own once that is up again. With one slot (the default)
/// Transmit is the single-session path it always was.
/// </code>
/// </summary>
public sealed class LinkPort : Port
{
    /// <summary>Most parallel connections of one link.</summary>
    public const int MaxStreams = Security.InitiatorHello.MaxStream + 1;

    private readonly LinkSession?[] _sessions = new LinkSession?[MaxStreams];
    // Slots Transmit hashes over: the configured streams, raised to the highest slot ever attached + 1.
    private int _width;
    private long _sessionsStarted;
    private long _streamSessionsStarted;
    private string _lastDownReason = "";

    public LinkPort(string peer, LinkTransport transport, bool star, IPEndPoint? dial, int streams = 1)
        : base(PortRef.Link(peer))
    {
        if (streams is < 1 or > MaxStreams)
            throw new ArgumentOutOfRangeException(nameof(streams), streams, $"streams must be 1 to {MaxStreams}");
        Peer = peer;
        Transport = transport;
        Star = star;
        DialAddress = dial;
        Streams = streams;
        _width = streams;
    }

    /// <summary>Parallel connections this daemon dials (1: one, as links always had).</summary>
    public int Streams { get; }

    /// <summary>Slots frames are spread over: <see cref="Streams"/>, or more once the peer dialed more.</summary>
    public int Width => Volatile.Read(ref _width);

    /// <summary>The session in slot <paramref name="stream"/>, or null.</summary>
    public LinkSession? SessionOf(int stream) => Volatile.Read(ref _sessions[stream]);

    /// <summary>Sessions up now, over every slot.</summary>
    public int StreamsUp
    {
        get
        {
            var up = 0;
            for (var i = 0; i < MaxStreams; i++)
            {
                if (Volatile.Read(ref _sessions[i]) is { IsClosed: false })
                    up++;
            }
            return up;
        }
    }

    public string Peer { get; }

    public LinkTransport Transport { get; }

    /// <summary>A link of the resilient star (host to Proxy): part of the flooding tree.</summary>
    public bool Star { get; }

    /// <summary>Where this daemon dials the peer; null for links the peer dials.</summary>
    public IPEndPoint? DialAddress { get; }

    /// <summary>The link's session (slot 0): control messages, and every frame of a link with one stream.</summary>
    public LinkSession? Session => Volatile.Read(ref _sessions[0]);

    public override bool IsUp => Session is { IsClosed: false };

    public override bool InFloodTree => Star;

    /// <summary>Sessions of slot 0 attached since the port was made (the link's sessions).</summary>
    public long SessionsStarted => Interlocked.Read(ref _sessionsStarted);

    /// <summary>Sessions attached in any slot (every stream's connections, as they came and went).</summary>
    public long StreamSessionsStarted => Interlocked.Read(ref _streamSessionsStarted);

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

    /// <summary>The timestamp of this link's latest INIT (its dialer only): a link with streams keeps them growing.</summary>
    internal ulong LastInitTimestamp { get; set; }

    /// <summary>Makes <paramref name="session"/> current in its slot; returns the one it replaces.</summary>
    internal LinkSession? Attach(LinkSession session)
    {
        var slot = session.Stream;
        if (slot == 0)
            Interlocked.Increment(ref _sessionsStarted);
        Interlocked.Increment(ref _streamSessionsStarted);
        // Wider first: a frame hashed before the session is in its slot falls back to slot 0.
        for (var width = Volatile.Read(ref _width); width <= slot; width = Volatile.Read(ref _width))
            Interlocked.CompareExchange(ref _width, slot + 1, width);
        return Interlocked.Exchange(ref _sessions[slot], session);
    }

    /// <summary>Clears <paramref name="session"/>'s slot if it still holds it.</summary>
    internal bool Detach(LinkSession session, string reason)
    {
        if (Interlocked.CompareExchange(ref _sessions[session.Stream], null, session) != session)
            return false;
        if (session.Stream == 0)
            _lastDownReason = reason;
        return true;
    }

    public override void Transmit(Frame frame)
    {
        var session = Volatile.Read(ref _width) <= 1 ? Volatile.Read(ref _sessions[0]) : Pick(frame);
        if (session is null || frame.HopLimit == 0 || !session.Enqueue(frame))
        {
            Counters.CountTxDrop();
            frame.Release();
        }
    }

    /// <summary>The session of the frame's flow; when its slot is down, the first slot that is up.</summary>
    private LinkSession? Pick(Frame frame)
    {
        var width = Volatile.Read(ref _width);
        var session = Volatile.Read(ref _sessions[FlowHash.StreamOf(frame.Data, width)]);
        if (session is { IsClosed: false })
            return session;
        for (var i = 0; i < width; i++)
        {
            session = Volatile.Read(ref _sessions[i]);
            if (session is { IsClosed: false })
                return session;
        }
        return null;
    }
}
