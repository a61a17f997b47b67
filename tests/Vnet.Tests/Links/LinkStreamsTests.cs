using System.Buffers.Binary;
using Vnet.Interfaces;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Tests.Interfaces;
using Vnet.Tests.Support;

namespace Vnet.Tests.Links;

/// <summary>
/// A link of several streams (parallel sessions), TCP and UDP, in one process on loopback: the flow
/// hash, the hello that names a stream, the streams coming up and carrying flows in order, a stream
/// dying and coming back, a peer of one stream answering on every stream it was dialed, removal; for
/// UDP also each stream's own socket and thread (where datagrams go, freed with the stream, hostile
/// datagrams on it dropped and counted).
/// </summary>
public sealed class LinkStreamsTests : LinkNodeTests
{
    // The hash.

    [Theory]
    [InlineData(false, 6)]
    [InlineData(false, 17)]
    [InlineData(true, 6)]
    [InlineData(true, 17)]
    public void FlowHash_BothDirectionsAlike_OtherFlowsNot(bool v6, byte protocol)
    {
        var there = WithMacs(TapSteeringTests.Packet(v6, protocol, 1, 2, 40001, 5201), 1, 2);
        var back = WithMacs(TapSteeringTests.Packet(v6, protocol, 2, 1, 5201, 40001), 2, 1);
        Assert.Equal(FlowHash.Of(there), FlowHash.Of(back));
        Assert.Equal(FlowHash.Of(there), FlowHash.Of(there.ToArray()));
        Assert.NotEqual(FlowHash.Of(there), FlowHash.Of(TapSteeringTests.Packet(v6, protocol, 1, 2, 40002, 5201)));
        // The IP hash is the TAP's, so a link and a multi-queue TAP split flows alike.
        Assert.Equal(TapSteering.Hash(there), FlowHash.Of(there));
    }

    [Fact]
    public void FlowHash_ManyFlows_SpreadOverFourStreams()
    {
        var counts = new int[4];
        for (ushort port = 40000; port < 40400; port++)
            counts[FlowHash.StreamOf(TapSteeringTests.Packet(false, 6, 1, 2, port, 5201), 4)]++;
        Assert.All(counts, c => Assert.InRange(c, 60, 140));
        var macs = new int[4];
        for (byte m = 0; m < 200; m++)
            macs[FlowHash.StreamOf(Arp(m, 1), 4)]++;
        // Not IP: by MACs, not all on one stream.
        Assert.All(macs, c => Assert.InRange(c, 20, 80));
    }

    [Fact]
    public void FlowHash_NotIp_ByMacsSymmetric_ShortFrameStreamZero()
    {
        Assert.Equal(FlowHash.Of(Arp(3, 9)), FlowHash.Of(Arp(9, 3)));
        Assert.NotEqual(FlowHash.Of(Arp(3, 9)), FlowHash.Of(Arp(3, 10)));
        Assert.Equal(0, FlowHash.Of(new byte[13]));
        Assert.Equal(0, FlowHash.StreamOf(Arp(3, 9), 1));
    }

    // The hello.

    [Fact]
    public void Hello_StreamZero_TheByteItAlwaysWas_OthersRoundTrip()
    {
        var first = NoiseHandshake.Encode(new InitiatorHello("h1", DaemonRole.Host, LinkTransport.Tcp, true, 7, 1));
        Assert.Equal(1, first[3]);
        var third = NoiseHandshake.Encode(new InitiatorHello("h1", DaemonRole.Host, LinkTransport.Tcp, false, 7, 1, 3));
        Assert.Equal(0x30, third[3]);
        var keys = Keys.Of("h2");
        using var initiator = new NoiseHandshake.Initiator(Keys.Of("h1"), keys.Public, PresharedKey.None);
        var init = initiator.CreateInit(new InitiatorHello("h1", DaemonRole.Host, LinkTransport.Tcp, true, 7, 1, InitiatorHello.MaxStream));
        using var responder = new NoiseHandshake.Responder(keys, PresharedKey.None);
        var read = responder.ReadInit(init, out var error);
        Assert.Null(error);
        Assert.Equal(InitiatorHello.MaxStream, read!.Value.Hello.Stream);
        Assert.True(read.Value.Hello.Star);
    }

