using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using static Vnet.Tests.Forwarding.Fwd;

namespace Vnet.Tests.Forwarding;

/// <summary>
/// The switch's part of forwarding, with recording ports in place of devices: split horizon,
/// flooding, de-duplication, reference counting, drop accounting, the miss handler and the observer.
/// </summary>
public sealed class VirtualSwitchTests
{
    private static readonly MacAddress A = Mac(1);
    private static readonly MacAddress B = Mac(2);
    private static readonly MacAddress C = Mac(3);

    private readonly VirtualSwitch _switch = new();
    private readonly FramePool _pool = new(64);
    private readonly Dictionary<long, RuleStats> _stats = [];
    private readonly RecordingPort _vm0 = new(PortRef.Interface("vm0"));
    private readonly RecordingPort _vm1 = new(PortRef.Interface("vm1"));
    private readonly RecordingPort _proxy = new(PortRef.Link("proxy"));
    private readonly RecordingPort _direct = new(PortRef.Link("direct"), inFloodTree: false);

    public VirtualSwitchTests()
    {
        _switch.AddPort(_vm0);
        _switch.AddPort(_vm1);
        _switch.AddPort(_proxy);
        _switch.AddPort(_direct);
    }

    private RecordingPort[] All => [_vm0, _vm1, _proxy, _direct];

    // Split horizon.

    [Fact]
    public void Forward_RuleTargetsArrivalPort_NotSentBackAndDroppedAsNoRoute()
    {
        Install(NewRule(1, MacMatch.Any, MacMatch.Exact(B), action: _vm0.Name));

        _switch.Forward(NewFrame(A, B, _vm0));

        AssertReceived();
        Assert.Equal(1, _switch.Dropped(DropReason.NoRoute));
        Assert.Equal(0, _switch.ForwardedFrames);
        AssertPoolComplete();
    }

    [Fact]
    public void Forward_TiedRulesTargetArrivalAndAnotherPort_SentToTheOtherOnly()
    {
        Install(
            NewRule(1, MacMatch.Exact(A), MacMatch.Any, action: _proxy.Name),
            NewRule(2, MacMatch.Any, MacMatch.Exact(B), action: _vm0.Name));

        _switch.Forward(NewFrame(A, B, _proxy));

        AssertReceived(_vm0);
        Assert.Equal(0, _switch.Dropped(DropReason.NoRoute));
        ReleaseAllAndAssertPoolComplete();
    }

    // Flooding.

    [Fact]
    public void Forward_FloodFromInterface_SentToEveryTreePortButTheArrivalOne()
    {
        Install(NewFlood(1, MacMatch.Any, MacMatch.Multicast));

        _switch.Forward(NewFrame(A, MacAddress.Broadcast, _vm0));

        AssertReceived(_vm1, _proxy);
        ReleaseAllAndAssertPoolComplete();
    }

    [Fact]
    public void Forward_FloodFromTreeLink_SentToLocalInterfacesNotBack()
    {
        Install(NewFlood(1, MacMatch.Any, MacMatch.Multicast));

        _switch.Forward(NewFrame(A, Group(1), _proxy));

        AssertReceived(_vm0, _vm1);
        ReleaseAllAndAssertPoolComplete();
    }

    [Fact]
    public void Forward_FloodFromNonTreeLink_SentToLocalInterfacesOnly()
    {
        var second = new RecordingPort(PortRef.Link("second"));
        _switch.AddPort(second);
        Install(NewFlood(1, MacMatch.Any, MacMatch.Multicast));

        _switch.Forward(NewFrame(A, MacAddress.Broadcast, _direct));

        AssertReceived(_vm0, _vm1);
        Assert.Empty(second.Frames);
        ReleaseAllAndAssertPoolComplete();
    }

    [Fact]
    public void Forward_FloodWithoutArrivalPort_SentToEveryTreePort()
    {
        Install(NewFlood(1, MacMatch.Any, MacMatch.Multicast));

        _switch.Forward(NewFrame(A, MacAddress.Broadcast, from: null));

        AssertReceived(_vm0, _vm1, _proxy);
        ReleaseAllAndAssertPoolComplete();
    }

