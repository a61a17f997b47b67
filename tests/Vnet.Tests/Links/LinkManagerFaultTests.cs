using System.Diagnostics;
using System.Net.Sockets;
using Vnet.Engine;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Tests.Support;

namespace Vnet.Tests.Links;

/// <summary>
/// The link layer facing peers that are wrong: a key nobody admitted, a responder that is not the
/// key the dialer pinned, another preshared key, a replayed handshake, a daemon that is not a Proxy,
/// raw clients sending garbage, an authenticated peer that forges, tampers, sends unsealed
/// messages or goes silent. Nothing of that may create a link or reach a frame port, and the
/// managers must stay usable afterwards.
/// </summary>
public sealed class LinkManagerFaultTests : LinkNodeTests
{
    private static readonly TimeSpan Quick = TimeSpan.FromSeconds(3);

    // Wrong peers.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void AddLink_HostKeyNotAdmitted_NoSessionAndBothManagersStayUsable(LinkTransport transport)
    {
        var proxy = Node("proxy", DaemonRole.Proxy);
        var intruder = Node("host1", DaemonRole.Host, TestKeys.Stranger());

        var port = intruder.Links.AddLink("proxy", transport, star: true, proxy.EndPoint);

        Wait.Until(() => intruder.Log.Contains("refused by the peer: not admitted"), Quick, "the host to hear it is not admitted");
        Wait.Until(() => proxy.Log.Contains("is not admitted"), Quick, "the Proxy to log the refusal");
        Assert.False(port.IsUp);
        Assert.Equal(0, port.SessionsStarted);
        Assert.Empty(proxy.Links.Links);

        // The Proxy still takes an admitted host.
        var good = Node("host2", DaemonRole.Host);
        good.Links.AddLink("proxy", transport, star: true, proxy.EndPoint);
        good.WaitUp("proxy");
        proxy.WaitUp("host2");
        Assert.Null(proxy.Links.Find("host1"));
    }

    [Fact]
    public void AddLink_ResponderIsNotThePinnedKey_ItDropsTheHandshakeUnanswered()
    {
        // A daemon that calls itself proxy, with a key of its own: the host pinned the real one.
        Keys.Of("proxy");
        var impostor = Node("proxy", DaemonRole.Proxy, TestKeys.Stranger());
        var host = Node("host1", DaemonRole.Host);

        var port = host.Links.AddLink("proxy", LinkTransport.Tcp, star: true, impostor.EndPoint);

        Wait.Until(() => impostor.Log.Contains("bad mac1"), Quick, "the impostor to drop a handshake meant for another key");
        Wait.Until(() => host.Log.Contains("Dialing proxy"), Quick, "the host to give up this attempt");
        Assert.False(port.IsUp);
        Assert.Empty(impostor.Links.Links);
    }

    [Fact]
    public void AddLink_OtherPresharedKey_TheDialerFindsTheResponseDoesNotAuthenticate()
    {
        var proxy = Node("proxy", DaemonRole.Proxy, psk: PresharedKey.Generate());
        var host = Node("host1", DaemonRole.Host, psk: PresharedKey.Generate());

        var port = host.Links.AddLink("proxy", LinkTransport.Tcp, star: true, proxy.EndPoint);

        Wait.Until(() => host.Log.Contains("does not authenticate"), Quick, "the host to refuse the response");
        Assert.False(port.IsUp);
        Thread.Sleep(300);
        Assert.False(proxy.Links.Find("host1") is { IsUp: true });
    }

