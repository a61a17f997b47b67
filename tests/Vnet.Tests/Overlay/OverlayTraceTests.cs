using Vnet.Daemon;
using Vnet.Frames;

namespace Vnet.Tests.Overlay;

/// <summary>
/// <see cref="OverlayTrace.Trace"/> on overlays written by hand the way daemons report them: the
/// hops a frame takes, the rules that match at each, and where it ends (delivered, dropped, looped).
/// </summary>
public sealed class OverlayTraceTests
{
    private static readonly MacAddress Vm1 = MacAddress.Parse("02:00:00:00:00:01");
    private static readonly MacAddress Vm2 = MacAddress.Parse("02:00:00:00:00:02");
    private static readonly MacAddress Vm3 = MacAddress.Parse("02:00:00:00:00:03");
    private static readonly MacAddress Unknown = MacAddress.Parse("02:00:00:00:00:99");
    private static readonly MacAddress Broadcast = MacAddress.Parse("ff:ff:ff:ff:ff:ff");

    private static long s_id;

    private static RuleStatus Rule(string src, string dst, string action, string origin = "system", string? ingress = null) =>
        StateText.Rule(Interlocked.Increment(ref s_id), src, dst, ingress, action, origin);

    private static LinkState Star(string peer, bool dials, bool up = true) =>
        StateText.Link(peer, "tcp", true, dials ? "192.0.2.1:5500" : null, up, null);

    private static LinkState Direct(string peer, bool dials, bool up = true) =>
        StateText.Link(peer, "udp", false, dials ? "192.0.2.99:5500" : null, up, null);

    /// <summary>A host with one VM on tap0 and the rules a host installs for it by itself.</summary>
    private static DaemonState Host(string name, MacAddress vm, IEnumerable<LinkState>? links = null, IEnumerable<RuleStatus>? rules = null) =>
        StateText.Daemon(name, "host", null,
            [StateText.Interface("tap0", "tap", 1500, null, false, [vm.ToString()])],
            [Star("proxy", dials: true), .. links ?? []],
            [
                Rule("any", "multicast", "flood"),
                Rule("any", vm.ToString(), "if:tap0"),
                Rule(vm.ToString(), "none", "link:proxy"),
                .. rules ?? [],
            ]);

    /// <summary>The Proxy with its LAN NIC and a location rule per VM.</summary>
    private static DaemonState Proxy(IEnumerable<RuleStatus>? rules = null, params string[] hosts) =>
        StateText.Daemon("proxy", "proxy", "192.0.2.1:5500",
            [StateText.Interface("lan0", "pcap", 1500, null, true, [])],
            [.. hosts.Select(h => Star(h, dials: false))],
            [
                Rule("any", "multicast", "flood"),
                Rule("any", "none", "if:lan0"),
                Rule("any", Vm1.ToString(), "link:h1"),
                Rule("any", Vm2.ToString(), "link:h2"),
                Rule("any", Vm3.ToString(), "link:h3"),
                .. rules ?? [],
            ]);

    private static OverlayStates Star3(DaemonState? proxy = null, DaemonState? h1 = null, DaemonState? h2 = null, DaemonState? h3 = null) =>
        new([proxy ?? Proxy(null, "h1", "h2", "h3"), h1 ?? Host("h1", Vm1), h2 ?? Host("h2", Vm2), h3 ?? Host("h3", Vm3)], []);

    private static string Path(TraceResult t) => string.Join(" -> ", t.Hops.Select(h => h.Daemon));

    [Fact]
    public void Trace_UnicastOnThePlainStar_GoesThroughTheProxyAndIsDeliveredToTheVm()
    {
        var t = OverlayTrace.Trace(Star3(), "h1", Vm1, Vm2);

        Assert.Equal("h1 -> proxy -> h2", Path(t));
        Assert.Equal(["if:tap0", "link:h1", "link:proxy"], t.Hops.Select(h => h.Ingress));
        Assert.Contains("02:00:00:00:00:01 -> none => link:proxy (system", Assert.Single(t.Hops[0].Rules), StringComparison.Ordinal);
        Assert.Equal(["link:proxy: to proxy over tcp"], t.Hops[0].Outputs);
        Assert.Equal(["link:h2: to h2 over tcp"], t.Hops[1].Outputs);
        Assert.Equal(["if:tap0: delivered to VM 02:00:00:00:00:02"], t.Hops[2].Outputs);
        Assert.Equal(["delivered at h2 on if:tap0 (VM 02:00:00:00:00:02)"], t.Endings);
    }

    [Fact]
    public void Trace_DirectLinkWithAUserRule_SkipsTheProxy()
    {
        var h1 = Host("h1", Vm1, [Direct("h2", dials: true)], [Rule("any", Vm2.ToString(), "link:h2", "user")]);
        var h2 = Host("h2", Vm2, [Direct("h1", dials: false)]);

        var t = OverlayTrace.Trace(Star3(h1: h1, h2: h2), "h1", Vm1, Vm2);

        Assert.Equal("h1 -> h2", Path(t));
        Assert.Contains("(user, priority", Assert.Single(t.Hops[0].Rules), StringComparison.Ordinal);
        Assert.Equal(["link:h2: to h2 over udp"], t.Hops[0].Outputs);
        Assert.Equal("link:h1", t.Hops[1].Ingress);
        Assert.Equal(["delivered at h2 on if:tap0 (VM 02:00:00:00:00:02)"], t.Endings);
    }

