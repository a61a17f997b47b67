using System.Net;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Language;
using Vnet.Links;
using static Vnet.Tests.Language.Lang;

namespace Vnet.Tests.Language;

/// <summary>
/// The diff: each kind of change, link ends on both daemons, the order within a daemon, the text
/// <c>vnet topo diff</c> prints, and a randomized check that applying the changes to the current
/// state of every daemon gives the desired state without a rule ever naming a missing port.
/// </summary>
public sealed class OverlayDiffTests
{
    private const string Base = """
        proxy p at 192.0.2.1:5500 {
          interface lan0 pcap lan
        }
        host h1 at 192.0.2.11:5500 {
          interface tap0 tap {
            vm 02:00:00:00:00:01
          }
          rule any -> 02:00:00:00:00:02 to link h2
        }
        host h2 at 192.0.2.12:5500 {
          interface tap0 tap {
            vm 02:00:00:00:00:02
          }
        }
        link h1 -> p
        link h2 -> p udp
        link h1 -> h2 udp port 5501
        """;

    private static OverlayChanges Diff(string current, string desired) => OverlayDiff.Compute(Parse(current), Parse(desired));

    private static string Edit(string text, string from, string to)
    {
        Assert.Contains(from, text, StringComparison.Ordinal);
        return text.Replace(from, to, StringComparison.Ordinal);
    }

    private static readonly RuleDecl ToH2 = new(MacMatch.Any, MacMatch.Exact(Mac(2)), null, RuleAction.To(PortRef.Link("h2")));

    [Fact]
    public void Compute_EqualModels_Empty()
    {
        // Written differently (comments, layout, positions), but the same description.
        var changes = Diff(Base, "# again\n" + OverlayFormatter.Format(Parse(Base)));
        Assert.True(changes.IsEmpty);
        Assert.Empty(changes.ByDaemon);
        Assert.Empty(changes.All);
        Assert.True(changes.IsApplicable);
        Assert.Equal("no changes\n", changes.ToString());
    }

    [Fact]
    public void Compute_NewLink_AddedAtBothEnds()
    {
        var current = Edit(Edit(Base, "\nlink h1 -> h2 udp port 5501", ""), "  rule any -> 02:00:00:00:00:02 to link h2\n", "");
        var changes = Diff(current, Base);

        Assert.Equal<Change>(
            [
                new AddLink("h1", "h2", LinkTransport.Udp, Ep("192.0.2.12:5501")),
                new AddRule("h1", ToH2),
            ],
            changes.For("h1"));
        Assert.Equal<Change>([new AddLink("h2", "h1", LinkTransport.Udp, null)], changes.For("h2"));
        Assert.Empty(changes.For("p"));
        Assert.Equal(["h1", "h2"], changes.ByDaemon.Select(d => d.Daemon));
        Assert.Equal("h1: + link h2 (dials 192.0.2.12:5501, udp)", changes.For("h1")[0].ToString());
        Assert.Equal("h2: + link h1 (h1 dials in, udp)", changes.For("h2")[0].ToString());
    }

    [Fact]
    public void Compute_LinkWithoutPortOverride_DialsThePeersOwnAddress()
    {
        var changes = Diff(Edit(Base, "link h1 -> p\n", "link h1 -> p udp\n"), Base);
        Assert.Equal<Change>(
            [new RemoveLink("h1", "p"), new AddLink("h1", "p", LinkTransport.Tcp, Ep("192.0.2.1:5500"))],
            changes.For("h1"));
    }

    [Fact]
    public void Compute_RemovedLink_RulesFirstThenBothEnds()
    {
        var desired = Edit(Edit(Base, "\nlink h1 -> h2 udp port 5501", ""), "  rule any -> 02:00:00:00:00:02 to link h2\n", "");
        var changes = Diff(Base, desired);

        Assert.Equal<Change>([new RemoveRule("h1", ToH2), new RemoveLink("h1", "h2")], changes.For("h1"));
        Assert.Equal<Change>([new RemoveLink("h2", "h1")], changes.For("h2"));
        Assert.Equal("h1: - rule any -> 02:00:00:00:00:02 to link h2", changes.For("h1")[0].ToString());
    }