    /// <summary>An initiator that cannot show it derived the session keys gets no port and no session.</summary>
    [Fact]
    public async Task Handshake_WrongKeyConfirmation_NoPortNoSession()
    {
        var proxy = Node("proxy", DaemonRole.Proxy);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        using var socket = await Connect(proxy, timeout.Token);
        using var initiator = new NoiseHandshake.Initiator(Keys.Of("ghost"), Keys.Of("proxy").Public, PresharedKey.None);
        var init = initiator.CreateInit(new InitiatorHello("ghost", DaemonRole.Host, LinkTransport.Tcp, true, Ghost.Local, NoiseHandshake.Timestamp()));
        await HandshakeChannel.WriteAsync(socket, MessageType.HandshakeInit, 0, init, timeout.Token);
        var (_, payload) = await HandshakeChannel.ReadAsync(socket, timeout.Token);
        var (hello, keys) = initiator.ReadResponse(payload, out var error) ?? throw new HandshakeException(error!);
        var forged = keys.InitiatorConfirmation();
        forged[5] ^= 1;

        await HandshakeChannel.WriteAsync(socket, MessageType.HandshakeConfirm, hello.Session, forged, timeout.Token);

        Wait.Until(() => proxy.Log.Contains("did not confirm the session keys"), Quick, "the Proxy to refuse the confirmation");
        Assert.Null(proxy.Links.Find("ghost"));
        Assert.Equal(1, proxy.Links.HandshakesRefused);
    }

    [Fact]
    public void AddLink_StarLinkToAHost_RefusedBecauseItIsNotAProxy()
    {
        var target = Node("host-b", DaemonRole.Host);
        var dialer = Node("host-a", DaemonRole.Host);

        var port = dialer.Links.AddLink("host-b", LinkTransport.Tcp, star: true, target.EndPoint);

        Wait.Until(() => dialer.Log.Contains("this daemon is not a Proxy"), Quick, "the refusal at the dialer");
        // The target writes its line after sending the refusal, so it may come second.
        Wait.Until(() => target.Log.Contains("wants a star link but this daemon is not a Proxy"), Quick, "the refusal at the target");
        Assert.False(port.IsUp);
        Assert.Null(target.Links.Find("host-a"));
    }

    [Fact]
    public async Task Accept_RecordedHandshakeReplayed_RefusedAsNotNewer()
    {
        var proxy = Node("proxy", DaemonRole.Proxy);
        using var timeout = new CancellationTokenSource(Quick * 2);
        var init = new NoiseHandshake.Initiator(Keys.Of("ghost"), Keys.Of("proxy").Public, PresharedKey.None)
            .CreateInit(new InitiatorHello("ghost", DaemonRole.Host, LinkTransport.Tcp, true, 0x0600_0001, NoiseHandshake.Timestamp()));
        using (var first = await Connect(proxy, timeout.Token))
        {
            await HandshakeChannel.WriteAsync(first, MessageType.HandshakeInit, 0, init, timeout.Token);
            var (header, _) = await HandshakeChannel.ReadAsync(first, timeout.Token);
            Assert.Equal(MessageType.HandshakeResponse, header.Type);
        }

        // An eavesdropper sends the same INIT again: it may not even get the Proxy to answer.
        using var replay = await Connect(proxy, timeout.Token);
        await HandshakeChannel.WriteAsync(replay, MessageType.HandshakeInit, 0, init, timeout.Token);

        Assert.True(await IsClosedByPeer(replay, timeout.Token), "the Proxy answered a replayed handshake");
        // Two refusals: the first INIT was never confirmed, the second is a replay (refusals are logged
        // at most once a second, so the count is what tells).
        Wait.Until(() => proxy.Links.HandshakesRefused == 2, Quick, "the Proxy to refuse the replay");
        Assert.Null(proxy.Links.Find("ghost"));
    }

