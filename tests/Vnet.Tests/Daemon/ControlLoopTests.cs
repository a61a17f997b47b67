using Vnet.Daemon;

namespace Vnet.Tests.Daemon;

/// <summary>
/// The loop's turns: work asked for at the end of a turn runs once per request, after the items of
/// the turn and before an Invoke hands back its result; work it asks for in turn runs too.
/// </summary>
public sealed class ControlLoopTests
{
    [Fact]
    public async Task AtEndOfTurn_AskedDuringAnInvoke_RunsAfterTheWorkAndBeforeTheResult()
    {
        await using var loop = new ControlLoop(e => throw new InvalidOperationException("error on the loop", e));
        var log = new List<string>();

        var result = await loop.Invoke(() =>
        {
            loop.AtEndOfTurn(() => log.Add("end 1"));
            loop.AtEndOfTurn(() =>
            {
                log.Add("end 2");
                loop.AtEndOfTurn(() => log.Add("end 3, asked at the end"));
            });
            log.Add("work");
            return log.Count;
        });

        Assert.Equal(1, result);
        Assert.Equal(["work", "end 1", "end 2", "end 3, asked at the end"], log);
    }

    [Fact]
    public async Task AtEndOfTurn_PostedItems_RunsOnceAfterTheItemThatAsked()
    {
        await using var loop = new ControlLoop(e => throw new InvalidOperationException("error on the loop", e));
        using var gate = new ManualResetEventSlim();
        var log = new List<string>();
        loop.Post(gate.Wait);
        loop.Post(() =>
        {
            log.Add("first");
            loop.AtEndOfTurn(() => log.Add("end"));
        });
        loop.Post(() => log.Add("second"));
        gate.Set();

        await loop.Invoke(() => 0);

        // "second" comes before "end" unless the machine stalled the loop past the turn budget in between.
        Assert.True(log is ["first", "second", "end"] or ["first", "end", "second"], string.Join(", ", log));
    }

    [Fact]
    public async Task AtEndOfTurn_OffTheLoop_Refused()
    {
        await using var loop = new ControlLoop(e => throw new InvalidOperationException("error on the loop", e));

        Assert.Throws<InvalidOperationException>(() => loop.AtEndOfTurn(() => { }));
    }

    /// <summary>
    /// A periodic job of an idle loop runs on the clock's own thread, as the loop (one wake-up for
    /// both); while the loop is busy it is posted instead and runs after what was queued before it,
    /// never at the same time as another item.
    /// </summary>
    [Fact]
    public async Task Every_IdleLoopRunsTheJobOnTheClockThread_ABusyOneAfterItsQueue()
    {
        using var clock = new DaemonClock(e => throw new InvalidOperationException("error on the clock", e), "test-clock");
        await using var loop = new ControlLoop(e => throw new InvalidOperationException("error on the loop", e), clock);
        var runs = new System.Collections.Concurrent.ConcurrentQueue<(string? Thread, bool OnLoop, bool Overlap)>();
        var busy = 0;
        loop.Every(TimeSpan.FromMilliseconds(100), () =>
        {
            var overlap = Interlocked.Exchange(ref busy, 1) != 0;
            runs.Enqueue((Thread.CurrentThread.Name, loop.IsCurrent, overlap));
            Volatile.Write(ref busy, 0);
        });
        await DaemonNet.Until(() => runs.Count >= 3, TimeSpan.FromSeconds(5), "three idle runs");
        Assert.All(runs, r => Assert.Equal(("test-clock", true, false), r));

        // Busy: an item holds the loop for 400 ms; the job's runs in that time wait for it.
        var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var ran = runs.Count;
        loop.Post(() =>
        {
            Interlocked.Exchange(ref busy, 1);
            log.Enqueue("busy start");
            Thread.Sleep(400);
            log.Enqueue("busy end");
            Volatile.Write(ref busy, 0);
        });
        await DaemonNet.Until(() => log.Count == 2 && runs.Count >= ran + 3, TimeSpan.FromSeconds(5), "the busy item and runs after it");

        Assert.DoesNotContain(runs, r => r.Overlap || !r.OnLoop);
        Assert.Contains(runs.Skip(ran), r => r.Thread != "test-clock");
    }
}
