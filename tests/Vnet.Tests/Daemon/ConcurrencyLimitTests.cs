using Vnet.Daemon;

namespace Vnet.Tests.Daemon;

public sealed class ConcurrencyLimitTests
{
    [Fact]
    public void TryEnter_UpToMax_ThenRefusedAndCountedUntilOneExits()
    {
        var limit = new ConcurrencyLimit(2);

        Assert.True(limit.TryEnter());
        Assert.True(limit.TryEnter());
        Assert.False(limit.TryEnter());
        Assert.False(limit.TryEnter());
        Assert.Equal((2, 2L), (limit.Active, limit.Refused));

        limit.Exit();
        Assert.True(limit.TryEnter());
        Assert.Equal(2, limit.Active);
    }

    [Fact]
    public void TryEnter_ManyThreads_NeverMoreThanMaxAtOnce()
    {
        var limit = new ConcurrencyLimit(4);
        var inside = 0;
        var most = 0;

        Parallel.For(0, 20_000, _ =>
        {
            if (!limit.TryEnter())
                return;
            var now = Interlocked.Increment(ref inside);
            InterlockedMax(ref most, now);
            Interlocked.Decrement(ref inside);
            limit.Exit();
        });

        Assert.InRange(most, 1, 4);
        Assert.Equal(0, limit.Active);
    }

    [Fact]
    public void Exit_WithoutEnter_Throws() =>
        Assert.Throws<InvalidOperationException>(() => new ConcurrencyLimit(1).Exit());

    private static void InterlockedMax(ref int target, int value)
    {
        var seen = Volatile.Read(ref target);
        while (value > seen)
        {
            var was = Interlocked.CompareExchange(ref target, value, seen);
            if (was == seen)
                return;
            seen = was;
        }
    }
}
