using System.Threading.Channels;

namespace Vnet.Daemon;

/// <summary>
/// Runs every control-plane change of a daemon, one at a time, on one task: commands, messages from
/// peers, link events, learned VMs, timers. The services of a daemon keep their state here and only
/// here, so no two changes ever interleave; nothing on the data path waits for the loop.
/// <para>
/// The queue is unbounded on purpose: local work must never be refused or block its poster (a
/// timer, a link event, a command awaiting its answer), and a bound here could only drop or stall
/// it. It is safe because every producer that the network drives is bounded before it posts:
/// </para>
/// <list type="bullet">
/// <item>peer messages: at most <c>PeerChannel.MaxBacklogMessages</c> (and <c>MaxBacklogBytes</c>)
/// waiting per link, a session beyond that is cut; links are at most the switch's 256 ports;</item>
/// <item>the Proxy's requests at a host: at most <c>PeerChannel.MaxConcurrentRequests</c> running,
/// each with at most one item here at a time;</item>
/// <item>remote CLI sessions: at most <c>VnetDaemon.MaxToolSessions</c>, one request at a time each;
/// the local socket is the owner's;</item>
/// <item>link up and down: one each per session, and sessions need a completed handshake (which
/// the link layer limits);</item>
/// <item>learned VMs: only frames from local interfaces, never from links; the <c>LearningGate</c>
/// posts each MAC at most once a second and tracks at most <c>LearningGate.MaxTracked</c>;</item>
/// <item>timers: a fixed set.</item>
/// </list>
/// <para>
/// A turn runs on a pool thread, or, for a periodic job while the loop is idle, on the daemon
/// clock's thread (<see cref="Every"/>); never two at once (<c>_turn</c>), and <see cref="IsCurrent"/>
/// is true on whichever runs it.
/// </para>
/// <para>
/// The loop runs its queue in turns: a turn ends when the queue is empty, after
/// <see cref="TurnBudget"/> of work, and before an <see cref="Invoke{T}"/> hands back its result.
/// Work that is worth doing once per turn rather than once per item (publishing the forwarding
/// table after many rule edits) waits for the end of the turn (<see cref="AtEndOfTurn"/>).
/// </para>
/// </summary>
public sealed class ControlLoop : IAsyncDisposable
{
    /// <summary>
    /// The longest a turn runs work before it ends anyway: a loop that never runs dry (a Proxy
    /// learning thousands of VMs) still publishes its edits this often.
    /// </summary>
    public static readonly TimeSpan TurnBudget = TimeSpan.FromMilliseconds(10);

    private readonly Channel<Action> _work = Channel.CreateUnbounded<Action>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stop = new();
    private readonly DaemonClock _clock;

    // Held by whoever runs a turn: the loop's task, or the clock's thread running a periodic job
    // inline while the loop is idle (see RunOrPost).
    private readonly Lock _turn = new();
    private readonly bool _ownsClock;
    private readonly List<DaemonClock.Job> _jobs = [];
    private readonly Task _runner;
    private readonly Action<Exception> _onError;
    private readonly long _turnBudgetTicks = (long)(TurnBudget.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
    private List<Action> _atEndOfTurn = [];
    private List<Action> _ending = [];
    private int _loopThread = -1;
    private long _busyTicks;
    private long _done;
    private long _pending;

    /// <param name="clock">The daemon's clock, shared with the link clock; null: the loop has one of its own.</param>
    public ControlLoop(Action<Exception> onError, DaemonClock? clock = null)
    {
        _onError = onError;
        _ownsClock = clock is null;
        _clock = clock ?? new DaemonClock(onError, "vnet-loop-clock");
        _runner = Task.Run(Run);
    }

    /// <summary>Time the loop spent running work, since start: the control plane's share of a core.</summary>
    public TimeSpan BusyTime => TimeSpan.FromSeconds(Interlocked.Read(ref _busyTicks) / (double)System.Diagnostics.Stopwatch.Frequency);

    /// <summary>Work items run, since start.</summary>
    public long Done => Interlocked.Read(ref _done);

    /// <summary>
    /// Work items queued and not yet started: what the loop holds in memory. The queue has no bound
    /// of its own (see above), so this is how tests and status show that its producers keep it small.
    /// </summary>
    public long Pending => Interlocked.Read(ref _pending);

    /// <summary>Whether the caller runs on the loop (services assert it where they touch their state).</summary>
    public bool IsCurrent => Environment.CurrentManagedThreadId == Volatile.Read(ref _loopThread);

    /// <summary>Queues work without waiting for it.</summary>
    public void Post(Action work) => Write(work);

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

    /// <summary>
    /// Runs <paramref name="work"/> on the loop when the current turn ends, once per call: the caller
    /// coalesces (it asks once per turn however many changes it made). Loop only.
    /// </summary>
    public void AtEndOfTurn(Action work)
    {
        if (!IsCurrent)
            throw new InvalidOperationException("AtEndOfTurn is for work running on the loop");
        _atEndOfTurn.Add(work);
    }

    /// <summary>
    /// Runs work on the loop and returns its result (or its exception) once the turn that ran it
    /// has ended: what the caller does next sees the work's effects published (its rules live).
    /// </summary>
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
        if (!Write(() =>
        {
            T result;
            try
            {
                result = work();
            }
            catch (Exception e)
            {
                EndTurn();
                done.SetException(e);
                return;
            }
            EndTurn();
            done.SetResult(result);
        }))
        {
            done.SetException(new ObjectDisposedException("daemon is stopping"));
        }
        return done.Task;
    }

