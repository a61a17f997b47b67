using System.Net;
using Vnet.Links.Security;

namespace Vnet.Tests.Links.Security;

public sealed class HandshakeLimiterTests
{
    private static readonly IPAddress Flooder = IPAddress.Parse("198.51.100.7");
    private static readonly IPAddress Site = IPAddress.Parse("203.0.113.1");

    [Fact]
    public void BelowLoad_ManyHandshakesFromOneAddress_AllTaken()
    {
        var limiter = new HandshakeLimiter();

        // A site's hosts behind one NAT re-dialing together.
        for (var i = 0; i < HandshakeLimiter.UnderLoad; i++)
            Assert.True(limiter.TryBegin(Site), $"handshake {i}");

        Assert.Equal(0, limiter.Refused);
    }

    [Fact]
    public void UnderLoad_OneAddressHoldingMany_RefusedWhileOthersGetIn()
    {
        var limiter = new HandshakeLimiter();
        for (var i = 0; i < HandshakeLimiter.UnderLoad; i++)
            Assert.True(limiter.TryBegin(Flooder));

        Assert.False(limiter.TryBegin(Flooder));
        Assert.True(limiter.TryBegin(Site));
        Assert.Equal(1, limiter.Refused);

        // As its handshakes end (timed out), the flooder is back under the per-address cap only
        // once the load is gone, and then it has spent its budget.
        for (var i = 0; i < HandshakeLimiter.UnderLoad - HandshakeLimiter.PerAddressInProgress + 1; i++)
            limiter.End(Flooder);
        limiter.End(Site);
        Assert.True(limiter.TryBegin(Flooder));
    }

    [Fact]
    public void UnderLoad_BudgetSpent_RefusedUntilItRefills()
    {
        var limiter = new HandshakeLimiter();
        var others = Enumerable.Range(1, HandshakeLimiter.UnderLoad).Select(i => IPAddress.Parse($"192.0.2.{i}")).ToList();
        foreach (var a in others)
            Assert.True(limiter.TryBegin(a));

        // Under load: one address may start handshakes one after the other only within its budget.
        var taken = 0;
        for (var i = 0; i < 100; i++)
        {
            if (!limiter.TryBegin(Flooder))
                break;
            limiter.End(Flooder);
            taken++;
        }

        Assert.InRange(taken, (int)HandshakeLimiter.Burst, (int)HandshakeLimiter.Burst + 1);
        Assert.Equal(1, limiter.Refused);
    }
}

public sealed class RecentTimestampsTests
{
    private static readonly PublicKeyId Admin = StaticKeyPair.Generate().Public;
    private const ulong Now = 1_800_000_000_000_000_000;

    [Fact]
    public void ConcurrentInits_AnyOrderEvenTheSameMillisecond_AllFresh_AnExactRepeatIsNot()
    {
        var recent = new RecentTimestamps();

        Assert.True(recent.IsFresh(Admin, Now + 5_000_000, 1));
        Assert.True(recent.IsFresh(Admin, Now, 2));
        Assert.True(recent.IsFresh(Admin, Now, 3));
        Assert.False(recent.IsFresh(Admin, Now, 2));
        Assert.False(recent.IsFresh(Admin, Now + 5_000_000, 1));
    }

    [Fact]
    public void InitOlderThanTheWindow_NotFresh()
    {
        var recent = new RecentTimestamps();
        Assert.True(recent.IsFresh(Admin, Now, 1));

        Assert.False(recent.IsFresh(Admin, Now - RecentTimestamps.Window - 1, 2));
        Assert.True(recent.IsFresh(Admin, Now - RecentTimestamps.Window + 1, 3));
    }

    [Fact]
    public void ManyInits_MemoryBounded_AndTheOldestForgottenIsStillRefused()
    {
        var recent = new RecentTimestamps();
        for (ulong i = 0; i < 3 * RecentTimestamps.PerKey; i++)
            Assert.True(recent.IsFresh(Admin, Now + i, i));

        // Forgotten but older than everything kept: refused rather than taken as new.
        Assert.False(recent.IsFresh(Admin, Now, 0));
    }
}
