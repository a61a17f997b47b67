using Vnet.Adaptation;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Peers;
using Vnet.Vms;
using Xunit.Abstractions;

namespace Vnet.Tests.Vms;

/// <summary>
/// The VM directory on real daemons in this process (loopback links, VMs on in-memory TAPs):
/// learning on the control loop, the first frame still delivered, migration, VMs leaving, and the
/// interleavings that once lost VMs.
/// </summary>
public sealed class DirectoryTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Converge = TimeSpan.FromSeconds(15);

    private static readonly DirectoryOptions Quick = new()
    {
        AntiEntropyInterval = TimeSpan.FromMilliseconds(500),
        DigestHeartbeat = TimeSpan.FromSeconds(4),
        MoveHoldDown = TimeSpan.FromSeconds(1),
    };

    private static Task<DaemonNet> Net(params string[] hosts) =>
        DaemonNet.StartAsync(hosts.Select(h => (h, (IReadOnlyList<InterfaceConfig>)[])).ToArray(), Quick, lan: true);

    private static async Task AgreeWithTruth(SimVms vms, string what)
    {
        List<string> last = [];
        await DaemonNet.UntilAsync(async () => (last = await vms.Disagreements()).Count == 0, Converge, what,
            () => Task.FromResult(string.Join('\n', last)));
    }

    [Fact]
    public async Task FirstFrame_OfAVmNotYetLearned_ReachesTheLanAndTheVmIsLocatedEverywhere()
    {
        await using var net = await Net("h1", "h2");
        var vm = SimVms.Mac(1);
        await using var vms = new SimVms(net);
        await vms.Start(vm, "h1");
        var lan = net.DevicesOf("proxy")[DaemonNet.Lan];

        await DaemonNet.Until(() => lan.Writes > 0, Converge, "the VM's first frames on the LAN");
        await AgreeWithTruth(vms, "every daemon to place the VM on h1");

        Assert.True(lan.TryTake(out var first));
        Assert.Equal(vm, MacAddress.Read(first.AsSpan(6)));
        Assert.Equal("", await net.Repairs());
    }

    [Fact]
    public async Task Learn_RulesOfANewVm_DeliveryAndItsDefaultToTheProxy()
    {
        await using var net = await Net("h1");
        var vm = SimVms.Mac(2);
        await using var vms = new SimVms(net);
        await vms.Start(vm, "h1");
        await AgreeWithTruth(vms, "the VM located");

        var rules = await net["h1"].Run(net["h1"].RuleCommands.List);
        var tap = PortRef.Interface(SimVms.InterfaceOf(vm));
        Assert.Contains(rules, r => r.Origin == RuleOrigin.System && r.Destination == MacMatch.Exact(vm) && r.Action == RuleAction.To(tap));
        Assert.Contains(rules, r => r.Origin == RuleOrigin.System && r.Source == MacMatch.Exact(vm) && r.Destination == MacMatch.None &&
            r.Action == RuleAction.To(PortRef.Link("proxy")));
        var atProxy = await net.Proxy.Run(net.Proxy.RuleCommands.List);
        Assert.Contains(atProxy, r => r.Destination == MacMatch.Exact(vm) && r.Action == RuleAction.To(PortRef.Link("h1")));
    }

    [Fact]
    public async Task Migration_VmShowsUpOnAnotherHost_EveryDaemonFollowsAndTheOldHostForgetsIt()
    {
        await using var net = await Net("h1", "h2", "h3");
        var vm = SimVms.Mac(3);
        await using var vms = new SimVms(net);
        await vms.Start(vm, "h1");
        await AgreeWithTruth(vms, "the VM on h1");

        // Live: the old TAP stays open a moment, as QEMU leaves it until migration is done.
        await vms.Move(vm, "h2", live: true, TimeSpan.FromMilliseconds(300));
        await AgreeWithTruth(vms, "every daemon to follow the VM to h2");

        Assert.Equal(0, await net["h1"].Run(() => net["h1"].Vms.LocalCount));
        Assert.Contains(net.LogOf("h1").Lines, l => l.Contains($"VM {vm} moved away to h2", StringComparison.Ordinal));
        Assert.Equal("", await net.Repairs());
    }

    /// <summary>
    /// Found by the scale benchmark: with adaptation off, every VM that appeared or moved made the
    /// Proxy ask every host for its whole state (with 200 hosts, 200 requests a round, for nothing).
    /// Off asks no host; advise still does, since it plans against the live overlay.
    /// </summary>
    [Theory]
    [InlineData(AdaptationPolicy.Off)]
    [InlineData(AdaptationPolicy.Advise)]
    public async Task AdaptationPolicy_VmAppearsAndMoves_TheProxyAsksHostsForTheirStateOnlyWhenAdaptationIsOn(AdaptationPolicy policy)
    {
        await using var net = await Net("h1", "h2");
        var h1 = net["h1"];
        var counted = new CountingCommands(h1.Peers.Commands!);
        h1.Peers.Commands = counted;
        if (policy != AdaptationPolicy.Off)
            await net.Proxy.Run(() => net.Proxy.Adaptation.SetPolicy(policy, null));
        var vm = SimVms.Mac(8);
        await using var vms = new SimVms(net);
        await vms.Start(vm, "h2");
        await AgreeWithTruth(vms, "the VM on h2");
        await vms.Move(vm, "h1", live: true, TimeSpan.FromMilliseconds(300));
        await AgreeWithTruth(vms, "the VM on h1");

        if (policy == AdaptationPolicy.Off)
        {
            // Adaptation runs right after the locations change; give a round time to show.
            await Task.Delay(TimeSpan.FromSeconds(1));
            Assert.Equal(0, counted.Count("state"));
        }
        else
        {
            await DaemonNet.Until(() => counted.Count("state") > 0, Converge, "the Proxy to ask h1 for its state");
        }
    }

    /// <summary>A host's command handler that counts the Proxy's requests by command.</summary>
    private sealed class CountingCommands(ICommandHandler inner) : ICommandHandler
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> _counts = new(StringComparer.Ordinal);

        public int Count(string command) => _counts.GetValueOrDefault(command);

        public Task<CommandResult> HandleAsync(string command, System.Text.Json.Nodes.JsonObject? args)
        {
            _counts.AddOrUpdate(command, 1, (_, n) => n + 1);
            return inner.HandleAsync(command, args);
        }
    }

    /// <summary>
    /// Found by the storm: a host told that its VM lives elsewhere while the VM still sends there
    /// must learn it again after the hold-down. The sources the switch knew were published before
    /// the map changed, so the VM stayed "known" and was never reported again.
    /// </summary>
    [Fact]
    public async Task Relearn_HostToldItsVmLivesElsewhereWhileItStillSendsThere_LearnsItAgainAfterTheHoldDown()
    {
        await using var net = await Net("h1", "h2");
        var vm = SimVms.Mac(7);
        await using var vms = new SimVms(net);
        await vms.Start(vm, "h1");
        await AgreeWithTruth(vms, "the VM on h1");

        // The same MAC shows up on h2 for a moment (a clone, a misconfiguration): h2's claim is the
        // newest, so h1 is told the VM moved there and forgets it.
        var h2 = net["h2"];
        var name = SimVms.InterfaceOf(vm);
        await h2.Run(() =>
        {
            h2.Interfaces.Add(new InterfaceConfig { Name = name, Kind = InterfaceKind.Tap });
            return true;
        });
        var frame = new byte[60];
        SimVms.LanHost.Write(frame);
        vm.Write(frame.AsSpan(6));
        net.DevicesOf("h2")[name].Inject(frame);
        await DaemonNet.Until(() => net.LogOf("h1").Contains($"VM {vm} moved away to h2"), Converge, "h1 to hear the VM moved");
        await h2.Run(() =>
        {
            h2.Interfaces.RemoveForce(name, "the clone stopped");
            return true;
        });

        // The VM never stopped sending on h1: h1 must learn it again, and everyone follows.
        await AgreeWithTruth(vms, "the VM placed on h1 again");
    }

    [Fact]
    public async Task VmStops_ItsTapCloses_EveryDaemonForgetsIt()
    {
        await using var net = await Net("h1", "h2");
        await using var vms = new SimVms(net);
        await vms.Start(SimVms.Mac(4), "h1");
        await vms.Start(SimVms.Mac(5), "h2");
        await AgreeWithTruth(vms, "both VMs located");

        await vms.Stop(SimVms.Mac(4));

        await AgreeWithTruth(vms, "every daemon to forget the stopped VM");
        var atProxy = await net.Proxy.Run(net.Proxy.RuleCommands.List);
        Assert.DoesNotContain(atProxy, r => r.Destination == MacMatch.Exact(SimVms.Mac(4)));
    }

    /// <summary>
    /// The interleaving that lost VMs at the Proxy: a host's full set (without a VM) overtaken by
    /// the announce of that VM, learned right after. Here the host's snapshot is held back at the
    /// Proxy while the VM's delta passes; the Proxy must keep the VM, with no repair needed.
    /// </summary>
    [Fact]
    public async Task Regression_DeltaOfAVmOvertakesTheHostsSnapshot_ProxyKeepsTheVm()
    {
        // Held back for less than a digest period: a reordering, not a loss (a digest before the
        // snapshot would rightly count as a repair).
        var options = Quick with { AntiEntropyInterval = TimeSpan.FromSeconds(3) };
        await using var net = await DaemonNet.StartAsync([], options, lan: true);
        var hold = TimeSpan.FromSeconds(1.5);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var heldAt = TimeSpan.Zero;
        var heldBack = 0;
        net.Proxy.Peers.InboundDelay = (_, m) =>
        {
            if (m is not { Type: PeerMessageType.Vms, Full: true } || Interlocked.Exchange(ref heldBack, 1) != 0)
                return TimeSpan.Zero;
            heldAt = clock.Elapsed;
            return hold;
        };
        var vm = SimVms.Mac(6);

        var h1 = await AddHost(net, "h1");
        await using var vms = new SimVms(net);
        await vms.Start(vm, "h1");
        await DaemonNet.UntilAsync(async () => (await h1.Run(() => h1.Vms.LocalCount)) == 1, Converge, "h1 to learn the VM");
        var learnedAt = clock.Elapsed;
        await AgreeWithTruth(vms, "the Proxy to place the VM on h1 once the held-back snapshot arrives");
        // Long enough for the stale snapshot to have done any harm, and for a digest to check.
        await Task.Delay(options.AntiEntropyInterval + TimeSpan.FromSeconds(0.5));

        Assert.Equal(1, heldBack);
        Assert.True(learnedAt < heldAt + hold, $"the VM was learned at {learnedAt}, after the snapshot was released ({heldAt + hold}): no overtaking happened");
        Assert.Empty(await vms.Disagreements());
        Assert.DoesNotContain(net.LogOf("proxy").Lines, l => l.Contains($"VM {vm} left h1", StringComparison.Ordinal));
        Assert.Equal("", await net.Repairs());
    }

    /// <summary>
    /// The Proxy publishes its rules once per turn of its control loop: a location it tells the
    /// hosts must not reach them before its own rule for it is live, or for the rest of the turn
    /// it would still forward the VM's frames where the VM no longer is. The Proxy's turn is held
    /// open for 300 ms right after it handled the host's delta; every location delta another host
    /// receives must find the Proxy's table already pointing at the VM's host.
    /// </summary>
    [Fact]
    public async Task LocationDelta_ReachesHostsOnlyOnceTheProxysRuleIsLive()
    {
        await using var net = await Net("h1", "h2");
        var vm = SimVms.Mac(7);
        var lanMac = new MacAddress(0x0200_0000_99feUL);
        var lanPort = net.Proxy.Switch.ResolvePort(PortRef.Interface(DaemonNet.Lan));
        var held = 0;
        net.Proxy.Peers.On(PeerMessageType.Vms, _ =>
        {
            // After the directory's own handler, on the Proxy's loop, inside the same turn.
            if (Interlocked.Exchange(ref held, 1) == 0)
                Thread.Sleep(300);
        });
        var seen = new System.Collections.Concurrent.ConcurrentQueue<bool>();
        net["h2"].Peers.InboundDelay = (_, m) =>
        {
            if (m is { Type: PeerMessageType.Locations, Full: false })
            {
                var result = net.Proxy.Switch.Table.Lookup(lanMac, vm, lanPort);
                var live = false;
                for (var i = 0; i < result.Count; i++)
                    live |= result[i].Rule.Action == RuleAction.To(PortRef.Link("h1"));
                seen.Enqueue(live);
            }
            return TimeSpan.Zero;
        };
        await using var vms = new SimVms(net);

        await vms.Start(vm, "h1");
        await AgreeWithTruth(vms, "every daemon to place the VM on h1");

        Assert.Equal(1, held);
        Assert.NotEmpty(seen);
        Assert.All(seen, live => Assert.True(live, "h2 got the VM's location while the Proxy's rule for it was not live yet"));
        Assert.Equal("", await net.Repairs());
    }

    /// <summary>The run a new user saw: hosts (re)started while their VMs already send, many times over.</summary>
    [Fact]
    public async Task Start_HostRestartedWhileItsVmsSend_EveryVmLocatedEveryTimeWithoutARepair()
    {
        await using var net = await Net("h1", "h2");
        await using var vms = new SimVms(net);
        for (var i = 0; i < 4; i++)
        {
            await vms.Start(SimVms.Mac(0x10 + i), "h1");
            await vms.Start(SimVms.Mac(0x20 + i), "h2");
        }
        await AgreeWithTruth(vms, "the first start");
        for (var round = 1; round <= 8; round++)
        {
            var host = round % 2 == 0 ? "h2" : "h1";
            await net.Stop(host);
            await net.Restart(host);
            await vms.Reattach(host);
            await net.WaitStar(host);
            await AgreeWithTruth(vms, $"round {round}: every VM placed after {host} restarted");
            var repairs = await net.Repairs();
            Assert.True(repairs.Length == 0, $"round {round}: {repairs}");
        }
    }

    [Fact]
    public async Task Lost_OneDeltaDropped_TheNextDigestFindsItAndASnapshotRepairsIt()
    {
        await using var net = await Net("h1");
        await using var vms = new SimVms(net);
        await vms.Start(SimVms.Mac(0x30), "h1");
        await AgreeWithTruth(vms, "the first VM placed");
        var dropped = 0;
        net.Proxy.Peers.InboundDelay = (_, m) =>
            m is { Type: PeerMessageType.Vms, Full: false } && Interlocked.Exchange(ref dropped, 1) == 0 ? TimeSpan.FromSeconds(-1) : TimeSpan.Zero;

        await vms.Start(SimVms.Mac(0x31), "h1");
        await AgreeWithTruth(vms, "the Proxy to repair the lost delta");

        Assert.Equal(1, dropped);
        var status = await net.Proxy.Run(net.Proxy.Vms.Status);
        var repair = Assert.Single(status.RecentRepairs);
        Assert.Equal(("h1", MapTopic.Vms, RepairKind.Behind), (repair.Peer, repair.Topic, repair.Kind));
        output.WriteLine(await net.Repairs());
    }

    /// <summary>
    /// An idle overlay sends digests only at the heartbeat (they used to go every interval and woke
    /// both daemons each time); a change is followed by a digest at the next tick.
    /// </summary>
    [Fact]
    public async Task Idle_NothingChanges_DigestsOnlyAtTheHeartbeatAndAfterAChange()
    {
        await using var net = await Net("h1");
        await using var vms = new SimVms(net);
        await vms.Start(SimVms.Mac(0x40), "h1");
        await AgreeWithTruth(vms, "the first VM placed");
        var toProxy = new System.Collections.Concurrent.ConcurrentQueue<(TimeSpan At, long Seq)>();
        var toHost = new System.Collections.Concurrent.ConcurrentQueue<MapTopic?>();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        net.Proxy.Peers.InboundDelay = (_, m) =>
        {
            if (m is { Type: PeerMessageType.Digest, Topic: MapTopic.Vms })
                toProxy.Enqueue((clock.Elapsed, m.Seq ?? -1));
            return TimeSpan.Zero;
        };
        net["h1"].Peers.InboundDelay = (_, m) =>
        {
            if (m.Type == PeerMessageType.Digest)
                toHost.Enqueue(m.Topic);
            return TimeSpan.Zero;
        };

        // Two heartbeats' worth (16 anti-entropy ticks): 2 or 3 heartbeats fall in it, never more.
        var window = Quick.DigestHeartbeat * 2;
        await Task.Delay(window);
        var idleToProxy = toProxy.Count;
        var idleToHost = toHost.ToArray();
        var version = await net["h1"].Run(() => net["h1"].Vms.LocalVersion);
        await vms.Start(SimVms.Mac(0x41), "h1");
        await DaemonNet.Until(() => toProxy.Any(d => d.Seq == version.Seq + 1), Quick.AntiEntropyInterval * 4, "a digest of the changed map");

        output.WriteLine($"in {window.TotalSeconds} s idle: {idleToProxy} digests to the Proxy, {idleToHost.Length} to the host ({string.Join(",", idleToHost)})");
        Assert.InRange(idleToProxy, 1, 3);
        Assert.InRange(idleToHost.Count(t => t == MapTopic.Locations), 1, 3);
        Assert.InRange(idleToHost.Count(t => t == MapTopic.Keys), 1, 3);
        Assert.Equal("", await net.Repairs());
    }

    /// <summary>
    /// A delta and the digest that followed it are both lost, and nothing changes afterwards: only
    /// the heartbeat can reveal it, and it does, within a heartbeat and a tick.
    /// </summary>
    [Fact]
    public async Task Lost_ADeltaAndTheDigestAfterIt_TheHeartbeatRepairsItWithinItsBound()
    {
        await using var net = await Net("h1");
        await using var vms = new SimVms(net);
        await vms.Start(SimVms.Mac(0x42), "h1");
        await AgreeWithTruth(vms, "the first VM placed");
        var droppedDelta = 0;
        var droppedDigest = 0;
        net.Proxy.Peers.InboundDelay = (_, m) =>
        {
            if (m is { Type: PeerMessageType.Vms, Full: false } && Interlocked.Exchange(ref droppedDelta, 1) == 0)
                return TimeSpan.FromSeconds(-1);
            if (m is { Type: PeerMessageType.Digest, Topic: MapTopic.Vms } && Volatile.Read(ref droppedDelta) == 1 && Interlocked.Exchange(ref droppedDigest, 1) == 0)
                return TimeSpan.FromSeconds(-1);
            return TimeSpan.Zero;
        };
        var clock = System.Diagnostics.Stopwatch.StartNew();

        await vms.Start(SimVms.Mac(0x43), "h1");
        await DaemonNet.Until(() => Volatile.Read(ref droppedDigest) == 1, Quick.AntiEntropyInterval * 4, "the digest after the lost delta (dropped too)");
        await AgreeWithTruth(vms, "the heartbeat to find the lost delta");
        var healed = clock.Elapsed;

        output.WriteLine($"healed {healed.TotalSeconds:0.0} s after the loss; heartbeat {Quick.DigestHeartbeat.TotalSeconds} s");
        Assert.True(healed < Quick.DigestHeartbeat + Quick.AntiEntropyInterval * 3, $"healed after {healed}, beyond the heartbeat's bound");
        var repair = Assert.Single((await net.Proxy.Run(net.Proxy.Vms.Status)).RecentRepairs);
        Assert.Equal(("h1", MapTopic.Vms, RepairKind.Behind), (repair.Peer, repair.Topic, repair.Kind));
    }

    /// <summary>
    /// A delta is lost and every digest with it, but another change follows: the replica holds the
    /// later delta for its missing predecessor, and once that gap has stayed open a whole interval it
    /// asks for a snapshot itself, well before any heartbeat.
    /// </summary>
    [Fact]
    public async Task Lost_ADeltaThenAnotherArrives_TheReplicaSeesTheGapAndAsks()
    {
        var options = Quick with { DigestHeartbeat = TimeSpan.FromMinutes(5) };
        await using var net = await DaemonNet.StartAsync([("h1", [])], options, lan: true);
        await using var vms = new SimVms(net);
        await vms.Start(SimVms.Mac(0x44), "h1");
        await DaemonNet.UntilAsync(async () => (await vms.Disagreements()).Count == 0, Converge, "the first VM placed");
        var dropped = 0;
        net.Proxy.Peers.InboundDelay = (_, m) =>
        {
            if (m is { Type: PeerMessageType.Vms, Full: false } && Interlocked.Exchange(ref dropped, 1) == 0)
                return TimeSpan.FromSeconds(-1);
            return m is { Type: PeerMessageType.Digest } ? TimeSpan.FromSeconds(-1) : TimeSpan.Zero;
        };

        await vms.Start(SimVms.Mac(0x45), "h1");
        await DaemonNet.Until(() => Volatile.Read(ref dropped) == 1, Converge, "the first delta (dropped)");
        await vms.Start(SimVms.Mac(0x46), "h1");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await DaemonNet.UntilAsync(async () => (await vms.Disagreements()).Count == 0, Converge, "the gap to be found and repaired");

        output.WriteLine($"healed {clock.Elapsed.TotalSeconds:0.0} s after the second delta");
        Assert.True(clock.Elapsed < options.AntiEntropyInterval * 6, $"healed after {clock.Elapsed}");
        var repair = Assert.Single((await net.Proxy.Run(net.Proxy.Vms.Status)).RecentRepairs);
        Assert.Equal(("h1", MapTopic.Vms, RepairKind.Gap), (repair.Peer, repair.Topic, repair.Kind));
    }

    [Fact]
    public async Task MacFlood_ThousandsOfSourcesOnOneTap_LearningStaysWithinItsLimits()
    {
        await using var net = await Net("h1");
        var h1 = net["h1"];
        await h1.Run(() =>
        {
            h1.Interfaces.Add(new InterfaceConfig { Name = "flood0", Kind = InterfaceKind.Tap });
            return true;
        });
        var tap = net.DevicesOf("h1")["flood0"];
        var frame = new byte[60];
        for (var i = 0; i < 6000; i++)
        {
            SimVms.LanHost.Write(frame);
            new MacAddress(0x0200_1000_0000UL + (ulong)i).Write(frame.AsSpan(6));
            while (!tap.Inject(frame))
                await Task.Delay(1);
        }

        await DaemonNet.UntilAsync(async () => (await h1.Run(() => h1.Vms.LearnRefused)) > 0, Converge, "the limit to refuse VMs");
        var learned = await h1.Run(() => h1.Vms.LocalCount);
        Assert.Equal(h1.Config.MaxLearnedPerInterface, learned);
        Assert.True(h1.Vms.Gate.Tracked <= LearningGate.MaxTracked, $"{h1.Vms.Gate.Tracked} MACs tracked");
    }

    private static async Task<Vnet.Daemon.VnetDaemon> AddHost(DaemonNet net, string name)
    {
        await net.AddHost(name);
        await net.WaitStar(name);
        return net[name];
    }
}
