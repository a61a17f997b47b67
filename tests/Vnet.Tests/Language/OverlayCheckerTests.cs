using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Language;
using Vnet.Links;
using static Vnet.Tests.Language.Lang;

namespace Vnet.Tests.Language;

/// <summary>
/// The meaning checks: one test per check with its message and the position of the construct at
/// fault, then how problems are collected and what models built in code get.
/// </summary>
public sealed class OverlayCheckerTests
{
    private const string Proxy = "proxy p at 192.0.2.1:5500\n";

    [Fact]
    public void Check_Lab_NoProblems()
    {
        Parse("""
            proxy home at 192.0.2.1:5500 {
              interface lan0 pcap lan
            }
            host h1 at 192.0.2.11:5500 {
              interface tap0 tap mtu 1500 bridge br0 {
                vm 02:00:00:00:00:01
              }
              rule any -> 02:00:00:00:00:02 to link h2
              rule any -> 02:00:00:00:00:01 from link h2 to interface tap0
            }
            host h2 at 192.0.2.12:5500
            link h1 -> home tcp
            link h1 -> h2 udp port 5501
            link h2 -> home udp
            """);
    }

    [Fact]
    public void Check_NoProxy_ReportedAtTheStart()
    {
        Assert.Equal(
            "t.vnet:1:1: the overlay has no proxy: declare the daemon on the user's LAN with 'proxy NAME at ADDRESS:PORT'",
            Error("\n\nhost h at 192.0.2.2:5500\n"));
    }

    [Fact]
    public void Check_EmptyText_NoProxy()
    {
        Assert.Equal(
            "t.vnet:1:1: the overlay has no proxy: declare the daemon on the user's LAN with 'proxy NAME at ADDRESS:PORT'",
            Error("# nothing yet\n"));
    }

    [Fact]
    public void Check_TwoProxies_SecondReported()
    {
        Assert.Equal(
            "t.vnet:2:1: a second proxy 'q': an overlay has exactly one (the first is 'p' at line 1)",
            Error(Proxy + "proxy q at 192.0.2.2:5500\nlink q -> p"));
    }

    [Fact]
    public void Check_DaemonDeclaredTwice_SecondReported()
    {
        Assert.Equal(
            "t.vnet:3:1: daemon 'h' is declared twice (first at line 2)",
            Error(Proxy + "host h\nhost h\nlink h -> p"));
    }

    [Fact]
    public void Check_InterfaceDeclaredTwice_SecondReported()
    {
        Assert.Equal(
            "t.vnet:3:3: interface 'tap0' is declared twice at p (first at line 2)",
            Error("proxy p {\n  interface tap0 tap\n  interface tap0 pcap\n}"));
    }

    [Fact]
    public void Check_InterfaceNameOverFifteen_LinuxLimit()
    {
        Assert.Equal(
            "t.vnet:2:3: interface name 'tap-for-the-vms0' is longer than 15 characters (the Linux limit)",
            Error("proxy p {\n  interface tap-for-the-vms0 tap\n}"));
    }

    [Theory]
    [InlineData("link h -> p\nlink h -> p udp", "h and p")]
    [InlineData("link h -> p\nlink p -> h", "p and h")]
    public void Check_SecondLinkBetweenAPair_ReportedWhicheverDirection(string links, string pair)
    {
        Assert.Equal(
            $"t.vnet:4:1: a second link between {pair} (the first is at line 3): one link joins a pair of daemons, whichever dials",
            Error(Proxy + "host h at 192.0.2.2:5500\n" + links));
    }

    [Fact]
    public void Check_SelfLink_Reported()
    {
        Assert.Equal("t.vnet:2:1: link from p to itself", Error(Proxy + "link p -> p"));
    }

    [Fact]
    public void Check_LinkToUnknownDaemon_PointsAtTheName()
    {
        Assert.Equal("t.vnet:3:11: link to unknown daemon 'h9'", Error(Proxy + "host h\nlink h -> h9\nlink h -> p"));
    }

    [Fact]
    public void Check_LinkFromUnknownDaemon_PointsAtTheName()
    {
        Assert.Equal("t.vnet:2:6: link from unknown daemon 'h9'", Error(Proxy + "link h9 -> p"));
    }