    // Links.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void Streams4_AllUp_FlowsSpreadInOrderBothWays_PeerOfOneStreamAnswersOnAll(LinkTransport transport)
    {
        var (h1, h2) = Linked(4, transport);
        var out1 = h1.Links.Find("h2")!;
        var in2 = h2.Links.Find("h1")!;
        Assert.Equal(1, in2.Streams);
        Assert.Equal(4, in2.Width);

        SendFlows(h1, flows: 32, rounds: 20);
        var got = h2.Vm.WaitFor(32 * 20);
        AssertInOrderPerFlow(got);
        Assert.True(CarryingStreams(out1, s => s.SentFrames) >= 3, Describe(out1));
        Assert.True(CarryingStreams(in2, s => s.ReceivedFrames) >= 3, Describe(in2));

        // The peer dialed with one stream answers on every stream it was dialed on.
        SendFlows(h2, flows: 32, rounds: 5);
        AssertInOrderPerFlow(h1.Vm.WaitFor(32 * 5));
        Assert.True(CarryingStreams(in2, s => s.SentFrames) >= 3, Describe(in2));
        Assert.Equal(0, out1.Counters.TxDrops);
        Assert.Equal(0, in2.Counters.TxDrops);
        // Only the first stream is the link to the control plane.
        Assert.Single(h1.Events.Events, e => e == "up h2");
        Assert.Single(h2.Events.Events, e => e == "up h1");
    }

    [Theory]
    [InlineData(2, LinkTransport.Tcp)]
    [InlineData(0, LinkTransport.Tcp)]
    [InlineData(2, LinkTransport.Udp)]
    [InlineData(0, LinkTransport.Udp)]
    public void Streams4_OneStreamDies_ItsFlowsGoOnOthersAndItComesBack(int stream, LinkTransport transport)
    {
        var (h1, h2) = Linked(4, transport);
        var out1 = h1.Links.Find("h2")!;
        var dying = out1.SessionOf(stream)!;

        dying.Close("test: killed");
        // At once, before any re-dial: every frame still goes (on the stream of its flow, or the first
        // up). Not checked for order: the stream may come back during the burst, and the frames of
        // its flows still queued on the first stream can then arrive after newer ones (docs/links.md).
        SendFlows(h1, flows: 32, rounds: 10);
        Assert.Equal(320, h2.Vm.WaitFor(320).Count);
        Assert.Equal(0, out1.Counters.TxDrops);

        Wait.Until(() => out1.SessionOf(stream) is { IsClosed: false } s && s != dying && out1.StreamsUp == 4, TimeSpan.FromSeconds(10),
            $"stream {stream} back ({Describe(out1)})");
        h2.Vm.Clear();
        SendFlows(h1, flows: 32, rounds: 10);
        AssertInOrderPerFlow(h2.Vm.WaitFor(320));
        Assert.True(out1.SessionOf(stream)!.SentFrames > 0, Describe(out1));
        if (stream == 0)
            Assert.Equal(2, h1.Events.Events.Count(e => e == "up h2"));
    }

    /// <summary>A host's star link of 2 streams (--streams, [proxy] streams): the Proxy takes both, the host sends on both.</summary>
    [Fact]
    public void StarLinkOfTwoStreams_ProxyTakesBoth_FramesOnBoth()
    {
        var proxy = new LinkNode("proxy", DaemonRole.Proxy, Keys);
        Nodes.Add(proxy);
        var host = Node("h1");
        host.Links.AddLink("proxy", LinkTransport.Tcp, star: true, proxy.EndPoint, streams: 2);
        Wait.Until(() => host.Links.Find("proxy") is { StreamsUp: 2 } && proxy.Links.Find("h1") is { StreamsUp: 2 }, TimeSpan.FromSeconds(10),
            "both streams of the star up");
        Assert.True(proxy.Links.Find("h1")!.SessionOf(1)!.Peer.Star);
        host.Route("proxy");
        proxy.Route("h1");
        SendFlows(host, flows: 32, rounds: 4);
        AssertInOrderPerFlow(proxy.Vm.WaitFor(128));
        Assert.Equal(2, CarryingStreams(host.Links.Find("proxy")!, s => s.SentFrames));
    }

    [Fact]
    public void Streams4_RemovedWhileComingUp_NoSessionLeftAtEitherEnd()
    {
        var h1 = Node("h1");
        var h2 = Node("h2");
        h1.Links.AddLink("h2", LinkTransport.Tcp, star: false, h2.EndPoint, streams: 4);
        Wait.Until(() => h2.Links.Find("h1") is { StreamsUp: >= 2 }, TimeSpan.FromSeconds(5), "two streams up");
        var port = h1.Links.Find("h2")!;
        Assert.True(h1.Links.RemoveLink("h2"));
        Wait.Until(() => port.StreamsUp == 0 && h2.Links.Find("h1")!.StreamsUp == 0, TimeSpan.FromSeconds(5),
            $"every stream gone ({Describe(port)})");
        // Nothing dials any more.
        Thread.Sleep(600);
        Assert.Equal(0, h2.Links.Find("h1")!.StreamsUp);
    }

