namespace Vnet.Frames;

/// <summary>
/// A capped pool of <see cref="Frame"/>s. Buffers are created on demand up to the cap and then
/// reused forever, so the data path allocates nothing in steady state; when every buffer is in
/// flight, <see cref="TryRent"/> fails and the caller drops (and counts) the frame, which is what a
/// switch with full buffers does.
/// </summary>
public sealed class FramePool
{
    private readonly Frame[] _free;
    private readonly Lock _lock = new();
    private int _count;
    private int _created;

    public FramePool(int capacity = 1024)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
        _free = new Frame[capacity];
    }

    /// <summary>A process-wide pool sized for one daemon.</summary>
    public static FramePool Shared { get; } = new(2048);

    public int Capacity { get; }

    /// <summary>Buffers created so far (at most <see cref="Capacity"/>).</summary>
    public int Created => Volatile.Read(ref _created);

    /// <summary>Buffers sitting in the pool, not in flight.</summary>
    public int Available
    {
        get
        {
            lock (_lock)
                return _count;
        }
    }

    /// <summary>Rents a frame with one reference, or returns null when every buffer is in flight.</summary>
    public Frame? TryRent()
    {
        Frame? frame = null;
        lock (_lock)
        {
            if (_count > 0)
            {
                frame = _free[--_count];
                _free[_count] = null!;
            }
        }

        if (frame is null)
        {
            if (Interlocked.Increment(ref _created) > Capacity)
            {
                Interlocked.Decrement(ref _created);
                return null;
            }
            frame = new Frame(this);
        }

        frame.Rent();
        return frame;
    }

    internal void Return(Frame frame)
    {
        frame.Reset();
        lock (_lock)
        {
            _free[_count++] = frame;
        }
    }
}
