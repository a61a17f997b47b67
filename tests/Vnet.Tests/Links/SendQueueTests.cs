using System.Diagnostics;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Tests.Links;

/// <summary>
/// A link's output queue: order, the capacity bound, buffer accounting on close, and the sender's
/// sleep and wake-up. Every wait has a deadline far above what a pass needs, so a lost wake-up shows
/// as a slow wait (asserted) rather than a hung test.
/// </summary>
public sealed class SendQueueTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(5);

    private readonly FramePool _pool = new(64);

    [Fact]
    public void DequeueBatch_AfterEnqueues_ReturnsFramesInOrder()
    {
        using var queue = new SendQueue(16);
        var frames = Rent(10);
        foreach (var f in frames)
            Assert.True(queue.TryEnqueue(f));

        var batch = new Frame?[4];
        var got = new List<Frame>();
        int n;
        while ((n = queue.DequeueBatch(batch)) > 0)
        {
            Assert.True(n <= batch.Length);
            got.AddRange(batch.Take(n).Select(f => f!));
        }

        Assert.Equal(frames, got);
        Assert.Equal(0, queue.Count);
        ReleaseAll(got);
    }

    [Fact]
    public void DequeueBatch_RingWrapsManyTimes_OrderKept()
    {
        using var queue = new SendQueue(5);
        var batch = new Frame?[3];
        var sent = new List<int>();
        var received = new List<int>();
        var next = 0;
        for (var round = 0; round < 50; round++)
        {
            // Uneven enqueue and dequeue counts move the head all around the ring.
            for (var i = 0; i < 1 + (round % 4) && queue.Count < 5; i++)
            {
                var frame = Rent(1)[0];
                frame.IngressPort = next;
                Assert.True(queue.TryEnqueue(frame));
                sent.Add(next++);
            }
            var n = queue.DequeueBatch(batch);
            for (var i = 0; i < n; i++)
            {
                received.Add(batch[i]!.IngressPort);
                batch[i]!.Release();
            }
        }
        int rest;
        while ((rest = queue.DequeueBatch(batch)) > 0)
        {
            for (var i = 0; i < rest; i++)
            {
                received.Add(batch[i]!.IngressPort);
                batch[i]!.Release();
            }
        }

        Assert.Equal(sent, received);
        AssertPoolComplete();
    }

    [Fact]
    public void DequeueBatch_Empty_ReturnsZeroAndLeavesBatchAlone()
    {
        using var queue = new SendQueue(4);
        var batch = new Frame?[4];

        Assert.Equal(0, queue.DequeueBatch(batch));
        Assert.All(batch, Assert.Null);
    }

    [Fact]
    public void DequeueBatch_DequeuedSlots_DoNotKeepFrames()
    {
        using var queue = new SendQueue(2);
        var frames = Rent(2);
        queue.TryEnqueue(frames[0]);
        queue.TryEnqueue(frames[1]);
        var batch = new Frame?[2];
        queue.DequeueBatch(batch);
        ReleaseAll([.. batch.Select(f => f!)]);

        // A later close must not release frames that already left the queue.
        queue.Close();

        AssertPoolComplete();
        Assert.All(frames, f => Assert.Equal(0, f.References));
    }

    [Fact]
    public void TryEnqueue_Full_ReturnsFalseAndLeavesTheFrameToTheCaller()
    {
        using var queue = new SendQueue(4);
        var frames = Rent(5);
        for (var i = 0; i < 4; i++)
            Assert.True(queue.TryEnqueue(frames[i]));

        Assert.False(queue.TryEnqueue(frames[4]));

        Assert.Equal(4, queue.Count);
        Assert.Equal(1, frames[4].References);
        frames[4].Release();
        var batch = new Frame?[1];
        Assert.Equal(1, queue.DequeueBatch(batch));
        Assert.Same(frames[0], batch[0]);
        batch[0]!.Release();

        // One slot is free again, and only one.
        var another = Rent(2);
        Assert.True(queue.TryEnqueue(another[0]));
        Assert.False(queue.TryEnqueue(another[1]));
        another[1].Release();
        queue.Close();
        AssertPoolComplete();
    }

    [Fact]
    public void Close_WithQueuedFrames_ReleasesThemAll()
    {
        WarmPool(8);
        var before = _pool.Available;
        var queue = new SendQueue(8);
        foreach (var f in Rent(5))
            Assert.True(queue.TryEnqueue(f));
        Assert.Equal(before - 5, _pool.Available);

        queue.Close();

        Assert.Equal(before, _pool.Available);
        Assert.Equal(0, queue.Count);
        queue.Dispose();
    }

    [Fact]
    public void TryEnqueue_AfterClose_ReturnsFalse()
    {
        using var queue = new SendQueue(8);
        queue.Close();
        var frame = Rent(1)[0];

        Assert.False(queue.TryEnqueue(frame));

        Assert.Equal(1, frame.References);
        frame.Release();
        AssertPoolComplete();
    }

    [Fact]
    public void Dispose_WithQueuedFrames_ReleasesThemAll()
    {
        WarmPool(4);
        var queue = new SendQueue(4);
        foreach (var f in Rent(3))
            queue.TryEnqueue(f);

        queue.Dispose();

        AssertPoolComplete();
    }

    [Fact]
    public void Close_Twice_ReleasesEachFrameOnce()
    {
        var queue = new SendQueue(4);
        foreach (var f in Rent(2))
            queue.TryEnqueue(f);

        queue.Close();
        queue.Close();
        queue.Dispose();

        AssertPoolComplete();
    }

    [Fact]
    public void Wait_SomethingQueued_ReturnsAtOnce()
    {
        using var queue = new SendQueue(4);
        var frame = Rent(1)[0];
        queue.TryEnqueue(frame);

        var clock = Stopwatch.StartNew();
        queue.Wait(10_000);

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"waited {clock.Elapsed}");
        queue.Close();
    }

    [Fact]
    public void Wait_Closed_ReturnsAtOnce()
    {
        using var queue = new SendQueue(4);
        queue.Close();

        var clock = Stopwatch.StartNew();
        queue.Wait(10_000);

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"waited {clock.Elapsed}");
    }

    [Fact]
    public void Wait_NothingHappens_ReturnsAfterTheTimeout()
    {
        using var queue = new SendQueue(4);

        var clock = Stopwatch.StartNew();
        queue.Wait(60);

        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(50), $"returned after {clock.Elapsed}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"returned after {clock.Elapsed}");
    }

    [Fact]
    public async Task Wait_EnqueueFromAnotherThread_WakesTheSleeper()
    {
        using var queue = new SendQueue(4);

        var elapsed = await SleepAndPoke(queue, () => Assert.True(queue.TryEnqueue(Rent(1)[0])));

        Assert.True(elapsed < TimeSpan.FromSeconds(2), $"the sleeper woke after {elapsed}");
        queue.Close();
    }

    [Fact]
    public async Task Wait_Wake_WakesTheSleeper()
    {
        using var queue = new SendQueue(4);

        var elapsed = await SleepAndPoke(queue, queue.Wake);

        Assert.True(elapsed < TimeSpan.FromSeconds(2), $"the sleeper woke after {elapsed}");
    }

    [Fact]
    public async Task Wait_Close_WakesTheSleeper()
    {
        using var queue = new SendQueue(4);

        var elapsed = await SleepAndPoke(queue, queue.Close);

        Assert.True(elapsed < TimeSpan.FromSeconds(2), $"the sleeper woke after {elapsed}");
    }

    [Fact]
    public async Task Wait_WakeBeforeSleep_NextWaitStillSleeps()
    {
        using var queue = new SendQueue(4);
        queue.Wake();
        // The stale wake-up may end one wait early; the sleep after that must honour its timeout again.
        queue.Wait(10);

        var elapsed = await Task.Run(() =>
        {
            var clock = Stopwatch.StartNew();
            queue.Wait(150);
            return clock.Elapsed;
        }).WaitAsync(Deadline);

        Assert.True(elapsed >= TimeSpan.FromMilliseconds(100), $"returned after {elapsed}");
    }

    [Fact]
    public async Task TryEnqueue_ManyProducersOneSleepingConsumer_EveryFrameArrivesInProducerOrder()
    {
        const int Producers = 4;
        const int PerProducer = 2000;
        var pool = new FramePool(256);
        using var queue = new SendQueue(64);
        var seen = new int[Producers];
        var total = 0;
        var consumer = Task.Run(() =>
        {
            var batch = new Frame?[16];
            while (total < Producers * PerProducer)
            {
                var n = queue.DequeueBatch(batch);
                if (n == 0)
                {
                    // A lost wake-up would stall the consumer; the short timeout keeps it bounded,
                    // and the elapsed-time check below shows it.
                    queue.Wait(1000);
                    continue;
                }
                for (var i = 0; i < n; i++)
                {
                    var f = batch[i]!;
                    var producer = f.IngressPort;
                    Assert.Equal(seen[producer], f.HopLimit + (256 * f.Length));
                    seen[producer]++;
                    total++;
                    f.Release();
                    batch[i] = null;
                }
            }
        });
        var producers = Enumerable.Range(0, Producers).Select(p => Task.Run(() =>
        {
            for (var i = 0; i < PerProducer; i++)
            {
                Frame? frame;
                while ((frame = pool.TryRent()) is null && !consumer.IsCompleted)
                    Thread.Yield();
                if (frame is null)
                    return;
                frame.IngressPort = p;
                frame.HopLimit = (byte)(i % 256);
                frame.Length = i / 256;
                while (!queue.TryEnqueue(frame))
                {
                    if (consumer.IsCompleted)
                    {
                        frame.Release();
                        return;
                    }
                    Thread.Yield();
                }
            }
        })).ToArray();

        var clock = Stopwatch.StartNew();
        await Task.WhenAll(producers).WaitAsync(TimeSpan.FromSeconds(20));
        await consumer.WaitAsync(TimeSpan.FromSeconds(20));

        Assert.All(seen, s => Assert.Equal(PerProducer, s));
        Assert.Equal(pool.Created, pool.Available);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}: wake-ups were lost");
    }

    // Helpers.

    /// <summary>
    /// Runs Wait(10 s) on a thread of its own, pokes the queue once it sleeps, and returns how long
    /// after the poke the sleeper woke: measured from the poke, so that a loaded machine delaying
    /// the poke itself (the test runner's pool busy) is not taken for a lost wake-up.
    /// </summary>
    private static async Task<TimeSpan> SleepAndPoke(SendQueue queue, Action poke)
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var woke = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        var sleeper = new Thread(() =>
        {
            started.SetResult();
            queue.Wait(10_000);
            woke.SetResult(Stopwatch.GetTimestamp());
        }) { IsBackground = true };
        sleeper.Start();
        await started.Task.WaitAsync(Deadline);
        // Give the sleeper time to reach its wait, so the poke tests the wake-up, not the fast path.
        await Task.Delay(100);
        var poked = Stopwatch.GetTimestamp();
        poke();
        return Stopwatch.GetElapsedTime(poked, await woke.Task.WaitAsync(TimeSpan.FromSeconds(15)));
    }

    private List<Frame> Rent(int n)
    {
        var frames = new List<Frame>(n);
        for (var i = 0; i < n; i++)
            frames.Add(_pool.TryRent() ?? throw new InvalidOperationException("test pool empty"));
        return frames;
    }

    private void WarmPool(int n) => ReleaseAll(Rent(n));

    private static void ReleaseAll(List<Frame> frames)
    {
        foreach (var f in frames)
            f.Release();
    }

    private void AssertPoolComplete() => Assert.Equal(_pool.Created, _pool.Available);
}