    [Fact]
    public void Streams_UdpTaken_NineRefused()
    {
        var h1 = Node("h1");
        Assert.Equal(2, h1.Links.AddLink("h2", LinkTransport.Udp, star: false, h1.EndPoint, streams: 2).Streams);
        Assert.Throws<ArgumentOutOfRangeException>(() => h1.Links.AddLink("h3", LinkTransport.Tcp, star: false, h1.EndPoint, streams: 9));
    }

    // UDP streams: each its own socket.

    /// <summary>
    /// Stream k &gt;= 1 of a UDP link has its own socket and receive thread at both ends, each end's
    /// datagrams go to the other's stream socket, and the first stream stays on the daemons' sockets.
    /// </summary>
    [Fact]
    public void UdpStreams4_EachStreamOnItsOwnSocketsAtBothEnds()
    {
        var (h1, h2) = Linked(4, LinkTransport.Udp);
        var out1 = h1.Links.Find("h2")!;
        var in2 = h2.Links.Find("h1")!;
        SendFlows(h1, flows: 32, rounds: 5);
        h2.Vm.WaitFor(32 * 5);
        var ports = new HashSet<int>();
        for (var i = 0; i < 4; i++)
        {
            var dialer = Udp(out1, i);
            var responder = Udp(in2, i);
            if (i == 0)
            {
                Assert.Null(dialer.Own);
                Assert.Null(responder.Own);
                Assert.Same(h1.Links.Udp, dialer.Peer!.Via);
                Assert.Equal(h2.EndPoint.Port, dialer.Peer.EndPoint.Port);
                continue;
            }
            Assert.True(dialer.Own!.Receiving && responder.Own!.Receiving);
            Assert.True(ports.Add(dialer.Own.LocalEndPoint.Port) && ports.Add(responder.Own.LocalEndPoint.Port));
            // Each end sends from its stream socket to the other's.
            Assert.Same(dialer.Own, dialer.Peer!.Via);
            Assert.Equal(responder.Own.LocalEndPoint.Port, dialer.Peer.EndPoint.Port);
            Wait.Until(() => responder.Peer is { } p && p.Via == responder.Own, TimeSpan.FromSeconds(5), $"stream {i}: the responder on its own socket");
            Assert.Equal(dialer.Own.LocalEndPoint.Port, responder.Peer!.EndPoint.Port);
            Assert.Equal(0, dialer.Roams);
            Assert.Equal(0, responder.Roams);
        }
        // The dialer's streams hear only on their own sockets, and nothing there was refused. At the
        // responder a stream's first probe may come before the CONFIRM was read, i.e. before there is
        // a session for it (as on every UDP link): at most one per stream.
        Assert.Equal(0, h1.Links.Udp!.Rejected);
        Assert.InRange(h2.Links.Udp!.Rejected, 0, 4);
    }

    /// <summary>Twenty reconnections of a UDP stream (ended at either end) leave no socket and no thread behind.</summary>
    [Fact]
    public void UdpStream_TwentyReconnections_NoSocketOrThreadLeft()
    {
        var (h1, h2) = Linked(2, LinkTransport.Udp);
        var out1 = h1.Links.Find("h2")!;
        var in2 = h2.Links.Find("h1")!;
        var gone = new List<UdpTransport>();
        for (var round = 0; round < 20; round++)
        {
            var old1 = out1.SessionOf(1)!;
            var old2 = in2.SessionOf(1)!;
            gone.Add(Udp(out1, 1).Own!);
            gone.Add(Udp(in2, 1).Own!);
            (round % 2 == 0 ? old1 : old2).Close("test: reconnect");
            Wait.Until(() => out1.SessionOf(1) is { IsClosed: false } a && a != old1 && in2.SessionOf(1) is { IsClosed: false } b && b != old2
                && old1.Completion.IsCompleted && old2.Completion.IsCompleted,
                TimeSpan.FromSeconds(10), $"round {round}: stream 1 back at both ends ({Describe(out1)})");
        }
        // The new stream still carries its flows.
        SendFlows(h1, flows: 32, rounds: 2);
        AssertInOrderPerFlow(h2.Vm.WaitFor(64));
        Assert.True(out1.SessionOf(1)!.SentFrames > 0, Describe(out1));

        Assert.All(gone, u => Assert.False(u.Receiving));
        var live = new HashSet<int> { Udp(out1, 1).Own!.LocalEndPoint.Port, Udp(in2, 1).Own!.LocalEndPoint.Port };
        var open = OpenUdpPorts();
        Assert.DoesNotContain(gone, u => !live.Contains(u.LocalEndPoint.Port) && open.Contains(u.LocalEndPoint.Port));
        // One stream thread per end (no other test makes UDP streams, and this class runs its tests one at a time).
        Assert.Equal(2, StreamThreads());
    }

