using System.Text;
using Vnet.Forwarding;
using Vnet.Frames;
using static Vnet.Tests.Forwarding.Fwd;

namespace Vnet.Tests.Forwarding;

/// <summary>
/// Checks <see cref="ForwardingTable.Lookup"/> against a linear scan that states the rules directly:
/// random rule sets and frames, fixed seeds, exact comparison of the matched rule ids.
/// </summary>
public sealed class ForwardingTableReferenceTests
{
    private const int RuleSetsPerSeed = 1000;
    private const int FramesPerRuleSet = 60;

    // A small pool so that random rules and frames collide often.
    private static readonly MacAddress[] Unicast = [Mac(1), Mac(2), Mac(3), Mac(4)];
    private static readonly MacAddress[] Groups = [MacAddress.Broadcast, Group(1), Group(2)];
    private static readonly MacAddress StrangerUnicast = Mac(0x99);
    private static readonly MacAddress StrangerGroup = Group(0x99);

    // Ghost never resolves: rules arriving from it can never match.
    private static readonly PortRef[] IngressChoices = [Vm0, Vm1, Proxy, Peer, Ghost];

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(42)]
    [InlineData(1009)]
    [InlineData(20260101)]
    public void Lookup_RandomRulesAndFrames_SameRulesAsLinearScan(int seed)
    {
        var rng = new Random(seed);
        for (var set = 0; set < RuleSetsPerSeed; set++)
        {
            // Mostly small sets (ties and shadowing are dense there), sometimes large ones.
            var count = set % 10 == 9 ? rng.Next(100, 400) : rng.Next(0, 24);
            var rules = RandomRules(rng, count);
            var table = Table([.. rules]);
            for (var f = 0; f < FramesPerRuleSet; f++)
            {
                var (src, dst, ingress) = RandomFrame(rng);
                var expected = Reference(rules, src, dst, ingress);
                var result = table.Lookup(src, dst, ingress);
                var actual = Ids(result);
                if (!expected.AsSpan().SequenceEqual(actual) || !PriorityConsistent(result, expected.Length))
                    Assert.Fail(Explain(seed, set, f, rules, src, dst, ingress));
            }
        }
    }

    [Fact]
    public void Reference_HandWrittenCases_AgreesWithTheSpecification()
    {
        // Guards the reference itself, so that the random test cannot agree with a wrong oracle.
        var a = Unicast[0];
        var b = Unicast[1];
        List<Rule> rules =
        [
            NewRule(1, MacMatch.Exact(a), MacMatch.Any),
            NewRule(2, MacMatch.Any, MacMatch.Exact(b)),
            NewRule(3, MacMatch.Any, MacMatch.Any, ingress: Vm0),
            NewRule(4, MacMatch.Exact(a), MacMatch.None, ingress: Vm0),
            NewFlood(5, MacMatch.Any, MacMatch.Multicast),
        ];

        Assert.Equal([1, 2], Reference(rules, a, b, -1));
        Assert.Equal([5], Reference(rules, b, Groups[0], 1));
        Assert.Equal([3], Reference(rules, b, a, 0));
        Assert.Empty(Reference(rules, b, a, 1));
    }

    private static List<Rule> RandomRules(Random rng, int count)
    {
        var rules = new List<Rule>(count);
        for (var id = 1; id <= count; id++)
        {
            if (rules.Count > 0 && rng.Next(6) == 0)
            {
                // A duplicate match, with its own id and possibly another action.
                var copy = rules[rng.Next(rules.Count)];
                rules.Add(copy with { Id = id, Action = RandomAction(rng) });
                continue;
            }
            var src = rng.Next(3) == 0 ? MacMatch.Any : MacMatch.Exact(Unicast[rng.Next(Unicast.Length)]);
            var dst = rng.Next(5) switch
            {
                0 => MacMatch.Any,
                1 => MacMatch.None,
                2 => MacMatch.Multicast,
                3 => MacMatch.Exact(Groups[rng.Next(Groups.Length)]),
                _ => MacMatch.Exact(Unicast[rng.Next(Unicast.Length)]),
            };
            PortRef? ingress = rng.Next(3) == 0 ? IngressChoices[rng.Next(IngressChoices.Length)] : null;
            rules.Add(new Rule { Id = id, Source = src, Destination = dst, Ingress = ingress, Action = RandomAction(rng) });
        }
        return rules;
    }

    private static RuleAction RandomAction(Random rng)
    {
        var i = rng.Next(Ports.Length + 2);
        return i == Ports.Length ? RuleAction.Flood : RuleAction.To(i < Ports.Length ? Ports[i] : Ghost);
    }

    private static (MacAddress Src, MacAddress Dst, int Ingress) RandomFrame(Random rng)
    {
        var src = rng.Next(8) == 0 ? StrangerUnicast : Unicast[rng.Next(Unicast.Length)];
        var dst = rng.Next(10) switch
        {
            0 => StrangerUnicast,
            1 => StrangerGroup,
            2 or 3 => Groups[rng.Next(Groups.Length)],
            _ => Unicast[rng.Next(Unicast.Length)],
        };
        return (src, dst, rng.Next(-1, Ports.Length));
    }

    /// <summary>
    /// The specification as a linear scan. Strength is compared as a tuple rather than taken from
    /// <see cref="Rule.Priority"/>, so that a wrong priority formula shows up here.
    /// </summary>
    private static long[] Reference(List<Rule> rules, MacAddress src, MacAddress dst, int ingress)
    {
        var best = new List<long>();
        (int, int, int) bestStrength = default;
        foreach (var rule in rules)
        {
            if (!SideMatches(rule.Source, src) || !SideMatches(rule.Destination, dst))
                continue;
            // A rule naming a port that does not exist matches nothing, not even frames with no
            // arrival port (-1, which is also what an unresolved name maps to).
            if (rule.Ingress is { } port && (Array.IndexOf(Ports, port) is var id && (id < 0 || id != ingress)))
                continue;
            var strength = Strength(rule);
            var order = best.Count == 0 ? 1 : strength.CompareTo(bestStrength);
            if (order > 0)
            {
                best.Clear();
                bestStrength = strength;
            }
            if (order >= 0)
                best.Add(rule.Id);
        }
        best.Sort();
        return [.. best];
    }

    private static bool SideMatches(MacMatch side, MacAddress mac) => side.Kind switch
    {
        MacMatchKind.Exact => side.Address == mac,
        MacMatchKind.Multicast => (mac.Value & 0x0100_0000_0000UL) != 0,
        MacMatchKind.Any or MacMatchKind.None => true,
        _ => throw new ArgumentOutOfRangeException(nameof(side)),
    };

    /// <summary>
    /// (not a default rule, exact source counts 2 + destination exact 2 / multicast 1 / any 0,
    /// names its arrival port); a default rule ranks by its source only.
    /// </summary>
    private static (int NotDefault, int Specificity, int Ingress) Strength(Rule rule)
    {
        var src = rule.Source.Kind == MacMatchKind.Exact ? 2 : 0;
        var ingress = rule.Ingress is null ? 0 : 1;
        if (rule.Destination.Kind == MacMatchKind.None)
            return (0, src, ingress);
        var dst = rule.Destination.Kind switch
        {
            MacMatchKind.Exact => 2,
            MacMatchKind.Multicast => 1,
            _ => 0,
        };
        return (1, src + dst, ingress);
    }

    private static bool PriorityConsistent(LookupResult result, int expectedCount)
    {
        if (result.IsEmpty != (expectedCount == 0) || result.Count != expectedCount)
            return false;
        for (var i = 0; i < result.Count; i++)
        {
            if (result[i].Rule.Priority != result.Priority)
                return false;
        }
        return true;
    }

    /// <summary>
    /// The failing case shrunk to the rules that still make it fail, so that the message alone
    /// is a ready-made unit test.
    /// </summary>
    private static string Explain(int seed, int set, int frame, List<Rule> rules, MacAddress src, MacAddress dst, int ingress)
    {
        bool Fails(List<Rule> candidate)
        {
            var result = Table([.. candidate]).Lookup(src, dst, ingress);
            var expected = Reference(candidate, src, dst, ingress);
            return !expected.AsSpan().SequenceEqual(Ids(result)) || !PriorityConsistent(result, expected.Length);
        }

        var minimal = new List<Rule>(rules);
        for (var i = minimal.Count - 1; i >= 0; i--)
        {
            var without = new List<Rule>(minimal);
            without.RemoveAt(i);
            if (Fails(without))
                minimal = without;
        }

        var sb = new StringBuilder();
        sb.AppendLine($"Lookup differs from the linear scan: seed {seed}, rule set {set}, frame {frame}.");
        sb.AppendLine($"Frame: src {src} dst {dst} ingress {ingress} (ports: {string.Join(", ", Ports.Select((p, i) => $"{i}={p}"))}).");
        sb.AppendLine($"Minimal rules ({minimal.Count} of {rules.Count}):");
        foreach (var r in minimal)
            sb.AppendLine($"  #{r.Id} [{r.Priority}] {r}");
        var table = Table([.. minimal]).Lookup(src, dst, ingress);
        sb.AppendLine($"Expected ids: [{string.Join(", ", Reference(minimal, src, dst, ingress))}]");
        sb.AppendLine($"Actual ids:   [{string.Join(", ", Ids(table))}] at priority {table.Priority}");
        return sb.ToString();
    }
}
