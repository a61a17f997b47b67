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
/// Work that only needs to be done before the loop's next periodic job (a VTTIF report the next tick
/// folds in, a digest) can wait for it (<see cref="PostAtNextTick"/>): it is queued in order with the
/// rest but wakes no thread, and runs in the next turn, which at the latest is the clock's next tick
/// (at most <see cref="MaxTickWait"/> away). On an idle daemon that turn is the clock thread's own
/// (above), so a peer's periodic message costs no pool worker (and no wake-up of the runtime's gate
/// thread after it).
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

    /// <summary>The longest work posted with <see cref="PostAtNextTick"/> waits: the loop's own tick, besides its periodic jobs' (any of which runs it).</summary>
    public static readonly TimeSpan MaxTickWait = TimeSpan.FromSeconds(1);

    // Every item, in the order posted; an item that asked for the loop at once also signals _wake,
    // which is what the loop's task waits on (an item that can wait for the next tick does not).
    private readonly Channel<WorkItem> _work = Channel.CreateUnbounded<WorkItem>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { SingleReader = true, FullMode = BoundedChannelFullMode.DropWrite });
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

    // Queued items that asked for the loop at once (Post, Invoke): while there are any, a periodic
    // job is posted behind them rather than run on the clock's thread.
    private long _urgent;

    /// <param name="clock">The daemon's clock, shared with the link clock; null: the loop has one of its own.</param>
    public ControlLoop(Action<Exception> onError, DaemonClock? clock = null)
    {
        _onError = onError;
        _ownsClock = clock is null;
        _clock = clock ?? new DaemonClock(onError, "vnet-loop-clock");
        _runner = Task.Run(Run);
        // What waits for a tick never waits longer than this, whatever jobs the daemon has.
        AddJob(MaxTickWait, static () => { }, onlyWithWork: true);
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
    public void Post(Action work) => Write(work, urgent: true);

    /// <summary>
    /// Queues work that can wait for the loop's next periodic job: it runs, in order with everything
    /// else posted, in the next turn, at the latest at the clock's next tick (<see cref="MaxTickWait"/>),
    /// and wakes no thread itself. For messages that say what a periodic job then reads (a VTTIF
    /// report, which the next VTTIF tick folds in) or that a tick later is as good as now (a digest).
    /// </summary>
    public void PostAtNextTick(Action work) => Write(work, urgent: false);

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
        }, urgent: true))
        {
            done.SetException(new ObjectDisposedException("daemon is stopping"));
        }
        return done.Task;
    }

    private bool Write(Action work, bool urgent)
    {
        // Counted before the write: the loop may take the item before TryWrite returns.
        Interlocked.Increment(ref _pending);
        if (urgent)
            Interlocked.Increment(ref _urgent);
        if (_work.Writer.TryWrite(new WorkItem(work, urgent)))
        {
            if (urgent)
                _wake.Writer.TryWrite(true);
            return true;
        }
        Interlocked.Decrement(ref _pending);
        if (urgent)
            Interlocked.Decrement(ref _urgent);
        return false;
    }

    /// <summary>An item of the queue; <c>Urgent</c>: it woke the loop, and counts in <see cref="_urgent"/>.</summary>
    private readonly record struct WorkItem(Action Work, bool Urgent);

    /// <summary>
    /// Runs <paramref name="work"/> on the loop every <paramref name="period"/> until the loop stops,
    /// on the daemon's <see cref="Cadence"/> grid: the <see cref="DaemonClock"/> runs every job due
    /// at an instant from one wake-up of its thread (see <see cref="RunOrPost"/>).
    /// </summary>
    public void Every(TimeSpan period, Action work) => AddJob(period, work, onlyWithWork: false);

    /// <param name="onlyWithWork">Run only when something waits for a tick (the loop's own tick, which just runs the queue).</param>
    private void AddJob(TimeSpan period, Action work, bool onlyWithWork)
    {
        var job = _clock.Every(period, () =>
        {
            if (!onlyWithWork || Interlocked.Read(ref _pending) > Interlocked.Read(ref _urgent))
                RunOrPost(work);
        });
        lock (_jobs)
            _jobs.Add(job);
    }

    /// <summary>
    /// A periodic job, on the clock's thread. When the loop is idle (nothing queued that asked for
    /// the loop at once, no turn running) that thread takes the turn: it runs what waited for the
    /// tick, then the job, itself. An idle daemon's second then costs one wake-up (the clock's)
    /// instead of two (the clock's, then a pool worker's for the loop). Otherwise the job is posted
    /// and runs after what is queued, in order.
    /// </summary>
    private void RunOrPost(Action work)
    {
        if (_stop.IsCancellationRequested)
            return;
        if (Interlocked.Read(ref _urgent) == 0 && _turn.TryEnter())
        {
            try
            {
                // Nothing urgent came in meanwhile (the clock's thread stays short). What is
                // queued runs first: it always runs before what is posted after it.
                if (Interlocked.Read(ref _urgent) == 0)
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

    /// <summary>What is queued, then one item, as a whole turn on the calling thread (which holds <see cref="_turn"/>).</summary>
    private void RunInline(Action work)
    {
        var started = BeginTurn();
        RunQueued(started);
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
        var wake = _wake.Reader;
        bool more;
        do
        {
            // False once the loop is disposed: one last turn runs what was queued before.
            more = await wake.WaitToReadAsync().ConfigureAwait(false);
            wake.TryRead(out _);
            lock (_turn)
                FinishTurn(RunQueuedTurn());
        }
        while (more);
    }

    private long RunQueuedTurn()
    {
        var started = BeginTurn();
        RunQueued(started);
        return started;
    }

    /// <summary>Runs every queued item (the caller holds the turn), ending a turn after each <see cref="TurnBudget"/>; returns when the current turn started.</summary>
    private long RunQueued(long turn)
    {
        while (_work.Reader.TryRead(out var item))
        {
            Interlocked.Decrement(ref _pending);
            if (item.Urgent)
                Interlocked.Decrement(ref _urgent);
            RunItem(item.Work);
            if (System.Diagnostics.Stopwatch.GetTimestamp() - turn > _turnBudgetTicks)
            {
                EndTurn();
                turn = System.Diagnostics.Stopwatch.GetTimestamp();
            }
        }
        return turn;
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
        _wake.Writer.TryComplete();
        await _runner.ConfigureAwait(false);
        _stop.Dispose();
    }
}