    [Fact]
    public void Trace_UnknownUnicast_EndsOnTheProxysLan()
    {
        var t = OverlayTrace.Trace(Star3(), "h1", Vm1, Unknown);

        Assert.Equal("h1 -> proxy", Path(t));
        Assert.Equal(["delivered at proxy on if:lan0 (the LAN)"], t.Endings);
    }

    [Fact]
    public void Trace_NoRuleMatches_DroppedThere()
    {
        // Not a VM of h1 (no default rule for it), and h1 knows no rule for the destination.
        var t = OverlayTrace.Trace(Star3(), "h1", Unknown, Vm2);

        Assert.Equal("h1", Path(t));
        Assert.Null(t.Hops[0].Ingress);
        Assert.Empty(t.Hops[0].Rules);
        Assert.Equal(["dropped at h1: no rule matches"], t.Endings);
    }

    [Fact]
    public void Trace_LinkDown_DroppedWhereTheLinkStarts()
    {
        var h1 = Host("h1", Vm1) with { Links = [Star("proxy", dials: true, up: false)] };

        var t = OverlayTrace.Trace(Star3(h1: h1), "h1", Vm1, Vm2);

        Assert.Equal("h1", Path(t));
        Assert.Equal(["link:proxy: link down (dropped)"], t.Hops[0].Outputs);
        Assert.Equal(["dropped at h1: link:proxy is down"], t.Endings);
    }

    [Fact]
    public void Trace_OnlyWayOnIsBack_NotSentBackAndSaysWhereItEnds()
    {
        // The Proxy believes VM 9 lives behind h1, where the frame comes from (a stale location).
        var proxy = Proxy([Rule("any", Unknown.ToString(), "link:h1")], "h1", "h2", "h3");

        var t = OverlayTrace.Trace(Star3(proxy: proxy), "h1", Vm1, Unknown);

        Assert.Equal("h1 -> proxy", Path(t));
        Assert.Equal(["link:h1: not sent back where it came from"], t.Hops[1].Outputs);
        Assert.Equal(["dropped at proxy: the only way on is back to link:h1, where the frame came from"], t.Endings);
    }

    [Fact]
    public void Trace_Broadcast_ReachesEveryOtherVmInterfaceAndTheLanOnceNotTheDirectLink()
    {
        // A direct link beside the star must not carry a second copy.
        var h1 = Host("h1", Vm1, [Direct("h2", dials: true)], [Rule("any", Vm2.ToString(), "link:h2", "user")]);
        var h2 = Host("h2", Vm2, [Direct("h1", dials: false)]);

        var t = OverlayTrace.Trace(Star3(h1: h1, h2: h2), "h1", Vm1, Broadcast);

        Assert.Equal("h1 -> proxy -> h2 -> h3", Path(t));
        Assert.Equal(
            [
                "delivered at proxy on if:lan0 (the LAN)",
                "delivered at h2 on if:tap0 (the interface)",
                "delivered at h3 on if:tap0 (the interface)",
            ],
            t.Endings);
        Assert.Contains("if:tap0: not sent back where it came from", t.Hops[0].Outputs);
        Assert.DoesNotContain(t.Hops[0].Outputs, o => o.StartsWith("link:h2", StringComparison.Ordinal));
        Assert.Contains("link:h1: not sent back where it came from", t.Hops[1].Outputs);
    }

    [Fact]
    public void Trace_NextDaemonNotReachable_SaysItCannotFollow()
    {
        var states = Star3();
        states = states with { Daemons = [.. states.Daemons.Where(d => d.Name != "h2")], Unreachable = ["h2: link down (timeout)"] };

        var t = OverlayTrace.Trace(states, "h1", Vm1, Vm2);

        Assert.Equal("h1 -> proxy", Path(t));
        Assert.Equal(["h2 is not reachable from the Proxy: cannot follow further"], t.Endings);
    }

    [Fact]
    public void Trace_RulesThatSendTheFrameRound_StopsAtTheLoop()
    {
        var h1 = Host("h1", Vm1, [Direct("h2", dials: true), Direct("h3", dials: false)], [Rule("any", Unknown.ToString(), "link:h2", "user")]);
        var h2 = Host("h2", Vm2, [Direct("h1", dials: false), Direct("h3", dials: true)], [Rule("any", Unknown.ToString(), "link:h3", "user")]);
        var h3 = Host("h3", Vm3, [Direct("h2", dials: false), Direct("h1", dials: true)], [Rule("any", Unknown.ToString(), "link:h1", "user")]);

        var t = OverlayTrace.Trace(Star3(h1: h1, h2: h2, h3: h3), "h1", Vm1, Unknown);

        Assert.Equal("h1 -> h2 -> h3 -> h1", Path(t));
        Assert.Equal(["loop: h2 reached again from link:h1"], t.Endings);
    }

    [Fact]
    public void Trace_FromAnUnknownDaemon_RefusedNamingTheKnownOnes()
    {
        var e = Assert.Throws<DaemonCommandException>(() => OverlayTrace.Trace(Star3(), "h9", Vm1, Vm2));

        Assert.Contains("no daemon h9", e.Message, StringComparison.Ordinal);
        Assert.Contains("proxy, h1, h2, h3", e.Message, StringComparison.Ordinal);
    }
}
