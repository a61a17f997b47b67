namespace Vnet.Daemon;

/// <summary>
/// Keeps a peer from filling the disk through the log: at most <see cref="LinesPerWindow"/> lines
/// per reason per <see cref="Window"/>; past that, lines are only counted. Once the window is over,
/// the next line allowed for that reason, or <see cref="Drain"/> (which a timer calls, so that a
/// burst followed by silence is reported too), says how many were left out, in one line.
/// <para>
/// A reason is a short constant the code names ("bad message", "flood"), never text from the network,
/// so the set stays small; past <see cref="MaxReasons"/> distinct ones, the rest share one budget.
/// Thread-safe; meant for fault paths, not for anything that runs per frame.
/// </para>
/// </summary>
public sealed class LogLimiter
{
    public static readonly TimeSpan Window = TimeSpan.FromMinutes(1);

    /// <summary>Enough to see what a fault looks like and who causes it; a flood past it costs a counter.</summary>
    public const int DefaultLinesPerWindow = 10;

    /// <summary>Distinct reasons tracked; beyond them, one shared budget (a bug if it happens: reasons are constants).</summary>
    public const int MaxReasons = 64;

    private const string Overflow = "(other reasons)";

    private readonly Dictionary<string, State> _reasons = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private readonly TimeProvider _time;
    private readonly long _windowTicks;
    private long _suppressed;

    public LogLimiter(int linesPerWindow = DefaultLinesPerWindow, TimeProvider? time = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(linesPerWindow, 1);
        LinesPerWindow = linesPerWindow;
        _time = time ?? TimeProvider.System;
        _windowTicks = (long)(Window.TotalSeconds * _time.TimestampFrequency);
    }

    public int LinesPerWindow { get; }

    /// <summary>Lines left out since start, over every reason.</summary>
    public long Suppressed => Interlocked.Read(ref _suppressed);

    /// <summary>
    /// Whether a line for <paramref name="reason"/> may be written now. When it may and an earlier
    /// window of this reason left lines out, <paramref name="suppressed"/> says how many: write that
    /// first.
    /// </summary>
    public bool TryAcquire(string reason, out long suppressed)
    {
        ArgumentNullException.ThrowIfNull(reason);
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            var state = StateOf(reason, now);
            suppressed = 0;
            if (now - state.Start >= _windowTicks)
            {
                suppressed = state.Suppressed;
                state.Start = now;
                state.Used = 0;
                state.Suppressed = 0;
            }
            if (state.Used < LinesPerWindow)
            {
                state.Used++;
                return true;
            }
            state.Suppressed++;
        }
        suppressed = 0;
        Interlocked.Increment(ref _suppressed);
        return false;
    }

    /// <summary>
    /// Reports each reason whose window is over with lines left out (once: their count starts
    /// again), outside the lock.
    /// </summary>
    public void Drain(Action<string, long> report)
    {
        ArgumentNullException.ThrowIfNull(report);
        List<(string, long)>? due = null;
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            foreach (var (reason, state) in _reasons)
            {
                if (state.Suppressed == 0 || now - state.Start < _windowTicks)
                    continue;
                (due ??= []).Add((reason, state.Suppressed));
                state.Start = now;
                state.Used = 0;
                state.Suppressed = 0;
            }
        }
        if (due is null)
            return;
        foreach (var (reason, count) in due)
            report(reason, count);
    }

    private State StateOf(string reason, long now)
    {
        if (_reasons.TryGetValue(reason, out var state))
            return state;
        // The last slot is the shared one.
        if (_reasons.Count >= MaxReasons - 1)
            reason = Overflow;
        if (!_reasons.TryGetValue(reason, out state))
        {
            state = new State { Start = now };
            _reasons[reason] = state;
        }
        return state;
    }

    private sealed class State
    {
        public long Start;
        public int Used;
        public long Suppressed;
    }
}