    [Fact]
    public async Task Accept_InitOlderThanTheLastFromThatKey_RejectedSayingTheClockIsBehind()
    {
        var proxy = Node("proxy", DaemonRole.Proxy);
        using var timeout = new CancellationTokenSource(Quick * 2);
        var now = NoiseHandshake.Timestamp();
        using (var first = await Connect(proxy, timeout.Token))
        {
            var init = new NoiseHandshake.Initiator(Keys.Of("host1"), Keys.Of("proxy").Public, PresharedKey.None)
                .CreateInit(new InitiatorHello("host1", DaemonRole.Host, LinkTransport.Tcp, true, 0x0700_0001, now));
            await HandshakeChannel.WriteAsync(first, MessageType.HandshakeInit, 0, init, timeout.Token);
            Assert.Equal(MessageType.HandshakeResponse, (await HandshakeChannel.ReadAsync(first, timeout.Token)).Header.Type);
        }

        // The same host after its clock stepped back a minute: a new INIT (new ephemeral key), older than the last.
        using var behind = await Connect(proxy, timeout.Token);
        var older = new NoiseHandshake.Initiator(Keys.Of("host1"), Keys.Of("proxy").Public, PresharedKey.None)
            .CreateInit(new InitiatorHello("host1", DaemonRole.Host, LinkTransport.Tcp, true, 0x0700_0002, now - 60_000_000_000UL));
        await HandshakeChannel.WriteAsync(behind, MessageType.HandshakeInit, 0, older, timeout.Token);
        var (header, payload) = await HandshakeChannel.ReadAsync(behind, timeout.Token);

        Assert.Equal(MessageType.Reject, header.Type);
        Assert.Equal(0x0700_0002u, header.Session);
        Assert.Equal(HandshakeException.StaleTimestampReason, System.Text.Encoding.UTF8.GetString(payload));
        Assert.Null(proxy.Links.Find("host1"));
    }

    [Fact]
    public void Dial_ClockJumpedBack_TheDialerLogsWhyAndHowToHealIt()
    {
        var proxy = Node("proxy", DaemonRole.Proxy);
        long behind = 0;
        var host = new LinkNode("host1", DaemonRole.Host, Keys, timestamp: () => NoiseHandshake.Timestamp() - (ulong)Interlocked.Read(ref behind));
        Nodes.Add(host);
        var port = host.Links.AddLink("proxy", LinkTransport.Tcp, star: true, proxy.EndPoint);
        host.WaitUp("proxy");

        Interlocked.Exchange(ref behind, 3_600_000_000_000L);
        port.Session!.Close("test: the clock jumps back an hour");

        Wait.Until(() => host.Log.Contains("this machine's clock is behind") && host.Log.Contains(HandshakeException.StaleTimestampReason),
            Quick * 2, "the dialer to say its clock is behind, with the Proxy's reason");
        Assert.False(port.IsUp);
        // The Proxy counts the refusal after it wrote the REJECT the host has just read.
        Wait.Until(() => proxy.Links.HandshakesRefused >= 1, Quick, "the Proxy to count the refusal");

        // Healed: the clock is right again, and the next dial gets in.
        Interlocked.Exchange(ref behind, 0);
        host.WaitUp("proxy");
    }