    [Fact]
    public void Forward_LinkJoinsTreeAfterRefresh_FloodReachesIt()
    {
        Install(NewFlood(1, MacMatch.Any, MacMatch.Multicast));
        _direct.Tree = true;
        _switch.RefreshFloodTree();

        _switch.Forward(NewFrame(A, MacAddress.Broadcast, _vm0));

        AssertReceived(_vm1, _proxy, _direct);
        ReleaseAllAndAssertPoolComplete();
    }

    [Fact]
    public void Forward_FloodFromTheOnlyTreePort_DroppedAsNoRoute()
    {
        var sw = new VirtualSwitch();
        var only = new RecordingPort(PortRef.Interface("only"));
        sw.AddPort(only);
        sw.Publish(new ForwardingTable([NewFlood(1, MacMatch.Any, MacMatch.Multicast)], sw.ResolvePort, _ => new RuleStats()));

        sw.Forward(NewFrame(A, MacAddress.Broadcast, only));

        Assert.Empty(only.Frames);
        Assert.Equal(1, sw.Dropped(DropReason.NoRoute));
        AssertPoolComplete();
    }

    // Duplicates.

    [Fact]
    public void Forward_TiedRulesTargetSamePort_SentOnce()
    {
        Install(
            NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B), action: _proxy.Name),
            NewRule(2, MacMatch.Exact(A), MacMatch.Exact(B), action: _proxy.Name),
            NewRule(3, MacMatch.Exact(A), MacMatch.Exact(B), action: _vm1.Name));

        var frame = NewFrame(A, B, _vm0);
        _switch.Forward(frame);

        AssertReceived(_vm1, _proxy);
        Assert.Equal(2, frame.References);
        ReleaseAllAndAssertPoolComplete();
    }

    [Fact]
    public void Forward_FloodAndTiedRuleOverlap_EachPortOnce()
    {
        Install(
            NewFlood(1, MacMatch.Any, MacMatch.Multicast),
            NewRule(2, MacMatch.Any, MacMatch.Multicast, action: _proxy.Name),
            NewFlood(3, MacMatch.Any, MacMatch.Multicast));

        _switch.Forward(NewFrame(A, MacAddress.Broadcast, _vm0));

        AssertReceived(_vm1, _proxy);
        ReleaseAllAndAssertPoolComplete();
    }

    // References and buffers.

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Forward_ToNPorts_EachPortHoldsOneReference(int n)
    {
        var targets = new[] { _vm1, _proxy, _direct }[..n];
        Install([.. targets.Select((p, i) => NewRule(i + 1, MacMatch.Exact(A), MacMatch.Exact(B), action: p.Name))]);
        var frame = NewFrame(A, B, _vm0);

        _switch.Forward(frame);

        Assert.Equal(n, frame.References);
        foreach (var port in targets)
            Assert.Same(frame, Assert.Single(port.Frames));
        Assert.Equal(0, _pool.Available);
        ReleaseAllAndAssertPoolComplete();
        Assert.Equal(0, frame.References);
    }

    [Fact]
    public void Forward_ManyFramesThroughReleasingPorts_EveryBufferReturns()
    {
        var sw = new VirtualSwitch();
        var pool = new FramePool(4);
        var ports = new[]
        {
            new ReleasingPort(PortRef.Interface("a")),
            new ReleasingPort(PortRef.Interface("b")),
            new ReleasingPort(PortRef.Link("c")),
        };
        foreach (var p in ports)
            sw.AddPort(p);
        sw.Publish(new ForwardingTable(
            [
                NewFlood(1, MacMatch.Any, MacMatch.Multicast),
                NewRule(2, MacMatch.Any, MacMatch.Exact(B), action: PortRef.Link("c")),
                NewRule(3, MacMatch.Exact(A), MacMatch.None, action: PortRef.Interface("b")),
            ],
            sw.ResolvePort,
            _ => new RuleStats()));

        for (var i = 0; i < 1000; i++)
        {
            var dst = (i % 4) switch { 0 => MacAddress.Broadcast, 1 => B, 2 => C, _ => A };
            var src = i % 3 == 0 ? C : A;
            var frame = pool.TryRent();
            Assert.NotNull(frame);
            Fill(frame, src, dst, ports[i % ports.Length]);
            sw.Forward(frame);
        }

        Assert.Equal(pool.Created, pool.Available);
        Assert.True(pool.Created <= 1);
        Assert.Equal(1000, sw.ForwardedFrames + sw.Dropped(DropReason.NoRoute) + sw.Dropped(DropReason.NoMatch));
    }

    [Fact]
    public void Forward_ActionPortRemovedBeforeRepublish_DroppedAsNoRouteAndBufferReturns()
    {
        Install(NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B), action: _proxy.Name));
        _switch.RemovePort(_proxy);

        _switch.Forward(NewFrame(A, B, _vm0));

        Assert.Equal(1, _switch.Dropped(DropReason.NoRoute));
        Assert.Equal(0, _switch.ForwardedFrames);
        AssertPoolComplete();
    }

    [Fact]
    public void Forward_OneOfTwoTargetsRemoved_OtherGetsTheOnlyReference()
    {
        Install(
            NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B), action: _vm1.Name),
            NewRule(2, MacMatch.Exact(A), MacMatch.Exact(B), action: _proxy.Name));
        _switch.RemovePort(_proxy);
        var frame = NewFrame(A, B, _vm0);

        _switch.Forward(frame);

        Assert.Equal(1, frame.References);
        AssertReceived(_vm1);
        ReleaseAllAndAssertPoolComplete();
    }

    // Drops.

    [Fact]
    public void Forward_ShorterThanEthernetHeader_DroppedAsMalformed()
    {
        Install(NewRule(1, MacMatch.Any, MacMatch.Any, action: _vm1.Name));

        _switch.Forward(NewFrame(A, B, _vm0, length: 13));

        AssertReceived();
        Assert.Equal(1, _switch.Dropped(DropReason.Malformed));
        AssertPoolComplete();
    }

    [Fact]
    public void Forward_GroupSourceAddress_DroppedAsMalformed()
    {
        Install(NewRule(1, MacMatch.Any, MacMatch.Any, action: _vm1.Name));

        _switch.Forward(NewFrame(Group(1), B, _vm0));

        AssertReceived();
        Assert.Equal(1, _switch.Dropped(DropReason.Malformed));
        AssertPoolComplete();
    }

    [Fact]
    public void Forward_NoRuleMatches_DroppedAsNoMatch()
    {
        Install(NewRule(1, MacMatch.Exact(C), MacMatch.Any, action: _vm1.Name));

        _switch.Forward(NewFrame(A, B, _vm0));

        AssertReceived();
        Assert.Equal(1, _switch.Dropped(DropReason.NoMatch));
        Assert.Equal(0, _switch.Dropped(DropReason.NoRoute));
        AssertPoolComplete();
    }

    [Fact]
    public void Forward_ActionPortNeverResolved_DroppedAsNoRoute()
    {
        Install(NewRule(1, MacMatch.Exact(A), MacMatch.Any, action: Ghost));

        _switch.Forward(NewFrame(A, B, _vm0));

        Assert.Equal(1, _switch.Dropped(DropReason.NoRoute));
        AssertPoolComplete();
    }

    [Fact]
    public void Forward_MixedFrames_EachDropReasonCountedSeparately()
    {
        Install(NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B), action: _vm0.Name));

        _switch.Forward(NewFrame(A, B, _vm0, length: 10));
        _switch.Forward(NewFrame(C, B, _vm0));
        _switch.Forward(NewFrame(C, B, _vm0));
        _switch.Forward(NewFrame(A, B, _vm0));
        _switch.Forward(NewFrame(A, B, _vm0));
        _switch.Forward(NewFrame(A, B, _vm0));
        _switch.CountDrop(DropReason.NoBuffer);

        Assert.Equal(1, _switch.Dropped(DropReason.Malformed));
        Assert.Equal(2, _switch.Dropped(DropReason.NoMatch));
        Assert.Equal(3, _switch.Dropped(DropReason.NoRoute));
        Assert.Equal(1, _switch.Dropped(DropReason.NoBuffer));
        Assert.Equal(0, _switch.Dropped(DropReason.HopLimit));
        AssertPoolComplete();
    }

    // Miss handler.

    [Fact]
    public void Forward_MissHandlerLearnsRule_LookupRetriedOnceAndFrameForwarded()
    {
        Install();
        var calls = 0;
        _switch.MissHandler = (frame, src, dst) =>
        {
            calls++;
            Assert.Equal(A, src);
            Assert.Equal(B, dst);
            Assert.Equal(_vm0.Id, frame.IngressPort);
            Install(NewRule(1, MacMatch.Exact(A), MacMatch.None, action: _proxy.Name));
            return true;
        };

        _switch.Forward(NewFrame(A, B, _vm0));

        Assert.Equal(1, calls);
        AssertReceived(_proxy);
        Assert.Equal(0, _switch.Dropped(DropReason.NoMatch));
        ReleaseAllAndAssertPoolComplete();
    }

    [Fact]
    public void Forward_MissHandlerReturnsTrueWithoutRule_CalledOnceThenDroppedAsNoMatch()
    {
        var calls = 0;
        _switch.MissHandler = (_, _, _) =>
        {
            calls++;
            return true;
        };

        _switch.Forward(NewFrame(A, B, _vm0));

        Assert.Equal(1, calls);
        Assert.Equal(1, _switch.Dropped(DropReason.NoMatch));
        AssertPoolComplete();
    }

    [Fact]
    public void Forward_MissHandlerReturnsFalse_DroppedWithoutSecondLookup()
    {
        var calls = 0;
        _switch.MissHandler = (_, _, _) =>
        {
            calls++;
            // Changes the table but says it did not: the switch must not look again.
            Install(NewRule(1, MacMatch.Any, MacMatch.Any, action: _proxy.Name));
            return false;
        };

        _switch.Forward(NewFrame(A, B, _vm0));

        Assert.Equal(1, calls);
        AssertReceived();
        Assert.Equal(1, _switch.Dropped(DropReason.NoMatch));
        AssertPoolComplete();
    }

    [Fact]
    public void Forward_RuleMatches_MissHandlerNotCalled()
    {
        Install(NewRule(1, MacMatch.Any, MacMatch.Any, action: _proxy.Name));
        var calls = 0;
        _switch.MissHandler = (_, _, _) => ++calls > 0;

        _switch.Forward(NewFrame(A, B, _vm0));

        Assert.Equal(0, calls);
        ReleaseAllAndAssertPoolComplete();
    }

    // Observer and counters.

    [Fact]
    public void Forward_FrameForwarded_ObserverSeesSourceDestinationAndLength()
    {
        var observer = new RecordingObserver();
        _switch.Observer = observer;
        Install(NewFlood(1, MacMatch.Any, MacMatch.Multicast), NewRule(2, MacMatch.Any, MacMatch.Exact(B), action: _vm1.Name));

        _switch.Forward(NewFrame(A, B, _vm0, length: 100));
        _switch.Forward(NewFrame(C, MacAddress.Broadcast, _vm0, length: 60));

        Assert.Equal([(A, B, 100), (C, MacAddress.Broadcast, 60)], observer.Seen);
        Assert.Equal(2, _switch.ForwardedFrames);
        ReleaseAllAndAssertPoolComplete();
    }

    [Fact]
    public void Forward_FrameDropped_ObserverDoesNotSeeIt()
    {
        var observer = new RecordingObserver();
        _switch.Observer = observer;
        Install(NewRule(1, MacMatch.Exact(A), MacMatch.Any, action: _vm0.Name));

        _switch.Forward(NewFrame(A, B, _vm0));
        _switch.Forward(NewFrame(C, B, _vm0));
        _switch.Forward(NewFrame(A, B, _vm0, length: 12));

        Assert.Empty(observer.Seen);
        Assert.Equal(0, _switch.ForwardedFrames);
        AssertPoolComplete();
    }

    [Fact]
    public void Forward_RulesMatch_EveryWinningRuleCountsFramesAndBytes()
    {
        Install(
            NewRule(1, MacMatch.Exact(A), MacMatch.Any, action: _proxy.Name),
            NewRule(2, MacMatch.Any, MacMatch.Exact(B), action: _vm1.Name),
            NewRule(3, MacMatch.Any, MacMatch.Any, action: _vm1.Name));

        _switch.Forward(NewFrame(A, B, _vm0, length: 80));
        _switch.Forward(NewFrame(A, C, _vm0, length: 70));

        Assert.Equal((2, 150), (_stats[1].Frames, _stats[1].Bytes));
        Assert.Equal((1, 80), (_stats[2].Frames, _stats[2].Bytes));
        Assert.Equal(0, _stats[3].Frames);
        ReleaseAllAndAssertPoolComplete();
    }

    // Frames from links: offload header checked, hop limit clamped.

    [Fact]
    public void ForwardFromLink_BadOffloadHeader_DroppedAsBadOffloadWithItsFault()
    {
        Install(NewRule(1, MacMatch.Any, MacMatch.Any, action: _vm1.Name));
        var frame = NewFrame(A, B, _proxy, length: 200);
        frame.Offload = new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum, CsumStart = 14, CsumOffset = 6 };

        _switch.ForwardFromLink(frame, 7);

        AssertReceived();
        Assert.Equal(1, _switch.Dropped(DropReason.BadOffload));
        Assert.Equal(1, _switch.OffloadFaults(OffloadFault.ChecksumStartOutOfRange));
        Assert.Equal(0, _switch.ForwardedFrames);
        AssertPoolComplete();
    }

    [Fact]
    public void ForwardFromLink_FieldsWithoutFlagsOrGso_StillChecked()
    {
        Install(NewRule(1, MacMatch.Any, MacMatch.Any, action: _vm1.Name));
        var frame = NewFrame(A, B, _proxy, length: 200);
        frame.Offload = new VirtioNetHeader { GsoSize = 1448 };

        _switch.ForwardFromLink(frame, 7);

        AssertReceived();
        Assert.Equal(1, _switch.OffloadFaults(OffloadFault.GsoSizeWithoutGso));
        AssertPoolComplete();
    }

    [Fact]
    public void ForwardFromLink_DataValid_StrippedBeforeAnyPortSeesIt()
    {
        Install(NewRule(1, MacMatch.Any, MacMatch.Any, action: _vm1.Name));
        var frame = NewFrame(A, B, _proxy);
        frame.Offload = new VirtioNetHeader { Flags = VirtioNetHeader.FlagDataValid };

        _switch.ForwardFromLink(frame, 7);

        AssertReceived(_vm1);
        Assert.Equal(VirtioNetHeader.None, _vm1.Frames[0].Offload);
        ReleaseAllAndAssertPoolComplete();
    }

    [Theory]
    [InlineData(255, 3)]
    [InlineData(4, 3)]
    [InlineData(3, 3)]
    [InlineData(2, 2)]
    [InlineData(0, 0)]
    public void ForwardFromLink_HopLimit_ClampedToTheSwitchsLimit(byte fromWire, byte kept)
    {
        var sw = new VirtualSwitch { HopLimit = 3 };
        var link = new RecordingPort(PortRef.Link("peer"));
        var vm = new RecordingPort(PortRef.Interface("vm"));
        sw.AddPort(link);
        sw.AddPort(vm);
        sw.Publish(new ForwardingTable([NewRule(1, MacMatch.Any, MacMatch.Any, action: vm.Name)], sw.ResolvePort, _ => new RuleStats()));

        sw.ForwardFromLink(NewFrame(A, B, link), fromWire);

        Assert.Equal(kept, Assert.Single(vm.Frames).HopLimit);
        vm.ReleaseAll();
        AssertPoolComplete();
    }

    // Ports by name, and the ids of removed ports.

    [Fact]
    public void ResolvePort_PortsAddedAndRemoved_NameIndexFollowsTheArray()
    {
        var extra = new RecordingPort(PortRef.Link("extra"));
        _switch.AddPort(extra);
        _switch.RemovePort(_vm1);

        Assert.Equal(-1, _switch.ResolvePort(_vm1.Name));
        Assert.Null(_switch.FindPort(_vm1.Name));
        foreach (var p in new[] { _vm0, _proxy, _direct, extra })
        {
            Assert.Equal(p.Id, _switch.ResolvePort(p.Name));
            Assert.Same(p, _switch.FindPort(p.Name));
        }
        Assert.Equal(-1, _switch.ResolvePort(PortRef.Interface("proxy")));

        // The same name again is a new port, found by it.
        var again = new RecordingPort(_vm1.Name);
        _switch.AddPort(again);
        Assert.Same(again, _switch.FindPort(_vm1.Name));
        Assert.Equal(again.Id, _switch.ResolvePort(_vm1.Name));
        Assert.Throws<InvalidOperationException>(() => _switch.AddPort(new RecordingPort(_vm1.Name)));
        Assert.Equal(5, _switch.Ports.Count);
    }

    [Fact]
    public void AddPort_AfterARemoval_RemovedIdNotReusedUntilARuleTableWithoutItIsLive()
    {
        void PublishBToProxy() => _switch.PublishRules([NewRule(1, MacMatch.Any, MacMatch.Exact(B), action: _proxy.Name)], _ => new RuleStats());
        // A frame to B reaches no port, not even the one just added.
        RecordingPort AddPortThenSendToB(string name, long noRoute)
        {
            var port = new RecordingPort(PortRef.Link(name));
            _switch.AddPort(port);
            _switch.Forward(NewFrame(A, B, _vm0));
            Assert.Empty(port.Frames);
            Assert.Equal(noRoute, _switch.Dropped(DropReason.NoRoute));
            return port;
        }
        PublishBToProxy();
        var removedId = _proxy.Id;
        _switch.RemovePort(_proxy);

        // The live table still sends B's frames to the removed port's id: a new port must not get it.
        Assert.NotEqual(removedId, AddPortThenSendToB("early", noRoute: 1).Id);

        // A table compiled after the removal frees the id.
        PublishBToProxy();
        Assert.Equal(removedId, AddPortThenSendToB("late", noRoute: 2).Id);
        AssertPoolComplete();
    }

    // Helpers.

    private void Install(params Rule[] rules)
    {
        RuleStats StatsOf(long id) => _stats.TryGetValue(id, out var s) ? s : _stats[id] = new RuleStats();
        _switch.Publish(new ForwardingTable(rules, _switch.ResolvePort, StatsOf));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Forward_DhcpAck_TeachesTheClientsAddressOnlyWhenItCameFromTheLan(bool fromLan)
    {
        // A VM forging a server's answer for another MAC teaches nothing; the LAN's server does.
        var book = new Vnet.Vms.AddressBook();
        _switch.Addresses = book;
        _switch.PublishLanPorts(fromLan ? [_vm1.Id] : [_proxy.Id]);
        var bytes = Vms.AddressBookTests.Dhcp(B, "10.50.0.77", messageType: 5);
        var frame = _pool.TryRent();
        Assert.NotNull(frame);
        frame.Length = bytes.Length;
        bytes.CopyTo(frame.Buffer.AsSpan(frame.Offset));
        frame.IngressPort = _vm1.Id;

        _switch.Forward(frame);

        Assert.Equal(fromLan ? "10.50.0.77" : null, book.Find(B)?.ToString());
        AssertPoolComplete();
    }

    private Frame NewFrame(MacAddress src, MacAddress dst, Port? from, int length = 64)
    {
        var frame = _pool.TryRent();
        Assert.NotNull(frame);
        Fill(frame, src, dst, from, length);
        return frame;
    }

    private static void Fill(Frame frame, MacAddress src, MacAddress dst, Port? from, int length = 64)
    {
        frame.Length = length;
        var bytes = frame.Buffer.AsSpan(frame.Offset, 14);
        bytes.Clear();
        dst.Write(bytes);
        src.Write(bytes[6..]);
        frame.IngressPort = from?.Id ?? -1;
    }

    /// <summary>Exactly these ports got one frame each; every other port got nothing.</summary>
    private void AssertReceived(params RecordingPort[] expected)
    {
        foreach (var port in All)
            Assert.True(port.Frames.Count == (expected.Contains(port) ? 1 : 0), $"{port} received {port.Frames.Count} frames");
    }

    private void ReleaseAllAndAssertPoolComplete()
    {
        foreach (var port in All)
            port.ReleaseAll();
        AssertPoolComplete();
    }

    private void AssertPoolComplete() => Assert.Equal(_pool.Created, _pool.Available);

    /// <summary>Keeps every frame (and its reference) until the test releases it.</summary>
    private sealed class RecordingPort(PortRef name, bool inFloodTree = true) : Port(name)
    {
        public List<Frame> Frames { get; } = [];

        public bool Tree { get; set; } = inFloodTree;

        public override bool IsUp => true;

        public override bool InFloodTree => Tree;

        public override void Transmit(Frame frame) => Frames.Add(frame);

        public void ReleaseAll()
        {
            foreach (var frame in Frames)
                frame.Release();
            Frames.Clear();
        }
    }

    /// <summary>Releases at once, as a port that sent synchronously would.</summary>
    private sealed class ReleasingPort(PortRef name) : Port(name)
    {
        public override bool IsUp => true;

        public override bool InFloodTree => true;

        public override void Transmit(Frame frame) => frame.Release();
    }

    private sealed class RecordingObserver : ITrafficObserver
    {
        public List<(MacAddress, MacAddress, int)> Seen { get; } = [];

        public void Record(MacAddress source, MacAddress destination, int bytes) => Seen.Add((source, destination, bytes));
    }
}