    private bool Write(Action work)
    {
        // Counted before the write: the loop may take the item before TryWrite returns.
        Interlocked.Increment(ref _pending);
        if (_work.Writer.TryWrite(work))
            return true;
        Interlocked.Decrement(ref _pending);
        return false;
    }

    /// <summary>
    /// Runs <paramref name="work"/> on the loop every <paramref name="period"/> until the loop stops,
    /// on the daemon's <see cref="Cadence"/> grid: the <see cref="DaemonClock"/> runs every job due
    /// at an instant from one wake-up of its thread (see <see cref="RunOrPost"/>).
    /// </summary>
    public void Every(TimeSpan period, Action work)
    {
        var job = _clock.Every(period, () => RunOrPost(work));
        lock (_jobs)
            _jobs.Add(job);
    }

    /// <summary>
    /// A periodic job, on the clock's thread. When the loop is idle (nothing queued, no turn
    /// running) that thread takes the turn and runs the job itself: an idle daemon's second then
    /// costs one wake-up (the clock's) instead of two (the clock's, then a pool worker's for the
    /// loop). Otherwise the job is posted and runs after what is queued, in order.
    /// </summary>
    private void RunOrPost(Action work)
    {
        if (_stop.IsCancellationRequested)
            return;
        if (Interlocked.Read(ref _pending) == 0 && _turn.TryEnter())
        {
            try
            {
                // Nothing came in meanwhile: what is queued always runs before what is posted after it.
                if (Interlocked.Read(ref _pending) == 0)
                {
                    RunInline(work);
                    return;
                }
            }
            finally
            {
                _turn.Exit();
            }
        }
        Post(work);
    }

    /// <summary>One item as a whole turn on the calling thread (which holds <see cref="_turn"/>).</summary>
    private void RunInline(Action work)
    {
        var started = BeginTurn();
        RunItem(work);
        FinishTurn(started);
    }

    /// <summary>Marks the calling thread as the loop's; returns when the turn started.</summary>
    private long BeginTurn()
    {
        // Continuations of the awaits in Run may resume on another pool thread: note ours each time.
        Volatile.Write(ref _loopThread, Environment.CurrentManagedThreadId);
        return System.Diagnostics.Stopwatch.GetTimestamp();
    }

    /// <summary>Ends the turn begun at <paramref name="started"/>: its end-of-turn work, its time, the loop thread let go.</summary>
    private void FinishTurn(long started)
    {
        EndTurn();
        Interlocked.Add(ref _busyTicks, System.Diagnostics.Stopwatch.GetTimestamp() - started);
        Volatile.Write(ref _loopThread, -1);
    }

    /// <summary>One work item; what it throws goes to the error handler.</summary>
    private void RunItem(Action work)
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

    private async Task Run()
    {
        var reader = _work.Reader;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            lock (_turn)
                RunTurn(reader);
        }
    }

    private void RunTurn(ChannelReader<Action> reader)
    {
        var started = BeginTurn();
        var turn = started;
        while (reader.TryRead(out var work))
        {
            Interlocked.Decrement(ref _pending);
            RunItem(work);
            if (System.Diagnostics.Stopwatch.GetTimestamp() - turn > _turnBudgetTicks)
            {
                EndTurn();
                turn = System.Diagnostics.Stopwatch.GetTimestamp();
            }
        }
        FinishTurn(started);
    }

    /// <summary>Runs the work waiting for the end of the turn, and any that work asks for in turn.</summary>
    private void EndTurn()
    {
        while (_atEndOfTurn.Count > 0)
        {
            // Swapped, not copied: work that ends a turn may ask for more, which runs after it.
            (_ending, _atEndOfTurn) = (_atEndOfTurn, _ending);
            foreach (var work in _ending)
            {
                try
                {
                    work();
                }
                catch (Exception e)
                {
                    _onError(e);
                }
            }
            _ending.Clear();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        lock (_jobs)
        {
            foreach (var job in _jobs)
                job.Dispose();
            _jobs.Clear();
        }
        if (_ownsClock)
            _clock.Dispose();
        _work.Writer.TryComplete();
        await _runner.ConfigureAwait(false);
        _stop.Dispose();
    }
}
