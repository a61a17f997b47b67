using Vnet.Daemon;

namespace Vnet.Tests.Daemon;

/// <summary>At most N lines per reason per minute, then one line saying how many were left out.</summary>
public sealed class LogLimiterTests
{
    private readonly ManualClock _clock = new();

    [Fact]
    public void TryAcquire_FirstNLinesOfAReason_AllowedTheRestCounted()
    {
        var limiter = new LogLimiter(3, _clock);

        var allowed = Enumerable.Range(0, 10).Count(i => limiter.TryAcquire("bad", out _));

        Assert.Equal(3, allowed);
        Assert.Equal(7, limiter.Suppressed);
    }

    [Fact]
    public void TryAcquire_ReasonsHaveBudgetsOfTheirOwn()
    {
        var limiter = new LogLimiter(2, _clock);
        for (var i = 0; i < 5; i++)
            limiter.TryAcquire("flood", out _);

        Assert.True(limiter.TryAcquire("bad", out _));
        Assert.True(limiter.TryAcquire("bad", out _));
        Assert.False(limiter.TryAcquire("bad", out _));
    }

    [Fact]
    public void TryAcquire_AfterTheWindow_AllowedAgainAndTellsHowManyWereLeftOut()
    {
        var limiter = new LogLimiter(2, _clock);
        for (var i = 0; i < 12; i++)
            limiter.TryAcquire("bad", out _);

        _clock.Advance(TimeSpan.FromSeconds(59));
        Assert.False(limiter.TryAcquire("bad", out var early));
        Assert.Equal(0, early);

        _clock.Advance(TimeSpan.FromSeconds(1));
        Assert.True(limiter.TryAcquire("bad", out var suppressed));
        Assert.Equal(11, suppressed);
        Assert.True(limiter.TryAcquire("bad", out suppressed));
        Assert.Equal(0, suppressed);
    }

    [Fact]
    public void Drain_ReportsEachReasonWhoseWindowIsOverOnce()
    {
        var limiter = new LogLimiter(1, _clock);
        for (var i = 0; i < 4; i++)
            limiter.TryAcquire("bad", out _);
        limiter.TryAcquire("quiet", out _);
        var reports = new List<(string, long)>();

        limiter.Drain((reason, count) => reports.Add((reason, count)));
        Assert.Empty(reports);

        _clock.Advance(LogLimiter.Window);
        limiter.Drain((reason, count) => reports.Add((reason, count)));
        limiter.Drain((reason, count) => reports.Add((reason, count)));

        Assert.Equal([("bad", 3L)], reports);
        // After a drain the next line is allowed and owes nothing.
        Assert.True(limiter.TryAcquire("bad", out var suppressed));
        Assert.Equal(0, suppressed);
    }

    [Fact]
    public void TryAcquire_ManyDistinctReasons_ShareOneBudgetPastTheLimit()
    {
        var limiter = new LogLimiter(1, _clock);
        var allowed = 0;
        for (var i = 0; i < 1000; i++)
        {
            if (limiter.TryAcquire($"reason {i}", out _))
                allowed++;
        }

        Assert.Equal(LogLimiter.MaxReasons, allowed);
    }

    [Fact]
    public void TryAcquire_ManyThreads_NeverMoreThanTheBudget()
    {
        var limiter = new LogLimiter(5, _clock);
        var allowed = 0;

        Parallel.For(0, 10_000, _ =>
        {
            if (limiter.TryAcquire("bad", out _))
                Interlocked.Increment(ref allowed);
        });

        Assert.Equal(5, allowed);
        Assert.Equal(9_995, limiter.Suppressed);
    }

    private sealed class ManualClock : TimeProvider
    {
        private long _ticks = 1_000_000;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => Interlocked.Read(ref _ticks);

        public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
    }
}
