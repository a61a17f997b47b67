using Vnet.Engine;
using Vnet.Frames;
using Vnet.Links;
using Vnet.Tests.Frames;
using Vnet.Tests.Support;

namespace Vnet.Tests.Links;

/// <summary>
/// What a peer writes next to a frame is checked where the frame arrives (LinkSession.DeliverFrame
/// into VirtualSwitch.ForwardFromLink), over real TCP and UDP links: a bad offload header drops the
/// frame as BadOffload, DATA_VALID never arrives, and the hop limit is clamped to the receiver's.
/// </summary>
public sealed class PeerFrameCheckTests : LinkNodeTests
{
    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void BadOffloadHeader_DroppedAndCountedAtTheReceiver_GoodFramesStillPass(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport);
        var spec = new PacketSpec();
        var payload = TestPackets.RandomPayload(600, 1);
        var bad = TestPackets.PartialHeader(spec);
        bad.Flags |= 0x04;

        host.Send(TestPackets.ToFrame(host.Pool, TestPackets.Bytes(spec, payload, partialChecksum: true), bad));
        host.Send(TestPackets.Partial(host.Pool, spec, payload));

        var got = Assert.Single(proxy.Vm.WaitFor(1));
        Assert.Equal(TestPackets.PartialHeader(spec), got.Offload);
        Wait.Until(() => proxy.Switch.Dropped(DropReason.BadOffload) == 1, TimeSpan.FromSeconds(5), "the bad frame counted");
        Assert.Equal(1, proxy.Switch.OffloadFaults(OffloadFault.UnknownFlags));
        Assert.Single(proxy.Vm.Frames);
    }

    [Fact]
    public void AmplifyingSuperFrameOverTcp_Dropped()
    {
        var (proxy, host) = Pair(LinkTransport.Tcp);
        var spec = new PacketSpec();

        // 65,000 payload bytes in segments of 100: 650 segments at the far end's TAP.
        var header = TestPackets.PartialHeader(spec) with
        {
            GsoType = VirtioNetHeader.GsoTcpV4,
            GsoSize = 100,
            HdrLen = (ushort)spec.HeadersLength,
        };
        host.Send(TestPackets.ToFrame(host.Pool, TestPackets.Bytes(spec, TestPackets.RandomPayload(65_000, 2), partialChecksum: true), header));

        Wait.Until(() => proxy.Switch.Dropped(DropReason.BadOffload) == 1, TimeSpan.FromSeconds(5), "the super-frame refused");
        Assert.Equal(1, proxy.Switch.OffloadFaults(OffloadFault.TooManySegments));
        Assert.Empty(proxy.Vm.Frames);
    }

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void DataValidFromThePeer_Stripped(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport);
        var bytes = TestPackets.Bytes(new PacketSpec(), TestPackets.RandomPayload(300, 3));

        host.Send(bytes, offload: new VirtioNetHeader { Flags = VirtioNetHeader.FlagDataValid });

        var got = Assert.Single(proxy.Vm.WaitFor(1));
        Assert.Equal(bytes, got.Bytes);
        Assert.Equal(VirtioNetHeader.None, got.Offload);
    }

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void HopLimitFromThePeer_ClampedToTheReceiversLimit(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport);

        host.Send(LinkNode.NewFrame(100, seed: 1), hopLimit: 255);
        host.Send(LinkNode.NewFrame(100, seed: 2), hopLimit: 5);

        var got = proxy.Vm.WaitFor(2);
        Assert.Equal(proxy.Switch.HopLimit, got[0].HopLimit);
        Assert.Equal(4, got[1].HopLimit);
    }

    private (LinkNode Proxy, LinkNode Host) Pair(LinkTransport transport)
    {
        var proxy = new LinkNode("proxy", DaemonRole.Proxy, Keys);
        Nodes.Add(proxy);
        var host = new LinkNode("host1", DaemonRole.Host, Keys);
        Nodes.Add(host);
        host.Links.AddLink("proxy", transport, star: true, proxy.EndPoint);
        host.WaitUp("proxy");
        proxy.WaitUp("host1");
        host.Route("proxy");
        proxy.Route("host1");
        return (proxy, host);
    }
}
