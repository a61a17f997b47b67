using System.Net;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Language;
using Vnet.Links;

namespace Vnet.Tests.Overlay;

/// <summary>
/// Between what daemons report and the language: the live overlay as a description (only what a
/// user declares: user rules, interfaces, VMs, links as their dialing end has them), and the
/// language's changes as daemon change sets and their inverses.
/// </summary>
public sealed class OverlayModelTests
{
    private const string Vm1 = "02:00:00:00:00:01";
    private const string Vm2 = "02:00:00:00:00:02";

    private static RuleStatus Rule(long id, string src, string dst, string action, string origin = "user", string? ingress = null) =>
        StateText.Rule(id, src, dst, ingress, action, origin, 0, 7, 700);

    /// <summary>A change as the Proxy sends it, read through the same JSON.</summary>
    private static DaemonChange Change(string json) => DaemonJson.FromNode<DaemonChange>(System.Text.Json.Nodes.JsonNode.Parse(json))!;

    /// <summary>The overlay that <see cref="Lab"/> describes, as its three daemons report it.</summary>
    private static OverlayStates LabStates(string proxyListen = "192.0.2.1:5500") => new(
        [
            StateText.Daemon("proxy", "proxy", proxyListen,
                [StateText.Interface("lan0", "pcap", 1500, null, true, [])],
                [
                    StateText.Link("h1", "tcp", true, null, true, "192.0.2.11:40001"),
                    StateText.Link("h2", "udp", true, null, true, "192.0.2.12:40002"),
                ],
                [
                    Rule(1, "any", "multicast", "flood", "system"),
                    Rule(2, "any", "none", "if:lan0", "system"),
                    Rule(3, "any", Vm1, "link:h1", "system"),
                    Rule(4, "any", Vm2, "link:h2", "system"),
                    Rule(5, Vm1, "any", "if:lan0", ingress: "link:h1"),
                ]),
            StateText.Daemon("h1", "host", "192.0.2.11:5500",
                [StateText.Interface("tap0", "tap", 1500, "br0", false, [Vm1])],
                [
                    StateText.Link("h2", "udp", false, "192.0.2.12:5501", true, "192.0.2.12:5501"),
                    StateText.Link("proxy", "tcp", true, "192.0.2.1:5500", true, "192.0.2.1:5500"),
                ],
                [
                    Rule(1, "any", "multicast", "flood", "system"),
                    Rule(2, "any", Vm1, "if:tap0", "system"),
                    Rule(3, Vm1, "none", "link:proxy", "system"),
                    Rule(4, "any", Vm2, "link:h2"),
                    Rule(5, "any", "02:00:00:00:00:09", "link:h2", "adaptation"),
                ]),
            StateText.Daemon("h2", "host", "192.0.2.12:5500",
                [
                    StateText.Interface("tap0", "tap", 9000, null, false, [Vm2, "02:00:00:00:00:03"]),
                    StateText.Interface("tap1", "tap", 1500, null, false, []),
                ],
                [
                    StateText.Link("h1", "udp", false, null, true, "192.0.2.11:40003"),
                    StateText.Link("proxy", "udp", true, "192.0.2.1:5500", true, "192.0.2.1:5500"),
                ],
                [
                    Rule(1, "any", "multicast", "flood", "system"),
                    Rule(7, "any", Vm1, "link:h1"),
                    Rule(8, "any", "multicast", "if:tap1", ingress: "if:tap0"),
                ]),
        ],
        []);

    private const string Lab = """
        proxy proxy at 192.0.2.1:5500 {
          interface lan0 pcap lan
          rule 02:00:00:00:00:01 -> any from link h1 to interface lan0
        }
        host h1 at 192.0.2.11:5500 {
          interface tap0 tap mtu 1500 bridge br0 {
            vm 02:00:00:00:00:01
          }
          rule any -> 02:00:00:00:00:02 to link h2
        }
        host h2 at 192.0.2.12:5500 {
          interface tap0 tap mtu 9000 {
            vm 02:00:00:00:00:02
            vm 02:00:00:00:00:03
          }
          interface tap1 tap
          rule any -> 02:00:00:00:00:01 to link h1
          rule any -> multicast from interface tap0 to interface tap1
        }
        link h1 -> h2 udp port 5501
        link h1 -> proxy
        link h2 -> proxy udp
        """;

    private static OverlayDescription Parse(string text) => OverlayParser.Parse(text, "t.vnet").OrThrow();

