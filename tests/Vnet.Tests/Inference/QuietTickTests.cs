using System.Diagnostics;
using Vnet.Frames;
using Vnet.Inference;
using static Vnet.Tests.Inference.Vttif;

namespace Vnet.Tests.Inference;

/// <summary>
/// An idle Proxy's VTTIF tick: with nothing reported and nothing left to decay, the aggregator and
/// the inference return what they had without computing anything, and what they show is what the
/// full computation gives, before, during and after the rest: a report with traffic is folded at
/// the next tick, and traffic that stops still decays to nothing.
/// </summary>
public sealed class QuietTickTests
{
    private const double Rate = 1_000_000;

    [Fact]
    public void Aggregator_NothingReported_RestsAndReturnsTheSameMatrix()
    {
        var agg = new TrafficAggregator();
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        var first = agg.Tick(T(0.5));
        Assert.Empty(first);
        Assert.True(agg.AtRest);

        // A host that reports zero deltas (a heartbeat) or not at all: nothing to fold.
        agg.Report("h1", T(1), [E(1, 2, 0)]);
        Assert.Same(first, agg.Tick(T(1.5)));
        Assert.Same(first, agg.Tick(T(2.5)));
        Assert.Equal(3, agg.RestingTicks);
    }

    [Fact]
    public void Aggregator_ReportWithTrafficAfterRest_FoldedAtTheNextTickAtItsRate()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        for (var s = 1; s <= 20; s++)
        {
            // Reported every second, nothing moving: the time piles up at each rest, and is used up by it.
            agg.Report("h1", T(s), [E(1, 2, 0)]);
            agg.Tick(T(s + 0.3));
        }
        Assert.Equal(20, agg.RestingTicks);

        agg.Report("h1", T(21), [E(1, 2, (long)Rate)]);
        Assert.False(agg.AtRest);
        var m = agg.Tick(T(21.3));

        // Over the one second it took, not over the 21 of rest.
        Assert.Equal(Rate, RateOf(m, 1, 2), 0);
        Assert.Equal(20, agg.RestingTicks);
    }

    [Fact]
    public void Aggregator_TrafficStops_DecaysToNothingThenRests()
    {
        var agg = new TrafficAggregator();
        long bytes = 0;
        double last = 0;
        var forgotten = -1;
        long restsBefore = 0;
        for (var s = 0; s <= 80; s++)
        {
            if (s <= 10)
                bytes = (long)(Rate * s);
            agg.Report("h1", T(s), [E(1, 2, bytes)]);
            var rate = RateOf(agg.Tick(T(s + 0.3)), 1, 2);
            if (s == 0)
                restsBefore = agg.RestingTicks; // the first report is a baseline only: nothing to fold yet
            if (s > 11 && last > 0)
            {
                // e^(-1 s / 3 s) a tick while it decays, then forgotten under 1 B/s.
                if (rate > 0)
                    Assert.Equal(Math.Exp(-1.0 / 3), rate / last, 6);
                else
                    forgotten = s;
            }
            last = rate;
            // No rest while anything is left to decay; one at every tick after.
            var rests = agg.RestingTicks - restsBefore;
            Assert.Equal(forgotten >= 0 && s > forgotten ? s - forgotten : 0, rests);
        }
        Assert.InRange(forgotten, 45, 60);
        Assert.Empty(agg.Current);
        Assert.True(agg.AtRest);
    }

    [Fact]
    public void Inference_EmptyMatrixNoTopology_ReturnsTheTopologyAsItIs()
    {
        var inference = new TopologyInference();
        var first = inference.Update([], T(0));
        var again = inference.Update([], T(1));
        Assert.Same(first, again);
        Assert.Equal(T(0), again.Since);
        Assert.Equal(0, inference.LastEventId);

        // Traffic after the rest: a topology after the hold time, as ever.
        for (var s = 2; s <= 6; s++)
            inference.Update([R(1, 2, 50_000)], T(s));
        Assert.Equal(1, inference.LastEventId);
        Assert.Equal([P(1, 2)], Pairs(inference.Current));
    }

    /// <summary>
    /// The Proxy's view through rests equals the full computation's: one aggregator and inference
    /// see a host's gated reports (traffic, 50 s of silence in which the matrix decays to nothing and
    /// they rest, traffic again, silence); a second pair sees the same plus a pair that never stops
    /// (a group destination, which is no edge), so it never rests. Every tick, the first pair's
    /// rate, topology and events equal the second's.
    /// </summary>
    [Fact]
    public void ProxyView_ThroughRests_EqualsTheFullComputation()
    {
        var options = new VttifOptions();
        var gate = new ReportGate();
        var (resting, full) = (new TrafficAggregator(options), new TrafficAggregator(options));
        var (restingInference, fullInference) = (new TopologyInference(options), new TopologyInference(options));
        var group = new MacAddress(0xFFFF_FFFF_FFFFUL);
        var vm9 = Mac(9);
        long bytes = 0, always = 0;
        full.Report("h2", T(-0.3), [new MatrixEntry(vm9, group, 0, 0)]);
        for (var s = 0; s <= 150; s++)
        {
            if (s is > 0 and <= 10 or > 70 and <= 75)
                bytes += (long)Rate;
            always += 1000;
            var at = (long)((s + 0.7) * Stopwatch.Frequency);
            if (gate.ShouldSend(bytes / 1000, false, 2, at, out var resumed))
            {
                resting.Report("h1", T(s + 0.7), [E(1, 2, bytes)], resumed);
                full.Report("h1", T(s + 0.7), [E(1, 2, bytes)], resumed);
                gate.Sent(bytes / 1000, false, 2, at);
            }
            full.Report("h2", T(s + 0.7), [new MatrixEntry(vm9, group, always, always / 100)]);

            var tick = T(s + 1);
            var a = resting.Tick(tick);
            var b = full.Tick(tick);
            Assert.Equal(RateOf(b, 1, 2), RateOf(a, 1, 2), 6);
            var ta = restingInference.Update(a, tick);
            var tb = fullInference.Update(b, tick);
            Assert.Equal(Pairs(tb), Pairs(ta));
            Assert.Equal(tb.Since, ta.Since);
            Assert.Equal(tb.Edges.Select(e => e.BytesPerSecond), ta.Edges.Select(e => e.BytesPerSecond));
            Assert.Equal(fullInference.LastEventId, restingInference.LastEventId);
            Assert.Equal(fullInference.Pending is null, restingInference.Pending is null);
        }

        // Both patterns raised a topology and its end (4 events); the rests came in both silences.
        Assert.Equal(4, restingInference.LastEventId);
        Assert.Equal(0, full.RestingTicks);
        Assert.InRange(resting.RestingTicks, 40, 100);
        Assert.Empty(resting.Current);
    }
}
