using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Vnet.Engine;
using Vnet.Frames;
using Vnet.Links.Security;

namespace Vnet.Links;

/// <summary>Settings of a daemon's link layer.</summary>
public sealed record LinkManagerOptions
{
    public required string Name { get; init; }

    public required DaemonRole Role { get; init; }

    /// <summary>This daemon's static key pair: what peers pin and admit.</summary>
    public required StaticKeyPair Identity { get; init; }

    /// <summary>Who may be who (admitted hosts, pinned keys, administrators).</summary>
    public required IPeerKeys Peers { get; init; }

    /// <summary>The overlay's optional shared secret, mixed into every handshake.</summary>
    public PresharedKey Psk { get; init; } = PresharedKey.None;

    /// <summary>Whether CLI sessions (role Tool) are served here at all.</summary>
    public bool AcceptTools { get; init; }

    /// <summary>How long a handshake may take from connect (or accept) to the end.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>TCP and UDP address the daemon listens on.</summary>
    public required IPEndPoint Listen { get; init; }

    /// <summary>Frames queued per link before the link drops (a switch's output queue).</summary>
    public int QueueCapacity { get; init; } = 1024;

    /// <summary>First re-dial delay after a failure; doubles up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan FirstRetryDelay { get; init; } = TimeSpan.FromMilliseconds(250);

    public TimeSpan MaxRetryDelay { get; init; } = TimeSpan.FromSeconds(10);

    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>The INIT timestamp this daemon sends (tests set a clock that jumped back).</summary>
    public Func<ulong> Timestamp { get; init; } = NoiseHandshake.Timestamp;

    /// <summary>
    /// Tests only (internal, no configuration reaches it): a key lifetime shorter than
    /// <see cref="SendCipher.RekeyAfter"/>'s two minutes, so a test sees an idle link's keys stepped
    /// by the link clock in seconds. Null: the real lifetime.
    /// </summary>
    internal TimeSpan? RekeyAfter { get; init; }
}

/// <summary>
/// What the owner of the links (the daemon) hears from them. Called on link threads (a dialer, the
/// listener, a session's receiver): implementations hand the event to their own loop and return.
/// </summary>
public interface ILinkEvents
{
    /// <summary>A session became the port's current one.</summary>
    void OnLinkUp(LinkPort port, LinkSession session);

    /// <summary>The port's current session ended; the dialer or the peer may bring a new one.</summary>
    void OnLinkDown(LinkPort port, LinkSession session, string reason);

    /// <summary>A control message arrived on <paramref name="session"/> (possibly no longer the port's current one).</summary>
    void OnControl(LinkPort port, LinkSession session, byte[] payload);
}

/// <summary>Serves an authenticated vnet CLI (role Tool) that connected over TCP, until it leaves.</summary>
public interface IToolSessionHost
{
    Task ServeAsync(Socket socket, PeerIdentity peer, uint localSession, CancellationToken ct);
}

/// <summary>
/// Owns a daemon's links: the TCP listener and UDP socket, one dialer per outbound link (the
/// resilient star and direct links), the handshake, and the clock that sends keep-alives and
/// declares silent sessions dead.
/// <code>
/// Dialer: connect (3 s timeout) -> Noise handshake as initiator, to the key the peer must have
///         (5 s) -> [UDP: sealed probe until acknowledged] -> attach -> wait for the session to end
///         -> back off (250 ms doubling to 10 s, with jitter; a refused connection, i.e. a peer host
///         that is up but restarting its daemon, is retried within 1 s) -> again, until removed.
/// Listener: accept (backlog 1024; SYN floods meet the kernel's SYN cookies) -> wait for the INIT,
///           costing only the socket and a pending read (InitWaitList: at most 64 per address and
///           512 in all, the oldest closed to make room; 2 s to send it) -> mac1 checked, before any
///           Diffie-Hellman; a stranger's INIT is closed without a word, counted -> a handshake
///           slot (HandshakeLimiter's per-address limits; at most 64 at once) -> Noise handshake as
///           responder -> the proven key must be admitted as the name it claims, and its INIT newer
///           than its last -> attach to the port named after the peer, creating it for an inbound
///           link. A second session for a name can only come from the holder of that name's key.
///           So a flood without this daemon's public key never holds a handshake slot, and a
///           genuine re-dial, whose INIT follows its connect at once, gets in during one.
/// Either way the session gets the transport the handshake agreed on (CreateSession): a
/// TcpLinkTransport, or a UdpLinkTransport registered with the shared UdpTransport by session id
/// (and unregistered when the session reports down).
/// </code>
/// </summary>
public sealed partial class LinkManager : IAsyncDisposable
{
    private const int MaxPendingHandshakes = 64;

    /// <summary>The kernel's queue of connections not yet accepted (capped by net.core.somaxconn).</summary>
    private const int ListenBacklog = 1024;

    /// <summary>Retry interval for a peer that cannot be reached (refused, timed out, no route).</summary>
    private static readonly TimeSpan UnreachableRetry = TimeSpan.FromSeconds(1);

