using System.Diagnostics;
using Vnet.Frames;

namespace Vnet.Links;

/// <summary>
/// Frames held back by a link's emulation until they are due. A virtual clock computes when each
/// frame would leave a link of the given rate (after the ones before it) and adds the delay and
/// jitter; due times never decrease, so frames stay in order, as on a wire. A frame that would
/// wait longer than the queue limit for the rate, or that loss picks, is dropped.
/// </summary>
internal sealed class DelayLine
{
    private readonly (Frame? Frame, long Due)[] _ring;
    private readonly Lock _lock = new();
    private int _head;
    private int _count;
    private long _nextDeparture;
    private long _lastDue;

    public DelayLine(int capacity) => _ring = new (Frame?, long)[capacity];

    public bool IsEmpty => Volatile.Read(ref _count) == 0;

    /// <summary>Takes the frame (and its reference) unless it is dropped; false means dropped.</summary>
    public bool TryAdd(Frame frame, LinkEmulation emulation)
    {
        var now = Stopwatch.GetTimestamp();
        if (emulation.Loss > 0 && Random.Shared.NextDouble() < emulation.Loss)
            return false;
        lock (_lock)
        {
            if (_count == _ring.Length)
                return false;
            var departure = Math.Max(now, _nextDeparture);
            if (emulation.RateBitsPerSecond > 0)
            {
                if (departure - now > (long)(emulation.QueueLimit.TotalSeconds * Stopwatch.Frequency))
                    return false;
                departure += (long)(frame.Length * 8.0 / emulation.RateBitsPerSecond * Stopwatch.Frequency);
            }
            _nextDeparture = departure;
            var jitter = emulation.Jitter > TimeSpan.Zero ? Random.Shared.NextDouble() * emulation.Jitter.TotalSeconds : 0;
            var due = departure + (long)((emulation.Delay.TotalSeconds + jitter) * Stopwatch.Frequency);
            due = Math.Max(due, _lastDue);
            _lastDue = due;
            _ring[(_head + _count) % _ring.Length] = (frame, due);
            _count++;
        }
        return true;
    }

    /// <summary>Moves the frames that are due into the batch; says when the next one is.</summary>
    public int DequeueDue(Frame?[] batch, out long nextDue)
    {
        var now = Stopwatch.GetTimestamp();
        nextDue = long.MaxValue;
        lock (_lock)
        {
            var n = 0;
            while (_count > 0 && n < batch.Length)
            {
                var (frame, due) = _ring[_head];
                if (due > now)
                {
                    nextDue = due;
                    break;
                }
                batch[n++] = frame;
                _ring[_head] = default;
                _head = (_head + 1) % _ring.Length;
                _count--;
            }
            if (_count > 0 && nextDue == long.MaxValue)
                nextDue = _ring[_head].Due;
            return n;
        }
    }

    public void Clear()
    {
        lock (_lock)
        {
            while (_count > 0)
            {
                _ring[_head].Frame!.Release();
                _ring[_head] = default;
                _head = (_head + 1) % _ring.Length;
                _count--;
            }
        }
    }
}