    [Fact]
    public async Task Accept_ToolWithoutAnAdministratorKey_Refused()
    {
        var proxy = Node("proxy", DaemonRole.Proxy, acceptTools: true);
        using var timeout = new CancellationTokenSource(Quick);
        using var socket = await Connect(proxy, timeout.Token);

        var e = await Assert.ThrowsAsync<HandshakeException>(() =>
            LinkManager.HandshakeAsTool(socket, TestKeys.Stranger(), Keys.Of("proxy").Public, PresharedKey.None, "vnet-cli-1", timeout.Token));

        Assert.Contains("not admitted", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(proxy.Events.Events, x => x.StartsWith("tool", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Accept_ToolWithTheAdministratorKey_ServedOnlyWhereToolsAreAccepted()
    {
        var closed = Node("host1", DaemonRole.Host);
        var open = Node("proxy", DaemonRole.Proxy, acceptTools: true);
        using var timeout = new CancellationTokenSource(Quick);

        using (var socket = await Connect(closed, timeout.Token))
        {
            await Assert.ThrowsAsync<HandshakeException>(() =>
                LinkManager.HandshakeAsTool(socket, Keys.Admin, Keys.Of("host1").Public, PresharedKey.None, "vnet-cli-1", timeout.Token));
        }
        using (var socket = await Connect(open, timeout.Token))
        {
            var (daemon, _) = await LinkManager.HandshakeAsTool(socket, Keys.Admin, Keys.Of("proxy").Public, PresharedKey.None, "vnet-cli-1", timeout.Token);
            Assert.Equal("proxy", daemon.Name);
        }
        Wait.Until(() => open.Events.Events.Contains("tool vnet-cli-1"), Quick, "the tool session to be served");
        Assert.True(closed.Log.Contains("takes no remote commands"), closed.Log.ToString());
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
        data.Add("sealed data before the handshake", Header(MessageType.Data, 0, flags: MessageFlags.Encrypted), "expected a handshake, got Data");
        data.Add("unsealed data", Header(MessageType.Data, 0), "not sealed");
        data.Add("oversized handshake", Header(MessageType.HandshakeInit, 1 << 20), "too large for a handshake");
        data.Add("handshake without mac1", [.. Header(MessageType.HandshakeInit, 100), .. new byte[100]], "bad mac1");
        data.Add("other version", [.. Header(MessageType.HandshakeInit, 0).Select((b, i) => i == 2 ? (byte)1 : b)], "unsupported protocol version");
        return data;
    }

    [Theory]
    [MemberData(nameof(Garbage))]
    public async Task Accept_RawClientSendsGarbage_DisconnectedWithoutALink(string what, byte[] bytes, string reason)
    {
        var proxy = Node("proxy", DaemonRole.Proxy);
        using var timeout = new CancellationTokenSource(Quick);
        using var client = await Connect(proxy, timeout.Token);

        await client.SendAsync(bytes, SocketFlags.None, timeout.Token);

        Assert.True(await IsClosedByPeer(client, timeout.Token), $"{what}: the Proxy answered instead of hanging up");
        Wait.Until(() => proxy.Log.Contains(reason), Quick, $"the Proxy to log '{reason}'");
        Assert.Empty(proxy.Links.Links);

        // The listener still serves real daemons.
        var host = Node("host1", DaemonRole.Host);
        host.Links.AddLink("proxy", LinkTransport.Tcp, star: true, proxy.EndPoint);
        proxy.WaitUp("host1");
    }

    // Authenticated peers that misbehave.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public async Task Tick_PeerAuthenticatesThenGoesSilent_DeclaredDead(LinkTransport transport)
    {
        var proxy = Node("proxy", DaemonRole.Proxy);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        using var ghost = await Ghost.Connect(proxy, Keys, transport, timeout.Token);
        var up = Stopwatch.StartNew();
        Assert.Equal("proxy", ghost.Daemon.Name);
        var port = proxy.WaitUp("ghost");

        // From here on the ghost neither reads nor writes.
        proxy.WaitDown(port, LinkSession.DeadAfter + TimeSpan.FromSeconds(2));
        // Timed from after the handshake: a loaded machine may delay this thread, never the daemon's clock.
        Assert.True(up.Elapsed >= LinkSession.DeadAfter - TimeSpan.FromSeconds(1), $"declared dead after only {up.Elapsed}");
        Assert.Null(port.Session);
        Assert.Contains("no message", port.LastDownReason, StringComparison.Ordinal);
        Assert.Contains(proxy.Events.Events, e => e.StartsWith("down ghost: no message", StringComparison.Ordinal));
        Assert.True(await IsClosedByPeer(ghost.Socket, timeout.Token), "the Proxy kept the dead peer's connection open");
    }

    [Fact]
    public async Task Send_PeerStopsReading_AReaderFlushingInlineNeverWaitsForItsSocket()
    {
        using var at = await GhostAtProxy(LinkTransport.Tcp, TimeSpan.FromSeconds(60));
        var (proxy, ghost, port, timeout) = (at.Proxy, at.Ghost, at.Port, at.Timeout);
        var session = port.Session;
        proxy.Route("ghost");
        // The ghost never reads a byte, and keeps its session alive with keep-alives: a slow peer.
        using var stop = new CancellationTokenSource();
        var alive = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                // Each sealed anew: on TCP a repeated counter ends the session.
                await ghost.Socket.SendAsync(ghost.Seal(MessageType.KeepAlive, new byte[12]), SocketFlags.None, timeout.Token);
                await Task.Delay(250, timeout.Token);
            }
        });

        // An interface's reader: frames in batches, each batch flushed inline, for 4 s. Once the
        // ghost's socket is full a flush must give its frames to the queue and return; before,
        // the first write that went out in part waited for the rest as long as the peer lived.
        var rounds = 0;
        var noBuffer = 0;
        var longest = TimeSpan.Zero;
        var bytes = LinkNode.NewFrame(1400, 1);
        var reader = new Thread(() =>
        {
            TransmitBatch.Begin();
            var run = Stopwatch.StartNew();
            while (run.Elapsed < TimeSpan.FromSeconds(4))
            {
                for (var i = 0; i < 16; i++)
                {
                    var frame = proxy.Pool.TryRent();
                    if (frame is null)
                    {
                        noBuffer++;
                        break;
                    }
                    bytes.CopyTo(frame.Buffer.AsSpan(frame.Offset));
                    frame.Length = bytes.Length;
                    proxy.Send(frame);
                }
                var flush = Stopwatch.StartNew();
                TransmitBatch.Flush();
                if (flush.Elapsed > longest)
                    longest = flush.Elapsed;
                rounds++;
            }
            TransmitBatch.End();
        })
        { IsBackground = true };
        reader.Start();
        var finished = reader.Join(TimeSpan.FromSeconds(30));
        stop.Cancel();
        await alive.ContinueWith(_ => { }, TaskScheduler.Default);

        Assert.True(finished, $"the reader thread stalled on the slow peer's socket after {rounds} batches");
        Assert.True(noBuffer > 0, "the ghost's socket never filled (every frame went out): the test proved nothing");
        Assert.True(longest < TimeSpan.FromSeconds(2), $"one inline flush took {longest.TotalMilliseconds:0} ms");
        Assert.Same(session, port.Session);
    }

    [Fact]
    public async Task Accept_PeerAuthenticatesAndSendsGarbage_SessionEndsWithProtocolError()
    {
        using var at = await GhostAtProxy(LinkTransport.Tcp, TimeSpan.FromSeconds(10));
        var (proxy, ghost, port, timeout) = (at.Proxy, at.Ghost, at.Port, at.Timeout);

        await ghost.Socket.SendAsync(new byte[32], SocketFlags.None, timeout.Token);

        proxy.WaitDown(port, Quick);
        Assert.Contains("protocol error from ghost: not a VNET message", port.LastDownReason, StringComparison.Ordinal);
        Assert.Equal(1, port.Counters.RxErrors);
        Assert.True(await IsClosedByPeer(ghost.Socket, timeout.Token));
    }

    [Fact]
    public async Task Accept_PeerSendsAMessageForAnotherSession_SessionEnds()
    {
        using var at = await GhostAtProxy(LinkTransport.Tcp, TimeSpan.FromSeconds(10));
        var (proxy, ghost, port, timeout) = (at.Proxy, at.Ghost, at.Port, at.Timeout);
        Assert.Equal(port.Session!.LocalSession, ghost.Daemon.RemoteSession);

        await ghost.Socket.SendAsync(ghost.Seal(MessageType.KeepAlive, new byte[12], session: ghost.Daemon.RemoteSession ^ 1), SocketFlags.None, timeout.Token);

        proxy.WaitDown(port, Quick);
        Assert.Contains("message for session", port.LastDownReason, StringComparison.Ordinal);
    }

    /// <summary>An on-path attacker changes a byte of a sealed frame: it never reaches the switch, and the session ends.</summary>
    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    [InlineData(7)]
    [InlineData(Wire.HeaderSize + 3)]
    [InlineData(Wire.HeaderSize + Wire.CounterSize + 40)]
    [InlineData(-1)]
    public async Task Receive_SealedFrameWithAByteChanged_NeverForwardedAndTheSessionEnds(int offset)
    {
        using var at = await GhostAtProxy(LinkTransport.Tcp, TimeSpan.FromSeconds(10));
        var (proxy, ghost, port, timeout) = (at.Proxy, at.Ghost, at.Port, at.Timeout);
        proxy.Route("ghost");
        var message = ghost.Seal(MessageType.Data, LinkNode.NewFrame(200, 3), hopLimit: 5);
        message[offset < 0 ? message.Length - 1 : offset] ^= 0x20;

        await ghost.Socket.SendAsync(message, SocketFlags.None, timeout.Token);

        proxy.WaitDown(port, Quick);
        Assert.Equal(0, proxy.Vm.Count);
        Assert.Contains("protocol error from ghost", port.LastDownReason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Receive_UnsealedFrameAfterTheHandshake_RefusedAndNeverForwarded()
    {
        using var at = await GhostAtProxy(LinkTransport.Tcp, TimeSpan.FromSeconds(10));
        var (proxy, ghost, port, timeout) = (at.Proxy, at.Ghost, at.Port, at.Timeout);
        proxy.Route("ghost");
        var frame = LinkNode.NewFrame(100, 4);

        await ghost.Socket.SendAsync((byte[])[.. Header(MessageType.Data, frame.Length, ghost.Daemon.RemoteSession, hopLimit: 5), .. frame],
            SocketFlags.None, timeout.Token);

        proxy.WaitDown(port, Quick);
        Assert.Contains("not sealed", port.LastDownReason, StringComparison.Ordinal);
        Assert.Equal(0, proxy.Vm.Count);
    }

    /// <summary>The overrun a hostile peer once had: a DATA payload longer than a frame buffer can hold.</summary>
    [Fact]
    public async Task Receive_DataLargerThanAFrame_RefusedBeforeAnyByteIsCopied()
    {
        using var at = await GhostAtProxy(LinkTransport.Tcp, TimeSpan.FromSeconds(10));
        var (proxy, ghost, port, timeout) = (at.Proxy, at.Ghost, at.Port, at.Timeout);

        await ghost.Socket.SendAsync(Header(MessageType.Data, Wire.MaxDataPayload, ghost.Daemon.RemoteSession, flags: MessageFlags.Encrypted, hopLimit: 5),
            SocketFlags.None, timeout.Token);

        proxy.WaitDown(port, Quick);
        Assert.Contains("a frame of", port.LastDownReason, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(12)]
    [InlineData(LinkSession.MaxProbePayload)]
    [InlineData(LinkSession.MaxProbePayload + 1)]
    [InlineData(200)]
    [InlineData(70_000)]
    public async Task Receive_KeepAliveOfAnyLength_AnsweredWhenSmallRefusedOtherwiseNeverACrash(int length)
    {
        using var at = await GhostAtProxy(LinkTransport.Tcp, TimeSpan.FromSeconds(10));
        var (proxy, ghost, port, timeout) = (at.Proxy, at.Ghost, at.Port, at.Timeout);
        var payload = new byte[length];
        new Random(length).NextBytes(payload);

        await ghost.Socket.SendAsync(ghost.Seal(MessageType.KeepAlive, payload), SocketFlags.None, timeout.Token);

        if (length <= LinkSession.MaxProbePayload)
        {
            Assert.True(await ghost.ReadUntil(MessageType.KeepAliveAck, payload, timeout.Token), "no answer to a keep-alive");
            Assert.True(port.IsUp);
        }
        else
        {
            proxy.WaitDown(port, Quick);
            Assert.Contains("keep-alive of the wrong size", port.LastDownReason, StringComparison.Ordinal);
        }
        // Whatever the length, the daemon goes on serving.
        var host = Node("host1", DaemonRole.Host);
        host.Links.AddLink("proxy", LinkTransport.Tcp, star: true, proxy.EndPoint);
        proxy.WaitUp("host1");
    }

    // What a session's connection may carry, by transport.

    [Fact]
    public async Task Receive_TcpMessagesSplitAcrossWrites_ControlFrameAndKeepAliveHandled()
    {
        using var at = await GhostAtProxy(LinkTransport.Tcp, TimeSpan.FromSeconds(10));
        var (proxy, ghost, port, timeout) = (at.Proxy, at.Ghost, at.Port, at.Timeout);
        proxy.Route("ghost");
        var frame = LinkNode.NewFrame(1000, 7);
        var control = "{\"x\":1}"u8.ToArray();
        byte[] keepAlive = [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 42];
        byte[] stream =
        [
            .. ghost.Seal(MessageType.Control, control),
            .. ghost.Seal(MessageType.Data, frame, hopLimit: 5),
            .. ghost.Seal(MessageType.KeepAlive, keepAlive),
        ];

        // Cut inside a header, inside the control payload and inside the frame: the receiver must
        // complete each message across reads (a frame's rest is read straight into its buffer).
        foreach (var (start, end) in new[] { (0, 7), (7, 20), (20, 60), (60, 500), (500, stream.Length) })
        {
            await ghost.Socket.SendAsync(stream.AsMemory(start, end - start), SocketFlags.None, timeout.Token);
            await Task.Delay(30, timeout.Token);
        }

        var received = Assert.Single(proxy.Vm.WaitFor(1));
        Assert.Equal(frame, received.Bytes);
        Assert.Equal(5, received.HopLimit);
        Wait.Until(() => proxy.Events.Events.Contains("control ghost"), Quick, "the control message");
        Assert.True(await ghost.ReadUntil(MessageType.KeepAliveAck, keepAlive, timeout.Token), "no in-band answer to the keep-alive");
        Assert.True(port.IsUp);
    }

    [Theory]
    [InlineData(MessageType.Data)]
    [InlineData(MessageType.KeepAlive)]
    public async Task Receive_UdpLinkConnection_ControlTakenFramesAndProbesRefused(MessageType type)
    {
        using var at = await GhostAtProxy(LinkTransport.Udp, TimeSpan.FromSeconds(10));
        var (proxy, ghost, port, timeout) = (at.Proxy, at.Ghost, at.Port, at.Timeout);
        proxy.Route("ghost");
        Assert.Equal(LinkTransport.Udp, port.Session!.Transport);

        // The connection of a UDP link carries control messages, sealed with the stream keys.
        await ghost.Socket.SendAsync(ghost.Seal(MessageType.Control, "{}"u8.ToArray()), SocketFlags.None, timeout.Token);
        Wait.Until(() => proxy.Events.Events.Contains("control ghost"), Quick, "the control message");
        Assert.True(port.IsUp);

        // Frames and keep-alives of a UDP link travel in datagrams: on the connection they are a protocol error.
        await ghost.Socket.SendAsync(ghost.Seal(type, type == MessageType.Data ? LinkNode.NewFrame(100, 1) : new byte[12]), SocketFlags.None, timeout.Token);

        proxy.WaitDown(port, Quick);
        Assert.Contains($"{type} on the connection of a UDP link", port.LastDownReason, StringComparison.Ordinal);
        Assert.Equal(0, proxy.Vm.Count);
    }

    // Helpers.

    private LinkNode Node(string name, DaemonRole role, StaticKeyPair? identity = null, PresharedKey? psk = null, bool acceptTools = false)
    {
        var node = new LinkNode(name, role, Keys, identity: identity, psk: psk, acceptTools: acceptTools);
        Nodes.Add(node);
        return node;
    }

    private static async Task<Socket> Connect(LinkNode node, CancellationToken ct)
    {
        var socket = new Socket(node.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(node.EndPoint, ct);
        return socket;
    }

    private static byte[] Header(MessageType type, int length, uint session = 0, byte hopLimit = 0, MessageFlags flags = MessageFlags.None)
    {
        var bytes = new byte[Wire.HeaderSize];
        Wire.Write(bytes, new LinkHeader(type, flags, hopLimit, session, length));
        return bytes;
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

    /// <summary>A Proxy with the ghost's session up on it, and the test's deadline.</summary>
    private sealed record GhostedProxy(LinkNode Proxy, Ghost Ghost, LinkPort Port, CancellationTokenSource Timeout) : IDisposable
    {
        public void Dispose()
        {
            Ghost.Dispose();
            Timeout.Dispose();
        }
    }

    private async Task<GhostedProxy> GhostAtProxy(LinkTransport transport, TimeSpan deadline)
    {
        var proxy = Node("proxy", DaemonRole.Proxy);
        var timeout = new CancellationTokenSource(deadline);
        var ghost = await Ghost.Connect(proxy, Keys, transport, timeout.Token);
        return new GhostedProxy(proxy, ghost, proxy.WaitUp("ghost"), timeout);
    }

    /// <summary>
    /// An admitted peer driven by the test over a raw socket: it does the real handshake as host
    /// "ghost", then seals (or mangles) whatever the test wants to send.
    /// </summary>
    private sealed class Ghost : IDisposable
    {
        private readonly SendCipher _seal;
        private readonly ReceiveCipher _open;

        private Ghost(Socket socket, PeerIdentity daemon)
        {
            Socket = socket;
            Daemon = daemon;
            // What travels on the connection (everything here) has the stream channel's keys.
            var stream = daemon.Keys.For(SessionChannel.Stream);
            _seal = new SendCipher(stream.Send);
            _open = new ReceiveCipher(stream.Receive);
        }

        public Socket Socket { get; }

        /// <summary>Who answered, and the session's keys.</summary>
        public PeerIdentity Daemon { get; }

        public const uint Local = 0x0600_0001;

        public static async Task<Ghost> Connect(LinkNode node, TestKeys keys, LinkTransport transport, CancellationToken ct)
        {
            var socket = await LinkManagerFaultTests.Connect(node, ct);
            using var initiator = new NoiseHandshake.Initiator(keys.Of("ghost"), keys.Of(node.Name).Public, PresharedKey.None);
            var init = initiator.CreateInit(new InitiatorHello("ghost", DaemonRole.Host, transport, true, Local, NoiseHandshake.Timestamp()));
            await HandshakeChannel.WriteAsync(socket, MessageType.HandshakeInit, 0, init, ct);
            var (header, payload) = await HandshakeChannel.ReadAsync(socket, ct);
            Assert.Equal(MessageType.HandshakeResponse, header.Type);
            Assert.Equal(Local, header.Session);
            var (hello, sessionKeys) = initiator.ReadResponse(payload, out var error) ?? throw new HandshakeException(error!);
            await HandshakeChannel.WriteAsync(socket, MessageType.HandshakeConfirm, hello.Session, sessionKeys.InitiatorConfirmation(), ct);
            return new Ghost(socket, new PeerIdentity(hello.Name, hello.Role, transport, true, hello.Session, keys.Of(node.Name).Public, sessionKeys));
        }

        /// <summary>A sealed message as a link sends it.</summary>
        public byte[] Seal(MessageType type, byte[] payload, byte hopLimit = 0, uint? session = null)
        {
            var message = new byte[Wire.HeaderSize + SealedRecord.Overhead + payload.Length];
            SealedRecord.Seal(message, _seal.Current, type, MessageFlags.None, hopLimit, session ?? Daemon.RemoteSession, payload);
            return message;
        }

        /// <summary>Reads messages (the daemon's own keep-alives among them) until one of <paramref name="type"/> with this payload comes.</summary>
        public async Task<bool> ReadUntil(MessageType type, byte[] expected, CancellationToken ct)
        {
            var header = new byte[Wire.HeaderSize];
            try
            {
                while (true)
                {
                    if (!await ReadExactly(header, ct))
                        return false;
                    Assert.Equal(WireError.None, Wire.TryRead(header, out var h));
                    var body = new byte[h.PayloadLength];
                    if (!await ReadExactly(body, ct))
                        return false;
                    var plain = new byte[SealedRecord.PlaintextLength(body.Length)];
                    Assert.True(SealedRecord.Open(_open, h, header, body, stream: true, plain), "a message from the daemon did not open");
                    if (h.Type == type && plain.AsSpan().SequenceEqual(expected))
                        return true;
                }
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }

        private async Task<bool> ReadExactly(byte[] buffer, CancellationToken ct)
        {
            for (var filled = 0; filled < buffer.Length;)
            {
                var n = await Socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, ct);
                if (n == 0)
                    return false;
                filled += n;
            }
            return true;
        }

        public void Dispose()
        {
            Socket.Dispose();
            _seal.Dispose();
            _open.Dispose();
        }
    }
}