    [Fact]
    public void FromStates_LiveLab_EqualsTheParsedDescriptionOnceNormalized()
    {
        var live = OverlayModel.FromStates(LabStates());

        Assert.Equal(OverlayModel.Normalize(Parse(Lab)), live);
        Assert.Equal("no changes\n", OverlayDiff.Compute(live, OverlayModel.Normalize(Parse(Lab))).ToString());
    }

    [Fact]
    public void FromStates_DumpFormattedAndParsedAgain_SameModel()
    {
        var live = OverlayModel.FromStates(LabStates());

        Assert.Equal(live, Parse(OverlayFormatter.Format(live)));
    }

    [Fact]
    public void FromStates_SystemAndAdaptationRules_LeftOut()
    {
        var live = OverlayModel.FromStates(LabStates());

        Assert.Equal(["rule any -> 02:00:00:00:00:02 to link h2"], live.Daemon("h1")!.Rules.Select(r => r.ToString()));
        Assert.Single(live.Daemon("proxy")!.Rules);
    }

    [Fact]
    public void FromStates_OrderedVmsInterface_LeftOut()
    {
        // h1 also runs an ordered VM: its interface vm-web is the VM's (vnet vm makes and closes it).
        var states = LabStates();
        var h1 = states.Daemons[1];
        var withVm = h1 with { Interfaces = [.. h1.Interfaces, new InterfaceState("vm-web", InterfaceKind.Tap, 1500, null, false, [MacAddress.Parse("02:00:00:00:00:0a")], "web")] };
        var live = OverlayModel.FromStates(states with { Daemons = [states.Daemons[0], withVm, .. states.Daemons.Skip(2)] });

        Assert.Equal(["tap0"], live.Daemon("h1")!.Interfaces.Select(i => i.Name));
        Assert.Equal(OverlayModel.Normalize(Parse(Lab)), live);
    }

    [Fact]
    public void FromStates_PassiveLinkEnds_DescribedOnceByTheirDialingEnd()
    {
        var live = OverlayModel.FromStates(LabStates());

        Assert.Equal(3, live.Links.Count);
        Assert.Equal(new LinkDecl("h1", "h2", LinkTransport.Udp, 5501), live.LinkBetween("h2", "h1"));
        // Dialed at the peer's own port: no port option.
        Assert.Equal(new LinkDecl("h1", "proxy", LinkTransport.Tcp, null), live.LinkBetween("proxy", "h1"));
    }

    [Fact]
    public void FromStates_ProxyListeningOnEveryAddress_DescribedAtTheAddressItsHostsDial()
    {
        var live = OverlayModel.FromStates(LabStates(proxyListen: "0.0.0.0:5500"));

        Assert.Equal(IPEndPoint.Parse("192.0.2.1:5500"), live.Proxy!.Address);
        Assert.Equal(OverlayModel.Normalize(Parse(Lab)), live);
    }

