using System.Diagnostics;
using Vnet.Vms;

namespace Vnet.Tests.Vms;

/// <summary>When a source sends its digest on a session: first on a session, after a change, and at every heartbeat.</summary>
public sealed class DigestScheduleTests
{
    private static readonly TimeSpan Heartbeat = TimeSpan.FromSeconds(30);

    private static long At(double seconds) => (long)(seconds * Stopwatch.Frequency);

    private sealed class Session
    {
        public bool Gone { get; set; }
    }

    [Fact]
    public void Due_OnlyOnANewSessionAfterAChangeAndAtTheHeartbeat()
    {
        var schedule = new DigestSchedule<Session>(Heartbeat, s => s.Gone);
        var a = new Session();
        var v1 = new MapVersion(7, 1);

        schedule.BeginTick(At(3000));
        Assert.True(schedule.Due(a, v1), "a new session");
        schedule.BeginTick(At(3003));
        Assert.False(schedule.Due(a, v1), "nothing changed");
        schedule.BeginTick(At(3006));
        Assert.True(schedule.Due(a, v1 with { Seq = 2 }), "the version moved");
        schedule.BeginTick(At(3009));
        Assert.False(schedule.Due(a, v1 with { Seq = 2 }), "nothing changed since");
        var b = new Session();
        Assert.True(schedule.Due(b, v1 with { Seq = 2 }), "another new session");
        schedule.BeginTick(At(3027));
        Assert.False(schedule.IsHeartbeat);
        Assert.False(schedule.Due(a, v1 with { Seq = 2 }));
        schedule.BeginTick(At(3030));
        Assert.True(schedule.IsHeartbeat, "3030 s is a multiple of 30 s, crossed since the last tick");
        Assert.True(schedule.Due(a, v1 with { Seq = 2 }));
        Assert.True(schedule.Due(b, v1 with { Seq = 2 }));
        schedule.BeginTick(At(3033));
        Assert.False(schedule.Due(a, v1 with { Seq = 2 }));
    }

    [Fact]
    public void BeginTick_SessionsThatEnded_AreForgotten()
    {
        var schedule = new DigestSchedule<Session>(Heartbeat, s => s.Gone);
        var a = new Session();
        schedule.BeginTick(At(3000));
        schedule.Due(a, new MapVersion(1, 1));
        Assert.Equal(1, schedule.Tracked);

        a.Gone = true;
        schedule.BeginTick(At(3003));

        Assert.Equal(0, schedule.Tracked);
    }
}
