using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Vnet.Engine;
using Vnet.Frames;

namespace Vnet.Links;

/// <summary>Settings of a daemon's link layer.</summary>
public sealed record LinkManagerOptions
{
    public required string Name { get; init; }

    public required DaemonRole Role { get; init; }

    public required NetworkKey Key { get; init; }

    /// <summary>TCP and UDP address the daemon listens on.</summary>
    public required IPEndPoint Listen { get; init; }

    /// <summary>Frames queued per link before the link drops (a switch's output queue).</summary>
    public int QueueCapacity { get; init; } = 1024;

    /// <summary>First re-dial delay after a failure; doubles up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan FirstRetryDelay { get; init; } = TimeSpan.FromMilliseconds(250);

    public TimeSpan MaxRetryDelay { get; init; } = TimeSpan.FromSeconds(10);

    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(3);
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
    Task ServeAsync(Socket socket, PeerIdentity peer, CancellationToken ct);
}

/// <summary>
/// Owns a daemon's links: the TCP listener and UDP socket, one dialer per outbound link (the
/// resilient star and direct links), the handshake, and the clock that sends keep-alives and
/// declares silent sessions dead.
/// <code>
/// Dialer: connect (3 s timeout) -> handshake (5 s) -> [UDP: probe until acknowledged] -> attach
///         -> wait for the session to end -> back off (250 ms doubling to 10 s, with jitter; a
///         refused connection, i.e. a peer host that is up but restarting its daemon, is retried
///         within 1 s) -> again, until the link is removed.
/// Listener: accept -> handshake as responder (bounded, at most 64 at once) -> attach to the port
///           named after the peer, creating it for an inbound link.
/// Either way the session gets the transport the handshake agreed on (CreateSession): a
/// TcpLinkTransport, or a UdpLinkTransport registered with the shared UdpTransport by session id
/// (and unregistered when the session reports down).
/// </code>
/// </summary>
public sealed partial class LinkManager : IAsyncDisposable
{
    private const int MaxPendingHandshakes = 64;

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
    private readonly Lock _attachLock = new();
    private Socket? _listener;
    private UdpTransport? _udp;
    private Task? _acceptLoop;
    private Task? _clock;

    public LinkManager(LinkManagerOptions options, VirtualSwitch sw, FramePool pool, ILogger logger)
    {
        _options = options;
        _switch = sw;
        _pool = pool;
        _logger = logger;
    }

    /// <summary>Where link events go (set once, before <see cref="Start"/>).</summary>
    public ILinkEvents? Events { get; set; }

    /// <summary>Who serves CLI sessions over TCP; without one they are refused after the handshake.</summary>
    public IToolSessionHost? ToolSessions { get; set; }

    public IPEndPoint? LocalEndPoint { get; private set; }

    public IReadOnlyCollection<LinkPort> Links => [.. _links.Values];

    public UdpTransport? Udp => _udp;

    public LinkPort? Find(string peer) => _links.TryGetValue(peer, out var port) ? port : null;

