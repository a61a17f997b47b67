using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;
using Vnet.Tests.Frames;
using Vnet.Tests.Support;

namespace Vnet.Tests.Links;

/// <summary>
/// Two link managers in one process on loopback, a Proxy and a host that dials it, with real TCP and
/// UDP sockets: the link comes up, frames and their offload metadata cross, hop limits, keep-alives,
/// removal and re-dialing. Failures (bad keys, garbage, silent peers) are in <see cref="LinkManagerFaultTests"/>.
/// </summary>
public sealed class LinkManagerTests : LinkNodeTests
{
    private const string ProxyName = "proxy";
    private const string HostName = "host1";

    // Coming up.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void AddLink_HostDialsProxy_LinkUpOnBothSides(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport, route: false);
        var atHost = host.WaitUp(ProxyName);
        var atProxy = proxy.WaitUp(HostName);

        Assert.Equal(ProxyName, atHost.Session!.Peer.Name);
        Assert.Equal(DaemonRole.Proxy, atHost.Session.Peer.Role);
        Assert.Equal(HostName, atProxy.Session!.Peer.Name);
        Assert.Equal(DaemonRole.Host, atProxy.Session.Peer.Role);
        Assert.Equal(transport, atHost.Session.Transport);
        Assert.Equal(transport, atProxy.Session.Transport);
        Assert.True(atHost.Star);
        Assert.True(atProxy.Star);
        Assert.True(atProxy.InFloodTree);
        Assert.Equal(proxy.EndPoint, atHost.DialAddress);
        Assert.Null(atProxy.DialAddress);
        // Each side addresses its messages with the other's session id.
        Assert.Equal(atHost.Session.LocalSession, atProxy.Session.Peer.RemoteSession);
        Assert.Equal(atProxy.Session.LocalSession, atHost.Session.Peer.RemoteSession);
        // One key a direction: what one end seals with, the other opens with.
        Assert.Equal(atHost.Session.Peer.Keys.Send, atProxy.Session.Peer.Keys.Receive);
        Assert.Equal(atHost.Session.Peer.Keys.Receive, atProxy.Session.Peer.Keys.Send);
        Assert.NotEqual(atHost.Session.Peer.Keys.Send, atHost.Session.Peer.Keys.Receive);
        Assert.Equal(Keys.Of("proxy").Public, atHost.Session.Peer.PublicKey);
        Assert.Equal(Keys.Of("host1").Public, atProxy.Session.Peer.PublicKey);
        Assert.Equal(1, atHost.SessionsStarted);
        Assert.Equal(1, atProxy.SessionsStarted);
        Assert.Same(atProxy, proxy.Switch.FindPort(PortRef.Link(HostName)));
        Assert.Same(atHost, host.Switch.FindPort(PortRef.Link(ProxyName)));
        Assert.Contains($"up {ProxyName}", host.Events.Events);
        Assert.Contains($"up {HostName}", proxy.Events.Events);
    }

    /// <summary>
    /// A link's socket must never join the runtime's epoll set: the runtime cannot take it out again,
    /// and its epoll thread and a pool worker would then wake for every segment of the session (21%
    /// of a daemon's CPU on a TCP link before the handshake moved to HandshakePoller). Read from
    /// /proc: every descriptor of an epoll instance of this process is listed in its fdinfo.
    /// </summary>
    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void LinkUp_SessionSocketsAreInNoEpollSetOfTheProcess(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport);
        var atHost = host.WaitUp(ProxyName).Session!;
        var atProxy = proxy.WaitUp(HostName).Session!;
        var frame = LinkNode.NewFrame(1000, 7);
        host.Send(frame);
        proxy.Vm.WaitFor(1);

        var watched = EpollWatchedDescriptors();
        Assert.NotEmpty(watched.Keys);
        foreach (var fd in new[] { atHost.Connection.Descriptor, atProxy.Connection.Descriptor })
            Assert.False(watched.TryGetValue(fd, out var epoll), $"link socket {fd} is watched by epoll instance {epoll}");
    }

    private static Dictionary<int, int> EpollWatchedDescriptors()
    {
        var watched = new Dictionary<int, int>();
        foreach (var entry in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(entry).LinkTarget;
            }
            catch (IOException)
            {
                continue;
            }
            if (target != "anon_inode:[eventpoll]")
                continue;
            var epoll = int.Parse(Path.GetFileName(entry), System.Globalization.CultureInfo.InvariantCulture);
            string[] lines;
            try
            {
                lines = File.ReadAllLines($"/proc/self/fdinfo/{epoll}");
            }
            catch (IOException)
            {
                continue;
            }
            foreach (var line in lines)
            {
                // "tfd:       42 events:       19 data: ..."
                if (!line.StartsWith("tfd:", StringComparison.Ordinal))
                    continue;
                var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                watched[int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture)] = epoll;
            }
        }
        return watched;
    }

    [Fact]
    public void AddLink_DirectLinkBetweenHosts_UpAndOutsideTheFloodTree()
    {
        var a = Node("host-a", DaemonRole.Host);
        var b = Node("host-b", DaemonRole.Host);

        a.Links.AddLink("host-b", LinkTransport.Tcp, star: false, b.EndPoint);

        Assert.False(a.WaitUp("host-b").InFloodTree);
        Assert.False(b.WaitUp("host-a").InFloodTree);
    }

    [Fact]
    public void AddLink_SameSettingsTwice_ReturnsTheSamePort()
    {
        var (proxy, host) = Pair(LinkTransport.Tcp, route: false);
        var first = host.WaitUp(ProxyName);

        var again = host.Links.AddLink(ProxyName, LinkTransport.Tcp, star: true, proxy.EndPoint);

        Assert.Same(first, again);
        Assert.Single(host.Links.Links);
        Assert.Throws<InvalidOperationException>(() =>
            host.Links.AddLink(ProxyName, LinkTransport.Tcp, star: true, new System.Net.IPEndPoint(proxy.EndPoint.Address, 1)));
    }

    // Frames.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void Forward_PlainFrames_CrossIntactInBothDirections(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport);
        int[] sizes = [14, 60, 1514, 9014];

        for (var i = 0; i < sizes.Length; i++)
            host.Send(LinkNode.NewFrame(sizes[i], seed: i));
        var atProxy = proxy.Vm.WaitFor(sizes.Length);
        for (var i = 0; i < sizes.Length; i++)
            proxy.Send(LinkNode.NewFrame(sizes[i], seed: 100 + i));
        var atHost = host.Vm.WaitFor(sizes.Length);

        for (var i = 0; i < sizes.Length; i++)
        {
            Assert.Equal(LinkNode.NewFrame(sizes[i], i), atProxy[i].Bytes);
            Assert.Equal(LinkNode.NewFrame(sizes[i], 100 + i), atHost[i].Bytes);
            Assert.Equal(VirtioNetHeader.None, atProxy[i].Offload);
            Assert.Equal(VirtioNetHeader.None, atHost[i].Offload);
            Assert.Equal(7, atProxy[i].HopLimit);
        }
        var hostPort = host.Links.Find(ProxyName)!;
        Assert.Equal(sizes.Length, hostPort.Counters.TxFrames);
        Assert.Equal(sizes.Sum(), hostPort.Counters.TxBytes);
        Assert.Equal(sizes.Length, hostPort.Counters.RxFrames);
        Assert.Equal(sizes.Length, proxy.Links.Find(HostName)!.Counters.RxFrames);
    }

    [Theory]
    [InlineData(LinkTransport.Tcp, false)]
    [InlineData(LinkTransport.Tcp, true)]
    [InlineData(LinkTransport.Udp, false)]
    [InlineData(LinkTransport.Udp, true)]
    public void Forward_NeedsChecksumFrame_ArrivesWithItsOffloadHeader(LinkTransport transport, bool udpPacket)
    {
        var (proxy, host) = Pair(transport);
        var spec = new PacketSpec { Udp = udpPacket, V6 = udpPacket };
        var payload = TestPackets.RandomPayload(700, 5);

        host.Send(TestPackets.Partial(host.Pool, spec, payload));

        var got = Assert.Single(proxy.Vm.WaitFor(1));
        Assert.Equal(TestPackets.Bytes(spec, payload, partialChecksum: true), got.Bytes);
        Assert.Equal(TestPackets.PartialHeader(spec), got.Offload);
        Assert.True(TestPackets.L4ChecksumValid(TestPackets.CompletedCopy(got.ToFrame()), spec));
    }

    public static TheoryData<string> SuperFrameShapes() => ["tcp4", "tcp6", "udp4"];

    [Theory]
    [MemberData(nameof(SuperFrameShapes))]
    public void Forward_GsoSuperFrameOverUdp_ArrivesAsValidSegments(string shape)
    {
        // Segments that fit a sealed datagram as they are (UdpLinkTransport.MaxFrame), so none is cut again.
        const int Mss = 1300;
        var (proxy, host) = Pair(LinkTransport.Udp);
        var spec = Shape(shape);
        var payload = TestPackets.RandomPayload(20_000, 6);
        var original = TestPackets.Bytes(spec, payload, partialChecksum: true);

        host.Send(TestPackets.SuperFrame(host.Pool, spec, payload, Mss));

        // The receiver may hand over the segments as they came or merged back into a super-frame
        // (receive-side GRO); either way the payload arrives once and in order.
        Wait.Until(() => proxy.Vm.Frames.Sum(f => f.Bytes.Length - spec.HeadersLength) >= payload.Length,
            TimeSpan.FromSeconds(5), "the whole payload at the Proxy");
        var got = proxy.Vm.Frames;
        Assert.All(got, f => Assert.Equal(7, f.HopLimit));
        var pool = new FramePool(64);
        var segments = new List<Frame>();
        foreach (var f in got)
            Assert.True(Offloads.Segment(f.ToFrame(), pool, segments, completeChecksums: false));
        // What a TAP on the far side emits must be what the sender's TAP would have: the same segments.
        OffloadsTests.AssertSegments(segments, spec, payload, original, Mss, complete: false);
        TestPackets.ReleaseAll(segments);
    }

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void SendControl_SmallThenLargerThanTheReceiveBufferThenTheLargest_EachArrivesWhole(LinkTransport transport)
    {
        // The receive buffer starts at 64 KiB and grows for a larger control message (a directory
        // snapshot of thousands of VMs), up to the largest a peer may send.
        var (proxy, host) = Pair(transport);
        var session = host.Links.Find(ProxyName)!.Session!;
        var sizes = new[] { 100, 64 * 1024, 300_000, Wire.MaxControlPayload - Wire.CounterSize - Wire.TagSize, 5 };
        var sent = new List<byte[]>();
        foreach (var size in sizes)
        {
            var payload = new byte[size];
            new Random(size).NextBytes(payload);
            sent.Add(payload);
            session.SendControl(MessageType.Control, payload);
        }
        Wait.Until(() => proxy.Events.ControlPayloads.Count >= sizes.Length, TimeSpan.FromSeconds(20), "every control message at the Proxy");
        var received = proxy.Events.ControlPayloads.ToArray();
        for (var i = 0; i < sizes.Length; i++)
            Assert.True(sent[i].AsSpan().SequenceEqual(received[i]), $"control message {i} ({sizes[i]} bytes) arrived changed");
        Assert.Same(session, host.Links.Find(ProxyName)!.Session);
    }

    [Fact]
    public void Forward_GsoSuperFrameOverTcp_ArrivesWholeWithItsMetadata()
    {
        var (proxy, host) = Pair(LinkTransport.Tcp);
        var spec = new PacketSpec();
        var payload = TestPackets.RandomPayload(60_000, 7);
        var frame = TestPackets.SuperFrame(host.Pool, spec, payload, 1448);
        var offload = frame.Offload;

        host.Send(frame);

        var got = Assert.Single(proxy.Vm.WaitFor(1));
        Assert.Equal(TestPackets.Bytes(spec, payload, partialChecksum: true), got.Bytes);
        Assert.Equal(offload, got.Offload);
        Assert.True(got.Offload.IsGso);
    }

    [Fact]
    public void Forward_60KiBPlainFrameOverTcp_ArrivesWhole()
    {
        var (proxy, host) = Pair(LinkTransport.Tcp);
        var bytes = LinkNode.NewFrame(60 * 1024, seed: 8);

        host.Send(bytes);

        var got = Assert.Single(proxy.Vm.WaitFor(1));
        Assert.Equal(bytes, got.Bytes);
        Assert.Equal(VirtioNetHeader.None, got.Offload);
    }

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void Forward_ManyFramesOfMixedSizes_AllArriveInOrder(LinkTransport transport)
    {
        // Sizes that make TCP messages straddle receive chunks in every possible way.
        var (proxy, host) = Pair(transport);
        var random = new Random(9);
        var sent = new List<byte[]>();
        for (var burst = 0; burst < 20; burst++)
        {
            for (var i = 0; i < 50; i++)
            {
                var size = (i % 7) switch
                {
                    0 => 14,
                    1 => random.Next(15, 128),
                    2 => 1514,
                    3 => random.Next(1000, 9000),
                    4 when transport == LinkTransport.Tcp && i % 3 == 0 => random.Next(30_000, 65_000),
                    _ => random.Next(60, 1514),
                };
                var bytes = LinkNode.NewFrame(size, seed: sent.Count);
                sent.Add(bytes);
                host.Send(bytes);
            }
            // Bursts below the queue and pool sizes: this test is about framing, not about drops.
            proxy.Vm.WaitFor(sent.Count);
        }

        var got = proxy.Vm.Frames;
        Assert.Equal(sent.Count, got.Count);
        for (var i = 0; i < sent.Count; i++)
            Assert.True(sent[i].AsSpan().SequenceEqual(got[i].Bytes), $"frame {i} ({sent[i].Length} bytes) differs");
        Assert.Equal(0, host.Links.Find(ProxyName)!.Counters.TxDrops);
    }

    // Hop limit.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void Forward_HopLimits_DecrementedAndZeroNeverSent(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport);
        var port = host.Links.Find(ProxyName)!;

        host.Send(LinkNode.NewFrame(100, seed: 1), hopLimit: 0);
        Assert.Equal(1, port.Counters.TxDrops);
        host.Send(LinkNode.NewFrame(100, seed: 2), hopLimit: 1);
        host.Send(LinkNode.NewFrame(100, seed: 3), hopLimit: 255);

        var got = proxy.Vm.WaitFor(2);
        // The hop-limit-0 frame was first; had it been sent, it would have arrived first.
        Assert.Equal(2, got.Count);
        Assert.Equal(LinkNode.NewFrame(100, 2), got[0].Bytes);
        Assert.Equal(0, got[0].HopLimit);
        // 254 on the wire; the receiver keeps at most its own limit (PeerFrameCheckTests).
        Assert.Equal(proxy.Switch.HopLimit, got[1].HopLimit);
        Assert.Equal(1, port.Counters.TxDrops);
        Assert.Equal(2, port.Counters.TxFrames);
    }

    // Keep-alives.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void KeepAlive_IdleLink_MeasuresRttAndOutlivesTheDeadTimer(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport, route: false);
        var atHost = host.WaitUp(ProxyName);
        var atProxy = proxy.WaitUp(HostName);
        var hostSession = atHost.Session!;
        var proxySession = atProxy.Session!;

        Wait.Until(() => hostSession.SmoothedRttMicros >= 0 && proxySession.SmoothedRttMicros >= 0,
            TimeSpan.FromSeconds(3), "an RTT on both sides");
        Assert.InRange(hostSession.LastRttMicros, 0, 1_000_000);

        // No data flows; keep-alives alone must keep both sessions from being declared dead.
        var alive = LinkSession.DeadAfter + TimeSpan.FromMilliseconds(600);
        Wait.Until(() => DateTimeOffset.UtcNow - hostSession.Started > alive, alive + TimeSpan.FromSeconds(1), "the dead timer to pass");
        Assert.Same(hostSession, atHost.Session);
        Assert.Same(proxySession, atProxy.Session);
        Assert.False(hostSession.IsClosed, hostSession.CloseReason);
        Assert.False(proxySession.IsClosed, proxySession.CloseReason);
        Assert.Equal(1, atHost.SessionsStarted);
        Assert.True(hostSession.SilentFor < LinkSession.DeadAfter);
    }

    /// <summary>
    /// One end leads the keep-alives, the other only answers once it has an RTT: an idle link
    /// carries one pair a second, not two, and neither end is declared dead.
    /// </summary>
    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void KeepAlive_IdleLink_OnlyTheLeadingEndSendsThem(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport, route: false);
        var hostSession = host.WaitUp(ProxyName).Session!;
        var proxySession = proxy.WaitUp(HostName).Session!;
        Assert.NotEqual(hostSession.LeadsKeepAlives, proxySession.LeadsKeepAlives);
        var (leader, follower) = hostSession.LeadsKeepAlives ? (hostSession, proxySession) : (proxySession, hostSession);
        Wait.Until(() => leader.SmoothedRttMicros >= 0 && follower.SmoothedRttMicros >= 0,
            TimeSpan.FromSeconds(3), "an RTT on both sides");

        var (leaderBefore, followerBefore) = (leader.KeepAlivesSent, follower.KeepAlivesSent);
        Thread.Sleep(TimeSpan.FromSeconds(4.2));

        // About one a second from the leader (the clock ticks every second); none from the follower
        // (its RTT is fresh and the leader's keep-alives arrive), or one if a tick raced.
        Assert.InRange(leader.KeepAlivesSent - leaderBefore, 3, 5);
        Assert.InRange(follower.KeepAlivesSent - followerBefore, 0, 1);
        Assert.False(leader.IsClosed, leader.CloseReason);
        Assert.False(follower.IsClosed, follower.CloseReason);
        Assert.True(follower.SilentFor < LinkSession.DeadAfter);
        Assert.True(leader.SilentFor < LinkSession.DeadAfter);
    }

    /// <summary>
    /// An idle link's sender threads sleep up to 5 s, so on a UDP link (keep-alives in datagrams,
    /// sent by the clock itself) nothing but the link clock steps its keys when they are due; on a
    /// TCP link the keep-alives wake the sender, which may step them first. With a key lifetime of 1 s (the test-only <c>LinkManagerOptions.RekeyAfter</c>;
    /// the real one is two minutes) every key of both ends is stepped well within those 5 s, and the
    /// link stays up: each end's keep-alives still open at the other, under the next epoch.
    /// </summary>
    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void Rekey_IdleLink_TheLinkClockStepsEveryKeyAndTheLinkStaysUp(LinkTransport transport)
    {
        var lifetime = TimeSpan.FromSeconds(1);
        var (proxy, host) = Pair(transport, route: false, rekeyAfter: lifetime);
        var hostSession = host.WaitUp(ProxyName).Session!;
        var proxySession = proxy.WaitUp(HostName).Session!;
        // Keys per end: the connection's, and on a UDP link the datagrams' too.
        var keys = transport == LinkTransport.Udp ? 2 : 1;

        // Due 1 s after the link came up, stepped at the clock's next tick (at most 1 s later): 4.5 s
        // leaves room for a loaded machine and is still before an idle sender's first 5 s wake.
        Wait.Until(() => hostSession.Rekeys >= keys && proxySession.Rekeys >= keys, TimeSpan.FromSeconds(4.5), "every key of both ends stepped");
        var (hostRtts, proxyRtts) = (hostSession.KeepAlivesSent, proxySession.KeepAlivesSent);
        Thread.Sleep(TimeSpan.FromSeconds(2.2));

        Assert.False(hostSession.IsClosed, hostSession.CloseReason);
        Assert.False(proxySession.IsClosed, proxySession.CloseReason);
        Assert.True(hostSession.SilentFor < LinkSession.DeadAfter && proxySession.SilentFor < LinkSession.DeadAfter, "keep-alives under the new keys still arrive");
        Assert.True(hostSession.KeepAlivesSent + proxySession.KeepAlivesSent > hostRtts + proxyRtts, "keep-alives went on after the step");
        Assert.Equal(0, host.Links.Find(ProxyName)!.Counters.RxErrors + proxy.Links.Find(HostName)!.Counters.RxErrors);
    }

    // Removal.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void RemoveLink_Up_ClosesTheSessionAndTheFarSideNotices(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport);
        var atHost = host.Links.Find(ProxyName)!;
        var atProxy = proxy.Links.Find(HostName)!;
        var session = atHost.Session!;

        Assert.True(host.Links.RemoveLink(ProxyName));

        Assert.Null(host.Links.Find(ProxyName));
        Assert.Null(host.Switch.FindPort(PortRef.Link(ProxyName)));
        Wait.Until(() => session.IsClosed, TimeSpan.FromSeconds(2), "the removed link's session closed");
        proxy.WaitDown(atProxy, TimeSpan.FromSeconds(3));
        // The far side learns why, not just that the connection went away.
        Assert.Equal("peer said goodbye: link removed", atProxy.LastDownReason);
        Assert.Contains(proxy.Events.Events, e => e.StartsWith($"down {HostName}", StringComparison.Ordinal));
        Assert.False(host.Links.RemoveLink(ProxyName));

        // The host stopped dialing: the Proxy's port stays down past the first retry delays.
        Thread.Sleep(700);
        Assert.False(atProxy.IsUp);
        Assert.Equal(1, atProxy.SessionsStarted);

        // Frames for the removed link go nowhere, and the Proxy's rules for its port drop and count.
        proxy.Send(LinkNode.NewFrame(60, 1));
        Assert.Equal(1, atProxy.Counters.TxDrops);
    }

    // Re-dialing.

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public async Task AddLink_ProxyRestartsOnTheSamePort_HostRedialsAndFramesFlowAgain(LinkTransport transport)
    {
        var (proxy, host) = Pair(transport);
        var atHost = host.Links.Find(ProxyName)!;
        var port = proxy.EndPoint.Port;

        await proxy.DisposeAsync();
        host.WaitDown(atHost, TimeSpan.FromSeconds(3));
        Assert.Equal("peer said goodbye: daemon stopping", atHost.LastDownReason);
        host.Send(LinkNode.NewFrame(60, 1));
        Assert.Equal(1, atHost.Counters.TxDrops);

        var restarted = Node(ProxyName, DaemonRole.Proxy, port);
        var again = restarted.WaitUp(HostName);
        Wait.Until(() => atHost.IsUp, TimeSpan.FromSeconds(5), "the host's link back up");
        restarted.Route(HostName);

        Assert.Equal(2, atHost.SessionsStarted);
        host.Send(LinkNode.NewFrame(300, 2));
        Assert.Equal(LinkNode.NewFrame(300, 2), Assert.Single(restarted.Vm.WaitFor(1)).Bytes);
        restarted.Send(LinkNode.NewFrame(301, 3));
        Assert.Equal(LinkNode.NewFrame(301, 3), Assert.Single(host.Vm.WaitFor(1)).Bytes);
        Assert.Equal(transport, again.Session!.Transport);
    }

    // Helpers.

    private LinkNode Node(string name, DaemonRole role, int port = 0, TimeSpan? rekeyAfter = null)
    {
        var node = new LinkNode(name, role, Keys, port, rekeyAfter: rekeyAfter);
        Nodes.Add(node);
        return node;
    }

    /// <summary>A Proxy and a host dialing it over <paramref name="transport"/>; with routes, both links are up and routed.</summary>
    private (LinkNode Proxy, LinkNode Host) Pair(LinkTransport transport, bool route = true, TimeSpan? rekeyAfter = null)
    {
        var proxy = Node(ProxyName, DaemonRole.Proxy, rekeyAfter: rekeyAfter);
        var host = Node(HostName, DaemonRole.Host, rekeyAfter: rekeyAfter);
        host.Links.AddLink(ProxyName, transport, star: true, proxy.EndPoint);
        if (route)
        {
            host.WaitUp(ProxyName);
            proxy.WaitUp(HostName);
            host.Route(ProxyName);
            proxy.Route(HostName);
        }
        return (proxy, host);
    }

    private static PacketSpec Shape(string shape) => shape switch
    {
        "tcp4" => new PacketSpec(),
        "tcp6" => new PacketSpec { V6 = true },
        "udp4" => new PacketSpec { Udp = true },
        _ => throw new ArgumentOutOfRangeException(nameof(shape)),
    };
}
