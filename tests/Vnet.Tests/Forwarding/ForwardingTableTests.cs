using Vnet.Forwarding;
using Vnet.Frames;
using static Vnet.Tests.Forwarding.Fwd;

namespace Vnet.Tests.Forwarding;

public sealed class ForwardingTableTests
{
    private static readonly MacAddress A = Mac(1);
    private static readonly MacAddress B = Mac(2);
    private static readonly MacAddress C = Mac(3);
    private static readonly MacAddress G = Group(7);

    // One test per rule shape: what each shape matches, alone in the table.

    [Fact]
    public void Lookup_ExactSourceExactDestination_MatchesOnlyThatPair()
    {
        var t = Table(NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B)));

        Assert.Equal([1], Lookup(t, A, B));
        Assert.Empty(Lookup(t, A, C));
        Assert.Empty(Lookup(t, C, B));
        Assert.Empty(Lookup(t, B, A));
    }

    [Fact]
    public void Lookup_ExactSourceAnyDestination_MatchesEveryDestinationFromThatSource()
    {
        var t = Table(NewRule(1, MacMatch.Exact(A), MacMatch.Any));

        Assert.Equal([1], Lookup(t, A, B));
        Assert.Equal([1], Lookup(t, A, G));
        Assert.Equal([1], Lookup(t, A, MacAddress.Broadcast));
        Assert.Empty(Lookup(t, C, B));
    }

    [Fact]
    public void Lookup_AnySourceExactDestination_MatchesThatDestinationFromEverySource()
    {
        var t = Table(NewRule(1, MacMatch.Any, MacMatch.Exact(B)));

        Assert.Equal([1], Lookup(t, A, B));
        Assert.Equal([1], Lookup(t, C, B));
        Assert.Empty(Lookup(t, A, C));
    }

    [Fact]
    public void Lookup_AnySourceAnyDestination_MatchesEveryFrame()
    {
        var t = Table(NewRule(1, MacMatch.Any, MacMatch.Any));

        Assert.Equal([1], Lookup(t, A, B));
        Assert.Equal([1], Lookup(t, C, G));
        Assert.Equal([1], Lookup(t, B, MacAddress.Broadcast, ingress: 3));
    }

    [Fact]
    public void Lookup_AnySourceMulticastDestination_MatchesBroadcastAndMulticastNotUnicast()
    {
        var t = Table(NewFlood(1, MacMatch.Any, MacMatch.Multicast));

        Assert.Equal([1], Lookup(t, A, MacAddress.Broadcast));
        Assert.Equal([1], Lookup(t, A, G));
        Assert.Equal([1], Lookup(t, C, Group(0xFFFF)));
        Assert.Empty(Lookup(t, A, B));
        Assert.Empty(Lookup(t, A, MacAddress.Zero));
    }

    [Fact]
    public void Lookup_ExactSourceMulticastDestination_MatchesGroupsFromThatSourceOnly()
    {
        var t = Table(NewFlood(1, MacMatch.Exact(A), MacMatch.Multicast));

        Assert.Equal([1], Lookup(t, A, MacAddress.Broadcast));
        Assert.Equal([1], Lookup(t, A, G));
        Assert.Empty(Lookup(t, A, B));
        Assert.Empty(Lookup(t, C, G));
    }

    [Fact]
    public void Lookup_ExactSourceNoneDestination_MatchesEveryDestinationFromThatSource()
    {
        var t = Table(NewRule(1, MacMatch.Exact(A), MacMatch.None));

        Assert.Equal([1], Lookup(t, A, B));
        Assert.Equal([1], Lookup(t, A, G));
        Assert.Equal([1], Lookup(t, A, MacAddress.Broadcast));
        Assert.Empty(Lookup(t, C, B));
    }

    [Fact]
    public void Lookup_AnySourceNoneDestination_MatchesEveryFrame()
    {
        var t = Table(NewRule(1, MacMatch.Any, MacMatch.None));

        Assert.Equal([1], Lookup(t, A, B));
        Assert.Equal([1], Lookup(t, C, G));
    }

    [Fact]
    public void Lookup_ExactDestinationIsGroupAddress_MatchesThatGroupOnly()
    {
        var t = Table(NewRule(1, MacMatch.Any, MacMatch.Exact(G)));

        Assert.Equal([1], Lookup(t, A, G));
        Assert.Empty(Lookup(t, A, Group(8)));
        Assert.Empty(Lookup(t, A, MacAddress.Broadcast));
    }

    // Priorities and ties.

    [Fact]
    public void Lookup_TwoIdenticalMatchesWithDifferentActions_ReturnsBoth()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B), action: Vm1),
            NewRule(2, MacMatch.Exact(A), MacMatch.Exact(B), action: Proxy));

        var result = t.Lookup(A, B, -1);

        Assert.Equal([1, 2], Ids(result));
        Assert.Equal(2, result.Count);
    }

    [Fact]
    public void Lookup_ExactAnyAndAnyExactBothMatch_ReturnsBoth()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.Any, action: Proxy),
            NewRule(2, MacMatch.Any, MacMatch.Exact(B), action: Vm1),
            NewRule(3, MacMatch.Any, MacMatch.Any, action: Peer));

        Assert.Equal([1, 2], Lookup(t, A, B));
        Assert.Equal([1], Lookup(t, A, C));
        Assert.Equal([2], Lookup(t, C, B));
        Assert.Equal([3], Lookup(t, C, A));
    }

    [Fact]
    public void Lookup_ExactAnyAndAnyExactBothWithIngress_ReturnsBoth()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.Any, ingress: Vm0),
            NewRule(2, MacMatch.Any, MacMatch.Exact(B), ingress: Vm0),
            NewRule(3, MacMatch.Exact(A), MacMatch.Any));

        Assert.Equal([1, 2], Lookup(t, A, B, ingress: 0));
        Assert.Equal([3], Lookup(t, A, B, ingress: 1));
    }

    [Fact]
    public void Lookup_TiedRulesInTwoSubtablesWithDuplicates_ReturnsAllOfThem()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.Any),
            NewRule(2, MacMatch.Exact(A), MacMatch.Any),
            NewRule(3, MacMatch.Any, MacMatch.Exact(B)),
            NewRule(4, MacMatch.Any, MacMatch.Exact(B)));

        var result = t.Lookup(A, B, -1);

        Assert.Equal([1, 2, 3, 4], Ids(result));
        Assert.Equal(4, result.Count);
    }

    [Fact]
    public void Lookup_ExactExactAndWeakerRulesMatch_OnlyExactExactReturned()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B)),
            NewRule(2, MacMatch.Exact(A), MacMatch.Any),
            NewRule(3, MacMatch.Any, MacMatch.Exact(B)),
            NewRule(4, MacMatch.Any, MacMatch.Any),
            NewRule(5, MacMatch.Exact(A), MacMatch.None));

        Assert.Equal([1], Lookup(t, A, B));
    }

    [Fact]
    public void Lookup_MulticastAndAnyDestination_MulticastWinsForGroupsAnyForUnicast()
    {
        var t = Table(
            NewFlood(1, MacMatch.Any, MacMatch.Multicast),
            NewRule(2, MacMatch.Any, MacMatch.Any));

        Assert.Equal([1], Lookup(t, A, G));
        Assert.Equal([2], Lookup(t, A, B));
    }

    [Fact]
    public void Lookup_ExactGroupAndMulticastDestination_ExactGroupWins()
    {
        var t = Table(
            NewFlood(1, MacMatch.Any, MacMatch.Multicast),
            NewRule(2, MacMatch.Any, MacMatch.Exact(G)));

        Assert.Equal([2], Lookup(t, A, G));
        Assert.Equal([1], Lookup(t, A, Group(8)));
    }

    [Fact]
    public void Lookup_ExactSourceMulticastAndAnySourceExactGroup_ExactSourceMulticastWins()
    {
        // Source and destination strengths add up (exact source counts as much as an exact
        // destination), so exact/multicast outranks any/exact: this pins that ordering.
        var t = Table(
            NewFlood(1, MacMatch.Exact(A), MacMatch.Multicast),
            NewRule(2, MacMatch.Any, MacMatch.Exact(G)));

        Assert.Equal([1], Lookup(t, A, G));
        Assert.Equal([2], Lookup(t, C, G));
    }

    // The default rule (destination none).

    [Fact]
    public void Lookup_DefaultRuleAlone_MatchesWheneverItsSourceMatches()
    {
        var t = Table(NewRule(1, MacMatch.Exact(A), MacMatch.None, action: Proxy));

        Assert.Equal([1], Lookup(t, A, B));
        Assert.Equal([1], Lookup(t, A, MacAddress.Broadcast, ingress: 2));
        Assert.Empty(Lookup(t, B, A));
    }

    [Fact]
    public void Lookup_DefaultRuleAndAnyAny_AnyAnyWins()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.None),
            NewRule(2, MacMatch.Any, MacMatch.Any));

        Assert.Equal([2], Lookup(t, A, B));
    }

    [Fact]
    public void Lookup_DefaultRuleWithIngressAndAnyAnyWithout_AnyAnyWins()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.None, ingress: Vm0),
            NewRule(2, MacMatch.Any, MacMatch.Any));

        Assert.Equal([2], Lookup(t, A, B, ingress: 0));
    }

    [Fact]
    public void Lookup_DefaultRuleAndMulticastRule_DefaultUsedForUnicastOnly()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.None),
            NewFlood(2, MacMatch.Any, MacMatch.Multicast));

        Assert.Equal([2], Lookup(t, A, G));
        Assert.Equal([1], Lookup(t, A, B));
    }

    [Fact]
    public void Lookup_ExactSourceDefaultAndAnySourceDefault_ExactSourceWins()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.None),
            NewRule(2, MacMatch.Any, MacMatch.None));

        Assert.Equal([1], Lookup(t, A, B));
        Assert.Equal([2], Lookup(t, C, B));
    }

    // No match.

    [Fact]
    public void Lookup_NoRuleMatches_ReturnsEmpty()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B)),
            NewRule(2, MacMatch.Exact(B), MacMatch.None),
            NewFlood(3, MacMatch.Any, MacMatch.Multicast));

        var result = t.Lookup(C, A, -1);

        Assert.True(result.IsEmpty);
        Assert.Equal(0, result.Count);
        Assert.Null(result.First);
        Assert.Null(result.Second);
    }

    [Fact]
    public void Lookup_EmptyTable_ReturnsEmpty()
    {
        Assert.True(ForwardingTable.Empty.Lookup(A, B, 0).IsEmpty);
        Assert.True(Table().Lookup(A, MacAddress.Broadcast, -1).IsEmpty);
    }

    // Arrival-port rules.

    [Fact]
    public void Lookup_RuleWithIngress_MatchesOnlyFramesFromThatPort()
    {
        var t = Table(NewRule(1, MacMatch.Any, MacMatch.Any, action: Proxy, ingress: Vm0));

        Assert.Equal([1], Lookup(t, A, B, ingress: 0));
        Assert.Empty(Lookup(t, A, B, ingress: 1));
        Assert.Empty(Lookup(t, A, B, ingress: -1));
    }

    [Fact]
    public void Lookup_RuleWithIngressAndSameShapeWithout_RuleWithIngressWins()
    {
        var t = Table(
            NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B), action: Proxy, ingress: Vm0),
            NewRule(2, MacMatch.Exact(A), MacMatch.Exact(B), action: Peer));

        Assert.Equal([1], Lookup(t, A, B, ingress: 0));
        Assert.Equal([2], Lookup(t, A, B, ingress: 2));
    }

    [Fact]
    public void Lookup_RuleWithIngressOfUnknownPort_NeverMatchesButIsListed()
    {
        var t = Table(
            NewRule(1, MacMatch.Any, MacMatch.Any, ingress: Ghost),
            NewRule(2, MacMatch.Any, MacMatch.None));

        for (var port = -1; port < Ports.Length; port++)
            Assert.Equal([2], Lookup(t, A, B, port));
        Assert.Equal(2, t.Count);
        Assert.Contains(t.Rules, r => r.Rule.Id == 1);
    }

    [Fact]
    public void Constructor_RuleWithIngress_CompilesToPortId()
    {
        var t = Table(
            NewRule(1, MacMatch.Any, MacMatch.Any, ingress: Peer),
            NewRule(2, MacMatch.Any, MacMatch.Any));

        Assert.Equal(3, t.Rules[0].IngressPort);
        Assert.Equal(-1, t.Rules[1].IngressPort);
    }

    // Compilation.

    [Fact]
    public void Constructor_ActionPortDoesNotResolve_CompilesWithActionPortMinusOne()
    {
        var t = Table(NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B), action: Ghost));

        var compiled = Assert.Single(t.Rules);
        Assert.Equal(-1, compiled.ActionPort);
        Assert.False(compiled.IsFlood);
        Assert.Equal([1], Lookup(t, A, B));
    }

    [Fact]
    public void Constructor_ActionPortResolves_CompilesToPortId()
    {
        var t = Table(NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B), action: Proxy));

        Assert.Equal(2, Assert.Single(t.Rules).ActionPort);
    }

    [Fact]
    public void Constructor_FloodRule_CompilesWithActionPortMinusOneAndIsFlood()
    {
        var t = Table(NewFlood(1, MacMatch.Any, MacMatch.Multicast));

        var compiled = Assert.Single(t.Rules);
        Assert.True(compiled.IsFlood);
        Assert.Equal(-1, compiled.ActionPort);
    }

    [Fact]
    public void Constructor_ManyRulesOfFewShapes_OneSubtablePerShape()
    {
        var rules = new List<Rule>();
        for (var i = 0; i < 500; i++)
        {
            rules.Add(NewRule(i * 3, MacMatch.Exact(Mac(i)), MacMatch.Exact(Mac(i + 1))));
            rules.Add(NewRule((i * 3) + 1, MacMatch.Any, MacMatch.Exact(Mac(i))));
            rules.Add(NewRule((i * 3) + 2, MacMatch.Exact(Mac(i)), MacMatch.None));
        }

        var t = new ForwardingTable(rules, Resolve, static _ => new RuleStats());

        Assert.Equal(1500, t.Count);
        Assert.Equal(3, t.SubtableCount);
        Assert.Equal([0], Lookup(t, Mac(0), Mac(1)));
        Assert.Equal([1201], Lookup(t, Mac(1), Mac(400)));
        Assert.Equal([5], Lookup(t, Mac(1), Mac(999)));
    }

    [Fact]
    public void Constructor_SameRuleIdInTwoVersions_StatsSurviveTheRebuild()
    {
        var stats = new Dictionary<long, RuleStats>();
        RuleStats StatsOf(long id) => stats.TryGetValue(id, out var s) ? s : stats[id] = new RuleStats();
        var rule = NewRule(7, MacMatch.Exact(A), MacMatch.Any);

        var v1 = new ForwardingTable([rule], Resolve, StatsOf);
        v1.Lookup(A, B, -1)[0].Stats.Hit(100);
        var v2 = new ForwardingTable([rule, NewRule(8, MacMatch.Any, MacMatch.Any)], Resolve, StatsOf);
        v2.Lookup(A, B, -1)[0].Stats.Hit(50);

        Assert.Same(v1.Rules[0].Stats, v2.Rules[0].Stats);
        Assert.Equal(2, v2.Rules[0].Stats.Frames);
        Assert.Equal(150, v2.Rules[0].Stats.Bytes);
    }

    [Fact]
    public void Lookup_Match_PriorityIsTheWinningRulesPriority()
    {
        var exactAny = NewRule(1, MacMatch.Exact(A), MacMatch.Any);
        var t = Table(exactAny, NewRule(2, MacMatch.Any, MacMatch.Any));

        Assert.Equal(exactAny.Priority, t.Lookup(A, B, -1).Priority);
    }

    [Fact]
    public void Lookup_Match_ReturnsTheCompiledRuleOfTheInstalledRule()
    {
        var rule = NewRule(1, MacMatch.Exact(A), MacMatch.Exact(B), action: Peer);
        var t = Table(rule);

        var hit = t.Lookup(A, B, -1)[0];

        Assert.Same(rule, hit.Rule);
        Assert.Equal(3, hit.ActionPort);
    }

    [Fact]
    public void Constructor_NullArguments_Throw()
    {
        Assert.Throws<ArgumentNullException>(() => new ForwardingTable(null!, Resolve, static _ => new RuleStats()));
        Assert.Throws<ArgumentNullException>(() => new ForwardingTable([], null!, static _ => new RuleStats()));
        Assert.Throws<ArgumentNullException>(() => new ForwardingTable([], Resolve, null!));
    }
}
