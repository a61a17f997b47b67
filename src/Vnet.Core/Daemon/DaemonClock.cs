using System.Diagnostics;

namespace Vnet.Daemon;

/// <summary>
/// One thread that sleeps until the earliest due instant of every periodic job of a daemon and runs
/// each job due then: the control loop's jobs (which only post their work to the loop) and the link
/// clock (keep-alives, dead peers), and, while the loop is idle, the loop's jobs themselves
/// (<see cref="ControlLoop.Every"/>). Idle, a daemon wakes once per grid instant of <see cref="Cadence"/>,
/// on one thread woken by the kernel's timer, instead of the runtime's timer thread and then a pool
/// worker for each of the loop's ticker and the link clock (issue 9: what an idle daemon costs is
/// wake-ups). Jobs run on this thread and must be short and never block.
/// <para>
/// A job runs at the multiples of its period on the monotonic clock, and earlier when it asks
/// (<see cref="Job.RunNoLaterThan"/>: the link clock at a silent peer's exact deadline).
/// </para>
/// </summary>
public sealed class DaemonClock : IDisposable
{
    private readonly object _gate = new();
    private readonly List<Job> _jobs = [];
    private readonly Thread _thread;
    private readonly Action<Exception> _onError;
    private bool _stopped;

    // True while the thread runs jobs (outside the lock): a job disposed meanwhile is waited for.
    private bool _running;

    public DaemonClock(Action<Exception> onError, string name = "vnet-clock")
    {
        _onError = onError;
        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
    }

    /// <summary>Times the thread woke (for tests and the idle profile).</summary>
    public long Wakes => Interlocked.Read(ref _wakes);

    private long _wakes;

    /// <summary>
    /// Runs <paramref name="work"/> on the clock's thread at every grid instant of
    /// <paramref name="period"/>, the first at least a whole period from now (<see cref="Cadence.FirstDue"/>),
    /// until the job is disposed. Jobs due at one instant run in the order they were added, those
    /// added with <paramref name="first"/> before the others (the link clock: the control loop's
    /// jobs may run inline after it, and must not hold up keep-alives).
    /// </summary>
    public Job Every(TimeSpan period, Action work, bool first = false)
    {
        var job = new Job(this, period, work, Cadence.FirstDue(Stopwatch.GetTimestamp(), period));
        lock (_gate)
        {
            if (first)
                _jobs.Insert(0, job);
            else
                _jobs.Add(job);
            Monitor.PulseAll(_gate);
        }
        return job;
    }

    /// <summary>A periodic job on the clock.</summary>
    public sealed class Job : IDisposable
    {
        private readonly DaemonClock _clock;

        internal Job(DaemonClock clock, TimeSpan period, Action work, long due)
        {
            _clock = clock;
            Period = period;
            Work = work;
            Due = due;
        }

        public TimeSpan Period { get; }

        internal Action Work { get; }

        /// <summary>The next instant it runs (Stopwatch ticks); under the clock's lock.</summary>
        internal long Due { get; set; }

        /// <summary>Runs the job at <paramref name="instant"/> (Stopwatch ticks) if that is before its next grid instant; any thread.</summary>
        public void RunNoLaterThan(long instant)
        {
            lock (_clock._gate)
            {
                if (instant >= Due)
                    return;
                Due = instant;
                Monitor.PulseAll(_clock._gate);
            }
        }

        /// <summary>Removes the job; once this returns it is not running and never runs again (unless called from the job itself).</summary>
        public void Dispose()
        {
            lock (_clock._gate)
            {
                _clock._jobs.Remove(this);
                while (_clock._running && Thread.CurrentThread != _clock._thread)
                    Monitor.Wait(_clock._gate);
            }
        }
    }

    private void Run()
    {
        var due = new List<Action>();
        lock (_gate)
        {
            while (!_stopped)
            {
                var now = Stopwatch.GetTimestamp();
                var next = long.MaxValue;
                foreach (var job in _jobs)
                {
                    if (job.Due <= now)
                    {
                        due.Add(job.Work);
                        job.Due = Cadence.NextDue(now, job.Period);
                    }
                    next = Math.Min(next, job.Due);
                }
                if (due.Count > 0)
                {
                    // Outside the lock: a job may ask for an earlier run of itself or another.
                    _running = true;
                    Monitor.Exit(_gate);
                    try
                    {
                        foreach (var work in due)
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
                    }
                    finally
                    {
                        Monitor.Enter(_gate);
                        _running = false;
                        Monitor.PulseAll(_gate);
                    }
                    due.Clear();
                    continue;
                }
                if (next == long.MaxValue)
                    Monitor.Wait(_gate);
                else
                    Monitor.Wait(_gate, Cadence.Until(next, now));
                Interlocked.Increment(ref _wakes);
            }
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _stopped = true;
            Monitor.PulseAll(_gate);
        }
        if (Thread.CurrentThread != _thread)
            _thread.Join();
    }
}
