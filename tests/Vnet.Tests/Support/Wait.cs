using System.Diagnostics;

namespace Vnet.Tests.Support;

/// <summary>Bounded polling: every wait in a test has a deadline and says what it waited for.</summary>
internal static class Wait
{
    /// <summary>
    /// Polls <paramref name="condition"/> until it holds; throws a <see cref="TimeoutException"/> naming
    /// <paramref name="what"/> when <paramref name="timeout"/> passes first. The condition is checked
    /// once more at the deadline so that a slow poll does not lose a late success.
    /// </summary>
    public static void Until(Func<bool> condition, TimeSpan timeout, string what)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var clock = Stopwatch.StartNew();
        // Start fast (most conditions hold within milliseconds), back off to spare the two CI cores.
        var pause = TimeSpan.FromMilliseconds(5);
        var maxPause = TimeSpan.FromMilliseconds(200);
        while (true)
        {
            if (condition())
                return;
            var left = timeout - clock.Elapsed;
            if (left <= TimeSpan.Zero)
                break;
            Thread.Sleep(pause < left ? pause : left);
            pause = pause * 2 < maxPause ? pause * 2 : maxPause;
        }
        if (condition())
            return;
        throw new TimeoutException($"timed out after {timeout.TotalSeconds:0.###} s waiting for {what}");
    }

    /// <summary>As <see cref="Until(Func{bool}, TimeSpan, string)"/>, returning the first non-null value.</summary>
    public static T For<T>(Func<T?> probe, TimeSpan timeout, string what)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(probe);
        T? value = null;
        Until(() => (value = probe()) is not null, timeout, what);
        return value!;
    }
}