    private readonly LinkManagerOptions _options;
    private readonly VirtualSwitch _switch;
    private readonly FramePool _pool;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, LinkPort> _links = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, CancellationTokenSource> _dialers = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _handshakeSlots = new(MaxPendingHandshakes);
    private readonly HandshakeLimiter _limiter = new();
    private readonly InitWaitList _waiting = new();
    private readonly Dictionary<PublicKeyId, ulong> _lastInit = [];
    private readonly RecentTimestamps _toolInits = new();
    private readonly Lock _attachLock = new();
    // A peer refuses this daemon's INITs every few seconds while its clock is behind: said at most 10 times a minute.
    private readonly Daemon.LogLimiter _clockLog = new();
    private Socket? _listener;
    private UdpTransport? _udp;
    private Task? _acceptLoop;
    private readonly Daemon.DaemonClock _clock;
    private readonly bool _ownsClock;
    private Daemon.DaemonClock.Job? _clockJob;

    /// <param name="clock">The daemon's clock, shared with the control loop's periodic jobs; null: one of its own.</param>
    public LinkManager(LinkManagerOptions options, VirtualSwitch sw, FramePool pool, ILogger logger, Daemon.DaemonClock? clock = null)
    {
        _options = options;
        _switch = sw;
        _pool = pool;
        _logger = logger;
        _ownsClock = clock is null;
        _clock = clock ?? new Daemon.DaemonClock(e => Log.ClockFailed(logger, e), "vnet-link-clock");
    }

    /// <summary>Where link events go (set once, before <see cref="Start"/>).</summary>
    public ILinkEvents? Events { get; set; }

    /// <summary>Who serves CLI sessions over TCP; without one they are refused after the handshake.</summary>
    public IToolSessionHost? ToolSessions { get; set; }

    public IPEndPoint? LocalEndPoint { get; private set; }

    public IReadOnlyCollection<LinkPort> Links => [.. _links.Values];

    public UdpTransport? Udp => _udp;

    /// <summary>Handshakes refused by the per-address limits.</summary>
    public long HandshakesLimited => _limiter.Refused;

    /// <summary>Connections closed without a session for any reason (all those below, not admitted, replayed, timed out).</summary>
    public long HandshakesRefused => Interlocked.Read(ref _handshakesRefused) + InitsRefused + ConnectionsWithoutInit;

    /// <summary>Of <see cref="HandshakesRefused"/>, those refused after a valid INIT: rate-limited, too many at once, not admitted, replayed, timed out.</summary>
    public long HandshakesRefusedAfterInit => Interlocked.Read(ref _handshakesRefused);

    /// <summary>Connections whose first message was refused before any Diffie-Hellman: bad mac1, not an INIT, malformed, or closed early.</summary>
    public long InitsRefused => Interlocked.Read(ref _initsRefused);

    /// <summary>Connections closed by this daemon before their INIT came: after the deadline, or to make room for newer ones.</summary>
    public long ConnectionsWithoutInit => _waiting.Expired + _waiting.Evicted;

    /// <summary>Connections accepted and waiting for their INIT now (at most <see cref="InitWaitList.MaxWaiting"/>).</summary>
    public int WaitingForInit => _waiting.Count;

    private long _handshakesRefused;
    private long _initsRefused;

    public LinkPort? Find(string peer) => _links.TryGetValue(peer, out var port) ? port : null;

