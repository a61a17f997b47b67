using Vnet.Inference;
using static Vnet.Tests.Inference.Vttif;

namespace Vnet.Tests.Inference;

public sealed class TrafficAggregatorTests
{
    private const double Rate = 1_000_000;

    /// <summary>A VM sending at a constant rate from t = 0, reported and ticked every <paramref name="period"/> s.</summary>
    [Theory]
    [InlineData(0.25)]
    [InlineData(0.5)]
    [InlineData(1.0)]
    [InlineData(1.5)]
    public void Tick_ConstantRate_ReachesOneMinusOneOverEAfterOneTimeConstant(double period)
    {
        var options = new VttifOptions { ReportPeriod = TimeSpan.FromSeconds(period) };
        var agg = new TrafficAggregator(options);
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        var tau = options.TimeConstant.TotalSeconds;
        var steps = (int)Math.Round(tau / period);
        IReadOnlyList<PairRate> m = [];
        for (var k = 1; k <= steps; k++)
        {
            agg.Report("h1", T(k * period), [E(1, 2, (long)(Rate * k * period))]);
            m = agg.Tick(T(k * period));
        }

        Assert.Equal(1 - Math.Exp(-1), RateOf(m, 1, 2) / Rate, 3);
    }

    [Fact]
    public void Tick_ConstantRateForLong_ConvergesToTheRate()
    {
        var agg = new TrafficAggregator();
        for (var k = 0; k <= 40; k++)
        {
            agg.Report("h1", T(k), [E(1, 2, (long)(Rate * k))]);
            agg.Tick(T(k));
        }

        Assert.Equal(1, RateOf(agg.Current, 1, 2) / Rate, 4);
    }

    [Fact]
    public void Tick_TrafficStops_DecaysByOneOverEEachTimeConstantThenForgets()
    {
        var agg = new TrafficAggregator();
        for (var k = 0; k <= 40; k++)
        {
            agg.Report("h1", T(k), [E(1, 2, (long)(Rate * k))]);
            agg.Tick(T(k));
        }
        var steady = RateOf(agg.Current, 1, 2);
        var stopped = (long)(Rate * 40);

        for (var k = 41; k <= 43; k++)
        {
            agg.Report("h1", T(k), [E(1, 2, stopped)]);
            agg.Tick(T(k));
        }
        Assert.Equal(Math.Exp(-1), RateOf(agg.Current, 1, 2) / steady, 3);

        // ln(1e6) * 3 s is about 41 s to fall under 1 B/s: then the pair leaves the matrix.
        for (var k = 44; k <= 90; k++)
        {
            agg.Report("h1", T(k), [E(1, 2, stopped)]);
            agg.Tick(T(k));
        }
        Assert.Empty(agg.Current);
    }

