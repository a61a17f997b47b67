using System.Threading.Channels;

namespace Vnet.Daemon;

/// <summary>
/// Runs every control-plane change of a daemon, one at a time, on one task: commands, messages from
/// peers, link events, learned VMs, timers. The services of a daemon keep their state here and only
/// here, so no two changes ever interleave; nothing on the data path waits for the loop.
/// </summary>
public sealed class ControlLoop : IAsyncDisposable
{
    private readonly Channel<Action> _work = Channel.CreateUnbounded<Action>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _timers = [];
    private readonly Task _runner;
    private readonly Action<Exception> _onError;
    private int _loopThread = -1;
    private long _busyTicks;
    private long _done;

    public ControlLoop(Action<Exception> onError)
    {
        _onError = onError;
        _runner = Task.Run(Run);
    }

    /// <summary>Time the loop spent running work, since start: the control plane's share of a core.</summary>
    public TimeSpan BusyTime => TimeSpan.FromSeconds(Interlocked.Read(ref _busyTicks) / (double)System.Diagnostics.Stopwatch.Frequency);

    /// <summary>Work items run, since start.</summary>
    public long Done => Interlocked.Read(ref _done);

    /// <summary>Whether the caller runs on the loop (services assert it where they touch their state).</summary>
    public bool IsCurrent => Environment.CurrentManagedThreadId == Volatile.Read(ref _loopThread);

    /// <summary>Queues work without waiting for it.</summary>
    public void Post(Action work) => _work.Writer.TryWrite(work);

    /// <summary>Queues work after a delay (a message held back by a test's fault injection, a retry).</summary>
    public void PostAfter(TimeSpan delay, Action work)
    {
        if (delay <= TimeSpan.Zero)
        {
            Post(work);
            return;
        }
        _ = Task.Delay(delay, _stop.Token).ContinueWith(t =>
        {
            if (!t.IsCanceled)
                Post(work);
        }, TaskScheduler.Default);
    }

    /// <summary>Runs work on the loop and returns its result (or its exception).</summary>
    public Task<T> Invoke<T>(Func<T> work)
    {
        if (IsCurrent)
        {
            try
            {
                return Task.FromResult(work());
            }
            catch (Exception e)
            {
                return Task.FromException<T>(e);
            }
        }
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_work.Writer.TryWrite(() =>
        {
            try
            {
                done.SetResult(work());
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }))
        {
            done.SetException(new ObjectDisposedException("daemon is stopping"));
        }
        return done.Task;
    }

    /// <summary>Runs <paramref name="work"/> on the loop every <paramref name="period"/> until the loop stops.</summary>
    public void Every(TimeSpan period, Action work)
    {
        lock (_timers)
        {
            _timers.Add(Task.Run(async () =>
            {
                using var timer = new PeriodicTimer(period);
                try
                {
                    while (await timer.WaitForNextTickAsync(_stop.Token).ConfigureAwait(false))
                        Post(work);
                }
                catch (OperationCanceledException)
                {
                }
            }));
        }
    }

    private async Task Run()
    {
        Volatile.Write(ref _loopThread, Environment.CurrentManagedThreadId);
        var reader = _work.Reader;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            // Continuations of the awaits above may resume on another pool thread: note ours each time.
            Volatile.Write(ref _loopThread, Environment.CurrentManagedThreadId);
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            while (reader.TryRead(out var work))
            {
                try
                {
                    work();
                }
                catch (Exception e)
                {
                    _onError(e);
                }
                Interlocked.Increment(ref _done);
            }
            Interlocked.Add(ref _busyTicks, System.Diagnostics.Stopwatch.GetTimestamp() - started);
            Volatile.Write(ref _loopThread, -1);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        Task[] timers;
        lock (_timers)
            timers = [.. _timers];
        await Task.WhenAll(timers).ConfigureAwait(false);
        _work.Writer.TryComplete();
        await _runner.ConfigureAwait(false);
        _stop.Dispose();
    }
}
