using System.Diagnostics;
using Vnet.Inference;
using static Vnet.Tests.Inference.Vttif;

namespace Vnet.Tests.Inference;

/// <summary>
/// A host's VTTIF reports through its <see cref="ReportGate"/> into the Proxy's
/// <see cref="TrafficAggregator"/>: an idle host stays silent, a new burst is reported at once and
/// at its rate, and the Proxy's view is the one it had when every period was reported.
/// </summary>
public sealed class ReportGateTests
{
    private const double Rate = 1_000_000;

    /// <summary>A host and the Proxy, one report period (1 s) per step; the host's VM 1 sends to VM 2.</summary>
    private sealed class Star(VttifOptions? options = null, bool gated = true)
    {
        public ReportGate Gate { get; } = new();
        public TrafficAggregator Proxy { get; } = new(options);
        public List<int> ReportedAt { get; } = [];
        public IReadOnlyList<PairRate> Smoothed { get; private set; } = [];
        public long Bytes { get; set; }

        public void Step(int second, bool linksMoved = false)
        {
            var frames = Bytes / 1000;
            var resumed = false;
            if (!gated || Gate.ShouldSend(frames, linksMoved, 2, At(second), out resumed))
            {
                Proxy.Report("h1", T(second), [E(1, 2, Bytes)], resumed);
                Gate.Sent(frames, linksMoved, 2, At(second));
                ReportedAt.Add(second);
            }
            Smoothed = Proxy.Tick(T(second) + TimeSpan.FromMilliseconds(300));
        }
    }

    /// <summary>A report period's start on the monotonic clock (Stopwatch ticks), second <paramref name="s"/>.</summary>
    private static long At(double s) => (long)(s * Stopwatch.Frequency);