    public void Start()
    {
        var listener = new Socket(_options.Listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Bind(_options.Listen);
        // Room for a burst of completed connections: the accept loop never waits for a handshake
        // slot, so the queue drains as fast as connections are accepted.
        listener.Listen(ListenBacklog);
        _listener = listener;
        LocalEndPoint = (IPEndPoint)listener.LocalEndPoint!;
        _udp = new UdpTransport(LocalEndPoint, _pool);
        _udp.Start();
        Log.Listening(_logger, LocalEndPoint);
        _acceptLoop = Task.Run(AcceptLoop);
        _clockJob = _clock.Every(ClockPeriod, OnClock, first: true);
    }

    /// <summary>
    /// Adds a link (idempotent for the same settings). With <paramref name="dial"/> this daemon keeps
    /// dialing the peer; without it the port waits for the peer to dial in. <paramref name="streams"/>
    /// above 1 dials that many parallel sessions (on a UDP link each with its own UDP socket), frames
    /// spread over them by flow.
    /// </summary>
    public LinkPort AddLink(string peer, LinkTransport transport, bool star, IPEndPoint? dial, int streams = 1)
    {
        lock (_attachLock)
        {
            if (_links.TryGetValue(peer, out var existing))
            {
                if (dial is null || Equals(existing.DialAddress, dial))
                    return existing;
                throw new InvalidOperationException($"link {peer} already exists with address {existing.DialAddress?.ToString() ?? "(inbound)"}");
            }
            var port = new LinkPort(peer, transport, star, dial, streams);
            _links[peer] = port;
            _switch.AddPort(port);
            if (dial is not null)
            {
                var cts = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                _dialers[peer] = cts;
                _ = Task.Run(() => DialLoop(port, cts.Token));
            }
            return port;
        }
    }

    /// <summary>Stops dialing, ends the session and removes the port. False when there is no such link.</summary>
    public bool RemoveLink(string peer)
    {
        LinkPort? port;
        lock (_attachLock)
        {
            if (!_links.TryRemove(peer, out port))
                return false;
            if (_dialers.TryRemove(peer, out var cts))
            {
                cts.Cancel();
                cts.Dispose();
            }
            _switch.RemovePort(port);
        }
        // A session attached from now on is closed by Attach (the port is no longer in _links).
        for (var i = 0; i < LinkPort.MaxStreams; i++)
            port.SessionOf(i)?.Leave("link removed");
        return true;
    }

    // ---------------------------------------------------------------- dialing

    private async Task DialLoop(LinkPort port, CancellationToken ct)
    {
        var delay = _options.FirstRetryDelay;
        while (!ct.IsCancellationRequested)
        {
            if (port.IsUp)
            {
                // The peer dialed us; keep the link and watch it.
                await KeepStreams(port, port.Session!, ct);
                continue;
            }
            string reason;
            var unreachable = false;
            try
            {
                var session = await DialOnce(port, 0, ct);
                delay = _options.FirstRetryDelay;
                await KeepStreams(port, session, ct);
                continue;
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException e)
            {
                unreachable = true;
                reason = e.Message;
            }
            catch (Exception e) when (e is HandshakeException or IOException or OperationCanceledException or ObjectDisposedException)
            {
                reason = e is OperationCanceledException ? "handshake timed out" : e.Message;
                if (e is HandshakeException { StaleTimestamp: true } && _clockLog.TryAcquire("clock behind", out var suppressed))
                    Log.ClockBehind(_logger, port.Peer, suppressed);
            }

            // Back-off protects a peer that answers but refuses us (wrong key, overload). A peer
            // that cannot be reached at all costs one SYN per try, so it is tried every second:
            // when it comes back (a restarted daemon, a repaired network) the link follows at once.
            var wait = unreachable && delay > UnreachableRetry ? UnreachableRetry : delay;
            wait *= 0.8 + (0.4 * Random.Shared.NextDouble());
            Log.DialFailed(_logger, port.Peer, port.DialAddress!, reason, (int)wait.TotalMilliseconds);
            try
            {
                await Task.Delay(wait, ct);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            var next = delay * 2;
            delay = next > _options.MaxRetryDelay ? _options.MaxRetryDelay : next;
        }
    }

    /// <summary>
    /// While the link's first session is up: with streams above 1, dials the other streams that are
    /// down, one at a time (so the peer sees this daemon's INITs in the order of their timestamps),
    /// each with its own back-off; otherwise just waits for the session to end. Returns when the
    /// first session ended (the dial loop then dials it again; the other streams carry the frames
    /// meanwhile) or the link is removed. Wakes only when a stream ends or a retry is due.
    /// </summary>
    private async Task KeepStreams(LinkPort port, LinkSession first, CancellationToken ct)
    {
        if (port.Streams <= 1)
        {
            await WaitSessionOrCancel(first, ct);
            return;
        }
        var delays = new TimeSpan[port.Streams];
        var due = new long[port.Streams];
        var waits = new List<Task>(port.Streams + 1);
        while (!ct.IsCancellationRequested && !first.IsClosed)
        {
            var next = long.MaxValue;
            for (var stream = 1; stream < port.Streams && !ct.IsCancellationRequested && !first.IsClosed; stream++)
            {
                if (port.SessionOf(stream) is { IsClosed: false } || System.Diagnostics.Stopwatch.GetTimestamp() < due[stream])
                    continue;
                try
                {
                    await DialOnce(port, stream, ct);
                    delays[stream] = TimeSpan.Zero;
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception e) when (e is SocketException or HandshakeException or IOException or OperationCanceledException or ObjectDisposedException)
                {
                    var delay = delays[stream] == TimeSpan.Zero ? _options.FirstRetryDelay : delays[stream] * 2;
                    delays[stream] = delay > _options.MaxRetryDelay ? _options.MaxRetryDelay : delay;
                    var wait = delays[stream] * (0.8 + (0.4 * Random.Shared.NextDouble()));
                    due[stream] = System.Diagnostics.Stopwatch.GetTimestamp() + (long)(wait.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
                    Log.StreamDialFailed(_logger, port.Peer, stream, e is OperationCanceledException ? "handshake timed out" : e.Message, (int)wait.TotalMilliseconds);
                }
            }
            waits.Clear();
            waits.Add(first.Completion);
            for (var stream = 1; stream < port.Streams; stream++)
            {
                if (port.SessionOf(stream) is { IsClosed: false } session)
                    waits.Add(session.Completion);
                else
                    next = Math.Min(next, due[stream]);
            }
            if (next != long.MaxValue)
            {
                var ms = Math.Max(1, (next - System.Diagnostics.Stopwatch.GetTimestamp()) * 1000 / System.Diagnostics.Stopwatch.Frequency);
                waits.Add(Task.Delay(TimeSpan.FromMilliseconds(ms), ct));
            }
            try
            {
                await Task.WhenAny(waits).WaitAsync(ct);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private static async Task WaitSessionOrCancel(LinkSession session, CancellationToken ct)
    {
        try
        {
            await session.Completion.WaitAsync(ct);
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Connects, runs the handshake for slot <paramref name="stream"/> of the link and attaches the session.</summary>
    private async Task<LinkSession> DialOnce(LinkPort port, int stream, CancellationToken ct)
    {
        var address = port.DialAddress!;
        var expected = _options.Peers.KeyOf(port.Peer)
            ?? throw new HandshakeException($"no public key is known for {port.Peer}");
        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            using (var connect = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                connect.CancelAfter(_options.ConnectTimeout);
                try
                {
                    await HandshakeChannel.ConnectAsync(socket, address, connect.Token);
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    throw new SocketException((int)SocketError.TimedOut);
                }
            }
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(_options.HandshakeTimeout);
            var local = NewSessionId();
            var timestamp = _options.Timestamp();
            if (port.Streams > 1)
            {
                // A link's streams are dialed one after the other, often within one millisecond (the
                // timestamp's grain): each INIT must still be newer than the last the peer took.
                if (timestamp <= port.LastInitTimestamp)
                    timestamp = port.LastInitTimestamp + 1_000_000;
                port.LastInitTimestamp = timestamp;
            }
            var peer = await Initiate(socket, expected, port.Peer, port.Transport, port.Star, local, timestamp, (byte)stream, timeout.Token);
            var session = CreateSession(socket, peer, local, port, dialed: true);
            if (session.DataChannel is UdpLinkTransport udp)
            {
                udp.Peer = (udp.Own ?? _udp!).PeerFor(address);
                session.Start();
                if (!await ProbeUdp(udp, timeout.Token))
                {
                    session.Close("the UDP path does not work (no answer to probes)");
                    throw new HandshakeException("the UDP path does not work (no answer to probes)");
                }
                Attach(port, session);
            }
            else
            {
                Attach(port, session);
                session.Start();
            }
            // A session the port did not take (the link was removed meanwhile) was closed by Attach.
            return session;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The initiator's half of the handshake over a connected socket: INIT, then RESPONSE (or a
    /// REJECT with the peer's reason). Returns who answered, proven to hold <paramref name="expected"/>.
    /// </summary>
    private async Task<PeerIdentity> Initiate(Socket socket, PublicKeyId expected, string peerName, LinkTransport transport, bool star, uint local,
        ulong timestamp, byte stream, CancellationToken ct)
    {
        using var initiator = new NoiseHandshake.Initiator(_options.Identity, expected, _options.Psk);
        var init = initiator.CreateInit(new InitiatorHello(_options.Name, _options.Role, transport, star, local, timestamp, stream));
        await HandshakeChannel.WriteAsync(socket, MessageType.HandshakeInit, 0, init, ct);
        var (header, payload) = await HandshakeChannel.ReadAsync(socket, ct);
        if (header.Type == MessageType.Reject)
            throw HandshakeException.Refused("refused by the peer", payload);
        if (header.Type != MessageType.HandshakeResponse || header.Session != local)
            throw new HandshakeException($"expected a handshake response, got {header.Type}");
        var answer = initiator.ReadResponse(payload, out var error) ?? throw new HandshakeException(error!);
        if (answer.Hello.Name != peerName)
            throw new HandshakeException($"expected daemon '{peerName}', found '{answer.Hello.Name}'");
        await HandshakeChannel.WriteAsync(socket, MessageType.HandshakeConfirm, answer.Hello.Session, answer.Keys.InitiatorConfirmation(), ct);
        return new PeerIdentity(answer.Hello.Name, answer.Hello.Role, transport, star, answer.Hello.Session, expected, answer.Keys, stream);
    }

    /// <summary>
    /// The vnet CLI's side of a remote session: a handshake as role Tool with an administrator's key,
    /// to the daemon's pinned key. Returns the identity of the daemon and the session id to use.
    /// </summary>
    public static async Task<(PeerIdentity Daemon, uint Local)> HandshakeAsTool(Socket socket, StaticKeyPair admin, PublicKeyId daemon,
        PresharedKey psk, string toolName, CancellationToken ct)
    {
        var local = NewSessionId();
        using var initiator = new NoiseHandshake.Initiator(admin, daemon, psk);
        var init = initiator.CreateInit(new InitiatorHello(toolName, DaemonRole.Tool, LinkTransport.Tcp, false, local, NoiseHandshake.Timestamp()));
        await HandshakeChannel.WriteAsync(socket, MessageType.HandshakeInit, 0, init, ct).ConfigureAwait(false);
        var (header, payload) = await HandshakeChannel.ReadAsync(socket, ct).ConfigureAwait(false);
        if (header.Type == MessageType.Reject)
            throw HandshakeException.Refused("refused by the daemon", payload);
        if (header.Type != MessageType.HandshakeResponse || header.Session != local)
            throw new HandshakeException($"expected a handshake response, got {header.Type}");
        var answer = initiator.ReadResponse(payload, out var error) ?? throw new HandshakeException(error!);
        await HandshakeChannel.WriteAsync(socket, MessageType.HandshakeConfirm, answer.Hello.Session, answer.Keys.InitiatorConfirmation(), ct)
            .ConfigureAwait(false);
        return (new PeerIdentity(answer.Hello.Name, answer.Hello.Role, LinkTransport.Tcp, false, answer.Hello.Session, daemon, answer.Keys), local);
    }

    /// <summary>
    /// Proves the UDP path before the session is attached: sealed probes to the dialed address until
    /// one is answered. A stream (its own socket) then probes the port of the peer's stream socket
    /// that the answer named, and sends there once that answers too; where it does not (a firewall
    /// or port forward that admits the daemon's port only), the stream stays on the daemon's port.
    /// </summary>
    private async Task<bool> ProbeUdp(UdpLinkTransport link, CancellationToken ct)
    {
        if (!await Probe(link, link.Peer!, 25, () => link.ProbeAcknowledged, ct))
            return false;
        if (link.Own is not { } own || link.PeerStreamPort == 0 || link.AnsweredBy is not { } daemonPort)
            return true;
        var target = own.PeerFor(new IPEndPoint(daemonPort.EndPoint.Address, link.PeerStreamPort));
        var targetAddress = target.Address.Buffer.Span[..target.Address.Size].ToArray();
        link.ForgetAnswer();
        if (await Probe(link, target, 10, () => link.AnsweredBy is { } by && by.Is(targetAddress), ct))
        {
            link.Peer = target;
            return true;
        }
        if (ct.IsCancellationRequested || link.Session.IsClosed)
            return false;
        Log.StreamOnDaemonPort(_logger, link.Session.Peer.Name, link.Session.Stream, target.EndPoint);
        link.Peer = daemonPort;
        return true;
    }

    /// <summary>Up to <paramref name="tries"/> probes to <paramref name="to"/> (5 at 40 ms, then every 200 ms) until <paramref name="answered"/>.</summary>
    private static async Task<bool> Probe(UdpLinkTransport link, UdpPeer to, int tries, Func<bool> answered, CancellationToken ct)
    {
        var session = link.Session;
        for (var i = 0; i < tries && !ct.IsCancellationRequested && !session.IsClosed; i++)
        {
            // Sealed like every datagram: its opening at the peer is what proves this address.
            to.Via.SendSealed(to, session.DatagramSealer.Current, MessageType.UdpProbe, session.Peer.RemoteSession, ReadOnlySpan<byte>.Empty);
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(i < 5 ? 40 : 200), ct);
            }
            catch (OperationCanceledException)
            {
                return false;
            }
            if (answered())
                return true;
        }
        return false;
    }

    // ---------------------------------------------------------------- accepting

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener!.AcceptAsync(_stop.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            var from = (socket.RemoteEndPoint as IPEndPoint)?.Address ?? IPAddress.None;
            var waiting = _waiting.Add(socket, from, out var evicted);
            // Closed at its deadline, not at the next tick after it; on a 250 ms grid, so a burst
            // of connections costs the clock a few wake-ups, not one each.
            _clockJob?.RunNoLaterThan(Daemon.Cadence.NextDue(waiting.Since + DeadlineTicks(InitWaitList.Deadline), WaitListGrid));
            if (evicted is not null)
                LogRefusal(evicted.From.ToString(), "closed before its INIT came, to make room for newer connections", counted: true);
            // Not awaited: the loop goes on accepting while this connection's read is pending.
            _ = AwaitInit(waiting);
        }
    }

    /// <summary>
    /// The first step, stateless but for the socket: read one INIT and check its mac1. Whatever is
    /// not a complete INIT with a valid mac1 is closed without a word; the deadline and the bounds of
    /// <see cref="InitWaitList"/> close a connection that sends too little (they shut it down, which
    /// ends this read; the socket is disposed here, with no read pending).
    /// </summary>
    private async Task AwaitInit(InitWaitList.Waiting waiting)
    {
        var socket = waiting.Socket;
        byte[] init;
        try
        {
            var (header, payload) = await HandshakeChannel.ReadAsync(socket, CancellationToken.None);
            if (header.Type != MessageType.HandshakeInit)
                throw new HandshakeException($"expected a handshake, got {header.Type}");
            // The cheap check first: whoever does not know this daemon's public key gets nothing, not even a reason.
            if (!NoiseHandshake.Mac1Valid(_options.Identity.Public, payload))
                throw new HandshakeException("bad mac1 (the sender does not know this daemon's public key)");
            init = payload;
        }
        catch (Exception e) when (e is HandshakeException or SocketException or IOException or ObjectDisposedException or OperationCanceledException)
        {
            // Not on the list any more: closed for its deadline or to make room, and counted there.
            if (_waiting.TryRemove(waiting))
            {
                Interlocked.Increment(ref _initsRefused);
                LogRefusal(waiting.From.ToString(), e.Message, counted: true);
            }
            socket.Dispose();
            return;
        }
        if (_waiting.TryRemove(waiting))
            BeginHandshake(socket, waiting.From, init, waiting.Since);
        else
            socket.Dispose();
    }

    /// <summary>
    /// The second step, for an INIT whose sender knows this daemon's public key: a handshake slot
    /// (per-address limits, 64 at once), then the Diffie-Hellman and the rest on its own task.
    /// </summary>
    private void BeginHandshake(Socket socket, IPAddress from, byte[] init, long acceptedAt)
    {
        if (_stop.IsCancellationRequested)
        {
            socket.Dispose();
            return;
        }
        if (!_limiter.TryBegin(from))
        {
            // Said once per refusal burst at most: a flood must not become a flood of log lines.
            LogRefusal(from.ToString(), "too many handshakes from this address");
            socket.Dispose();
            return;
        }
        bool slot;
        try
        {
            slot = _handshakeSlots.Wait(0);
        }
        catch (ObjectDisposedException)
        {
            // The daemon stopped between the INIT and here.
            slot = false;
        }
        if (!slot)
        {
            _limiter.End(from);
            LogRefusal(from.ToString(), "too many handshakes in progress");
            socket.Dispose();
            return;
        }
        _ = Task.Run(async () =>
        {
            try
            {
                await Respond(socket, init, acceptedAt);
            }
            finally
            {
                _handshakeSlots.Release();
                _limiter.End(from);
            }
        });
    }

    /// <summary>Closes the connections that sent no INIT in time (on the clock).</summary>
    private void ExpireWaiting()
    {
        foreach (var waiting in _waiting.Expire())
            LogRefusal(waiting.From.ToString(), $"no handshake within {InitWaitList.Deadline.TotalSeconds:0} s of connecting", counted: true);
    }

    private long _lastRefusalLog;

    /// <summary>
    /// At most one refusal line a second: what a flood costs is counted, not written out. Counted
    /// here unless <paramref name="counted"/> (the first step's refusals have counters of their own).
    /// </summary>
    private void LogRefusal(string remote, string reason, bool counted = false)
    {
        if (!counted)
            Interlocked.Increment(ref _handshakesRefused);
        var now = System.Diagnostics.Stopwatch.GetTimestamp();
        var last = Interlocked.Read(ref _lastRefusalLog);
        if (System.Diagnostics.Stopwatch.GetElapsedTime(last, now) < TimeSpan.FromSeconds(1) || Interlocked.CompareExchange(ref _lastRefusalLog, now, last) != last)
            return;
        Log.Rejected(_logger, remote, reason);
    }

    /// <summary>The responder's half of the handshake, from an INIT whose mac1 is valid; within the handshake timeout of accept.</summary>
    private async Task Respond(Socket socket, byte[] payload, long acceptedAt)
    {
        var remote = socket.RemoteEndPoint?.ToString() ?? "?";
        socket.NoDelay = true;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        var left = _options.HandshakeTimeout - System.Diagnostics.Stopwatch.GetElapsedTime(acceptedAt);
        timeout.CancelAfter(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        var local = NewSessionId();
        string reason;
        try
        {
            using var responder = new NoiseHandshake.Responder(_options.Identity, _options.Psk);
            var (key, hello) = responder.ReadInit(payload, out var error) ?? throw new HandshakeException(error!);
            var admission = hello.Role == DaemonRole.Tool && !_options.AcceptTools
                ? Admission.No("this daemon takes no remote commands")
                : _options.Peers.Admit(key, hello.Name, hello.Role);
            if (!admission.Admitted)
            {
                await TryReject(socket, hello.Session, "not admitted");
                throw new HandshakeException($"'{hello.Name}' with key {key} is not admitted: {admission.Reason}");
            }
            if (!IsNewer(key, hello.Timestamp, hello.Role, payload))
            {
                // A replay learns nothing from this; a host whose clock jumped back learns why it cannot rejoin.
                await TryReject(socket, hello.Session, HandshakeException.StaleTimestampReason);
                throw new HandshakeException($"'{hello.Name}' sent a handshake that is not newer than its last (a replay, or its clock is behind)");
            }
            if (hello.Star && _options.Role != DaemonRole.Proxy)
            {
                await TryReject(socket, hello.Session, "this daemon is not a Proxy");
                throw new HandshakeException($"'{hello.Name}' wants a star link but this daemon is not a Proxy");
            }
            if (hello.Name == _options.Name)
            {
                await TryReject(socket, hello.Session, "that is this daemon's own name");
                throw new HandshakeException($"a peer uses this daemon's own name '{hello.Name}'");
            }
            if (hello.Stream > 0 && hello.Role == DaemonRole.Tool)
            {
                await TryReject(socket, hello.Session, "parallel streams are for links only");
                throw new HandshakeException($"'{hello.Name}' dialed stream {hello.Stream} of a CLI session (streams are for links only)");
            }
            var (response, keys) = responder.CreateResponse(new ResponderHello(_options.Name, _options.Role, local));
            await HandshakeChannel.WriteAsync(socket, MessageType.HandshakeResponse, hello.Session, response, timeout.Token);
            // Nothing is taken from this peer (no port, no session) until it proves it has the keys.
            var (confirmHeader, confirmation) = await HandshakeChannel.ReadAsync(socket, timeout.Token);
            if (confirmHeader.Type != MessageType.HandshakeConfirm || confirmHeader.Session != local || !keys.ConfirmsInitiator(confirmation))
                throw new HandshakeException($"'{hello.Name}' did not confirm the session keys (another preshared key?)");
            var peer = new PeerIdentity(hello.Name, hello.Role, hello.Transport, hello.Star, hello.Session, key, keys, hello.Stream);
            if (peer.Role == DaemonRole.Tool)
            {
                Log.ToolConnected(_logger, remote, peer.Name);
                // Served on its own task: a long session must not hold a handshake slot.
                var tools = ToolSessions;
                _ = Task.Run(async () =>
                {
                    using var _ = socket;
                    if (tools is not null)
                        await tools.ServeAsync(socket, peer, local, _stop.Token);
                });
                return;
            }

            LinkPort port;
            lock (_attachLock)
            {
                port = _links.GetOrAdd(peer.Name, name =>
                {
                    var created = new LinkPort(name, peer.Transport, peer.Star, null);
                    _switch.AddPort(created);
                    return created;
                });
            }
            var session = CreateSession(socket, peer, local, port, dialed: false);
            Attach(port, session);
            session.Start();
            return;
        }
        catch (OperationCanceledException)
        {
            reason = "handshake timed out";
        }
        catch (InvalidOperationException e) when (e.Message.Contains("ports", StringComparison.Ordinal))
        {
            reason = e.Message;
        }
        catch (Exception e) when (e is HandshakeException or SocketException or IOException or ObjectDisposedException)
        {
            reason = e.Message;
        }
        LogRefusal(remote, reason);
        socket.Dispose();
    }

    /// <summary>Each key's INITs must carry growing timestamps: a recorded INIT replayed later gets nowhere.</summary>
    private bool IsNewer(PublicKeyId key, ulong timestamp, DaemonRole role, ReadOnlySpan<byte> init)
    {
        lock (_lastInit)
        {
            if (role == DaemonRole.Tool)
                return _toolInits.IsFresh(key, timestamp, NoiseHandshake.EphemeralFingerprint(init));
            if (_lastInit.TryGetValue(key, out var last) && timestamp <= last)
                return false;
            // Only admitted keys get here, so the table stays as small as the overlay.
            _lastInit[key] = timestamp;
            return true;
        }
    }

    private static async Task TryReject(Socket socket, uint session, string reason)
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            await HandshakeChannel.WriteAsync(socket, MessageType.Reject, session, System.Text.Encoding.UTF8.GetBytes(reason), cts.Token);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    // ---------------------------------------------------------------- sessions

    /// <summary>
    /// A session with the transport the handshake agreed on. A UDP link joins the shared socket's
    /// demultiplexer at once, so that the peer's probe finds it. Stream k &gt;= 1 of a UDP link also
    /// gets a socket of its own (the connection's local address, an ephemeral port) and its receive
    /// thread, disposed when the session reports down; its dialer hears only there, its responder
    /// on both (the dialer's first probes come to the daemon's port).
    /// </summary>
    private LinkSession CreateSession(Socket socket, PeerIdentity peer, uint local, LinkPort port, bool dialed)
    {
        if (peer.Transport != LinkTransport.Udp)
            return new LinkSession(socket, peer, local, port, _switch, this, _options.QueueCapacity, s => new TcpLinkTransport(s, _switch, _pool), _options.RekeyAfter);
        var udp = _udp!;
        UdpTransport? own = null;
        if (peer.Stream > 0)
        {
            var address = ((IPEndPoint)socket.LocalEndPoint!).Address;
            own = new UdpTransport(new IPEndPoint(address, 0), _pool, udp, $"udp-{peer.Name}.{peer.Stream}");
        }
        try
        {
            var session = new LinkSession(socket, peer, local, port, _switch, this, _options.QueueCapacity,
                s => new UdpLinkTransport(s, udp, _switch, _pool, own, dialed), _options.RekeyAfter);
            var link = (UdpLinkTransport)session.DataChannel;
            if (own is not null)
            {
                own.Register(link);
                own.Start();
            }
            if (own is null || !dialed)
                udp.Register(link);
            return session;
        }
        catch
        {
            own?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Makes <paramref name="session"/> current in its slot of the port. A session for a port that
    /// was removed meanwhile (its handshake ran while the link went) is closed instead: it would
    /// otherwise live on, ticked by nobody, on a port no one sends to.
    /// </summary>
    private void Attach(LinkPort port, LinkSession session)
    {
        LinkSession? old;
        lock (_attachLock)
        {
            if (!_links.TryGetValue(port.Peer, out var current) || current != port)
            {
                session.Close("link removed");
                return;
            }
            old = port.Attach(session);
        }
        if (old is not null)
        {
            Log.Replaced(_logger, port.Peer);
            old.Close("replaced by a newer session");
        }
        if (session.Stream > 0)
        {
            // Only the first stream is the link to the control plane: the others carry frames.
            Log.StreamUp(_logger, port.Peer, session.Stream, session.RemoteEndPoint, session.LocalSession);
            return;
        }
        Log.LinkUp(_logger, port.Peer, session.Transport, session.RemoteEndPoint, session.LocalSession);
        Events?.OnLinkUp(port, session);
    }

    /// <summary>A session ended (on one of its threads); the port may get a new one.</summary>
    internal void OnSessionDown(LinkPort port, LinkSession session, string reason)
    {
        if (session.DataChannel is UdpLinkTransport link)
        {
            _udp?.Unregister(link);
            // A stream's own socket and thread go with it (its thread never runs this: the session's do).
            link.Own?.Dispose();
        }
        if (port.Detach(session, reason))
        {
            if (session.Stream > 0)
            {
                Log.StreamDown(_logger, port.Peer, session.Stream, reason);
                return;
            }
            Log.LinkDown(_logger, port.Peer, reason);
            Events?.OnLinkDown(port, session, reason);
        }
    }

    /// <summary>A control message arrived (on the session's receiver thread); the link's other streams carry none.</summary>
    internal void OnSessionControl(LinkPort port, LinkSession session, byte[] payload)
    {
        if (session.Stream == 0)
            Events?.OnControl(port, session, payload);
    }

    /// <summary>
    /// The link clock: keep-alives (each second), dead peers (3 s of silence) and connections that
    /// sent no INIT (2 s). It runs on the daemon's <see cref="Daemon.DaemonClock"/>, at the same grid
    /// instants as the control loop's 1 s jobs (one wake-up for both), and in between only when a
    /// deadline falls before the next tick: a peer silent for 2 s or more is checked at the instant
    /// its 3 s run out, so a dead peer is noticed within 3 s (it was 3.5 s with a 500 ms clock, which
    /// woke an idle daemon twice a second).
    /// </summary>
    internal static readonly TimeSpan ClockPeriod = TimeSpan.FromSeconds(1);

    private static readonly TimeSpan WaitListGrid = TimeSpan.FromMilliseconds(250);

    private static long DeadlineTicks(TimeSpan span) => (long)(span.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);

    private void OnClock()
    {
        if (_stop.IsCancellationRequested)
            return;
        var earliest = long.MaxValue;
        foreach (var port in _links.Values)
        {
            for (var i = 0; i < port.Width; i++)
            {
                if (port.SessionOf(i) is not { } session)
                    continue;
                session.Tick();
                if (!session.IsClosed)
                    earliest = Math.Min(earliest, session.DeadAt);
            }
        }
        ExpireWaiting();
        // A silent peer's deadline before the next grid instant: check it then, not a second late.
        // (A healthy link hears its peer every second, so its deadline is always past the next tick.)
        if (earliest != long.MaxValue)
            _clockJob?.RunNoLaterThan(earliest + DeadlineTicks(TimeSpan.FromMilliseconds(1)));
    }

    private static uint NewSessionId()
    {
        uint id;
        do
        {
            id = (uint)RandomNumberGenerator.GetInt32(int.MaxValue) + 1;
        }
        while (id == 0);
        return id;
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener?.Dispose();
        _waiting.Clear();
        foreach (var port in _links.Values)
        {
            for (var i = 0; i < LinkPort.MaxStreams; i++)
                port.SessionOf(i)?.Leave("daemon stopping");
        }
        if (_acceptLoop is not null)
            await _acceptLoop.ConfigureAwait(false);
        _clockJob?.Dispose();
        if (_ownsClock)
            _clock.Dispose();
        foreach (var port in _links.Values)
        {
            for (var i = 0; i < LinkPort.MaxStreams; i++)
            {
                if (port.SessionOf(i) is { } s)
                    await s.Completion.WaitAsync(TimeSpan.FromSeconds(2)).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
            }
        }
        _udp?.Dispose();
        _stop.Dispose();
        _handshakeSlots.Dispose();
        foreach (var cts in _dialers.Values)
            cts.Dispose();
    }
}