    [Fact]
    public void Compute_LinkTransportChanged_BothEndsRemadeAndTheirRulesRedone()
    {
        var changes = Diff(Base, Edit(Base, "link h1 -> h2 udp port 5501", "link h1 -> h2 tcp port 5501"));

        Assert.Equal<Change>(
            [
                new RemoveRule("h1", ToH2),
                new RemoveLink("h1", "h2"),
                new AddLink("h1", "h2", LinkTransport.Tcp, Ep("192.0.2.12:5501")),
                new AddRule("h1", ToH2),
            ],
            changes.For("h1"));
        Assert.Equal<Change>([new RemoveLink("h2", "h1"), new AddLink("h2", "h1", LinkTransport.Tcp, null)], changes.For("h2"));
    }

    [Fact]
    public void Compute_LinkPortChanged_OnlyTheDialingEndRemade()
    {
        var changes = Diff(Base, Edit(Base, "link h1 -> h2 udp port 5501", "link h1 -> h2 udp"));

        Assert.Equal<Change>(
            [
                new RemoveRule("h1", ToH2),
                new RemoveLink("h1", "h2"),
                new AddLink("h1", "h2", LinkTransport.Udp, Ep("192.0.2.12:5500")),
                new AddRule("h1", ToH2),
            ],
            changes.For("h1"));
        Assert.Empty(changes.For("h2"));
    }

    [Fact]
    public void Compute_LinkStreamsChanged_OnlyTheDialingEndRemade_AndTheChangeSetCarriesThem()
    {
        var changes = Diff(Base, Edit(Base, "link h1 -> h2 udp port 5501", "link h1 -> h2 tcp port 5501 streams 4"));
        var add = Assert.Single(changes.For("h1").OfType<AddLink>());
        Assert.Equal(4, add.Streams);
        Assert.Equal(new AddLink("h2", "h1", LinkTransport.Tcp, null), Assert.Single(changes.For("h2").OfType<AddLink>()));
        var set = Assert.Single(Vnet.Overlay.OverlayModel.ToDaemonChanges(add, Parse(Base)));
        Assert.Equal(4, set.Streams);
        Assert.Contains("4 streams", set.ToString(), StringComparison.Ordinal);

        // Only the streams differ: the dialing end is made again, the other end keeps its link.
        var tcp = Edit(Base, "link h1 -> h2 udp port 5501", "link h1 -> h2 tcp port 5501");
        changes = Diff(tcp, Edit(tcp, "link h1 -> h2 tcp port 5501", "link h1 -> h2 tcp port 5501 streams 2"));
        Assert.Contains(new AddLink("h1", "h2", LinkTransport.Tcp, Ep("192.0.2.12:5501"), 2), changes.For("h1"));
        Assert.Empty(changes.For("h2"));
        // A link of one stream is the change set it always was.
        Assert.Null(Assert.Single(Vnet.Overlay.OverlayModel.ToDaemonChanges(new AddLink("h1", "h2", LinkTransport.Tcp, Ep("192.0.2.12:5501")), Parse(Base))).Streams);
    }

    [Fact]
    public void Compute_LinkDirectionReversed_BothEndsRemade()
    {
        var changes = Diff(Base, Edit(Base, "link h1 -> h2 udp port 5501", "link h2 -> h1 udp"));

        Assert.Equal<Change>(
            [
                new RemoveRule("h1", ToH2),
                new RemoveLink("h1", "h2"),
                new AddLink("h1", "h2", LinkTransport.Udp, null),
                new AddRule("h1", ToH2),
            ],
            changes.For("h1"));
        Assert.Equal<Change>(
            [new RemoveLink("h2", "h1"), new AddLink("h2", "h1", LinkTransport.Udp, Ep("192.0.2.11:5500"))],
            changes.For("h2"));
    }

    [Fact]
    public void Compute_InterfaceAdded_WithItsVms()
    {
        var changes = Diff(Base, Edit(Base, "host h2 at 192.0.2.12:5500 {\n", "host h2 at 192.0.2.12:5500 {\n  interface tap1 tap mtu 9000 { vm 02:00:00:00:00:07 }\n"));

        var tap1 = new InterfaceDecl("tap1", InterfaceKind.Tap, 9000, null, false, [Mac(7)]);
        Assert.Equal<Change>([new AddInterface("h2", tap1)], changes.For("h2"));
        Assert.Equal("h2: + interface tap1 tap mtu 9000 (vms 02:00:00:00:00:07)", changes.All[0].ToString());
    }

