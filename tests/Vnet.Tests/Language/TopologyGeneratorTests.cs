using System.Net;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Language;
using Vnet.Links;
using static Vnet.Tests.Language.Lang;

namespace Vnet.Tests.Language;

/// <summary>The generated shapes: each passes the checker and has exactly the links and rules its kind promises.</summary>
public sealed class TopologyGeneratorTests
{
    private static readonly (string Name, IPEndPoint Address) Proxy = ("p", Ep("192.0.2.1:5500"));

    private static (string Name, IPEndPoint Address)[] Hosts(int n) =>
        [.. Enumerable.Range(1, n).Select(i => ($"h{i}", Ep($"192.0.2.{10 + i}:5500")))];

    // Host i has VM i (and h1 a second one), so rules can be told apart.
    private static (string Host, MacAddress Mac)[] Vms(int n) =>
        [.. Enumerable.Range(1, n).Select(i => ($"h{i}", Mac(i))), ("h1", Mac(100))];

    private static string[] LinkLines(OverlayDescription o) => [.. o.Links.Select(l => l.ToString())];

    private static string[] RuleLines(OverlayDescription o, string host) => [.. o.Daemon(host)!.Rules.Select(r => r.ToString())];

    [Fact]
    public void Generate_Star_EveryHostDialsTheProxy()
    {
        var o = TopologyGenerator.Generate(TopologyKind.Star, Proxy, Hosts(3), Vms(3), LinkTransport.Udp);

        Assert.Empty(OverlayChecker.Check(o));
        Assert.Equal(["link h1 -> p udp", "link h2 -> p udp", "link h3 -> p udp"], LinkLines(o));
        Assert.All(o.Daemons, d => Assert.Empty(d.Rules));
        Assert.Equal(["p", "h1", "h2", "h3"], o.Daemons.Select(d => d.Name));
        Assert.Equal(DaemonRole.Proxy, o.Daemons[0].Role);
        Assert.Empty(o.Daemons[0].Interfaces);
        Assert.Equal(new InterfaceDecl("tap0", InterfaceKind.Tap, null, null, false, [Mac(1), Mac(100)]), o.Daemon("h1")!.Interfaces.Single());
        Assert.Equal(new InterfaceDecl("tap0", InterfaceKind.Tap, null, null, false, [Mac(3)]), o.Daemon("h3")!.Interfaces.Single());
    }

    [Fact]
    public void Generate_Mesh_EveryPairLinkedAndEveryRemoteVmRouted()
    {
        var o = TopologyGenerator.Generate(TopologyKind.Mesh, Proxy, Hosts(3), Vms(3));

        Assert.Empty(OverlayChecker.Check(o));
        Assert.Equal(
            ["link h1 -> p tcp", "link h2 -> p tcp", "link h3 -> p tcp", "link h1 -> h2 tcp", "link h1 -> h3 tcp", "link h2 -> h3 tcp"],
            LinkLines(o));
        Assert.Equal(
            ["rule any -> 02:00:00:00:00:02 to link h2", "rule any -> 02:00:00:00:00:03 to link h3"],
            RuleLines(o, "h1"));
        Assert.Equal(
            ["rule any -> 02:00:00:00:00:01 to link h1", "rule any -> 02:00:00:00:00:64 to link h1", "rule any -> 02:00:00:00:00:03 to link h3"],
            RuleLines(o, "h2"));
        Assert.Empty(o.Daemon("p")!.Rules);
    }

    [Fact]
    public void Generate_Ring_NeighboursLinkedAndRouted()
    {
        var o = TopologyGenerator.Generate(TopologyKind.Ring, Proxy, Hosts(4), Vms(4));

        Assert.Empty(OverlayChecker.Check(o));
        Assert.Equal(
            [
                "link h1 -> p tcp", "link h2 -> p tcp", "link h3 -> p tcp", "link h4 -> p tcp",
                "link h1 -> h2 tcp", "link h2 -> h3 tcp", "link h3 -> h4 tcp", "link h4 -> h1 tcp",
            ],
            LinkLines(o));
        // h1's neighbours are h2 and h4; h3, across the ring, goes through the star.
        Assert.Equal(["rule any -> 02:00:00:00:00:02 to link h2", "rule any -> 02:00:00:00:00:04 to link h4"], RuleLines(o, "h1"));
        Assert.Equal(
            ["rule any -> 02:00:00:00:00:02 to link h2", "rule any -> 02:00:00:00:00:04 to link h4"],
            RuleLines(o, "h3"));
    }

