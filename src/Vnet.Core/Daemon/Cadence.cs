using System.Diagnostics;

namespace Vnet.Daemon;

/// <summary>
/// One grid for every periodic job of a daemon: a job of period P runs at the multiples of P on
/// the monotonic clock, not P after whenever it started. Jobs whose periods are multiples of each
/// other then fall due at the same instants (the link clock's ticks with every 1 s job of the
/// control loop, the 3 s anti-entropy on every third of those), so an idle daemon wakes once for
/// all of them instead of once for each, at phases that drifted apart: what an idle daemon costs is
/// wake-ups. One thread sleeps for them all (<see cref="DaemonClock"/>).
/// </summary>
public static class Cadence
{
    /// <summary>The first grid instant of <paramref name="period"/> after <paramref name="now"/> (Stopwatch ticks).</summary>
    public static long NextDue(long now, TimeSpan period)
    {
        var p = Ticks(period);
        return (now / p + 1) * p;
    }

    /// <summary>
    /// A new job's first grid instant: at least a whole period after <paramref name="now"/>, as a
    /// plain timer's first tick would be (a job that checks on what start-up set going must not run early).
    /// </summary>
    public static long FirstDue(long now, TimeSpan period) => NextDue(now + Ticks(period), period);

    private static long Ticks(TimeSpan period) => Math.Max(1, (long)(period.TotalSeconds * Stopwatch.Frequency));

    /// <summary>How long to sleep from <paramref name="now"/> until <paramref name="due"/>, rounded up to whole milliseconds (timers' resolution) so a job never runs early.</summary>
    public static TimeSpan Until(long due, long now)
    {
        var ticks = Math.Max(0, due - now);
        var ms = (ticks * 1000 + Stopwatch.Frequency - 1) / Stopwatch.Frequency;
        return TimeSpan.FromMilliseconds(ms);
    }
}