    [Fact]
    public void Compute_InterfaceRemoved_VmsGoWithIt()
    {
        var changes = Diff(Base, Edit(Base, "  interface tap0 tap {\n    vm 02:00:00:00:00:02\n  }\n", ""));
        Assert.Equal<Change>([new RemoveInterface("h2", "tap0")], changes.All);
        Assert.Equal("h2: - interface tap0", changes.All[0].ToString());
    }

    [Theory]
    [InlineData("interface tap0 tap mtu 9000 {")]
    [InlineData("interface tap0 tap bridge br0 {")]
    [InlineData("interface tap0 pcap {")]
    public void Compute_InterfaceSettingsChanged_RemovedThenAdded(string header)
    {
        var current = Base + "\n";
        var desired = Edit(Base, "host h2 at 192.0.2.12:5500 {\n  interface tap0 tap {", "host h2 at 192.0.2.12:5500 {\n  " + header);
        var changes = Diff(current, desired);

        var now = Parse(desired).Daemon("h2")!.Interface("tap0")!;
        Assert.Equal<Change>([new RemoveInterface("h2", "tap0"), new AddInterface("h2", now)], changes.All);
    }

    [Fact]
    public void Compute_InterfaceRemadeUnderARule_RuleRedoneAroundIt()
    {
        var current = Edit(Base, "  rule any -> 02:00:00:00:00:02 to link h2\n", "  rule any -> 02:00:00:00:00:01 to interface tap0\n");
        var desired = Edit(current, "  interface tap0 tap {\n    vm 02:00:00:00:00:01", "  interface tap0 tap mtu 9000 {\n    vm 02:00:00:00:00:01");
        var changes = Diff(current, desired);

        var rule = new RuleDecl(MacMatch.Any, MacMatch.Exact(Mac(1)), null, RuleAction.To(PortRef.Interface("tap0")));
        Assert.Equal(
            [typeof(RemoveRule), typeof(RemoveInterface), typeof(AddInterface), typeof(AddRule)],
            changes.For("h1").Select(c => c.GetType()));
        Assert.Equal(rule, ((AddRule)changes.For("h1")[3]).Rule);
    }

    [Fact]
    public void Compute_VmsChanged_OneByOne()
    {
        var desired = Edit(Base, "    vm 02:00:00:00:00:01\n", "    vm 02:00:00:00:00:03\n    vm 02:00:00:00:00:04\n");
        var changes = Diff(Base, desired);

        Assert.Equal<Change>(
            [
                new RemoveVm("h1", "tap0", Mac(1)),
                new AddVm("h1", "tap0", Mac(3)),
                new AddVm("h1", "tap0", Mac(4)),
            ],
            changes.All);
        Assert.Equal("h1: - vm 02:00:00:00:00:01 on interface tap0", changes.All[0].ToString());
        Assert.Equal("h1: + vm 02:00:00:00:00:03 on interface tap0", changes.All[1].ToString());
    }

    [Fact]
    public void Compute_RuleReplaced_RemoveAndAdd()
    {
        var desired = Edit(Base, "rule any -> 02:00:00:00:00:02 to link h2", "rule 02:00:00:00:00:01 -> 02:00:00:00:00:02 to link h2");
        var changes = Diff(Base, desired);

        var added = new RuleDecl(MacMatch.Exact(Mac(1)), MacMatch.Exact(Mac(2)), null, RuleAction.To(PortRef.Link("h2")));
        Assert.Equal<Change>([new RemoveRule("h1", ToH2), new AddRule("h1", added)], changes.All);
        Assert.Equal("h1: + rule 02:00:00:00:00:01 -> 02:00:00:00:00:02 to link h2", changes.All[1].ToString());
    }

