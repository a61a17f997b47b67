namespace Vnet.Daemon;

/// <summary>
/// How many of one kind of work from outside (the Proxy's requests at a host, remote CLI sessions)
/// may run at once. A counter, not a queue: what does not fit is refused at once and counted, so
/// that nobody can make the daemon hold an unbounded number of tasks, sockets or loop items.
/// </summary>
public sealed class ConcurrencyLimit
{
    private int _active;
    private long _refused;

    public ConcurrencyLimit(int max)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        Max = max;
    }

    public int Max { get; }

    /// <summary>Work running now.</summary>
    public int Active => Volatile.Read(ref _active);

    /// <summary>Work refused since start because <see cref="Max"/> were running.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Takes a slot; false (counted) when all are taken. Every true must be paired with one <see cref="Exit"/>.</summary>
    public bool TryEnter()
    {
        if (Interlocked.Increment(ref _active) <= Max)
            return true;
        Interlocked.Decrement(ref _active);
        Interlocked.Increment(ref _refused);
        return false;
    }

    public void Exit()
    {
        if (Interlocked.Decrement(ref _active) < 0)
            throw new InvalidOperationException("ConcurrencyLimit.Exit without TryEnter.");
    }
}