    [Fact]
    public void Idle_AfterTrafficStops_OneQuietReportThenSilentUntilTheHeartbeat()
    {
        var star = new Star();
        for (var s = 0; s <= 5; s++)
        {
            star.Bytes = (long)(Rate * s);
            star.Step(s);
        }
        for (var s = 6; s <= 65; s++)
            star.Step(s);

        // Every second while traffic flows, one quiet report after it stops, then a heartbeat at
        // each multiple of 30 s on the monotonic clock (where the digest heartbeat goes too).
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 30, 60], star.ReportedAt);
    }

    [Fact]
    public void Heartbeat_OnTheGridOfItsPeriod_NotCountedFromTheLastReport()
    {
        var gate = new ReportGate(TimeSpan.FromSeconds(10));
        var reported = new List<double>();
        // Periods at 0.25 s past each second (a clock's wake-up a little after the grid instant).
        for (var s = 0; s <= 35; s++)
        {
            var frames = s == 13 ? 1 : s > 13 ? 1 : 0;
            if (gate.ShouldSend(frames, false, 2, At(s + 0.25), out _))
            {
                gate.Sent(frames, false, 2, At(s + 0.25));
                reported.Add(s);
            }
        }
        // The first two, then 10 and 20 and 30 (not 10 s after the reports at 13 and 14).
        Assert.Equal([0, 1, 10, 13, 14, 20, 30], reported);
    }

    [Fact]
    public void Heartbeat_NotPositive_Refused() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new ReportGate(TimeSpan.Zero));

    [Fact]
    public void TrafficResumesAfterLongSilence_ReportedAtOnceAtItsRate()
    {
        var star = new Star(Raw);
        star.Step(0);
        for (var s = 1; s <= 40; s++)
            star.Step(s);
        Assert.Equal(0, RateOf(star.Smoothed, 1, 2));

        // A burst in second 41 (the last heartbeat was at 30): reported at once, marked resumed
        // (periods were skipped), so counted over one period, not over the silence.
        star.Bytes = (long)Rate;
        star.Step(41);
        Assert.Equal(41, star.ReportedAt[^1]);
        Assert.Equal(Rate, RateOf(star.Smoothed, 1, 2), 0);

        star.Step(42);
        star.Step(43);
        star.Bytes += (long)Rate / 2;
        star.Step(44);
        Assert.Equal(Rate / 2, RateOf(star.Smoothed, 1, 2), 0);
    }

    [Fact]
    public void WithoutTheResumedMark_ABurstAfterSilenceWouldBeDiluted()
    {
        // What the mark prevents: the same report, not marked, spreads the burst over the silence.
        var agg = new TrafficAggregator(Raw);
        agg.Report("h1", T(0), [E(1, 2, 0)]);
        agg.Tick(T(0.3));
        agg.Report("h1", T(20), [E(1, 2, (long)Rate)]);
        Assert.Equal(Rate / 20, RateOf(agg.Tick(T(20.3)), 1, 2), 0);
    }

    [Fact]
    public void ProxyView_IsTheOneEveryReportGave_AndDecaysToNothing()
    {
        var gated = new Star();
        var everyPeriod = new Star(gated: false);
        for (var s = 0; s <= 80; s++)
        {
            // 8 s of traffic, 20 s of silence, 5 s of traffic, silence.
            var sending = s is > 0 and <= 8 or > 28 and <= 33;
            if (sending)
            {
                gated.Bytes += (long)Rate;
                everyPeriod.Bytes += (long)Rate;
            }
            gated.Step(s);
            everyPeriod.Step(s);
            Assert.Equal(RateOf(everyPeriod.Smoothed, 1, 2), RateOf(gated.Smoothed, 1, 2), 6);
        }
        Assert.True(gated.ReportedAt.Count < everyPeriod.ReportedAt.Count / 2, $"{gated.ReportedAt.Count} reports");
        // Decayed below the threshold and forgotten (tau 3 s, 47 s after the last traffic).
        Assert.Empty(gated.Smoothed);
    }

    [Fact]
    public void LinksCarryingBytes_AreReportedEvenWithoutMatrixTraffic()
    {
        var gate = new ReportGate();
        Assert.True(gate.ShouldSend(0, false, 2, At(1), out _));
        gate.Sent(0, false, 2, At(1));
        Assert.True(gate.ShouldSend(0, false, 2, At(1), out _)); // the quiet report after the first
        gate.Sent(0, false, 2, At(1));
        Assert.False(gate.ShouldSend(0, false, 2, At(1), out _));
        Assert.True(gate.ShouldSend(0, true, 2, At(1), out var resumed));
        Assert.True(resumed);
        gate.Sent(0, true, 2, At(1));
        Assert.True(gate.ShouldSend(0, false, 2, At(1), out resumed));
        Assert.False(resumed);
        gate.Sent(0, false, 2, At(1));
        // A new link, or a link's first RTT, changes the shape: reported.
        Assert.True(gate.ShouldSend(0, false, 3, At(1), out _));
    }

    [Fact]
    public void Reset_StarRestarted_NextPeriodReports()
    {
        var gate = new ReportGate();
        for (var i = 0; i < 3; i++)
        {
            if (gate.ShouldSend(5, false, 2, At(1), out _))
                gate.Sent(5, false, 2, At(1));
        }
        Assert.False(gate.ShouldSend(5, false, 2, At(1), out _));
        gate.Reset();
        Assert.True(gate.ShouldSend(5, false, 2, At(1), out var resumed));
        Assert.False(resumed);
    }

    [Fact]
    public void UnsentReport_IsTriedAgainNextPeriod()
    {
        var gate = new ReportGate();
        gate.ShouldSend(0, false, 2, At(1), out _);
        gate.Sent(0, false, 2, At(1));
        gate.ShouldSend(0, false, 2, At(1), out _);
        gate.Sent(0, false, 2, At(1));
        Assert.True(gate.ShouldSend(7, false, 2, At(1), out _));
        // Not sent (the star was down): still due.
        Assert.True(gate.ShouldSend(7, false, 2, At(1), out _));
    }
}
