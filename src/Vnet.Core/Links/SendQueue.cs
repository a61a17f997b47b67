using Vnet.Frames;

namespace Vnet.Links;

/// <summary>
/// A link's bounded output queue: many data-path threads enqueue, the link's sender thread takes
/// batches. Full means drop (a switch's output queue), so no data-path thread ever blocks on a slow
/// link. The sender is woken only when it sleeps, which keeps wake-ups off the busy path.
/// </summary>
internal sealed class SendQueue : IDisposable
{
    private readonly Frame?[] _ring;
    private readonly Lock _lock = new();
    private readonly ManualResetEventSlim _signal = new(false, spinCount: 20);
    private int _head;
    private int _count;
    private bool _sleeping;
    private bool _closed;

    public SendQueue(int capacity) => _ring = new Frame?[capacity];

    /// <summary>A lock-free glance (the count only changes under the lock); exact under the send lock's order.</summary>
    public bool IsEmpty => Volatile.Read(ref _count) == 0;

    public int Count
    {
        get
        {
            lock (_lock)
                return _count;
        }
    }

    /// <summary>
    /// Queues the frame (taking over its reference); false when full or closed. Without
    /// <paramref name="wake"/> a sleeping sender is left asleep: the caller flushes.
    /// </summary>
    public bool TryEnqueue(Frame frame, bool wake = true)
    {
        lock (_lock)
        {
            if (_closed || _count == _ring.Length)
                return false;
            _ring[(_head + _count) % _ring.Length] = frame;
            _count++;
            if (wake && _sleeping)
                _sleeping = false;
            else
                wake = false;
        }
        if (wake)
            _signal.Set();
        return true;
    }

    /// <summary>
    /// Puts frames taken by <see cref="DequeueBatch"/> back at the head, in order (the socket could
    /// not take them). Frames that no longer fit are released and their number returned.
    /// </summary>
    public int RequeueFront(Frame?[] batch, int from, int n)
    {
        var dropped = 0;
        lock (_lock)
        {
            for (var i = from + n - 1; i >= from; i--)
            {
                if (_closed || _count == _ring.Length)
                {
                    batch[i]!.Release();
                    dropped++;
                    continue;
                }
                _head = (_head - 1 + _ring.Length) % _ring.Length;
                _ring[_head] = batch[i];
                _count++;
            }
        }
        return dropped;
    }

    /// <summary>Moves up to <paramref name="batch"/>.Length frames into the batch; returns how many.</summary>
    public int DequeueBatch(Frame?[] batch)
    {
        lock (_lock)
        {
            var n = Math.Min(batch.Length, _count);
            for (var i = 0; i < n; i++)
            {
                batch[i] = _ring[_head];
                _ring[_head] = null;
                _head = (_head + 1) % _ring.Length;
            }
            _count -= n;
            return n;
        }
    }

    /// <summary>Sleeps until something is queued, <see cref="Wake"/> is called, or the timeout passes.</summary>
    public void Wait(int timeoutMs)
    {
        lock (_lock)
        {
            if (_count > 0 || _closed)
                return;
            _sleeping = true;
            _signal.Reset();
        }
        _signal.Wait(timeoutMs);
        lock (_lock)
            _sleeping = false;
    }

    /// <summary>Wakes the sender for work that is not a frame (control messages, shutdown).</summary>
    public void Wake()
    {
        lock (_lock)
            _sleeping = false;
        _signal.Set();
    }

    /// <summary>Refuses further frames and releases the queued ones.</summary>
    public void Close()
    {
        lock (_lock)
        {
            _closed = true;
            while (_count > 0)
            {
                _ring[_head]!.Release();
                _ring[_head] = null;
                _head = (_head + 1) % _ring.Length;
                _count--;
            }
        }
        _signal.Set();
    }

    public void Dispose()
    {
        Close();
        _signal.Dispose();
    }
}