    [Fact]
    public void DaemonState_RuleThatDoesNotParse_RefusedWholeNamingWhatIsWrong()
    {
        // What a host answers is read field by field into typed values: a rule that names no port
        // cannot reach the model at all (the Proxy lists that host as unreachable, with the reason).
        var json = DaemonJson.ToNode(LabStates().Daemons[1])!.AsObject();
        json["rules"]![0]!["action"] = "somewhere";

        var e = Assert.Throws<System.Text.Json.JsonException>(() => DaemonJson.FromNode<DaemonState>(json));

        Assert.Contains("\"flood\" or a port", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void FromStates_LinkToADaemonTheProxyCannotReach_LeftOutSoTheDumpStillChecks()
    {
        var states = LabStates();

        var live = OverlayModel.FromStates(states with { Daemons = [states.Daemons[0], states.Daemons[1]], Unreachable = ["h2: link down"] });

        Assert.Null(live.LinkBetween("h1", "h2"));
        Assert.True(OverlayParser.Parse(OverlayFormatter.Format(live), "live").Success);
    }

    [Fact]
    public void WithoutLinksTo_MissingDaemon_ItsLinksAndTheRulesNamingThemGoTheRestStays()
    {
        var without = OverlayModel.WithoutLinksTo(Before, ["h2"]);

        Assert.Equal([new LinkDecl("h1", "proxy", LinkTransport.Tcp, null)], without.Links);
        Assert.Empty(without.Daemon("h1")!.Rules);
        // h2 itself stays whole (to be reported as missing), and rules naming other ports stay.
        Assert.Equal(Before.Daemon("h2"), without.Daemon("h2"));
        Assert.Equal(Before.Daemon("proxy"), without.Daemon("proxy"));
    }

    [Fact]
    public void Normalize_DefaultMtuWritten_SameAsLeftOut()
    {
        var written = Parse("proxy p at 192.0.2.1:5500 { interface lan0 pcap mtu 1500 lan }\nhost h at 192.0.2.2:5500 { interface tap0 tap mtu 9000 }\nlink h -> p");
        var left = Parse("proxy p at 192.0.2.1:5500 { interface lan0 pcap lan }\nhost h at 192.0.2.2:5500 { interface tap0 tap mtu 9000 }\nlink h -> p");

        Assert.NotEqual(left, written);
        Assert.Equal(left, OverlayModel.Normalize(written));
        Assert.Equal(9000, OverlayModel.Normalize(written).Daemon("h")!.Interfaces[0].Mtu);
    }

    // Change sets: one language change, the daemon changes that carry it out.

    private static readonly OverlayDescription Before = Parse(Lab);

    private static readonly RuleDecl ToH2 = new(MacMatch.Any, MacMatch.Exact(MacAddress.Parse(Vm2)), null, RuleAction.To(PortRef.Link("h2")));

    private static readonly RuleDecl FloodFromTap0 = new(MacMatch.Any, MacMatch.Multicast, PortRef.Interface("tap0"), RuleAction.Flood);

    [Fact]
    public void ToDaemonChanges_AddInterfaceWithVms_InterfaceThenEachVm()
    {
        var tap = new InterfaceDecl("tap2", InterfaceKind.Tap, 9000, "br1", false, [MacAddress.Parse(Vm1), MacAddress.Parse(Vm2)]);

        var set = OverlayModel.ToDaemonChanges(new AddInterface("h1", tap), Before).ToList();

        Assert.Equal<DaemonChange>(
            [
                Change($$"""{"op":"addInterface","name":"tap2","kind":"tap","mtu":9000,"bridge":"br1","lan":false}"""),
                Change($$"""{"op":"addVm","name":"tap2","mac":"{{Vm1}}"}"""),
                Change($$"""{"op":"addVm","name":"tap2","mac":"{{Vm2}}"}"""),
            ],
            set);
    }

    [Fact]
    public void ToDaemonChanges_EachKind_TheFieldsADaemonNeeds()
    {
        var mac = MacAddress.Parse(Vm1);
        Assert.Equal(Change($$"""{"op":"removeInterface","name":"tap0"}"""),
            Assert.Single(OverlayModel.ToDaemonChanges(new RemoveInterface("h1", "tap0"), Before)));
        Assert.Equal(Change($$"""{"op":"addVm","name":"tap0","mac":"{{Vm1}}"}"""),
            Assert.Single(OverlayModel.ToDaemonChanges(new AddVm("h1", "tap0", mac), Before)));
        Assert.Equal(Change($$"""{"op":"removeVm","name":"tap0","mac":"{{Vm1}}"}"""),
            Assert.Single(OverlayModel.ToDaemonChanges(new RemoveVm("h1", "tap0", mac), Before)));
        Assert.Equal(Change($$"""{"op":"addRule","src":"any","dst":"{{Vm2}}","to":"link:h2"}"""),
            Assert.Single(OverlayModel.ToDaemonChanges(new AddRule("h1", ToH2), Before)));
        Assert.Equal(Change($$"""{"op":"removeRule","src":"any","dst":"multicast","in":"if:tap0","to":"flood"}"""),
            Assert.Single(OverlayModel.ToDaemonChanges(new RemoveRule("h2", FloodFromTap0), Before)));
        Assert.Equal(Change($$"""{"op":"addLink","peer":"h2","transport":"udp","dial":"192.0.2.12:5501"}"""),
            Assert.Single(OverlayModel.ToDaemonChanges(new AddLink("h1", "h2", LinkTransport.Udp, IPEndPoint.Parse("192.0.2.12:5501")), Before)));
        Assert.Equal(Change($$"""{"op":"addLink","peer":"h1","transport":"tcp","dial":null}"""),
            Assert.Single(OverlayModel.ToDaemonChanges(new AddLink("h2", "h1", LinkTransport.Tcp, null), Before)));
        Assert.Equal(Change($$"""{"op":"removeLink","peer":"h2"}"""),
            Assert.Single(OverlayModel.ToDaemonChanges(new RemoveLink("h1", "h2"), Before)));
    }

    [Fact]
    public void ToDaemonChanges_DaemonToStart_Refused()
    {
        var e = Assert.Throws<DaemonCommandException>(() =>
            OverlayModel.ToDaemonChanges(new AddDaemon("h3", DaemonRole.Host, null), Before).ToList());

        Assert.Contains("cannot apply", e.Message, StringComparison.Ordinal);
    }

    /// <summary>Every kind of change, with the change that undoes it, both as the language says them.</summary>
    public static TheoryData<string> ChangeKinds() =>
        ["add-interface", "remove-interface", "add-vm", "remove-vm", "add-rule", "remove-rule", "add-link-dial", "add-link-passive", "remove-link-dial", "remove-link-passive"];

    private static (Change Change, Change Undo) Pair(string kind)
    {
        var tap2 = new InterfaceDecl("tap2", InterfaceKind.Tap, null, null, false, [MacAddress.Parse("02:00:00:00:00:04")]);
        var h1Tap0 = Before.Daemon("h1")!.Interface("tap0")!;
        var vm = MacAddress.Parse("02:00:00:00:00:08");
        return kind switch
        {
            "add-interface" => (new AddInterface("h1", tap2), new RemoveInterface("h1", "tap2")),
            "remove-interface" => (new RemoveInterface("h1", "tap0"), new AddInterface("h1", h1Tap0)),
            "add-vm" => (new AddVm("h1", "tap0", vm), new RemoveVm("h1", "tap0", vm)),
            "remove-vm" => (new RemoveVm("h1", "tap0", MacAddress.Parse(Vm1)), new AddVm("h1", "tap0", MacAddress.Parse(Vm1))),
            "add-rule" => (new AddRule("h2", FloodFromTap0 with { Action = RuleAction.To(PortRef.Link("proxy")) }),
                new RemoveRule("h2", FloodFromTap0 with { Action = RuleAction.To(PortRef.Link("proxy")) })),
            "remove-rule" => (new RemoveRule("h2", FloodFromTap0), new AddRule("h2", FloodFromTap0)),
            "add-link-dial" => (new AddLink("h2", "proxy", LinkTransport.Tcp, IPEndPoint.Parse("192.0.2.1:5500")), new RemoveLink("h2", "proxy")),
            "add-link-passive" => (new AddLink("proxy", "h3", LinkTransport.Udp, null), new RemoveLink("proxy", "h3")),
            "remove-link-dial" => (new RemoveLink("h1", "h2"), new AddLink("h1", "h2", LinkTransport.Udp, IPEndPoint.Parse("192.0.2.12:5501"))),
            "remove-link-passive" => (new RemoveLink("h2", "h1"), new AddLink("h2", "h1", LinkTransport.Udp, null)),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
    }

    [Theory]
    [MemberData(nameof(ChangeKinds))]
    public void Inverse_EachKind_IsTheChangeThatUndoesIt(string kind)
    {
        var (change, undo) = Pair(kind);

        var inverse = OverlayModel.Inverse(change, Before).ToList();

        Assert.Equal(OverlayModel.ToDaemonChanges(undo, Before), inverse);
    }

    [Fact]
    public void Inverse_RemovedInterface_ComesBackWithItsSettingsAndVms()
    {
        var inverse = OverlayModel.Inverse(new RemoveInterface("h2", "tap0"), Before).ToList();

        Assert.Equal<DaemonChange>(
            [
                Change($$"""{"op":"addInterface","name":"tap0","kind":"tap","mtu":9000,"bridge":null,"lan":false}"""),
                Change($$"""{"op":"addVm","name":"tap0","mac":"{{Vm2}}"}"""),
                Change($$"""{"op":"addVm","name":"tap0","mac":"02:00:00:00:00:03"}"""),
            ],
            inverse);
    }

    [Fact]
    public void Inverse_RemovalOfWhatWasNotThere_Refused()
    {
        Assert.Throws<DaemonCommandException>(() => OverlayModel.Inverse(new RemoveInterface("h1", "tap9"), Before).ToList());
        Assert.Throws<DaemonCommandException>(() => OverlayModel.Inverse(new RemoveLink("h1", "h3"), Before).ToList());
    }

    [Fact]
    public void Inverse_WholeDiffOnADaemonModel_GivesBackTheStartingState()
    {
        // A description that changes every kind of thing at h1 and h2.
        var after = Parse(Lab
            .Replace("  rule any -> 02:00:00:00:00:02 to link h2\n", "  interface tap3 tap { vm 02:00:00:00:00:0a }\n  rule any -> 02:00:00:00:00:0a to link proxy\n", StringComparison.Ordinal)
            .Replace("    vm 02:00:00:00:00:03\n", "    vm 02:00:00:00:00:0b\n", StringComparison.Ordinal)
            .Replace("link h1 -> h2 udp port 5501", "link h2 -> h1 tcp", StringComparison.Ordinal));
        var changes = OverlayDiff.Compute(Before, after);
        Assert.True(changes.IsApplicable);

        foreach (var daemon in changes.ByDaemon)
        {
            var model = DaemonModel.Of(Before, daemon.Daemon);
            var start = model.ToString();
            model.Apply(daemon.Changes.SelectMany(c => OverlayModel.ToDaemonChanges(c, after)));
            Assert.Equal(DaemonModel.Of(after, daemon.Daemon).ToString(), model.ToString());

            model.Apply(daemon.Changes.Reverse().SelectMany(c => OverlayModel.Inverse(c, Before)));
            Assert.Equal(start, model.ToString());
        }
    }

    /// <summary>What a daemon holds of a description, changed the way a daemon's Apply changes it.</summary>
    private sealed class DaemonModel
    {
        private readonly SortedDictionary<string, string> _interfaces = new(StringComparer.Ordinal);
        private readonly SortedSet<string> _vms = new(StringComparer.Ordinal);
        private readonly SortedDictionary<string, string> _links = new(StringComparer.Ordinal);
        private readonly SortedSet<string> _rules = new(StringComparer.Ordinal);

        public static DaemonModel Of(OverlayDescription overlay, string name)
        {
            var model = new DaemonModel();
            var d = overlay.Daemon(name)!;
            foreach (var i in d.Interfaces)
            {
                model.Apply(OverlayModel.ToDaemonChanges(new AddInterface(name, i), overlay));
            }
            foreach (var l in overlay.LinksOf(name))
            {
                var peer = l.PeerOf(name);
                IPEndPoint? dial = null;
                if (l.From == name)
                {
                    var at = overlay.Daemon(peer)!.Address!;
                    dial = new IPEndPoint(at.Address, l.Port ?? at.Port);
                }
                model.Apply(OverlayModel.ToDaemonChanges(new AddLink(name, peer, l.Transport, dial), overlay));
            }
            foreach (var r in d.Rules)
                model.Apply(OverlayModel.ToDaemonChanges(new AddRule(name, r), overlay));
            return model;
        }

        public void Apply(IEnumerable<DaemonChange> changes)
        {
            foreach (var c in changes)
            {
                switch (c.Op)
                {
                    case ChangeOp.AddInterface:
                        Assert.True(_interfaces.TryAdd(c.Name!, $"{c.Kind} mtu={c.Mtu} bridge={c.Bridge} lan={c.Lan}"), $"{c}: exists");
                        break;
                    case ChangeOp.RemoveInterface:
                        Assert.True(_interfaces.Remove(c.Name!), $"{c}: missing");
                        _vms.RemoveWhere(v => v.StartsWith(c.Name + " ", StringComparison.Ordinal));
                        break;
                    case ChangeOp.AddVm:
                        Assert.True(_interfaces.ContainsKey(c.Name!), $"{c}: no interface");
                        Assert.True(_vms.Add($"{c.Name} {c.Mac}"), $"{c}: exists");
                        break;
                    case ChangeOp.RemoveVm:
                        Assert.True(_vms.Remove($"{c.Name} {c.Mac}"), $"{c}: missing");
                        break;
                    case ChangeOp.AddLink:
                        Assert.True(_links.TryAdd(c.Peer!, $"{c.Transport} dial={c.Dial}"), $"{c}: exists");
                        break;
                    case ChangeOp.RemoveLink:
                        Assert.True(_links.Remove(c.Peer!), $"{c}: missing");
                        break;
                    case ChangeOp.AddRule:
                        Assert.True(_rules.Add(RuleText(c)), $"{c}: exists");
                        break;
                    case ChangeOp.RemoveRule:
                        Assert.True(_rules.Remove(RuleText(c)), $"{c}: missing");
                        break;
                    default:
                        Assert.Fail($"unknown change {c.Op}");
                        break;
                }
            }
        }

        private static string RuleText(DaemonChange c) => $"{c.Src} -> {c.Dst} in {c.In} to {c.To}";

        public override string ToString() =>
            string.Join('\n', _interfaces.Select(kv => $"if {kv.Key} {kv.Value}").Concat(_vms.Select(v => "vm " + v))
                .Concat(_links.Select(kv => $"link {kv.Key} {kv.Value}")).Concat(_rules.Select(r => "rule " + r)));
    }
}
