using Vnet.Frames;
using Vnet.Inference;
using static Vnet.Tests.Inference.Vttif;

namespace Vnet.Tests.Inference;

public sealed class TopologyInferenceTests
{
    private const double Heavy = 1_000_000;

    private static readonly VttifOptions NoHold = new() { HoldTime = TimeSpan.Zero };

    private static PairRate[] Pattern(params (int A, int B)[] edges) =>
        [.. edges.SelectMany(e => new[] { R(e.A, e.B, Heavy / 2), R(e.B, e.A, Heavy / 2) })];

    [Fact]
    public void Update_BothDirections_SummedIntoOneNormalisedEdge()
    {
        var inference = new TopologyInference(NoHold);

        var t = inference.Update([R(1, 2, 600_000), R(2, 1, 400_000), R(3, 4, 500_000)], T(0));

        Assert.Equal([P(1, 2), P(3, 4)], t.Edges.Select(e => e.Pair));
        Assert.Equal(1_000_000, t.Edges[0].BytesPerSecond);
        Assert.Equal(1.0, t.Edges[0].Normalized);
        Assert.Equal(0.5, t.Edges[1].Normalized);
    }

    [Fact]
    public void Update_EdgeUnderThresholdOfStrongest_Pruned()
    {
        var inference = new TopologyInference(NoHold);

        var t = inference.Update([R(1, 2, 1_000_000), R(1, 3, 100_000), R(1, 4, 99_000)], T(0));

        Assert.Equal([P(1, 2), P(1, 3)], Pairs(t));
    }

    [Fact]
    public void Update_EverythingUnderMinRate_NoEdges()
    {
        // An idle network: keep-alives and ARP at a few kB/s. Relative to each other they are
        // strong, but the absolute floor keeps them from forming a topology.
        var inference = new TopologyInference(NoHold);

        var t = inference.Update([R(1, 2, 9_000), R(2, 3, 8_000), R(3, 1, 5_000)], T(0));

        Assert.Empty(t.Edges);
        Assert.Empty(inference.Events);
    }

    [Fact]
    public void Update_MinRate_AppliesBesideTheThreshold()
    {
        var inference = new TopologyInference(NoHold);

        var t = inference.Update([R(1, 2, 50_000), R(3, 4, 10_000), R(5, 6, 9_999)], T(0));

        Assert.Equal([P(1, 2), P(3, 4)], Pairs(t));
    }

    [Fact]
    public void Update_GroupDestinations_NotEdges()
    {
        var inference = new TopologyInference(NoHold);

        var t = inference.Update([new PairRate(Mac(1), MacAddress.Broadcast, 5_000_000), R(1, 2, 100_000)], T(0));

        Assert.Equal([P(1, 2)], Pairs(t));
        Assert.Equal(1.0, t.Edges[0].Normalized);
    }

    [Fact]
    public void Update_NewPattern_BecomesCurrentOnlyAfterHoldTime()
    {
        var inference = new TopologyInference();

        Assert.Empty(inference.Update(Pattern((1, 2)), T(0)).Edges);
        Assert.Equal([P(1, 2)], Pairs(inference.Pending!));
        Assert.Empty(inference.Update(Pattern((1, 2)), T(2.9)).Edges);
        var t = inference.Update(Pattern((1, 2)), T(3));

        Assert.Equal([P(1, 2)], Pairs(t));
        Assert.Equal(T(3), t.Since);
        Assert.Null(inference.Pending);
        var e = Assert.Single(inference.Events);
        Assert.Equal(1, e.Id);
        Assert.Equal(T(3), e.At);
        Assert.Equal([P(1, 2)], e.Added);
        Assert.Empty(e.Removed);
        Assert.Same(t, e.Topology);
    }

    [Fact]
    public void Update_BlipShorterThanHoldTime_NoEvent()
    {
        var inference = Settled(Pattern((1, 2), (3, 4)), out var at);

        // A backup job talks for two seconds, then stops.
        var blip = Pattern((1, 2), (3, 4), (1, 5));
        inference.Update(blip, T(at + 1));
        inference.Update(blip, T(at + 2));
        var t = inference.Update(Pattern((1, 2), (3, 4)), T(at + 3));
        for (var s = at + 4; s < at + 20; s++)
            t = inference.Update(Pattern((1, 2), (3, 4)), T(s));

        Assert.Single(inference.Events);
        Assert.Equal([P(1, 2), P(3, 4)], Pairs(t));
        Assert.Null(inference.Pending);
    }