    public void Start()
    {
        var listener = new Socket(_options.Listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Bind(_options.Listen);
        listener.Listen(128);
        _listener = listener;
        LocalEndPoint = (IPEndPoint)listener.LocalEndPoint!;
        _udp = new UdpTransport(LocalEndPoint, _pool);
        _udp.Start();
        Log.Listening(_logger, LocalEndPoint);
        _acceptLoop = Task.Run(AcceptLoop);
        _clock = Task.Run(ClockLoop);
    }

    /// <summary>
    /// Adds a link (idempotent for the same settings). With <paramref name="dial"/> this daemon keeps
    /// dialing the peer; without it the port waits for the peer to dial in.
    /// </summary>
    public LinkPort AddLink(string peer, LinkTransport transport, bool star, IPEndPoint? dial)
    {
        lock (_attachLock)
        {
            if (_links.TryGetValue(peer, out var existing))
            {
                if (dial is null || Equals(existing.DialAddress, dial))
                    return existing;
                throw new InvalidOperationException($"link {peer} already exists with address {existing.DialAddress?.ToString() ?? "(inbound)"}");
            }
            var port = new LinkPort(peer, transport, star, dial);
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
        port.Session?.Leave("link removed");
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
                await WaitSessionOrCancel(port.Session!, ct);
                continue;
            }
            string reason;
            var unreachable = false;
            try
            {
                var session = await DialOnce(port, ct);
                delay = _options.FirstRetryDelay;
                await WaitSessionOrCancel(session, ct);
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

    private async Task<LinkSession> DialOnce(LinkPort port, CancellationToken ct)
    {
        var address = port.DialAddress!;
        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            using (var connect = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                connect.CancelAfter(_options.ConnectTimeout);
                try
                {
                    await socket.ConnectAsync(address, connect.Token);
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    throw new SocketException((int)SocketError.TimedOut);
                }
            }
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(Handshake.Timeout);
            var local = NewSessionId();
            var initiator = new Handshake.Initiator(_options.Key, _options.Name, _options.Role, port.Transport, port.Star, local);
            await HandshakeChannel.WriteAsync(socket, MessageType.Hello, 0, initiator.CreateHello(), timeout.Token);
            var (header, payload) = await HandshakeChannel.ReadAsync(socket, timeout.Token);
            if (header.Type == MessageType.Reject)
                throw new HandshakeException($"refused by the peer: {System.Text.Encoding.UTF8.GetString(payload)}");
            if (header.Type != MessageType.Challenge)
                throw new HandshakeException($"expected CHALLENGE, got {header.Type}");
            var auth = initiator.OnChallenge(payload, out var peer, out var error);
            if (auth is null)
            {
                // Say why, so the operator of the other daemon sees it in its log too.
                await TryReject(socket, 0, $"'{_options.Name}' says: {error}");
                throw new HandshakeException(error!);
            }
            if (peer!.Name != port.Peer)
                throw new HandshakeException($"expected daemon '{port.Peer}' at {address}, found '{peer.Name}'");
            await HandshakeChannel.WriteAsync(socket, MessageType.Auth, peer.RemoteSession, auth, timeout.Token);
            (header, payload) = await HandshakeChannel.ReadAsync(socket, timeout.Token);
            if (header.Type == MessageType.Reject)
                throw new HandshakeException($"refused by the peer: {System.Text.Encoding.UTF8.GetString(payload)}");
            if (header.Type != MessageType.Welcome)
                throw new HandshakeException($"expected WELCOME, got {header.Type}");

            var session = CreateSession(socket, peer, local, port);
            if (session.DataChannel is UdpLinkTransport udp)
            {
                udp.Peer = UdpTransport.PeerFor(address);
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
            return session;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private async Task<bool> ProbeUdp(UdpLinkTransport link, CancellationToken ct)
    {
        var session = link.Session;
        var probe = UdpTransport.ProbePayload(session);
        for (var i = 0; i < 25 && !ct.IsCancellationRequested && !session.IsClosed; i++)
        {
            _udp!.SendMessage(link.Peer!, MessageType.UdpProbe, session.Peer.RemoteSession, probe);
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(i < 5 ? 40 : 200), ct);
            }
            catch (OperationCanceledException)
            {
                return false;
            }
            if (link.ProbeAcknowledged)
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
            if (!await _handshakeSlots.WaitAsync(0))
            {
                Log.Rejected(_logger, socket.RemoteEndPoint?.ToString() ?? "?", "too many handshakes in progress");
                socket.Dispose();
                continue;
            }
            _ = Task.Run(async () =>
            {
                try
                {
                    await Respond(socket);
                }
                finally
                {
                    _handshakeSlots.Release();
                }
            });
        }
    }

    private async Task Respond(Socket socket)
    {
        var remote = socket.RemoteEndPoint?.ToString() ?? "?";
        socket.NoDelay = true;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        timeout.CancelAfter(Handshake.Timeout);
        var local = NewSessionId();
        var responder = new Handshake.Responder(_options.Key, _options.Name, _options.Role, local);
        string reason;
        try
        {
            var (header, payload) = await HandshakeChannel.ReadAsync(socket, timeout.Token);
            if (header.Type != MessageType.Hello)
                throw new HandshakeException($"expected HELLO, got {header.Type}");
            var challenge = responder.OnHello(payload, out var error) ?? throw new HandshakeException(error!);
            var helloSession = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(2 + Handshake.NonceSize + 3));
            await HandshakeChannel.WriteAsync(socket, MessageType.Challenge, helloSession, challenge, timeout.Token);
            (header, payload) = await HandshakeChannel.ReadAsync(socket, timeout.Token);
            if (header.Type == MessageType.Reject)
                throw new HandshakeException($"the peer refused: {System.Text.Encoding.UTF8.GetString(payload)}");
            if (header.Type != MessageType.Auth)
                throw new HandshakeException($"expected AUTH, got {header.Type}");
            var peer = responder.OnAuth(payload, out error);
            if (peer is null)
            {
                await TryReject(socket, helloSession, "authentication failed");
                throw new HandshakeException(error!);
            }
            if (peer.Role == DaemonRole.Tool)
            {
                await HandshakeChannel.WriteAsync(socket, MessageType.Welcome, peer.RemoteSession, [], timeout.Token);
                Log.ToolConnected(_logger, remote, peer.Name);
                // Served on its own task: a long session must not hold a handshake slot.
                var tools = ToolSessions;
                _ = Task.Run(async () =>
                {
                    using var _ = socket;
                    if (tools is not null)
                        await tools.ServeAsync(socket, peer, _stop.Token);
                });
                return;
            }
            if (peer.Star && _options.Role != DaemonRole.Proxy)
            {
                await TryReject(socket, peer.RemoteSession, "this daemon is not a Proxy");
                throw new HandshakeException($"'{peer.Name}' wants a star link but this daemon is not a Proxy");
            }
            await HandshakeChannel.WriteAsync(socket, MessageType.Welcome, peer.RemoteSession, [], timeout.Token);

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
            var session = CreateSession(socket, peer, local, port);
            Attach(port, session);
            session.Start();
            return;
        }
        catch (OperationCanceledException)
        {
            reason = "handshake timed out";
        }
        catch (Exception e) when (e is HandshakeException or SocketException or IOException or ObjectDisposedException)
        {
            reason = e.Message;
        }
        Log.Rejected(_logger, remote, reason);
        socket.Dispose();
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
    /// demultiplexer at once, so that the peer's probe finds it.
    /// </summary>
    private LinkSession CreateSession(Socket socket, PeerIdentity peer, uint local, LinkPort port)
    {
        if (peer.Transport != LinkTransport.Udp)
            return new LinkSession(socket, peer, local, port, _switch, this, _options.QueueCapacity, s => new TcpLinkTransport(s, _switch, _pool));
        var udp = _udp!;
        var session = new LinkSession(socket, peer, local, port, _switch, this, _options.QueueCapacity, s => new UdpLinkTransport(s, udp, _switch, _pool));
        udp.Register((UdpLinkTransport)session.DataChannel);
        return session;
    }

    private void Attach(LinkPort port, LinkSession session)
    {
        LinkSession? old;
        lock (_attachLock)
            old = port.Attach(session);
        if (old is not null)
        {
            Log.Replaced(_logger, port.Peer);
            old.Close("replaced by a newer session");
        }
        Log.LinkUp(_logger, port.Peer, session.Transport, session.RemoteEndPoint, session.LocalSession);
        Events?.OnLinkUp(port, session);
    }

    /// <summary>A session ended (on one of its threads); the port may get a new one.</summary>
    internal void OnSessionDown(LinkPort port, LinkSession session, string reason)
    {
        if (session.DataChannel is UdpLinkTransport link)
            _udp?.Unregister(link);
        if (port.Detach(session, reason))
        {
            Log.LinkDown(_logger, port.Peer, reason);
            Events?.OnLinkDown(port, session, reason);
        }
    }

    /// <summary>A control message arrived (on the session's receiver thread).</summary>
    internal void OnSessionControl(LinkPort port, LinkSession session, byte[] payload) =>
        Events?.OnControl(port, session, payload);

    private async Task ClockLoop()
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(250));
        try
        {
            while (await timer.WaitForNextTickAsync(_stop.Token))
            {
                foreach (var port in _links.Values)
                    port.Session?.Tick();
            }
        }
        catch (OperationCanceledException)
        {
        }
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
        foreach (var port in _links.Values)
        {
            port.Session?.Leave("daemon stopping");
        }
        if (_acceptLoop is not null)
            await _acceptLoop.ConfigureAwait(false);
        if (_clock is not null)
            await _clock.ConfigureAwait(false);
        foreach (var port in _links.Values)
        {
            if (port.Session is { } s)
                await s.Completion.WaitAsync(TimeSpan.FromSeconds(2)).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
        }
        _udp?.Dispose();
        _stop.Dispose();
        _handshakeSlots.Dispose();
        foreach (var cts in _dialers.Values)
            cts.Dispose();
    }
}
