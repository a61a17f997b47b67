using Vnet.Control;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Tests.Control;

/// <summary>
/// <c>vnet rule add</c>'s four textual parts as the control server receives them: every valid shape
/// becomes the rule it says, and a wrong part is refused with a reason that names it.
/// </summary>
public sealed class ControlCommandsTests
{
    private const string VmMac = "52:54:00:12:34:56";
    private static readonly MacAddress Vm = MacAddress.Parse(VmMac);
    private static readonly MacAddress Other = MacAddress.Parse("52:54:00:ab:cd:ef");

    public static TheoryData<string, string> Sources() => new()
    {
        { "any", "any" },
        { "ANY", "any" },
        { VmMac, VmMac },
        { "52-54-00-12-34-56", VmMac },
        { "52:54:00:12:34:56".ToUpperInvariant(), VmMac },
    };

    [Theory]
    [MemberData(nameof(Sources))]
    public void ParseRule_ValidSource_Parsed(string src, string canonical)
    {
        var rule = ControlArgs.ParseRule(src, "any", null, "link:proxy");

        Assert.Equal(canonical, rule.Source.ToString());
    }

    public static TheoryData<string, MacMatchKind> Destinations() => new()
    {
        { "52:54:00:ab:cd:ef", MacMatchKind.Exact },
        { "ff:ff:ff:ff:ff:ff", MacMatchKind.Exact },
        { "01:00:5e:00:00:fb", MacMatchKind.Exact },
        { "any", MacMatchKind.Any },
        { "multicast", MacMatchKind.Multicast },
        { "Multicast", MacMatchKind.Multicast },
        { "none", MacMatchKind.None },
    };

    [Theory]
    [MemberData(nameof(Destinations))]
    public void ParseRule_ValidDestination_Parsed(string dst, MacMatchKind kind)
    {
        var rule = ControlArgs.ParseRule(VmMac, dst, null, "if:tap0");

        Assert.Equal(kind, rule.Destination.Kind);
        if (kind == MacMatchKind.Exact)
            Assert.Equal(MacAddress.Parse(dst), rule.Destination.Address);
    }

    [Theory]
    [InlineData("link:proxy", PortKind.Link, "proxy")]
    [InlineData("link:host-2.lan", PortKind.Link, "host-2.lan")]
    [InlineData("if:tap0", PortKind.Interface, "tap0")]
    [InlineData("interface:eth0", PortKind.Interface, "eth0")]
    public void ParseRule_PortAction_SendsToThatPort(string to, PortKind kind, string name)
    {
        var rule = ControlArgs.ParseRule("any", VmMac, null, to);

        Assert.False(rule.Action.IsFlood);
        Assert.Equal(new PortRef(kind, name), rule.Action.Port);
    }

    [Fact]
    public void ParseRule_Flood_FloodAction()
    {
        var rule = ControlArgs.ParseRule("any", "multicast", null, "flood");

        Assert.Equal(RuleAction.Flood, rule.Action);
    }

    [Fact]
    public void ParseRule_WholeRule_EveryPartInPlace()
    {
        var rule = ControlArgs.ParseRule(VmMac, "52:54:00:ab:cd:ef", "link:host2", "if:tap0");

        Assert.Equal(MacMatch.Exact(Vm), rule.Source);
        Assert.Equal(MacMatch.Exact(Other), rule.Destination);
        Assert.Equal(PortRef.Link("host2"), rule.Ingress);
        Assert.Equal(RuleAction.To(PortRef.Interface("tap0")), rule.Action);
        Assert.Equal(RuleOrigin.User, rule.Origin);
        Assert.Equal(0, rule.Id);
        Assert.Null(rule.Validate());
    }

    [Theory]
    [InlineData(null)]
    [InlineData("link:proxy")]
    [InlineData("if:tap0")]
    [InlineData("interface:tap1")]
    public void ParseRule_OptionalArrivalPort_SetOnlyWhenGiven(string? ingress)
    {
        var rule = ControlArgs.ParseRule("any", "any", ingress, "flood");

        if (ingress is null)
        {
            Assert.Null(rule.Ingress);
        }
        else
        {
            Assert.True(PortRef.TryParse(ingress, out var expected));
            Assert.Equal(expected, rule.Ingress);
        }
    }