    [Fact]
    public void Compute_RulesReordered_NoChange()
    {
        const string Two = "proxy p at 192.0.2.1:5500 {\n  rule any -> multicast flood\n  rule any -> none flood\n}\n";
        var swapped = "proxy p at 192.0.2.1:5500 {\n  rule any -> none flood\n  rule any -> multicast flood\n}\n";
        Assert.True(Diff(Two, swapped).IsEmpty);
    }

    [Fact]
    public void Compute_DaemonAdded_ReportedAndPeersGetTheirEnds()
    {
        var desired = Base + "\nhost h3 at 192.0.2.13:5500 { interface tap0 tap }\nlink h3 -> p\n";
        var changes = Diff(Base, desired);

        Assert.Equal<Change>([new AddDaemon("h3", DaemonRole.Host, Ep("192.0.2.13:5500"))], changes.For("h3"));
        Assert.Equal<Change>([new AddLink("p", "h3", LinkTransport.Tcp, null)], changes.For("p"));
        Assert.False(changes.IsApplicable);
        Assert.False(changes.For("h3")[0].IsApplicable);
        Assert.Equal("h3: + host h3 at 192.0.2.13:5500 (not applied: start the daemon)", changes.For("h3")[0].ToString());
    }

    [Fact]
    public void Compute_DaemonRemoved_ReportedLastAndPeersLoseTheirEndsAndRules()
    {
        var current = Base + "\nhost h3 at 192.0.2.13:5500\nlink h3 -> p\nlink h1 -> h3\n";
        var withRule = Edit(current, "  rule any -> 02:00:00:00:00:02 to link h2\n", "  rule any -> 02:00:00:00:00:02 to link h2\n  rule any -> any from link h3 flood\n");
        var changes = Diff(withRule, Base);

        Assert.Equal<Change>(
            [
                new RemoveRule("h1", new RuleDecl(MacMatch.Any, MacMatch.Any, PortRef.Link("h3"), RuleAction.Flood)),
                new RemoveLink("h1", "h3"),
            ],
            changes.For("h1"));
        Assert.Equal<Change>([new RemoveLink("p", "h3")], changes.For("p"));
        Assert.Equal<Change>([new RemoveDaemon("h3")], changes.For("h3"));
        Assert.Equal("h3", changes.ByDaemon[^1].Daemon);
        Assert.Equal("h3: - daemon h3 (not applied: stop the daemon)", changes.For("h3")[0].ToString());
    }

    [Fact]
    public void Compute_DaemonAddressChanged_ReportedAndDialersRemade()
    {
        var changes = Diff(Base, Edit(Base, "host h2 at 192.0.2.12:5500", "host h2 at 192.0.2.22:5500"));

        Assert.Equal<Change>([new ChangeDaemonAddress("h2", Ep("192.0.2.12:5500"), Ep("192.0.2.22:5500"))], changes.For("h2"));
        Assert.Equal<Change>(
            [
                new RemoveRule("h1", ToH2),
                new RemoveLink("h1", "h2"),
                new AddLink("h1", "h2", LinkTransport.Udp, Ep("192.0.2.22:5501")),
                new AddRule("h1", ToH2),
            ],
            changes.For("h1"));
        Assert.Equal("h2: ~ address 192.0.2.12:5500 -> 192.0.2.22:5500 (not applied: restart the daemon)", changes.For("h2")[0].ToString());
    }

    [Fact]
    public void Compute_RoleChanged_DaemonRemovedAndAdded()
    {
        const string Current = "proxy p at 192.0.2.1:5500\nhost h at 192.0.2.2:5500\nlink h -> p\n";
        const string Desired = "host p at 192.0.2.1:5500\nproxy h at 192.0.2.2:5500\nlink h -> p\n";
        var changes = Diff(Current, Desired);

        Assert.Equal<Change>([new RemoveDaemon("p"), new AddDaemon("p", DaemonRole.Host, Ep("192.0.2.1:5500"))], changes.For("p"));
        Assert.Equal<Change>([new RemoveDaemon("h"), new AddDaemon("h", DaemonRole.Proxy, Ep("192.0.2.2:5500"))], changes.For("h"));
    }

