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

    /// <summary>
    /// Work that can wait for a tick wakes no thread: on an idle loop it runs at the clock's next
    /// tick, on the clock's thread (the loop's own tick, with no job of the daemon's), within
    /// <see cref="ControlLoop.MaxTickWait"/>, and it counts as pending until then.
    /// </summary>
    [Fact]
    public async Task PostAtNextTick_IdleLoop_RunsAtTheClocksNextTickOnItsThread()
    {
        using var clock = new DaemonClock(e => throw new InvalidOperationException("error on the clock", e), "test-clock");
        await using var loop = new ControlLoop(e => throw new InvalidOperationException("error on the loop", e), clock);
        var ran = new TaskCompletionSource<(string? Thread, bool OnLoop, TimeSpan After)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var posted = System.Diagnostics.Stopwatch.StartNew();
        loop.PostAtNextTick(() => ran.SetResult((Thread.CurrentThread.Name, loop.IsCurrent, posted.Elapsed)));
        Assert.True(loop.Pending >= 1);

        var (thread, onLoop, after) = await ran.Task.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal("test-clock", thread);
        Assert.True(onLoop);
        // At the next 1 s grid instant (plus what a loaded machine adds to a timer).
        Assert.True(after < ControlLoop.MaxTickWait + TimeSpan.FromSeconds(2), $"ran {after} after it was posted");
        await DaemonNet.Until(() => loop.Pending == 0, TimeSpan.FromSeconds(5), "the queue empty");
    }

    /// <summary>
    /// Work that waits for a tick keeps its place in the queue: work posted after it (which wakes
    /// the loop) runs after it, in the same turn; and a periodic job on an idle loop runs it first.
    /// </summary>
    [Fact]
    public async Task PostAtNextTick_KeepsItsPlace_BeforeWhatIsPostedAfterIt()
    {
        using var clock = new DaemonClock(e => throw new InvalidOperationException("error on the clock", e), "test-clock");
        await using var loop = new ControlLoop(e => throw new InvalidOperationException("error on the loop", e), clock);
        var log = new System.Collections.Concurrent.ConcurrentQueue<string>();

        loop.PostAtNextTick(() => log.Enqueue("waited 1"));
        loop.PostAtNextTick(() => log.Enqueue("waited 2"));
        loop.Post(() => log.Enqueue("posted"));
        await loop.Invoke(() => 0);
        Assert.Equal(["waited 1", "waited 2", "posted"], log);

        // A job's inline turn on the clock's thread runs what waited before the job.
        var job = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var waiting = 0;
        loop.Every(TimeSpan.FromMilliseconds(100), () =>
        {
            if (Interlocked.CompareExchange(ref waiting, 2, 1) == 1)
            {
                log.Enqueue($"job on {Thread.CurrentThread.Name}");
                job.SetResult();
            }
        });
        loop.PostAtNextTick(() => log.Enqueue("waited 3"));
        Volatile.Write(ref waiting, 1);
        await job.Task.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(["waited 1", "waited 2", "posted", "waited 3", "job on test-clock"], log);
    }
}
