using System.Diagnostics;
using System.Net.Sockets;
using Vnet.Links;
using Vnet.Tests.Support;

namespace Vnet.Tests.Links;

/// <summary>
/// The link layer facing peers that are wrong: another key, a daemon that is not a Proxy or not the
/// expected one, raw clients sending garbage, and a peer that authenticates and then goes silent.
/// Nothing of that may create a link, and the managers must stay usable afterwards.
/// </summary>
public sealed class LinkManagerFaultTests : IAsyncLifetime
{
    private static readonly NetworkKey Key = NetworkKey.Generate();
    private static readonly NetworkKey OtherKey = NetworkKey.Generate();
    private static readonly TimeSpan Quick = TimeSpan.FromSeconds(3);

    private readonly List<LinkNode> _nodes = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes)
            await node.DisposeAsync();
        foreach (var node in _nodes)
            node.AssertPoolComplete();
    }

    // Wrong peers.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void AddLink_HostHasOtherKey_NoSessionAndBothManagersStayUsable(LinkTransport transport)
    {
        var proxy = Node("proxy", DaemonRole.Proxy, Key);
        var intruder = Node("host1", DaemonRole.Host, OtherKey);

        var port = intruder.Links.AddLink("proxy", transport, star: true, proxy.EndPoint);

        Wait.Until(() => intruder.Log.Contains("bad proof"), Quick, "the host to find the Proxy's proof bad");
        Wait.Until(() => proxy.Log.Contains("Rejected"), Quick, "the Proxy to log the refusal");
        Assert.False(port.IsUp);
        Assert.Equal(0, port.SessionsStarted);
        Assert.Empty(proxy.Links.Links);
        Assert.Contains(proxy.Log.Lines, l => l.Contains("host1", StringComparison.Ordinal) && l.Contains("bad proof", StringComparison.Ordinal));

        // The Proxy still takes a host with the right key.
        var good = Node("host2", DaemonRole.Host, Key);
        good.Links.AddLink("proxy", transport, star: true, proxy.EndPoint);
        good.WaitUp("proxy");
        proxy.WaitUp("host2");
        Assert.Null(proxy.Links.Find("host1"));

        // The host still links to a Proxy that shares its key.
        var ownProxy = Node("proxy", DaemonRole.Proxy, OtherKey);
        Assert.True(intruder.Links.RemoveLink("proxy"));
        intruder.Links.AddLink("proxy", transport, star: true, ownProxy.EndPoint);
        intruder.WaitUp("proxy");
        Assert.False(port.IsUp);
    }

    [Fact]
    public void AddLink_StarLinkToAHost_RefusedBecauseItIsNotAProxy()
    {
        var target = Node("host-b", DaemonRole.Host, Key);
        var dialer = Node("host-a", DaemonRole.Host, Key);

        var port = dialer.Links.AddLink("host-b", LinkTransport.Tcp, star: true, target.EndPoint);

        Wait.Until(() => dialer.Log.Contains("this daemon is not a Proxy"), Quick, "the refusal at the dialer");
        Assert.True(target.Log.Contains("wants a star link but this daemon is not a Proxy"), target.Log.ToString());
        Assert.False(port.IsUp);
        Assert.Null(target.Links.Find("host-a"));
    }

    [Fact]
    public void AddLink_SomeoneElseAnswers_RefusedWithBothNames()
    {
        var impostor = Node("proxy2", DaemonRole.Proxy, Key);
        var host = Node("host1", DaemonRole.Host, Key);

        var port = host.Links.AddLink("proxy", LinkTransport.Tcp, star: true, impostor.EndPoint);

        Wait.Until(() => host.Log.Contains("expected daemon 'proxy'"), Quick, "the name check at the dialer");
        Assert.True(host.Log.Contains("found 'proxy2'"), host.Log.ToString());
        Assert.False(port.IsUp);
        Thread.Sleep(200);
        Assert.Empty(impostor.Links.Links);
    }

    // Raw clients.

    public static TheoryData<string, byte[], string> Garbage()
    {
        var data = new TheoryData<string, byte[], string>();
        var random = new byte[64];
        new Random(1).NextBytes(random);
        random[0] = 0x00;
        data.Add("random bytes", random, "bad magic");
        data.Add("http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray(), "bad magic");
        data.Add("data before hello", Header(MessageType.Data, 0), "expected HELLO, got Data");
        data.Add("oversized hello", Header(MessageType.Hello, 1 << 20), "too large for a handshake");
        data.Add("short hello", [.. Header(MessageType.Hello, 4), 1, 1, 0, 0], "HELLO too short");
        data.Add("other version", [.. Header(MessageType.Hello, 0).Select((b, i) => i == 2 ? (byte)9 : b)], "unsupported protocol version");
        return data;
    }

    [Theory]
    [MemberData(nameof(Garbage))]
    public async Task Accept_RawClientSendsGarbage_DisconnectedWithoutALink(string what, byte[] bytes, string reason)
    {
        var proxy = Node("proxy", DaemonRole.Proxy, Key);
        using var client = new Socket(proxy.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(Quick);
        await client.ConnectAsync(proxy.EndPoint, timeout.Token);

        await client.SendAsync(bytes, SocketFlags.None, timeout.Token);

        Assert.True(await IsClosedByPeer(client, timeout.Token), $"{what}: the Proxy answered instead of hanging up");
        Wait.Until(() => proxy.Log.Contains(reason), Quick, $"the Proxy to log '{reason}'");
        Assert.Empty(proxy.Links.Links);

        // The listener still serves real daemons.
        var host = Node("host1", DaemonRole.Host, Key);
        host.Links.AddLink("proxy", LinkTransport.Tcp, star: true, proxy.EndPoint);
        proxy.WaitUp("host1");
    }

    // Silent peers.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public async Task Tick_PeerAuthenticatesThenGoesSilent_DeclaredDead(LinkTransport transport)
    {
        var proxy = Node("proxy", DaemonRole.Proxy, Key);
        using var ghost = new Socket(proxy.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await ghost.ConnectAsync(proxy.EndPoint, timeout.Token);

        var peer = await Authenticate(ghost, "ghost", transport, timeout.Token);
        var up = Stopwatch.StartNew();
        Assert.Equal("proxy", peer.Name);
        var port = proxy.WaitUp("ghost");

        // From here on the ghost neither reads nor writes.
        proxy.WaitDown(port, LinkSession.DeadAfter + TimeSpan.FromSeconds(2));
        Assert.True(up.Elapsed >= LinkSession.DeadAfter - TimeSpan.FromMilliseconds(300), $"declared dead after only {up.Elapsed}");
        Assert.Null(port.Session);
        Assert.Contains("no message", port.LastDownReason, StringComparison.Ordinal);
        Assert.Contains(proxy.Events.Events, e => e.StartsWith("down ghost: no message", StringComparison.Ordinal));
        Assert.True(await IsClosedByPeer(ghost, timeout.Token), "the Proxy kept the dead peer's connection open");
    }

    [Fact]
    public async Task Accept_PeerAuthenticatesAndSendsGarbage_SessionEndsWithProtocolError()
    {
        var proxy = Node("proxy", DaemonRole.Proxy, Key);
        using var ghost = new Socket(proxy.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await ghost.ConnectAsync(proxy.EndPoint, timeout.Token);
        await Authenticate(ghost, "ghost", LinkTransport.Tcp, timeout.Token);
        var port = proxy.WaitUp("ghost");

        await ghost.SendAsync(new byte[32], SocketFlags.None, timeout.Token);

        proxy.WaitDown(port, Quick);
        Assert.Contains("protocol error from ghost: not a VNET message", port.LastDownReason, StringComparison.Ordinal);
        Assert.Equal(1, port.Counters.RxErrors);
        Assert.True(await IsClosedByPeer(ghost, timeout.Token));
    }

    [Fact]
    public async Task Accept_PeerSendsDataForAnotherSession_SessionEnds()
    {
        var proxy = Node("proxy", DaemonRole.Proxy, Key);
        using var ghost = new Socket(proxy.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await ghost.ConnectAsync(proxy.EndPoint, timeout.Token);
        var peer = await Authenticate(ghost, "ghost", LinkTransport.Tcp, timeout.Token);
        var port = proxy.WaitUp("ghost");
        Assert.Equal(port.Session!.LocalSession, peer.RemoteSession);

        var message = Header(MessageType.KeepAlive, 0, session: peer.RemoteSession ^ 1);
        await ghost.SendAsync(message, SocketFlags.None, timeout.Token);

        proxy.WaitDown(port, Quick);
        Assert.Contains("message for session", port.LastDownReason, StringComparison.Ordinal);
    }

    // What a session's connection may carry, by transport.

    [Fact]
    public async Task Receive_TcpMessagesSplitAcrossWrites_ControlFrameAndKeepAliveHandled()
    {
        var proxy = Node("proxy", DaemonRole.Proxy, Key);
        using var ghost = new Socket(proxy.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await ghost.ConnectAsync(proxy.EndPoint, timeout.Token);
        var peer = await Authenticate(ghost, "ghost", LinkTransport.Tcp, timeout.Token);
        var port = proxy.WaitUp("ghost");
        proxy.Route("ghost");
        var frame = LinkNode.NewFrame(1000, 7);
        var control = "{\"x\":1}"u8.ToArray();
        byte[] keepAlive = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 42];
        byte[] stream =
        [
            .. Header(MessageType.Control, control.Length, peer.RemoteSession), .. control,
            .. Header(MessageType.Data, frame.Length, peer.RemoteSession, hopLimit: 5), .. frame,
            .. Header(MessageType.KeepAlive, keepAlive.Length, peer.RemoteSession), .. keepAlive,
        ];

        // Cut inside a header, inside the control payload and inside the frame: the receiver must
        // complete each message across reads (a frame's rest is read straight into its buffer).
        foreach (var (start, end) in new[] { (0, 7), (7, 20), (20, 60), (60, 500), (500, stream.Length) })
        {
            await ghost.SendAsync(stream.AsMemory(start, end - start), SocketFlags.None, timeout.Token);
            await Task.Delay(30, timeout.Token);
        }

        var received = Assert.Single(proxy.Vm.WaitFor(1));
        Assert.Equal(frame, received.Bytes);
        Assert.Equal(5, received.HopLimit);
        Wait.Until(() => proxy.Events.Events.Contains("control ghost"), Quick, "the control message");
        Assert.True(await ReadUntilKeepAliveAck(ghost, keepAlive, timeout.Token), "no in-band answer to the keep-alive");
        Assert.True(port.IsUp);
    }

    [Fact]
    public async Task Receive_UdpLinkConnection_ControlOnlyKeepAliveIgnoredDataRefused()
    {
        var proxy = Node("proxy", DaemonRole.Proxy, Key);
        using var ghost = new Socket(proxy.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await ghost.ConnectAsync(proxy.EndPoint, timeout.Token);
        var peer = await Authenticate(ghost, "ghost", LinkTransport.Udp, timeout.Token);
        var port = proxy.WaitUp("ghost");
        Assert.Equal(LinkTransport.Udp, port.Session!.Transport);

        // Keep-alives of a UDP link travel in datagrams: one on the connection is ignored.
        byte[] keepAlive = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
        await ghost.SendAsync((byte[])[.. Header(MessageType.KeepAlive, keepAlive.Length, peer.RemoteSession), .. keepAlive], SocketFlags.None, timeout.Token);
        var control = "{}"u8.ToArray();
        await ghost.SendAsync((byte[])[.. Header(MessageType.Control, control.Length, peer.RemoteSession), .. control], SocketFlags.None, timeout.Token);
        Wait.Until(() => proxy.Events.Events.Contains("control ghost"), Quick, "the control message");
        Assert.True(port.IsUp);

        var frame = LinkNode.NewFrame(100, 1);
        await ghost.SendAsync((byte[])[.. Header(MessageType.Data, frame.Length, peer.RemoteSession), .. frame], SocketFlags.None, timeout.Token);

        proxy.WaitDown(port, Quick);
        Assert.Contains("data on the control channel of a UDP link", port.LastDownReason, StringComparison.Ordinal);
        Assert.Equal(0, proxy.Vm.Count);
    }

    // Helpers.

    private LinkNode Node(string name, DaemonRole role, NetworkKey key)
    {
        var node = new LinkNode(name, role, key);
        _nodes.Add(node);
        return node;
    }

    private static byte[] Header(MessageType type, int length, uint session = 0, byte hopLimit = 0)
    {
        var bytes = new byte[Wire.HeaderSize];
        Wire.Write(bytes, new LinkHeader(type, MessageFlags.None, hopLimit, session, length));
        return bytes;
    }

    /// <summary>Reads messages (the daemon's own keep-alives among them) until the answer to ours comes.</summary>
    private static async Task<bool> ReadUntilKeepAliveAck(Socket socket, byte[] payload, CancellationToken ct)
    {
        var header = new byte[Wire.HeaderSize];
        try
        {
            while (true)
            {
                if (!await ReadExactly(socket, header, ct))
                    return false;
                Assert.Equal(WireError.None, Wire.TryRead(header, out var h));
                var body = new byte[h.PayloadLength];
                if (!await ReadExactly(socket, body, ct))
                    return false;
                if (h.Type == MessageType.KeepAliveAck && body.AsSpan().SequenceEqual(payload))
                    return true;
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Fills <paramref name="buffer"/>; false when the peer hangs up first.</summary>
    private static async Task<bool> ReadExactly(Socket socket, byte[] buffer, CancellationToken ct)
    {
        for (var filled = 0; filled < buffer.Length;)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, ct);
            if (n == 0)
                return false;
            filled += n;
        }
        return true;
    }

    /// <summary>A real handshake as an initiator over a raw socket; returns who answered.</summary>
    private static async Task<PeerIdentity> Authenticate(Socket socket, string name, LinkTransport transport, CancellationToken ct)
    {
        var initiator = new Handshake.Initiator(Key, name, DaemonRole.Host, transport, star: true, localSession: 0x0600_0001);
        await HandshakeChannel.WriteAsync(socket, MessageType.Hello, 0, initiator.CreateHello(), ct);
        var (header, payload) = await HandshakeChannel.ReadAsync(socket, ct);
        Assert.Equal(MessageType.Challenge, header.Type);
        Assert.Equal(0x0600_0001u, header.Session);
        var auth = initiator.OnChallenge(payload, out var peer, out var error);
        Assert.True(auth is not null, error);
        await HandshakeChannel.WriteAsync(socket, MessageType.Auth, peer!.RemoteSession, auth, ct);
        (header, _) = await HandshakeChannel.ReadAsync(socket, ct);
        Assert.Equal(MessageType.Welcome, header.Type);
        return peer;
    }

    /// <summary>Reads (and discards, e.g. keep-alives) until the peer hangs up; false if the token fires first.</summary>
    private static async Task<bool> IsClosedByPeer(Socket socket, CancellationToken ct)
    {
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                if (await socket.ReceiveAsync(buffer, SocketFlags.None, ct) == 0)
                    return true;
            }
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
