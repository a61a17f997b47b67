using Vnet.Forwarding;
using Vnet.Frames;
using static Vnet.Tests.Forwarding.Fwd;

namespace Vnet.Tests.Forwarding;

public sealed class RuleTests
{
    private static readonly MacMatch ExactA = MacMatch.Exact(Mac(1));
    private static readonly MacMatch ExactB = MacMatch.Exact(Mac(2));

    private static int P(MacMatch source, MacMatch destination, bool ingress = false) =>
        NewRule(1, source, destination, ingress: ingress ? Vm0 : null).Priority;

    // Priority.

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Priority_Destination_ExactBeatsMulticastBeatsAny(bool exactSource)
    {
        var src = exactSource ? ExactA : MacMatch.Any;

        Assert.True(P(src, ExactB) > P(src, MacMatch.Multicast));
        Assert.True(P(src, MacMatch.Multicast) > P(src, MacMatch.Any));
        Assert.True(P(src, MacMatch.Any) > P(src, MacMatch.None));
    }

    [Theory]
    [InlineData(MacMatchKind.Exact)]
    [InlineData(MacMatchKind.Multicast)]
    [InlineData(MacMatchKind.Any)]
    [InlineData(MacMatchKind.None)]
    public void Priority_ExactSource_BeatsAnySourceWithSameDestination(MacMatchKind destination)
    {
        var dst = new MacMatch(destination, destination == MacMatchKind.Exact ? Mac(2) : default);

        Assert.True(P(ExactA, dst) > P(MacMatch.Any, dst));
    }

    [Theory]
    [InlineData(MacMatchKind.Exact, MacMatchKind.Exact)]
    [InlineData(MacMatchKind.Exact, MacMatchKind.Multicast)]
    [InlineData(MacMatchKind.Exact, MacMatchKind.Any)]
    [InlineData(MacMatchKind.Exact, MacMatchKind.None)]
    [InlineData(MacMatchKind.Any, MacMatchKind.Exact)]
    [InlineData(MacMatchKind.Any, MacMatchKind.Multicast)]
    [InlineData(MacMatchKind.Any, MacMatchKind.Any)]
    [InlineData(MacMatchKind.Any, MacMatchKind.None)]
    public void Priority_RuleWithIngress_BeatsSameShapeWithoutAndNothingStronger(MacMatchKind source, MacMatchKind destination)
    {
        var with = Rule.ComputePriority(source, destination, hasIngress: true);
        var without = Rule.ComputePriority(source, destination, hasIngress: false);

        Assert.Equal(without + 1, with);
    }

    [Fact]
    public void Priority_ExactAnyAndAnyExact_AreTied()
    {
        Assert.Equal(P(ExactA, MacMatch.Any), P(MacMatch.Any, ExactB));
        Assert.Equal(P(ExactA, MacMatch.Any, ingress: true), P(MacMatch.Any, ExactB, ingress: true));
    }

    [Fact]
    public void Priority_DefaultRuleEvenWithIngress_WeakerThanEveryOtherShape()
    {
        var strongestDefault = P(ExactA, MacMatch.None, ingress: true);

        Assert.True(strongestDefault < P(MacMatch.Any, MacMatch.Any));
        Assert.True(P(MacMatch.Any, MacMatch.None) < P(ExactA, MacMatch.None));
    }

    [Fact]
    public void Priority_ValidShapes_OnlyExactAnyAndAnyExactShareAPriority()
    {
        var seen = new Dictionary<int, (MacMatchKind, MacMatchKind, bool)>();
        var shared = new List<string>();
        foreach (var src in new[] { MacMatchKind.Exact, MacMatchKind.Any })
        {
            foreach (var dst in Enum.GetValues<MacMatchKind>())
            {
                foreach (var ingress in new[] { false, true })
                {
                    var p = Rule.ComputePriority(src, dst, ingress);
                    if (seen.TryGetValue(p, out var other))
                        shared.Add($"{other} ~ {(src, dst, ingress)}");
                    else
                        seen[p] = (src, dst, ingress);
                }
            }
        }

        Assert.Equal(
            ["(Exact, Any, False) ~ (Any, Exact, False)", "(Exact, Any, True) ~ (Any, Exact, True)"],
            shared);
    }

    // Validate.

