using System.Buffers.Binary;
using Vnet.Interfaces;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Tests.Interfaces;
using Vnet.Tests.Support;

namespace Vnet.Tests.Links;

/// <summary>
/// A TCP link of several streams (parallel connections), in one process on loopback: the flow hash,
/// the hello that names a stream, the streams coming up and carrying flows in order, a stream dying
/// and coming back, a peer of one stream answering on every stream it was dialed, removal.
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

    [Fact]
    public void Streams4_AllUp_FlowsSpreadInOrderBothWays_PeerOfOneStreamAnswersOnAll()
    {
        var (h1, h2) = Linked(4);
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
    [InlineData(2)]
    [InlineData(0)]
    public void Streams4_OneStreamDies_ItsFlowsGoOnOthersAndItComesBack(int stream)
    {
        var (h1, h2) = Linked(4);
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

    /// <summary>A peer's INIT for stream 1 of a UDP session is refused with the reason, and makes no port.</summary>
    [Fact]
    public async Task Accept_StreamAboveZeroOfAUdpSession_RejectedWithTheReason()
    {
        var h2 = Node("h2");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        using var socket = new System.Net.Sockets.Socket(h2.EndPoint.AddressFamily, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await socket.ConnectAsync(h2.EndPoint, timeout.Token);
        using var initiator = new NoiseHandshake.Initiator(Keys.Of("h1"), Keys.Of("h2").Public, PresharedKey.None);
        var init = initiator.CreateInit(new InitiatorHello("h1", DaemonRole.Host, LinkTransport.Udp, false, 0x0800_0001, NoiseHandshake.Timestamp(), 1));
        await HandshakeChannel.WriteAsync(socket, MessageType.HandshakeInit, 0, init, timeout.Token);
        var (header, payload) = await HandshakeChannel.ReadAsync(socket, timeout.Token);

        Assert.Equal(MessageType.Reject, header.Type);
        Assert.Equal("parallel streams are for TCP links only", System.Text.Encoding.UTF8.GetString(payload));
        Assert.Null(h2.Links.Find("h1"));
    }

    [Fact]
    public void Streams_OnUdpLink_Refused()
    {
        var h1 = Node("h1");
        Assert.Throws<ArgumentException>(() => h1.Links.AddLink("h2", LinkTransport.Udp, star: false, h1.EndPoint, streams: 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => h1.Links.AddLink("h3", LinkTransport.Tcp, star: false, h1.EndPoint, streams: 9));
    }

    // Helpers.

    private LinkNode Node(string name)
    {
        var node = new LinkNode(name, DaemonRole.Host, Keys);
        Nodes.Add(node);
        return node;
    }

    /// <summary>h1 dials h2 with <paramref name="streams"/>; both routed vm &lt;-&gt; link, every stream up at both ends.</summary>
    private (LinkNode H1, LinkNode H2) Linked(int streams)
    {
        var h1 = Node("h1");
        var h2 = Node("h2");
        h1.Links.AddLink("h2", LinkTransport.Tcp, star: false, h2.EndPoint, streams);
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