    [Fact]
    public void Report_FirstReport_IsOnlyABaseline()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 50_000_000_000)]);

        Assert.Empty(agg.Tick(T(1)));
    }

    [Fact]
    public void Report_CountersGoDown_NewValueCountsFromZero()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 1_000_000)]);
        agg.Report("h1", T(1), [E(1, 2, 2_000_000)]);
        Assert.Equal(1_000_000, RateOf(agg.Tick(T(1)), 1, 2), 0);

        // The daemon restarted: its counters start again from zero.
        agg.Report("h1", T(2), [E(1, 2, 300_000)]);

        var m = agg.Tick(T(2));
        Assert.Equal(300_000, RateOf(m, 1, 2), 0);
        Assert.All(m, p => Assert.True(p.BytesPerSecond >= 0));
    }

    [Fact]
    public void Report_FramesGoDownWhileBytesClimbPast_TreatedAsRestart()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 1_000_000, 1000)]);
        agg.Report("h1", T(1), [E(1, 2, 3_000_000, 100)]);

        Assert.Equal(3_000_000, RateOf(agg.Tick(T(1)), 1, 2), 0);
    }

    [Fact]
    public void Report_PairMissing_IsForgottenAndCountsFromZeroWhenBack()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 5_000_000), E(1, 3, 0)]);
        agg.Report("h1", T(1), [E(1, 3, 100_000)]);
        var m = agg.Tick(T(1));
        Assert.Equal(0, RateOf(m, 1, 2));
        Assert.Equal(100_000, RateOf(m, 1, 3), 0);

        // Back with a lower cumulative value than it had: not a negative rate, a fresh count.
        agg.Report("h1", T(2), [E(1, 2, 200_000), E(1, 3, 100_000)]);
        Assert.Equal(200_000, RateOf(agg.Tick(T(2)), 1, 2), 0);
    }

    [Fact]
    public void Report_NotNewerThanPrevious_Ignored()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        agg.Report("h1", T(1), [E(1, 2, 1_000_000)]);
        agg.Report("h1", T(1), [E(1, 2, 9_000_000)]);
        agg.Report("h1", T(0.5), [E(1, 2, 9_000_000)]);

        Assert.Equal(2, agg.IgnoredReports);
        Assert.Equal(1_000_000, RateOf(agg.Tick(T(1)), 1, 2), 0);
    }

    [Fact]
    public void Tick_SeveralReportsBetweenTicks_AveragesThemOverTheirTime()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        agg.Report("h1", T(0.5), [E(1, 2, 100_000)]);
        agg.Report("h1", T(1.0), [E(1, 2, 400_000)]);

        Assert.Equal(400_000, RateOf(agg.Tick(T(1)), 1, 2), 0);
    }

    [Fact]
    public void Tick_DaemonLateByATick_ReusesItsLatestRateUntilSilentTooLong()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        agg.Report("h1", T(1), [E(1, 2, 1_000_000)]);
        Assert.Equal(1_000_000, RateOf(agg.Tick(T(1)), 1, 2), 0);

        // No report by the next tick, but the last is only 1 s old: late, not gone.
        Assert.Equal(1_000_000, RateOf(agg.Tick(T(2)), 1, 2), 0);

        // Silent for more than 2 report periods: counts as sending nothing.
        Assert.Equal(0, RateOf(agg.Tick(T(3.5)), 1, 2));
    }

    [Fact]
    public void Tick_ReportsSlowerThanTicks_MeanStaysAtTheRate()
    {
        // Reports every 2 s, ticks every second: each report's rate stands in for the tick without one.
        var agg = new TrafficAggregator(new VttifOptions { ReportPeriod = TimeSpan.FromSeconds(2) });
        var samples = new List<double>();
        for (var k = 0; k <= 60; k++)
        {
            if (k % 2 == 0)
                agg.Report("h1", T(k), [E(1, 2, (long)(Rate * k))]);
            var m = agg.Tick(T(k));
            if (k > 40)
                samples.Add(RateOf(m, 1, 2));
        }

        Assert.All(samples, s => Assert.Equal(1, s / Rate, 4));
    }

    [Fact]
    public void Tick_ReportsJitterAroundTicks_NoDips()
    {
        var agg = new TrafficAggregator();
        var random = new Random(7);
        var samples = new List<double>();
        var at = 0.0;
        var nextTick = 1.0;
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        while (nextTick <= 60)
        {
            at += 1 + ((random.NextDouble() - 0.5) * 0.3);
            // Ticks that fall before this report see no fresh report from h1.
            while (nextTick < at && nextTick <= 60)
            {
                var m = agg.Tick(T(nextTick));
                if (nextTick > 30)
                    samples.Add(RateOf(m, 1, 2));
                nextTick++;
            }
            agg.Report("h1", T(at), [E(1, 2, (long)(Rate * at))]);
        }

        Assert.All(samples, s => Assert.InRange(s, Rate * 0.9, Rate * 1.1));
    }

    [Fact]
    public void Tick_TwoDaemonsReportTheSamePair_RatesAdd()
    {
        // During a migration both the old and the new host can see the VM send.
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        agg.Report("h2", T(0.2), [E(1, 2, 0)]);
        agg.Report("h1", T(1), [E(1, 2, 300_000)]);
        agg.Report("h2", T(1.2), [E(1, 2, 100_000)]);

        Assert.Equal(400_000, RateOf(agg.Tick(T(1.5)), 1, 2), 0);
    }

    [Fact]
    public void Forget_Daemon_PairsDecayAndNextReportIsABaseline()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        agg.Report("h1", T(1), [E(1, 2, 1_000_000)]);
        agg.Tick(T(1));

        Assert.True(agg.Forget("h1"));
        Assert.Empty(agg.Tick(T(2)));

        agg.Report("h1", T(3), [E(1, 2, 5_000)]);
        Assert.Empty(agg.Tick(T(3)));
        agg.Report("h1", T(4), [E(1, 2, 15_000)]);
        Assert.Equal(10_000, RateOf(agg.Tick(T(4)), 1, 2), 0);
    }

    [Fact]
    public void Tick_NotAfterPrevious_ChangesNothing()
    {
        var agg = new TrafficAggregator();
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        agg.Report("h1", T(1), [E(1, 2, 1_000_000)]);
        var first = agg.Tick(T(1));

        Assert.Same(first, agg.Tick(T(1)));
        Assert.Same(first, agg.Tick(T(0.5)));
    }

    [Fact]
    public void Report_MorePairsThanTheCap_KeepsAtMostTheCapStrongest()
    {
        var agg = new TrafficAggregator(Raw with { MaxPairs = 10 });
        var n = 30;
        agg.Report("h1", T(0), [.. Enumerable.Range(1, n).Select(i => E(100, i, 0))]);
        agg.Report("h2", T(0), [.. Enumerable.Range(1, n).Select(i => E(200, i, 0))]);
        agg.Report("h1", T(1), [.. Enumerable.Range(1, n).Select(i => E(100, i, i * 1000L))]);
        agg.Report("h2", T(1), [.. Enumerable.Range(1, n).Select(i => E(200, i, i * 1_000_000L))]);

        var m = agg.Tick(T(1));

        Assert.Equal(10, m.Count);
        Assert.True(agg.DroppedPairs > 0);
        Assert.All(m, p => Assert.True(p.BytesPerSecond >= 1_000_000));
    }

    [Fact]
    public void Report_SelfPairsAndNegativeCounters_Ignored()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 1, 0), E(1, 2, -5)]);
        agg.Report("h1", T(1), [E(1, 1, 1_000_000), E(1, 2, -1)]);

        Assert.Empty(agg.Tick(T(1)));
    }

    [Fact]
    public void Current_IsSortedBySourceThenDestination()
    {
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(3, 1, 0), E(1, 3, 0), E(1, 2, 0)]);
        agg.Report("h1", T(1), [E(3, 1, 10), E(1, 3, 10), E(1, 2, 10)]);

        var m = agg.Tick(T(1));

        Assert.Equal([(1, 2), (1, 3), (3, 1)], m.Select(p => ((int)p.Source.Value & 0xff, (int)p.Destination.Value & 0xff)));
    }

    [Fact]
    public void Constructor_BadOptions_Throw()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new TrafficAggregator(new VttifOptions { TimeConstant = TimeSpan.Zero }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TrafficAggregator(new VttifOptions { PruneThreshold = 1.5 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TopologyInference(new VttifOptions { HoldTime = TimeSpan.FromSeconds(-1) }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TopologyInference(new VttifOptions { MinRate = double.NaN }));
    }
}
