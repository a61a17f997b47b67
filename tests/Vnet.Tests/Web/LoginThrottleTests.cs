using System.Diagnostics;
using System.Net;
using Vnet.Web;

namespace Vnet.Tests.Web;

/// <summary>Wrong tokens per address, on a clock the test moves: the block, its end, and the bounded table.</summary>
public sealed class LoginThrottleTests
{
    private long _now = 1_000_000;

    private LoginThrottle Throttle() => new(() => _now);

    private void Advance(TimeSpan by) => _now += (long)(by.TotalSeconds * Stopwatch.Frequency);

    private static readonly IPAddress Guesser = IPAddress.Parse("192.0.2.66");
    private static readonly IPAddress User = IPAddress.Parse("192.0.2.10");

    [Fact]
    public void TenWrongTokensInAMinute_TheAddressIsRefusedUntilTheWindowEnds_OthersNot()
    {
        var t = Throttle();
        for (var i = 0; i < LoginThrottle.MaxFailures - 1; i++)
            t.Failed(Guesser);
        Assert.Null(t.Blocked(Guesser));

        t.Failed(Guesser);
        Advance(TimeSpan.FromSeconds(20));

        var left = t.Blocked(Guesser);
        Assert.NotNull(left);
        Assert.InRange(left.Value.TotalSeconds, 39, 40.5);
        Assert.Null(t.Blocked(User));
        Advance(TimeSpan.FromSeconds(41));
        Assert.Null(t.Blocked(Guesser));
        Assert.Equal(0, t.Count);
    }

    [Fact]
    public void FailuresSpreadOverWindows_NeverBlock()
    {
        var t = Throttle();
        for (var i = 0; i < 50; i++)
        {
            t.Failed(Guesser);
            Advance(TimeSpan.FromSeconds(7));
        }
        Assert.Null(t.Blocked(Guesser));
    }

    [Fact]
    public void ManyAddresses_TheTableStaysBounded()
    {
        var t = Throttle();
        for (var i = 0; i < LoginThrottle.MaxFailures; i++)
            t.Failed(Guesser);
        Advance(TimeSpan.FromSeconds(1));
        for (var i = 0; i < 3 * LoginThrottle.MaxAddresses; i++)
            t.Failed(new IPAddress(0x0a000000u + (uint)i));

        Assert.InRange(t.Count, 1, LoginThrottle.MaxAddresses);
        Assert.Null(t.Blocked(null));
        t.Failed(null);
    }
}