    [Fact]
    public void Validate_ExactOrAnySourceWithEveryDestination_ReturnsNull()
    {
        foreach (var src in new[] { ExactA, MacMatch.Any })
        {
            foreach (var dst in new[] { ExactB, MacMatch.Multicast, MacMatch.Any, MacMatch.None })
            {
                Assert.Null(NewRule(1, src, dst).Validate());
                Assert.Null(NewFlood(1, src, dst, ingress: Proxy).Validate());
            }
        }
    }

    [Fact]
    public void Validate_ExactGroupDestination_ReturnsNull()
    {
        Assert.Null(NewRule(1, MacMatch.Any, MacMatch.Exact(MacAddress.Broadcast)).Validate());
        Assert.Null(NewRule(1, MacMatch.Any, MacMatch.Exact(Group(1))).Validate());
    }

    [Fact]
    public void Validate_MulticastSourceAddress_ReturnsReason()
    {
        var reason = NewRule(1, MacMatch.Exact(Group(1)), MacMatch.Any).Validate();

        Assert.NotNull(reason);
        Assert.Contains("group address", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_BroadcastSourceAddress_ReturnsReason()
    {
        Assert.NotNull(NewRule(1, MacMatch.Exact(MacAddress.Broadcast), MacMatch.Any).Validate());
    }

    [Fact]
    public void Validate_NoneSource_ReturnsReason()
    {
        Assert.NotNull(NewRule(1, MacMatch.None, MacMatch.Any).Validate());
    }

    [Fact]
    public void Validate_MulticastSource_ReturnsReason()
    {
        Assert.NotNull(NewRule(1, MacMatch.Multicast, MacMatch.Any).Validate());
    }

    [Theory]
    [InlineData("")]
    [InlineData("-tap")]
    [InlineData("tap 0")]
    [InlineData("tap:0")]
    [InlineData("tap/0")]
    [InlineData("abcdefghijklmnopqrstuvwxyz0123456")]
    public void Validate_BadActionPortName_ReturnsReason(string name)
    {
        var reason = NewRule(1, ExactA, MacMatch.Any, action: PortRef.Interface(name)).Validate();

        Assert.NotNull(reason);
        Assert.Contains("action port", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_ActionWithoutPort_ReturnsReason()
    {
        var rule = new Rule { Source = ExactA, Destination = MacMatch.Any, Action = default };

        Assert.NotNull(rule.Validate());
    }

    [Theory]
    [InlineData("")]
    [InlineData("_x")]
    [InlineData("a b")]
    public void Validate_BadIngressPortName_ReturnsReason(string name)
    {
        var reason = NewRule(1, ExactA, MacMatch.Any, ingress: PortRef.Link(name)).Validate();

        Assert.NotNull(reason);
        Assert.Contains("arrival port", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Validate_LongestValidNames_ReturnsNull()
    {
        var name = new string('a', Names.MaxLength);

        Assert.Null(NewRule(1, ExactA, MacMatch.Any, action: PortRef.Link(name), ingress: PortRef.Interface(name)).Validate());
    }

    // Identity and text.

    [Fact]
    public void SameMatchAndAction_DifferentIdAndOrigin_ReturnsTrue()
    {
        var a = NewRule(1, ExactA, ExactB, action: Proxy, ingress: Vm0);
        var b = a with { Id = 2, Origin = RuleOrigin.System };

        Assert.True(a.SameMatchAndAction(b));
        Assert.NotEqual(a, b);
    }

    [Fact]
    public void SameMatchAndAction_DifferentAction_ReturnsFalse()
    {
        var a = NewRule(1, ExactA, ExactB, action: Proxy);

        Assert.False(a.SameMatchAndAction(a with { Action = RuleAction.To(Peer) }));
        Assert.False(a.SameMatchAndAction(a with { Action = RuleAction.Flood }));
        Assert.False(a.SameMatchAndAction(a with { Ingress = Vm0 }));
    }

    [Fact]
    public void ToString_RuleWithIngress_ShowsMatchArrivalAndAction()
    {
        var rule = NewRule(1, ExactA, MacMatch.Multicast, action: Proxy, ingress: Vm0);

        Assert.Equal("02:00:00:00:00:01 -> multicast from if:vm0 => link:proxy", rule.ToString());
        Assert.Equal("any -> none => flood", NewFlood(2, MacMatch.Any, MacMatch.None).ToString());
    }
}
