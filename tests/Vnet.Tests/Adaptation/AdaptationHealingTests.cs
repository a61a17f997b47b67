using Vnet.Adaptation;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;
using Vnet.Tests.Support;
using Vnet.Tests.Vms;

namespace Vnet.Tests.Adaptation;

/// <summary>
/// Adaptation on real daemons in this process (<see cref="DaemonNet"/>) plans from the links and
/// rules of origin adaptation the hosts hold, not from its memory of what it sent: a leftover it
/// does not remember (a Proxy restarted, a change set taken whose answer was lost) is removed when
/// no traffic wants it, and kept, not added twice, when traffic does.
/// </summary>
public sealed class AdaptationHealingTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
    private static readonly MacAddress Vm1 = SimVms.Mac(1);
    private static readonly MacAddress Vm2 = SimVms.Mac(2);

    /// <summary>
    /// The link h1-h2 and its rules, of origin adaptation, as a Proxy that was restarted since left
    /// them: its memory is empty. Before, it planned from that memory, found nothing to remove, and
    /// the link stayed for good; now the first round with policy auto and no traffic removes them,
    /// and so does policy off set by hand (the operator's way to undo adaptation).
    /// </summary>
    [Theory]
    [InlineData(AdaptationPolicy.Auto)]
    [InlineData(AdaptationPolicy.Off)]
    public async Task Policy_LeftoverLinkAndRulesAdaptationDoesNotRemember_NoTraffic_Removed(AdaptationPolicy policy)
    {
        await using var net = await DaemonNet.StartAsync("h1", "h2");
        await InstallLeftover(net);

        await net.Proxy.Run(() => net.Proxy.Adaptation.SetPolicy(policy, 2));

        await DaemonNet.UntilAsync(async () => await Clean(net, "h1") && await Clean(net, "h2"), Deadline,
            "adaptation to remove the leftover link and rules", () => Shapes(net));
        var status = await net.Proxy.Run(net.Proxy.Adaptation.Status);
        Assert.Empty(status.Links);
        Assert.Contains(status.Log, a => a.Applied && a.Daemon == "h1" && a.Change == "remove link h2");
        Assert.Contains(status.Log, a => a.Applied && a.Daemon == "h2" && a.Change == $"remove rule any -> {Vm1} to link:h1");
    }

    /// <summary>
    /// h2 takes adaptation's change set (removing its leftovers) but its star session ends before
    /// the answer leaves: the Proxy counts it refused and rolls h1 back, so h1 holds its half again.
    /// The next round sees what h1 and h2 hold and removes h1's half.
    /// </summary>
    [Fact]
    public async Task AutoPolicy_HostTakesTheSetButTheAnswerIsLost_NextRoundRemovesWhatTheRollbackPutBack()
    {
        await using var net = await DaemonNet.StartAsync("h1", "h2");
        await InstallLeftover(net);
        var h2 = net["h2"];
        AnswerLost.Install(h2, "apply");

        await net.Proxy.Run(() => net.Proxy.Adaptation.SetPolicy(AdaptationPolicy.Auto, 2));
        await DaemonNet.UntilAsync(async () => (await net.Proxy.Run(net.Proxy.Adaptation.Status)).Log.Any(a => a.Change == "(refused)"),
            Deadline, "the round whose answer from h2 was lost");
        await net.WaitStar("h2");
        // The next trigger (any: a topology change, a VM moving, a policy set again).
        await net.Proxy.Run(() => net.Proxy.Adaptation.SetPolicy(AdaptationPolicy.Auto, 2));

        await DaemonNet.UntilAsync(async () => await Clean(net, "h1") && await Clean(net, "h2"), Deadline,
            "adaptation to remove what h1's rollback put back", () => Shapes(net));
        Assert.Empty((await net.Proxy.Run(net.Proxy.Adaptation.Status)).Links);
    }

    /// <summary>
    /// The same leftovers, with VM traffic between h1 and h2 that wants them: adaptation takes the
    /// link as its own and changes nothing. Before, it added the link again, h1 refused (it has
    /// one), and every round failed.
    /// </summary>
    [Fact]
    public async Task AutoPolicy_LeftoverLinkThatTrafficWants_KeptAndNotAddedTwice()
    {
        await using var net = await StartWithVmInterfacesAsync();
        await InstallLeftover(net);
        using var stop = new CancellationTokenSource();
        var pump = Task.Run(() => Pump(net, stop.Token));
        try
        {
            // Advise until the traffic is inferred (with policy off a round removes adaptation's links, and
            // auto before the inference would remove them for want of traffic): the plan has the link.
            await AdviseUntilLinkPlannedAsync(net);
            await net.Proxy.Run(() => net.Proxy.Adaptation.SetPolicy(AdaptationPolicy.Auto, 2));

            await DaemonNet.UntilAsync(async () => (await net.Proxy.Run(net.Proxy.Adaptation.Status)) is { Links: ["h1 -> h2"] } s &&
                    s.Plan.Any(p => p.StartsWith("link h1 <-> h2: ", StringComparison.Ordinal)),
                Deadline, "adaptation to take the link there as its own", () => Shapes(net));
            // Rounds follow the traffic; a few more may come meanwhile.
            await Task.Delay(TimeSpan.FromSeconds(2));
        }
        finally
        {
            await stop.CancelAsync();
            await pump;
        }
        var status = await net.Proxy.Run(net.Proxy.Adaptation.Status);
        // Advise logged removals until the traffic was inferred; nothing was ever applied.
        Assert.DoesNotContain(status.Log, a => a.Applied);
        Assert.DoesNotContain(status.Log, a => a.Change.StartsWith('('));
        await AssertOneLinkAndRuleAtEachEnd(net);
    }

    /// <summary>
    /// Traffic between h1 and h2 wants a link; h2 takes its half of it (link and rule) but the
    /// answer is lost with its star session, so h1 is rolled back. Before, adaptation still
    /// remembered nothing, sent h2 the same link again at every round, and h2 refused each time (it
    /// has it): the link never came. Now the next round sees h2's half and completes the link at h1.
    /// </summary>
    [Fact]
    public async Task AutoPolicy_TheAnswerToAnAddedLinkIsLost_NextRoundCompletesItAtTheOtherEndOnly()
    {
        await using var net = await StartWithVmInterfacesAsync();
        using var stop = new CancellationTokenSource();
        var pump = Task.Run(() => Pump(net, stop.Token));
        try
        {
            await AdviseUntilLinkPlannedAsync(net);
            var h2 = net["h2"];
            AnswerLost.Install(h2, "apply");
            await net.Proxy.Run(() => net.Proxy.Adaptation.SetPolicy(AdaptationPolicy.Auto, 2));
            await DaemonNet.UntilAsync(async () => (await net.Proxy.Run(net.Proxy.Adaptation.Status)).Log.Any(a => a.Change == "(refused)"),
                Deadline, "the round whose answer from h2 was lost", () => Shapes(net));
            await net.WaitStar("h2");
            await net.Proxy.Run(() => net.Proxy.Adaptation.SetPolicy(AdaptationPolicy.Auto, 2));

            await DaemonNet.UntilAsync(async () => (await net.Proxy.Run(net.Proxy.Adaptation.Status)).Links is ["h1 -> h2"] &&
                    net["h1"].Links.Find("h2") is { IsUp: true },
                Deadline, "link h1-h2 completed and up", () => Shapes(net));
        }
        finally
        {
            await stop.CancelAsync();
            await pump;
        }
        var status = await net.Proxy.Run(net.Proxy.Adaptation.Status);
        // h2 was sent its half once (the lost answer), never again.
        Assert.Single(status.Log, a => a.Daemon == "h2" && a.Change.StartsWith("add link", StringComparison.Ordinal));
        Assert.Single(status.Log, a => a.Change == "(refused)");
        await AssertOneLinkAndRuleAtEachEnd(net);
    }

    /// <summary>h1 and h2, each with a VM interface (vm1, vm2) that <see cref="Pump"/> sends traffic through.</summary>
    private static Task<DaemonNet> StartWithVmInterfacesAsync() => DaemonNet.StartAsync(
        [("h1", [new InterfaceConfig { Name = "vm1", Kind = InterfaceKind.Tap }]), ("h2", [new InterfaceConfig { Name = "vm2", Kind = InterfaceKind.Tap }])],
        null);

    /// <summary>Policy advise until the inferred traffic makes the plan have link h1-h2.</summary>
    private static async Task AdviseUntilLinkPlannedAsync(DaemonNet net)
    {
        await net.Proxy.Run(() => net.Proxy.Adaptation.SetPolicy(AdaptationPolicy.Advise, 2));
        await DaemonNet.UntilAsync(async () => (await net.Proxy.Run(net.Proxy.Adaptation.Status)).Plan.Any(p => p.StartsWith("link h1 <-> h2: ", StringComparison.Ordinal)),
            Deadline, "a plan with link h1-h2", () => Shapes(net));
    }

    /// <summary>Exactly one adaptation link h1-h2 at each end, and one adaptation rule sending the other host's VM over it.</summary>
    private static async Task AssertOneLinkAndRuleAtEachEnd(DaemonNet net)
    {
        foreach (var (host, peer, vm) in new[] { ("h1", "h2", Vm2), ("h2", "h1", Vm1) })
        {
            var state = await net.State(host);
            Assert.Single(state.Links, l => l.Peer == peer && l.Origin == RuleOrigin.Adaptation);
            var rule = Assert.Single(state.Rules, r => r.Origin == RuleOrigin.Adaptation);
            Assert.Equal((MacMatch.Exact(vm), $"link:{peer}"), (rule.Destination, rule.Action.ToString()));
        }
    }

    /// <summary>Link h1 -> h2 (h1 dials) and a rule at each end sending the other host's VM over it, all of origin adaptation, put there behind adaptation's back.</summary>
    private static async Task InstallLeftover(DaemonNet net)
    {
        var h1 = await net.Apply("h1",
            new DaemonChange { Op = ChangeOp.AddLink, Peer = "h2", Transport = LinkTransport.Udp, Dial = net.At("h2"), Origin = RuleOrigin.Adaptation },
            Rule(Vm2, "h2"));
        var h2 = await net.Apply("h2",
            new DaemonChange { Op = ChangeOp.AddLink, Peer = "h1", Transport = LinkTransport.Udp, Origin = RuleOrigin.Adaptation },
            Rule(Vm1, "h1"));
        Assert.True(h1.Applied && h2.Applied, h1.Error ?? h2.Error);
        Assert.False(await Clean(net, "h1"));
    }

    private static DaemonChange Rule(MacAddress dst, string via) => new()
    {
        Op = ChangeOp.AddRule,
        Src = MacMatch.Any,
        Dst = MacMatch.Exact(dst),
        To = RuleAction.To(PortRef.Link(via)),
        Origin = RuleOrigin.Adaptation,
    };

    /// <summary>No link or rule of adaptation's on the daemon.</summary>
    private static async Task<bool> Clean(DaemonNet net, string daemon)
    {
        var s = await net.State(daemon);
        return !s.Links.Any(l => l.Origin == RuleOrigin.Adaptation) && !s.Rules.Any(r => r.Origin == RuleOrigin.Adaptation);
    }

    private static async Task<string> Shapes(DaemonNet net) =>
        string.Join("\n--\n", await Task.WhenAll(new[] { "h1", "h2" }.Select(net.Shape))) + "\n--\n" +
        string.Join("\n", (await net.Proxy.Run(net.Proxy.Adaptation.Status)).Log.Select(a => $"{a.Daemon}: {a.Change} ({a.Reason})"));

    /// <summary>vm1 and vm2 exchange 1000-byte frames, about 200 kB/s each way (the inference floor is 10 kB/s), until stopped (at most a minute).</summary>
    private static async Task Pump(DaemonNet net, CancellationToken stop)
    {
        var toVm2 = Frame(Vm1, Vm2);
        var toVm1 = Frame(Vm2, Vm1);
        var (tap1, tap2) = (net.DevicesOf("h1")["vm1"], net.DevicesOf("h2")["vm2"]);
        for (var tick = 0; tick < 1200 && !stop.IsCancellationRequested; tick++)
        {
            for (var i = 0; i < 10; i++)
            {
                tap1.Inject(toVm2);
                tap2.Inject(toVm1);
            }
            // Written frames are kept (up to a bound); the test reads none of them.
            while (tap1.TryTake(out _) || tap2.TryTake(out _))
            {
            }
            try
            {
                await Task.Delay(50, stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private static byte[] Frame(MacAddress src, MacAddress dst)
    {
        var frame = new byte[1000];
        dst.Write(frame);
        src.Write(frame.AsSpan(6));
        frame[12] = 0x88;
        frame[13] = 0xb5;
        return frame;
    }

}