    [Fact]
    public void Update_SwitchFromPatternAToB_ExactlyOneEventWithTheDifference()
    {
        // A: ring 1-2-3-4-1. B: the other pairing 1-3, 2-4 plus 1-2 kept.
        var a = Pattern((1, 2), (2, 3), (3, 4), (4, 1));
        var b = Pattern((1, 2), (1, 3), (2, 4));
        var inference = Settled(a, out var at);

        for (var s = at + 1; s <= at + 30; s++)
            inference.Update(b, T(s));

        Assert.Equal(2, inference.Events.Count);
        var e = inference.Events[1];
        Assert.Equal([P(1, 3), P(2, 4)], e.Added);
        Assert.Equal([P(1, 4), P(2, 3), P(3, 4)], e.Removed);
        Assert.Equal(T(at + 1 + 3), e.At);
        Assert.Equal(Sorted([P(1, 2), P(1, 3), P(2, 4)]), Pairs(inference.Current));
    }

    [Fact]
    public void Update_SameEdgesNewRates_RatesFollowWithoutEvent()
    {
        var inference = Settled([R(1, 2, 1_000_000), R(3, 4, 1_000_000)], out var at);
        var since = inference.Current.Since;

        var t = inference.Update([R(1, 2, 2_000_000), R(3, 4, 500_000)], T(at + 1));

        Assert.Single(inference.Events);
        Assert.Equal(since, t.Since);
        Assert.Equal(2_000_000, t.Edges[0].BytesPerSecond);
        Assert.Equal(0.25, t.Edges[1].Normalized);
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(7)]
    public void Update_FlappingBetweenTwoPatterns_AtMostOneEventPerHoldTime(double flipEvery)
    {
        var a = Pattern((1, 2), (3, 4));
        var b = Pattern((1, 3), (2, 4));
        var inference = new TopologyInference();
        for (var s = 0.0; s < 120; s += 0.5)
            inference.Update(((int)(s / flipEvery) % 2 == 0) ? a : b, T(s));

        AssertSpacedByHoldTime(inference);
        if (flipEvery < 3)
            Assert.True(inference.Events.Count <= 120 / 9.0 + 1, "a pattern that never holds is only taken when overdue");
    }

    [Fact]
    public void Update_RandomFlapping_EventsNeverCloserThanHoldTime()
    {
        var random = new Random(42);
        var inference = new TopologyInference();
        var t = 0.0;
        for (var i = 0; i < 2000; i++)
        {
            t += random.NextDouble() * 1.5;
            var edges = Enumerable.Range(1, 6).Where(_ => random.Next(3) == 0).Select(k => (k, k + 1)).ToArray();
            inference.Update(Pattern(edges), T(t));
        }

        Assert.NotEmpty(inference.Events);
        AssertSpacedByHoldTime(inference);
    }

    [Fact]
    public void Update_OneEdgeFlickersBesideARealChange_ChangeTakenWithinThreeHoldTimes()
    {
        var inference = Settled(Pattern((1, 2)), out var at);

        // 3-4 starts for good; 5-6 hovers at the threshold, in and out on every update.
        for (var s = 1; s <= 12; s++)
        {
            PairRate[] m = s % 2 == 0 ? [.. Pattern((1, 2), (3, 4)), R(5, 6, 0.2 * Heavy)] : Pattern((1, 2), (3, 4));
            inference.Update(m, T(at + s));
        }

        Assert.Equal(2, inference.Events.Count);
        Assert.Contains(P(3, 4), inference.Events[1].Added);
        Assert.Equal(T(at + 1 + 9), inference.Events[1].At);
    }

    [Fact]
    public void EventsSince_ReturnsLaterEventsAndHistoryIsBounded()
    {
        var inference = new TopologyInference(NoHold with { MaxEvents = 3 });
        for (var i = 0; i < 5; i++)
            inference.Update(Pattern((1, i + 2)), T(i));

        Assert.Equal([3L, 4L, 5L], inference.Events.Select(e => e.Id));
        Assert.Equal([4L, 5L], inference.EventsSince(3).Select(e => e.Id));
        Assert.Empty(inference.EventsSince(5));
        Assert.Equal(3, inference.EventsSince(0).Count);
    }

    [Fact]
    public void Current_BeforeAnyUpdate_IsEmpty()
    {
        var inference = new TopologyInference();

        Assert.Same(InferredTopology.Empty, inference.Current);
        Assert.Empty(inference.Update([], T(5)).Edges);
        Assert.Equal(T(5), inference.Current.Since);
    }

    private static TopologyInference Settled(PairRate[] matrix, out double at)
    {
        var inference = new TopologyInference();
        for (at = 0; at <= 3; at++)
            inference.Update(matrix, T(at));
        at--;
        Assert.Single(inference.Events);
        return inference;
    }

    private static void AssertSpacedByHoldTime(TopologyInference inference)
    {
        // The hold is checked at report ticks that jitter, so it may end up to TickSlack of a period early.
        var hold = inference.Options.HoldTime - (inference.Options.ReportPeriod * TopologyInference.TickSlack);
        var events = inference.Events;
        for (var i = 1; i < events.Count; i++)
            Assert.True(events[i].At - events[i - 1].At >= hold, $"events {events[i - 1].Id} and {events[i].Id} are {events[i].At - events[i - 1].At} apart");
    }
}