    [Fact]
    public void Check_DialedDaemonWithoutAddress_Reported()
    {
        Assert.Equal(
            "t.vnet:3:1: p cannot dial h: h has no address (give it one with 'at ADDRESS:PORT')",
            Error(Proxy + "host h\nlink p -> h"));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(65536)]
    public void Check_LinkPortOutOfRange_PointsAtThePort(int port)
    {
        Assert.Equal(
            $"t.vnet:3:18: port {port} is out of range (1-65535)",
            Error(Proxy + $"host h\nlink h -> p port {port}"));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(9)]
    public void Check_StreamsOutOfRange_PointsAtTheNumber(int streams)
    {
        Assert.Equal(
            $"t.vnet:3:21: streams {streams} is out of range (1..8)",
            Error(Proxy + $"host h\nlink h -> p streams {streams}"));
    }

    [Fact]
    public void Check_StreamsOnUdp_Taken()
    {
        var link = Assert.Single(Parse(Proxy + "host h\nlink h -> p udp streams 2").Links);
        Assert.Equal((LinkTransport.Udp, 2), (link.Transport, link.Streams));
    }

    [Fact]
    public void Check_RuleToMissingInterface_UnreachableAction()
    {
        Assert.Equal(
            "t.vnet:2:22: unreachable action: p has no interface tap9",
            Error("proxy p {\n  rule any -> any to interface tap9\n}"));
    }

    [Fact]
    public void Check_RuleToDaemonWithoutLink_UnreachableAction()
    {
        Assert.Equal(
            "t.vnet:3:22: unreachable action: h1 has no link to h2",
            Error(Proxy + "host h1 {\n  rule any -> any to link h2\n}\nhost h2\nlink h1 -> p\nlink h2 -> p"));
    }

    [Fact]
    public void Check_RuleFromMissingPort_UnknownArrivalPort()
    {
        Assert.Equal(
            "t.vnet:2:24: unknown arrival port: p has no link to h",
            Error("proxy p {\n  rule any -> any from link h flood\n}"));
    }

    [Fact]
    public void Check_GroupSourceMac_Reported()
    {
        Assert.Equal(
            "t.vnet:2:8: source 01:00:5e:00:00:01 is a group address; frames never come from one",
            Error("proxy p {\n  rule 01:00:5e:00:00:01 -> any flood\n}"));
    }

    [Fact]
    public void Check_SameRuleTwice_SecondReported()
    {
        Assert.Equal(
            "t.vnet:3:3: the same rule twice at p (first at line 2)",
            Error("proxy p {\n  rule any -> multicast flood\n  rule any -> multicast flood\n}"));
    }

    [Fact]
    public void Check_SameMatchOtherAction_Allowed()
    {
        // Ties all apply: two actions for one match is how a frame reaches two places.
        Parse("proxy p at 192.0.2.1:5500 {\n  interface a tap\n  interface b tap\n  rule any -> any to interface a\n  rule any -> any to interface b\n}");
    }

    [Fact]
    public void Check_VmOnTwoInterfacesOfADaemon_SecondReported()
    {
        Assert.Equal(
            "t.vnet:3:27: VM 02:00:00:00:00:01 is already behind interface tap0 of p (at line 2)",
            Error("proxy p {\n  interface tap0 tap { vm 02:00:00:00:00:01 }\n  interface tap1 tap { vm 02:00:00:00:00:01 }\n}"));
    }

    [Fact]
    public void Check_VmOnTwoDaemons_SecondReported()
    {
        Assert.Equal(
            "t.vnet:3:27: VM 02:00:00:00:00:01 is already behind interface tap0 of p (at line 1)",
            Error("proxy p at 192.0.2.1:5500 { interface tap0 tap { vm 02:00:00:00:00:01 } }\nhost h {\n  interface tap0 tap { vm 02:00:00:00:00:01 }\n}\nlink h -> p"));
    }

    [Fact]
    public void Check_GroupVmMac_Reported()
    {
        Assert.Equal(
            "t.vnet:2:27: VM ff:ff:ff:ff:ff:ff is a group address, not a VM's",
            Error("proxy p {\n  interface tap0 tap { vm ff:ff:ff:ff:ff:ff }\n}"));
    }

    [Fact]
    public void Check_BridgeOnPcap_PointsAtTheOption()
    {
        Assert.Equal(
            "t.vnet:2:23: 'bridge' applies to tap interfaces; eth0 is pcap (an existing NIC)",
            Error("proxy p {\n  interface eth0 pcap bridge br0\n}"));
    }