    [Fact]
    public void Compute_ManyChangesAtOneDaemon_StagesInOrder()
    {
        var desired = """
            proxy p at 192.0.2.1:5500 {
              interface lan0 pcap lan
            }
            host h1 at 192.0.2.21:5500 {
              interface tap0 tap {
                vm 02:00:00:00:00:05
              }
              interface tap2 tap
              rule any -> any to interface tap2
            }
            host h2 at 192.0.2.12:5500 {
              interface tap0 tap {
                vm 02:00:00:00:00:02
              }
            }
            host h3 at 192.0.2.13:5500
            link h1 -> p
            link h2 -> p udp
            link h1 -> h3
            """;
        var current = Edit(Base, "interface tap0 tap {\n    vm 02:00:00:00:00:01\n  }", "interface tap0 tap {\n    vm 02:00:00:00:00:01\n  }\n  interface tap1 tap");
        var changes = OverlayDiff.Compute(Parse(current), Parse(desired));

        Assert.Equal(
            [
                "~ address 192.0.2.11:5500 -> 192.0.2.21:5500 (not applied: restart the daemon)",
                "- rule any -> 02:00:00:00:00:02 to link h2",
                "- link h2",
                "- vm 02:00:00:00:00:01 on interface tap0",
                "- interface tap1",
                "+ interface tap2 tap",
                "+ vm 02:00:00:00:00:05 on interface tap0",
                "+ link h3 (dials 192.0.2.13:5500, tcp)",
                "+ rule any -> any to interface tap2",
            ],
            changes.For("h1").Select(c => c.Describe()));
        // The rule to h2 goes: no link h1 - h2 any more.
        Assert.DoesNotContain(changes.For("h1"), c => c is AddRule { Rule: var r } && r.Equals(ToH2));
    }

    [Fact]
    public void ToString_WholeDiff_GroupedByDaemon()
    {
        var desired = Edit(Base, "link h1 -> h2 udp port 5501", "link h1 -> h2 udp port 5502");
        desired = Edit(desired, "    vm 02:00:00:00:00:02\n", "    vm 02:00:00:00:00:02\n    vm 02:00:00:00:00:03\n");

        Assert.Equal(
            """
            h1:
              - rule any -> 02:00:00:00:00:02 to link h2
              - link h2
              + link h2 (dials 192.0.2.12:5502, udp)
              + rule any -> 02:00:00:00:00:02 to link h2
            h2:
              + vm 02:00:00:00:00:03 on interface tap0

            """.Replace("\r\n", "\n", StringComparison.Ordinal),
            Diff(Base, desired).ToString());
    }

    [Fact]
    public void Compute_DialedDaemonWithoutAddress_Throws()
    {
        var broken = new OverlayDescription(
            [new DaemonDecl("p", DaemonRole.Proxy, null, [], []), new DaemonDecl("h", DaemonRole.Host, null, [], [])],
            [new LinkDecl("h", "p", LinkTransport.Tcp, null)]);
        var ex = Assert.Throws<ArgumentException>(() => OverlayDiff.Compute(OverlayDescription.Empty with { Daemons = broken.Daemons }, broken));
        Assert.Contains("p is unknown or has no address", ex.Message, StringComparison.Ordinal);
    }

    // Applying the changes to each daemon's state, as the daemon side will.

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    [InlineData(99)]
    [InlineData(31337)]
    public void Compute_RandomPairs_ApplyingGivesTheDesiredStateInOrder(int seed)
    {
        var rng = new Random(seed);
        var kinds = new HashSet<Type>();
        for (var n = 0; n < 150; n++)
        {
            var current = RandomOverlay.Narrow(rng);
            var desired = RandomOverlay.Narrow(rng);
            Assert.True(OverlayDiff.Compute(current, current).IsEmpty);

            var changes = OverlayDiff.Compute(current, desired);
            foreach (var c in changes.All)
                kinds.Add(c.GetType());
            foreach (var group in changes.ByDaemon)
            {
                Assert.All(group.Changes, c => Assert.Equal(group.Daemon, c.Daemon));
                var have = current.Daemon(group.Daemon);
                var want = desired.Daemon(group.Daemon);
                if (have is null || want is null || have.Role != want.Role)
                {
                    Assert.All(group.Changes, c => Assert.False(c.IsApplicable));
                    continue;
                }
                var state = DaemonState.Of(current, group.Daemon);
                foreach (var c in group.Changes)
                    state.Apply(c, $"seed {seed}, pair {n}:\n{current}---\n{desired}---\n{changes}");
                Assert.True(DaemonState.Of(desired, group.Daemon).SameAs(state), $"seed {seed}, pair {n}, {group.Daemon}:\n{changes}");
            }
            // Daemons without changes are already as desired.
            foreach (var want in desired.Daemons)
            {
                if (changes.For(want.Name).Count == 0)
                    Assert.True(DaemonState.Of(current, want.Name).SameAs(DaemonState.Of(desired, want.Name)), $"seed {seed}, pair {n}, {want.Name}");
            }
        }
        // The random pairs exercised every kind of change.
        Assert.Equal(11, kinds.Count);
    }