    [Fact]
    public void ParseRule_ArrivalPortGiven_StrongerThanWithout()
    {
        var without = ControlArgs.ParseRule("any", "any", null, "flood");
        var with = ControlArgs.ParseRule("any", "any", "link:proxy", "flood");

        Assert.True(with.Priority > without.Priority);
    }

    // Refusals.

    [Theory]
    [InlineData("52:54:00:12:34")]
    [InlineData("52:54:00:12:34:5g")]
    [InlineData("52:54:00:12:34:567")]
    [InlineData("")]
    [InlineData("all")]
    [InlineData("*")]
    public void ParseRule_BadSource_RefusedNamingIt(string src)
    {
        var e = Assert.Throws<DaemonCommandException>(() => ControlArgs.ParseRule(src, "any", null, "flood"));

        Assert.Equal($"source '{src}' is not a MAC address or 'any'", e.Message);
    }

    [Theory]
    [InlineData("52:54:00:12:34")]
    [InlineData("broadcast")]
    [InlineData("")]
    public void ParseRule_BadDestination_RefusedNamingIt(string dst)
    {
        var e = Assert.Throws<DaemonCommandException>(() => ControlArgs.ParseRule("any", dst, null, "flood"));

        Assert.Equal($"destination '{dst}' is not a MAC address, 'any', 'multicast' or 'none'", e.Message);
    }

    [Theory]
    [InlineData("01:00:5e:00:00:01")]
    [InlineData("ff:ff:ff:ff:ff:ff")]
    [InlineData("33:33:00:00:00:01")]
    public void ParseRule_GroupSource_RefusedAsGroupAddress(string src)
    {
        var e = Assert.Throws<DaemonCommandException>(() => ControlArgs.ParseRule(src, "any", null, "flood"));

        Assert.Contains($"source {src} is a group address", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("multicast")]
    [InlineData("none")]
    public void ParseRule_SourceOnlyValidForDestinations_Refused(string src)
    {
        var e = Assert.Throws<DaemonCommandException>(() => ControlArgs.ParseRule(src, "any", null, "flood"));

        Assert.Equal($"source must be a MAC address or 'any', not '{src}'", e.Message);
    }

    [Theory]
    [InlineData("drop")]
    [InlineData("Flood")]
    [InlineData("proxy")]
    [InlineData("link:")]
    [InlineData(":proxy")]
    [InlineData("port:proxy")]
    [InlineData("link:two words")]
    [InlineData("link:-dash")]
    [InlineData("if:tap0:1")]
    [InlineData("")]
    public void ParseRule_UnknownAction_RefusedNamingIt(string to)
    {
        var e = Assert.Throws<DaemonCommandException>(() => ControlArgs.ParseRule("any", "any", null, to));

        Assert.Equal($"action '{to}' is not link:NAME, if:NAME or flood", e.Message);
    }

    [Theory]
    [InlineData("proxy")]
    [InlineData("flood")]
    [InlineData("link:")]
    [InlineData("vm:tap0")]
    [InlineData("")]
    public void ParseRule_BadArrivalPort_RefusedNamingIt(string ingress)
    {
        var e = Assert.Throws<DaemonCommandException>(() => ControlArgs.ParseRule("any", "any", ingress, "flood"));

        Assert.Equal($"arrival port '{ingress}' is not link:NAME or if:NAME", e.Message);
    }

    [Fact]
    public void ParseRule_SeveralPartsWrong_SourceReportedFirst()
    {
        var e = Assert.Throws<DaemonCommandException>(() => ControlArgs.ParseRule("bad", "bad", "bad", "bad"));

        Assert.StartsWith("source 'bad'", e.Message, StringComparison.Ordinal);
    }

    // Transport names (link.add).

    [Theory]
    [InlineData("tcp", LinkTransport.Tcp)]
    [InlineData("udp", LinkTransport.Udp)]
    public void ParseTransport_Known_Parsed(string text, LinkTransport transport) =>
        Assert.Equal(transport, ControlArgs.ParseTransport(text));

    [Theory]
    [InlineData("TCP")]
    [InlineData("quic")]
    [InlineData("")]
    public void ParseTransport_Unknown_RefusedNamingIt(string text)
    {
        var e = Assert.Throws<DaemonCommandException>(() => ControlArgs.ParseTransport(text));

        Assert.Equal($"'{text}' is neither tcp nor udp", e.Message);
    }
}