    /// <summary>
    /// Garbage, an unknown session, a forgery and a replay sent to a stream's own socket are dropped and
    /// counted with the daemon's UDP rejections; the stream stays up and carries on, its peer unmoved.
    /// </summary>
    [Fact]
    public void UdpStream_HostileDatagramsOnItsSocket_DroppedAndCounted()
    {
        var (h1, h2) = Linked(2, LinkTransport.Udp);
        var out1 = h1.Links.Find("h2")!;
        var in2 = h2.Links.Find("h1")!;
        var dialer = Udp(out1, 1);
        var responder = Udp(in2, 1);
        Wait.Until(() => responder.Peer is { } p && p.Via == responder.Own, TimeSpan.FromSeconds(5), "the responder on its own socket");
        var session1 = out1.SessionOf(1)!;
        var session2 = in2.SessionOf(1)!;
        var peer1 = dialer.Peer;
        var peer2 = responder.Peer;
        var rejected1 = h1.Links.Udp!.Rejected;
        var rejected2 = h2.Links.Udp!.Rejected;
        var refused1 = session1.RefusedMessages;

        using var attacker = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Dgram,
            System.Net.Sockets.ProtocolType.Udp);
        attacker.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        var garbage = new byte[300];
        Random.Shared.NextBytes(garbage);
        // Sealed as the peer seals (its key): a keep-alive answer too short to be an RTT sample.
        var genuine = new byte[Wire.HeaderSize + SealedRecord.Overhead + 4];
        var length = SealedRecord.Seal(genuine, session2.DatagramSealer.Current, MessageType.KeepAliveAck, MessageFlags.None, 0, session1.LocalSession, [1, 2, 3, 4]);
        var forged = genuine[..length].ToArray();
        forged[^1] ^= 1;
        var unknown = genuine[..length].ToArray();
        BinaryPrimitives.WriteUInt32BigEndian(unknown.AsSpan(8), session1.LocalSession ^ 0x5555_5555);
        foreach (var datagram in new[] { garbage, unknown, forged, genuine[..length], genuine[..length] })
            attacker.SendTo(datagram, dialer.Own!.LocalEndPoint);
        // At the responder (which follows authenticated datagrams only): garbage, unknown, forged.
        foreach (var datagram in new[] { garbage, unknown, forged })
            attacker.SendTo(datagram, responder.Own!.LocalEndPoint);