    /// <summary>
    /// What one daemon holds, as a reference the diff is checked against: interfaces with VMs, link
    /// ends and rules, with the daemon's own refusals (a rule naming a missing port, a port still in
    /// use, adding what exists, removing what does not).
    /// </summary>
    private sealed class DaemonState
    {
        private readonly Dictionary<string, (InterfaceDecl Settings, HashSet<MacAddress> Vms)> _interfaces = new(StringComparer.Ordinal);
        private readonly Dictionary<string, (LinkTransport Transport, IPEndPoint? Dial)> _links = new(StringComparer.Ordinal);
        private readonly HashSet<RuleDecl> _rules = [];

        public static DaemonState Of(OverlayDescription overlay, string name)
        {
            var state = new DaemonState();
            var d = overlay.Daemon(name)!;
            foreach (var i in d.Interfaces)
                state._interfaces.Add(i.Name, (i, [.. i.Vms]));
            foreach (var l in overlay.LinksOf(name))
            {
                var dialed = overlay.Daemon(l.To)!.Address;
                var dial = l.From == name ? new IPEndPoint(dialed!.Address, l.Port ?? dialed.Port) : null;
                state._links.Add(l.PeerOf(name), (l.Transport, dial));
            }
            foreach (var r in d.Rules)
                state._rules.Add(r);
            return state;
        }

        public void Apply(Change change, string context)
        {
            var ok = change switch
            {
                AddInterface a => _interfaces.TryAdd(a.Interface.Name, (a.Interface, [.. a.Interface.Vms])),
                RemoveInterface r => !InUse(PortRef.Interface(r.Name)) && _interfaces.Remove(r.Name),
                AddVm v => _interfaces.TryGetValue(v.Interface, out var i) && i.Vms.Add(v.Mac),
                RemoveVm v => _interfaces.TryGetValue(v.Interface, out var i) && i.Vms.Remove(v.Mac),
                AddLink l => _links.TryAdd(l.Peer, (l.Transport, l.Dial)),
                RemoveLink l => !InUse(PortRef.Link(l.Peer)) && _links.Remove(l.Peer),
                AddRule r => Exists(r.Rule.Ingress) && (r.Rule.Action.IsFlood || Exists(r.Rule.Action.Port)) && _rules.Add(r.Rule),
                RemoveRule r => _rules.Remove(r.Rule),
                ChangeDaemonAddress => true,
                _ => false,
            };
            Assert.True(ok, $"refused: {change}\n{context}");
        }

        public bool SameAs(DaemonState other) =>
            _interfaces.Count == other._interfaces.Count
            && _interfaces.All(kv => other._interfaces.TryGetValue(kv.Key, out var o) && o.Settings.SameSettings(kv.Value.Settings) && o.Vms.SetEquals(kv.Value.Vms))
            && _links.Count == other._links.Count
            && _links.All(kv => other._links.TryGetValue(kv.Key, out var o) && o.Transport == kv.Value.Transport && Equals(o.Dial, kv.Value.Dial))
            && _rules.SetEquals(other._rules);

        private bool InUse(PortRef port) => _rules.Any(r => r.Uses(port));

        private bool Exists(PortRef? port) => port is not { } p
            || (p.Kind == PortKind.Interface ? _interfaces.ContainsKey(p.Name) : _links.ContainsKey(p.Name));
    }
}