    [Fact]
    public void Check_BridgeNameOverFifteen_Reported()
    {
        Assert.Equal(
            "t.vnet:2:22: 'bridge-for-the-vms' is not a bridge name (at most 15 letters, digits, '-', '_' or '.')",
            Error("proxy p {\n  interface tap0 tap bridge bridge-for-the-vms\n}"));
    }

    [Fact]
    public void Check_LanOnHost_PointsAtTheOption()
    {
        Assert.Equal(
            "t.vnet:3:23: 'lan' applies to the proxy's interfaces only; h is a host",
            Error(Proxy + "host h {\n  interface eth0 pcap lan\n}\nlink h -> p"));
    }

    [Theory]
    [InlineData(575)]
    [InlineData(65001)]
    [InlineData(0)]
    public void Check_MtuOutOfRange_PointsAtTheValue(int mtu)
    {
        Assert.Equal(
            $"t.vnet:2:26: MTU {mtu} is out of range (576..65000)",
            Error($"proxy p {{\n  interface tap0 tap mtu {mtu}\n}}"));
    }

    [Theory]
    [InlineData(576)]
    [InlineData(65000)]
    public void Check_MtuAtTheLimits_Accepted(int mtu)
    {
        Assert.Equal(mtu, Parse($"proxy p {{\n  interface tap0 tap mtu {mtu}\n}}").Daemons[0].Interfaces[0].Mtu);
    }

    [Fact]
    public void Check_DaemonWithoutPathToProxy_Reported()
    {
        Assert.Equal(
            [
                "t.vnet:3:1: h2 has no path to the proxy p: link it to p or to a daemon that has one",
                "t.vnet:4:1: h3 has no path to the proxy p: link it to p or to a daemon that has one",
            ],
            Errors(Proxy + "host h1\nhost h2 at 192.0.2.2:5500\nhost h3\nlink h1 -> p\nlink h3 -> h2"));
    }

    [Fact]
    public void Check_PathThroughAnotherHost_Accepted()
    {
        // h3 reaches the proxy through h2; links carry frames both ways whoever dials.
        Parse(Proxy + "host h2 at 192.0.2.2:5500\nhost h3\nlink p -> h2\nlink h3 -> h2");
    }

    [Fact]
    public void Check_SeveralProblems_AllReportedInFileOrder()
    {
        Assert.Equal(
            [
                "t.vnet:2:26: MTU 10 is out of range (576..65000)",
                "t.vnet:3:22: unreachable action: p has no interface nope",
                "t.vnet:5:1: link from p to itself",
                "t.vnet:6:11: link to unknown daemon 'x'",
            ],
            Errors("proxy p at 192.0.2.1:5500 {\n  interface tap0 tap mtu 10\n  rule any -> any to interface nope\n}\nlink p -> p\nlink p -> x"));
    }

    // Models built in code: the same checks, with no positions to give.

    [Fact]
    public void Check_ModelBuiltInCode_ProblemsWithoutPositions()
    {
        var overlay = new OverlayDescription(
            [
                new DaemonDecl("p", DaemonRole.Proxy, Ep("192.0.2.1:5500"), [new InterfaceDecl("lan0", InterfaceKind.Tap, 100, null, false, [])],
                [
                    new RuleDecl(MacMatch.None, MacMatch.Any, null, RuleAction.Flood),
                    new RuleDecl(MacMatch.Any, MacMatch.Any, null, RuleAction.To(PortRef.Link("nobody"))),
                ]),
                new DaemonDecl("bad name", DaemonRole.Host, null, [], []),
            ],
            [new LinkDecl("bad name", "p", LinkTransport.Tcp, null)]);

        Assert.Equal(
            [
                "'bad name' is not a valid daemon name",
                "MTU 100 is out of range (576..65000)",
                "a rule's source is a MAC address or 'any', not 'none'",
                "unreachable action: p has no link to nobody",
            ],
            OverlayChecker.Check(overlay).Select(d => d.ToString()));
    }

    [Fact]
    public void Check_GeneratedStar_NoProblems()
    {
        var overlay = TopologyGenerator.Generate(
            TopologyKind.Star, ("p", Ep("192.0.2.1:5500")), [("h", Ep("192.0.2.2:5500"))], [("h", Mac(1))]);
        Assert.Empty(OverlayChecker.Check(overlay));
    }
}