        Wait.Until(() => h1.Links.Udp.Rejected >= rejected1 + 4 && h2.Links.Udp.Rejected >= rejected2 + 3, TimeSpan.FromSeconds(5),
            $"rejections counted (h1 {h1.Links.Udp.Rejected - rejected1}, h2 {h2.Links.Udp.Rejected - rejected2})");
        Thread.Sleep(200);
        Assert.Equal(rejected1 + 4, h1.Links.Udp.Rejected);
        Assert.Equal(rejected2 + 3, h2.Links.Udp.Rejected);
        // The forgery and the replay reached the session's window and were refused there.
        Assert.Equal(refused1 + 2, session1.RefusedMessages);
        Assert.Same(peer1, dialer.Peer);
        Assert.Same(peer2, responder.Peer);
        Assert.Same(session1, out1.SessionOf(1));
        Assert.False(session1.IsClosed || session2.IsClosed);
        SendFlows(h1, flows: 32, rounds: 3);
        AssertInOrderPerFlow(h2.Vm.WaitFor(96));
        Assert.True(session1.SentFrames > 0 && session2.ReceivedFrames > 0, Describe(out1));
    }

    // Helpers.

    private LinkNode Node(string name)
    {
        var node = new LinkNode(name, DaemonRole.Host, Keys);
        Nodes.Add(node);
        return node;
    }

    /// <summary>h1 dials h2 with <paramref name="streams"/>; both routed vm &lt;-&gt; link, every stream up at both ends.</summary>
    private (LinkNode H1, LinkNode H2) Linked(int streams, LinkTransport transport = LinkTransport.Tcp)
    {
        var h1 = Node("h1");
        var h2 = Node("h2");
        h1.Links.AddLink("h2", transport, star: false, h2.EndPoint, streams);
        h1.WaitUp("h2");
        h2.WaitUp("h1");
        Wait.Until(() => h1.Links.Find("h2")!.StreamsUp == streams && h2.Links.Find("h1")!.StreamsUp == streams, TimeSpan.FromSeconds(10),
            "every stream up");
        h1.Route("h2");
        h2.Route("h1");
        return (h1, h2);
    }

    /// <summary>Frames of <paramref name="flows"/> UDP flows, round after round; each carries its flow and its number in the flow.</summary>
    private static void SendFlows(LinkNode from, int flows, int rounds)
    {
        for (var round = 0; round < rounds; round++)
        {
            // The node's pool is small: a round goes once the last ones' buffers are back.
            Wait.Until(() => from.Pool.Capacity - from.Pool.Created + from.Pool.Available >= flows, TimeSpan.FromSeconds(5), $"{from.Name}: {flows} free frames");
            for (var flow = 0; flow < flows; flow++)
            {
                var frame = TapSteeringTests.Packet(false, 17, 1, 2, (ushort)(40000 + flow), 5201);
                Array.Resize(ref frame, 200);
                BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(100), flow);
                BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(104), round);
                from.Send(frame);
            }
        }
    }

    private static void AssertInOrderPerFlow(IReadOnlyList<ReceivedFrame> frames)
    {
        var next = new Dictionary<int, int>();
        foreach (var f in frames)
        {
            var flow = BinaryPrimitives.ReadInt32BigEndian(f.Bytes.AsSpan(100));
            var n = BinaryPrimitives.ReadInt32BigEndian(f.Bytes.AsSpan(104));
            Assert.Equal(next.GetValueOrDefault(flow), n);
            next[flow] = n + 1;
        }
    }

    private static int CarryingStreams(LinkPort port, Func<LinkSession, long> frames)
    {
        var carrying = 0;
        for (var i = 0; i < port.Width; i++)
        {
            if (port.SessionOf(i) is { } s && frames(s) > 0)
                carrying++;
        }
        return carrying;
    }

    private static UdpLinkTransport Udp(LinkPort port, int stream) => (UdpLinkTransport)port.SessionOf(stream)!.DataChannel;

    /// <summary>Local ports of the UDP sockets open in this network namespace (/proc/net/udp).</summary>
    private static HashSet<int> OpenUdpPorts()
    {
        var ports = new HashSet<int>();
        foreach (var line in File.ReadLines("/proc/net/udp").Skip(1))
        {
            var local = line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1];
            ports.Add(Convert.ToInt32(local[(local.IndexOf(':', StringComparison.Ordinal) + 1)..], 16));
        }
        return ports;
    }

    /// <summary>Threads of this process that receive a UDP stream's socket (named udp-PEER.K).</summary>
    private static int StreamThreads()
    {
        var count = 0;
        foreach (var task in Directory.GetDirectories("/proc/self/task"))
        {
            try
            {
                if (File.ReadAllText(Path.Combine(task, "comm")).StartsWith("udp-h", StringComparison.Ordinal))
                    count++;
            }
            catch (IOException)
            {
                // The thread ended meanwhile.
            }
        }
        return count;
    }

    private static string Describe(LinkPort port)
    {
        var parts = new List<string>();
        for (var i = 0; i < port.Width; i++)
        {
            var s = port.SessionOf(i);
            parts.Add(s is null ? $"{i}: none" : $"{i}: {(s.IsClosed ? "closed" : "up")} tx {s.SentFrames} rx {s.ReceivedFrames}");
        }
        return string.Join(", ", parts);
    }

    private static byte[] WithMacs(byte[] frame, byte dst, byte src)
    {
        frame[5] = dst;
        frame[11] = src;
        return frame;
    }

    private static byte[] Arp(byte dst, byte src)
    {
        var f = new byte[60];
        f[0] = 0x02;
        f[5] = dst;
        f[6] = 0x02;
        f[11] = src;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0806);
        return f;
    }
}
