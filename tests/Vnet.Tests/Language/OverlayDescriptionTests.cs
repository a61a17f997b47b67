using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Language;
using Vnet.Links;
using static Vnet.Tests.Language.Lang;

namespace Vnet.Tests.Language;

/// <summary>The model: value equality over list contents without positions, immutability, and the helpers.</summary>
public sealed class OverlayDescriptionTests
{
    private const string Text = """
        proxy p at 192.0.2.1:5500 {
          interface lan0 pcap lan
        }
        host h at 192.0.2.2:5500 {
          interface tap0 tap { vm 02:00:00:00:00:01 }
          rule any -> 02:00:00:00:00:01 from link p to interface tap0
        }
        link h -> p udp
        """;

    [Fact]
    public void Equals_SameTextElsewhereInAFile_EqualDespitePositions()
    {
        var a = Parse(Text);
        var b = OverlayParser.Parse("\n\n# moved down\n" + Text.Replace("\n", "\n   ", StringComparison.Ordinal), "other.vnet").OrThrow();

        Assert.NotEqual(a.Daemons[1].Span, b.Daemons[1].Span);
        Assert.NotEqual(a.Daemons[1].Rules[0].ActionAt, b.Daemons[1].Rules[0].ActionAt);
        Assert.Equal(a, b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.True(a == b);
    }

    [Fact]
    public void Equals_ListsBuiltSeparately_ComparedByContent()
    {
        InterfaceDecl Tap() => new("tap0", InterfaceKind.Tap, null, null, false, new List<MacAddress> { Mac(1) });
        var a = new DaemonDecl("h", DaemonRole.Host, null, new List<InterfaceDecl> { Tap() }, []);
        var b = new DaemonDecl("h", DaemonRole.Host, null, [Tap()], new List<RuleDecl>());

        Assert.Equal(a, b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.NotEqual(a, b with { Interfaces = [Tap() with { Vms = [Mac(2)] }] });
        Assert.NotEqual(a, b with { Interfaces = [] });
    }

    [Fact]
    public void Equals_EachFieldMatters()
    {
        var o = Parse(Text);
        var h = o.Daemons[1];
        Assert.NotEqual(o, o with { Links = [o.Links[0] with { Transport = LinkTransport.Tcp }] });
        Assert.NotEqual(o, o with { Links = [o.Links[0] with { Port = 1 }] });
        Assert.NotEqual(h, h with { Address = Ep("192.0.2.2:5501") });
        Assert.NotEqual(h, h with { Role = DaemonRole.Proxy });
        Assert.NotEqual(h.Interfaces[0], h.Interfaces[0] with { Mtu = 1500 });
        Assert.NotEqual(h.Interfaces[0], h.Interfaces[0] with { Bridge = "br0" });
        Assert.NotEqual(h.Interfaces[0], h.Interfaces[0] with { Lan = true });
        Assert.NotEqual(h.Rules[0], h.Rules[0] with { Ingress = null });
        Assert.NotEqual(h.Rules[0], h.Rules[0] with { Action = RuleAction.Flood });
        // Order is part of a description (the formatter keeps it).
        Assert.NotEqual(o, o with { Daemons = [.. o.Daemons.Reverse()] });
    }

    [Fact]
    public void Constructor_CallerChangesItsList_ModelUnchanged()
    {
        var vms = new List<MacAddress> { Mac(1) };
        var tap = new InterfaceDecl("tap0", InterfaceKind.Tap, null, null, false, vms);
        vms.Add(Mac(2));
        var daemons = new List<DaemonDecl> { new("p", DaemonRole.Proxy, null, [tap], []) };
        var overlay = new OverlayDescription(daemons, []);
        daemons.Clear();

        Assert.Equal([Mac(1)], tap.Vms);
        Assert.Single(overlay.Daemons);
        Assert.IsNotType<List<DaemonDecl>>(overlay.Daemons);
        var again = overlay with { Daemons = daemons };
        daemons.Add(overlay.Daemons[0]);
        Assert.Empty(again.Daemons);
    }

    [Fact]
    public void Helpers_Lookups_FindByName()
    {
        var o = Parse(Text);
        Assert.Equal("p", o.Proxy!.Name);
        Assert.Equal("h", o.Daemon("h")!.Name);
        Assert.Null(o.Daemon("x"));
        Assert.Equal([o.Links[0]], o.LinksOf("p"));
        Assert.Empty(o.LinksOf("x"));
        Assert.Equal(o.Links[0], o.LinkBetween("p", "h"));
        Assert.Null(o.LinkBetween("h", "x"));
        Assert.Equal("p", o.Links[0].PeerOf("h"));
        Assert.Equal("h", o.Links[0].PeerOf("p"));
        Assert.Throws<ArgumentException>(() => o.Links[0].PeerOf("x"));
        Assert.Equal("tap0", o.Daemon("h")!.Interface("tap0")!.Name);
        Assert.Null(OverlayDescription.Empty.Proxy);
    }

    [Fact]
    public void RuleDecl_ToRuleAndBack_SameRule()
    {
        var decl = Parse(Text).Daemon("h")!.Rules[0];
        var rule = decl.ToRule(RuleOrigin.Adaptation);

        Assert.Equal(RuleOrigin.Adaptation, rule.Origin);
        Assert.Equal(MacMatch.Any, rule.Source);
        Assert.Equal(MacMatch.Exact(Mac(1)), rule.Destination);
        Assert.Equal(PortRef.Link("p"), rule.Ingress);
        Assert.Equal(RuleAction.To(PortRef.Interface("tap0")), rule.Action);
        Assert.Equal(RuleOrigin.User, decl.ToRule().Origin);
        Assert.Equal(decl, RuleDecl.From(rule with { Id = 42 }));
        Assert.True(decl.Uses(PortRef.Link("p")));
        Assert.True(decl.Uses(PortRef.Interface("tap0")));
        Assert.False(decl.Uses(PortRef.Interface("p")));
    }

    [Fact]
    public void Diagnostic_ToString_CompilerStyle()
    {
        Assert.Equal("a.vnet:3:7: bad", new Diagnostic(new SourceSpan("a.vnet", 3, 7), "bad").ToString());
        Assert.Equal("bad", new Diagnostic(default, "bad").ToString());
        Assert.Equal("a.vnet: bad", new Diagnostic(new SourceSpan("a.vnet", 0, 0), "bad").ToString());
    }
}