    [Theory]
    [InlineData(TopologyKind.Ring)]
    [InlineData(TopologyKind.Mesh)]
    public void Generate_TwoHosts_OneLinkBetweenThem(TopologyKind kind)
    {
        var o = TopologyGenerator.Generate(kind, Proxy, Hosts(2), Vms(2));

        Assert.Empty(OverlayChecker.Check(o));
        Assert.Equal(["link h1 -> p tcp", "link h2 -> p tcp", "link h1 -> h2 tcp"], LinkLines(o));
        Assert.Equal(["rule any -> 02:00:00:00:00:02 to link h2"], RuleLines(o, "h1"));
        Assert.Equal(["rule any -> 02:00:00:00:00:01 to link h1", "rule any -> 02:00:00:00:00:64 to link h1"], RuleLines(o, "h2"));
    }

    [Theory]
    [InlineData(TopologyKind.Star)]
    [InlineData(TopologyKind.Mesh)]
    [InlineData(TopologyKind.Ring)]
    public void Generate_AnySizeAndKind_PassesTheCheckerAndRoundTrips(TopologyKind kind)
    {
        for (var n = 0; n <= 6; n++)
        {
            var o = TopologyGenerator.Generate(kind, Proxy, Hosts(n), n == 0 ? [] : Vms(n), LinkTransport.Udp, "vnet0", "eth0");
            Assert.Empty(OverlayChecker.Check(o));
            Assert.Equal(o, OverlayParser.Parse(OverlayFormatter.Format(o), "gen.vnet").OrThrow());
            Assert.Equal(n, o.Links.Count(l => l.To == "p"));
            var expectedLinks = n + kind switch
            {
                TopologyKind.Mesh => n * (n - 1) / 2,
                TopologyKind.Ring => n < 2 ? 0 : n == 2 ? 1 : n,
                _ => 0,
            };
            Assert.Equal(expectedLinks, o.Links.Count);
        }
    }

    [Fact]
    public void Generate_LanInterface_ProxyGetsPcapLan()
    {
        var o = TopologyGenerator.Generate(TopologyKind.Star, Proxy, Hosts(1), [], lanInterface: "eth1");
        Assert.Equal(new InterfaceDecl("eth1", InterfaceKind.Pcap, null, null, true, []), o.Daemon("p")!.Interfaces.Single());
        Assert.Equal("interface tap0 tap", o.Daemon("h1")!.Interfaces.Single().ToString());
    }

    [Fact]
    public void Generate_VmOnUnknownHost_Throws()
    {
        var ex = Assert.Throws<ArgumentException>(() => TopologyGenerator.Generate(TopologyKind.Star, Proxy, Hosts(1), [("h9", Mac(1))]));
        Assert.Contains("'h9'", ex.Message, StringComparison.Ordinal);
        // 'vnet topo gen' prints the message as it is.
        Assert.DoesNotContain("Parameter", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Generate_TwoHostsOfOneName_ThrowsNamingIt()
    {
        var ex = Assert.Throws<ArgumentException>(() => TopologyGenerator.Generate(TopologyKind.Mesh, Proxy,
            [("h1", Ep("192.0.2.2:5500")), ("h1", Ep("192.0.2.3:5500"))], [("h1", Mac(1))]));

        Assert.Equal("host 'h1' is given twice: every host needs its own name", ex.Message);
    }

    [Fact]
    public void Generate_DuplicateHostNames_ThrowsWithTheCheckersReason()
    {
        var ex = Assert.Throws<ArgumentException>(() => TopologyGenerator.Generate(TopologyKind.Star, Proxy, [("h", Ep("192.0.2.2:5500")), ("p", Ep("192.0.2.3:5500"))], []));
        Assert.Contains("declared twice", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Generate_RulesAreUserRules_ToRuleKeepsThem()
    {
        var o = TopologyGenerator.Generate(TopologyKind.Mesh, Proxy, Hosts(2), Vms(2));
        var rule = o.Daemon("h1")!.Rules.Single().ToRule();
        Assert.Equal(RuleOrigin.User, rule.Origin);
        Assert.Null(rule.Validate());
    }
}
