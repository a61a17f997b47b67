using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Interfaces;

namespace Vnet.Engine;

/// <summary>
/// A local interface as a switch port.
/// <code>
/// Receive: a dedicated thread per receive queue of the device (one, or N for a multi-queue TAP)
///          reads it into pooled frames and calls VirtualSwitch.Forward, holding that queue's read
///          lock from the first frame of a burst until the burst's frames have been flushed to
///          their links; it releases it before it sleeps. The device keeps every flow on one
///          queue, so per-queue order is per-flow order.
/// Help:    a link's receiver thread that has just written frames to this port's device reads
///          what the device holds right then (up to HelpBudget frames from each queue whose lock
///          is free), before it sleeps itself. A VM answers a frame while the write that carried
///          it is still in the kernel, so the answer is usually there already: it goes out on this
///          thread, without waking the reader (on this machine a wake-up is tens of microseconds,
///          and a ping's round trip crossed four of them). Under a queue's lock, its frames leave
///          in the order they were read, whichever thread reads them.
/// Transmit: the sending thread writes to the device itself (a TAP write never blocks; a
///           multi-queue TAP takes writes on its first queue, which steers nothing: see
///           TapSteering); frames with offload metadata are finalised first when the device did
///           not agree to that kind (a TAP takes what TUNSETOFFLOAD accepted, a packet socket
///           all): whatever a peer sent, a kernel gets only the kinds of metadata it offered itself.
/// </code>
/// </summary>
public sealed class InterfacePort : Port, IDisposable
{
    /// <summary>Most frames a helping thread reads from one queue before it goes back to its own work.</summary>
    private const int HelpBudget = 32;

    private readonly VirtualSwitch _switch;
    private readonly FramePool _pool;
    private readonly QueueReader[] _queues;
    private volatile bool _up = true;
    private int _closedRaised;
    private long _helped;

    [ThreadStatic]
    private static List<Frame>? t_segments;

    // The ports this thread wrote to since it last helped (only on threads that help: see BeginHelping).
    [ThreadStatic]
    private static InterfacePort?[]? t_written;

    [ThreadStatic]
    private static int t_writtenCount;

    public InterfacePort(ILocalInterface device, VirtualSwitch sw, FramePool pool, byte hopLimit = 8)
        : base(PortRef.Interface(device.Name))
    {
        Device = device;
        _switch = sw;
        _pool = pool;
        HopLimit = hopLimit;
        var queues = device.Queues;
        _queues = new QueueReader[queues.Count];
        for (var i = 0; i < _queues.Length; i++)
        {
            var reader = new QueueReader(queues[i]);
            var name = _queues.Length == 1 ? $"if-{device.Name}" : $"if-{device.Name}-{i}";
            reader.Thread = new Thread(() => ReadLoop(reader)) { IsBackground = true, Name = name };
            _queues[i] = reader;
        }
    }

    public ILocalInterface Device { get; }

    /// <summary>Frames read from the device by a link's receiver (helping) rather than by the port's readers.</summary>
    public long HelpedFrames => Interlocked.Read(ref _helped);

    /// <summary>The device's receive queues, each with its own reader thread and lock.</summary>
    public int QueueCount => _queues.Length;

    /// <summary>Frames read from queue <paramref name="queue"/> (by its reader or by helpers).</summary>
    public long QueueFrames(int queue) => Volatile.Read(ref _queues[queue].Frames);

    public byte HopLimit { get; }

    public override bool IsUp => _up;

    public override bool InFloodTree => true;

    /// <summary>Raised once, on a reader thread, when the device goes away.</summary>
    public event Action<InterfacePort>? Closed;

    public void Start()
    {
        foreach (var q in _queues)
            q.Thread.Start();
    }

    private void ReadLoop(QueueReader queue)
    {
        ForwardingPriority.ApplyToCurrentThread();
        TransmitBatch.Begin();
        while (_up)
        {
            ReadStatus last;
            lock (queue.Lock)
            {
                last = Drain(queue, int.MaxValue, out _);
                TransmitBatch.Flush();
            }
            if (last == ReadStatus.Closed)
                break;
            if (last == ReadStatus.Empty)
                queue.Source.WaitReadable();
            else if (last == ReadStatus.Frame)
                Thread.Sleep(1); // Every buffer is in flight: let the senders catch up rather than spin.
        }
        TransmitBatch.End();
        _up = false;
        if (Interlocked.Exchange(ref _closedRaised, 1) != 0)
            return;
        // The device went away (or the port is being disposed): the other queues' readers may be
        // asleep on descriptors that will say nothing more.
        if (_queues.Length > 1)
            Device.Close();
        Closed?.Invoke(this);
    }

    /// <summary>
    /// Reads and forwards up to <paramref name="budget"/> frames of one queue (under its read lock):
    /// Empty when the queue has nothing more, Closed when the device went away, Frame when the
    /// budget or the frame pool ran out first.
    /// </summary>
    private ReadStatus Drain(QueueReader queue, int budget, out int read)
    {
        read = 0;
        var source = queue.Source;
        for (var i = 0; i < budget && _up; i++)
        {
            var frame = _pool.TryRent();
            if (frame is null)
            {
                _switch.CountDrop(DropReason.NoBuffer);
                return ReadStatus.Frame;
            }
            var status = source.TryRead(frame);
            if (status == ReadStatus.Frame)
            {
                Counters.CountRx(frame.Length);
                // Only the holder of the queue's lock writes this; Volatile for readers elsewhere.
                Volatile.Write(ref queue.Frames, queue.Frames + 1);
                frame.IngressPort = Id;
                frame.HopLimit = HopLimit;
                read++;
                _switch.Forward(frame);
                continue;
            }
            frame.Release();
            if (status == ReadStatus.Bad)
            {
                Counters.CountRxError();
                continue;
            }
            return status;
        }
        return _up ? ReadStatus.Frame : ReadStatus.Closed;
    }

    /// <summary>Makes this thread (a link's receiver) note the ports it writes to, for <see cref="HelpWritten"/>.</summary>
    public static void BeginHelping()
    {
        t_written ??= new InterfacePort?[4];
        t_writtenCount = 0;
    }

    /// <summary>
    /// Reads what the ports this thread wrote to hold now, on this thread (see the type's Help),
    /// and flushes it to the links: called by a link's receiver just before it sleeps.
    /// </summary>
    public static void HelpWritten()
    {
        var written = t_written;
        var count = t_writtenCount;
        if (written is null || count == 0)
            return;
        t_writtenCount = 0;
        for (var i = 0; i < count; i++)
        {
            var port = written[i]!;
            written[i] = null;
            port.Help();
        }
    }

    private void Help()
    {
        for (var i = 0; i < _queues.Length && _up; i++)
        {
            var queue = _queues[i];
            if (!queue.Lock.TryEnter())
                continue;
            try
            {
                Drain(queue, HelpBudget, out var read);
                TransmitBatch.Flush();
                if (read > 0)
                    Interlocked.Add(ref _helped, read);
            }
            finally
            {
                queue.Lock.Exit();
            }
        }
    }

    private static void NoteWritten(InterfacePort port)
    {
        var written = t_written;
        if (written is null)
            return;
        var count = t_writtenCount;
        for (var i = 0; i < count; i++)
        {
            if (ReferenceEquals(written[i], port))
                return;
        }
        // A thread that writes to more ports than this between two sleeps helps the first few only.
        if (count < written.Length)
        {
            written[count] = port;
            t_writtenCount = count + 1;
        }
    }

    public override void Transmit(Frame frame)
    {
        if (!_up)
        {
            Counters.CountTxDrop();
            frame.Release();
            return;
        }
        if (Device.Offloads.Takes(frame.Offload))
        {
            WriteOne(frame);
            return;
        }
        var segments = t_segments ??= new List<Frame>(64);
        segments.Clear();
        if (!Offloads.Finalize(frame, _pool, segments))
        {
            Counters.CountTxDrop();
            return;
        }
        foreach (var segment in segments)
            WriteOne(segment);
        segments.Clear();
    }

    private void WriteOne(Frame frame)
    {
        var length = frame.Length;
        if (Device.Write(frame))
        {
            Counters.CountTx(length);
            NoteWritten(this);
        }
        else
            Counters.CountTxDrop();
        frame.Release();
    }

    public void Dispose()
    {
        _up = false;
        Device.Close();
        foreach (var q in _queues)
        {
            if (q.Thread.IsAlive && Thread.CurrentThread != q.Thread)
                q.Thread.Join(TimeSpan.FromSeconds(2));
        }
        // A link's receiver may be helping (Help) past its look at _up: the descriptors close only
        // once no one holds a read lock, so no read can land on a descriptor closed and reused
        // meanwhile. A helper that takes a lock after this finds _up false before it reads.
        foreach (var q in _queues)
            q.Lock.Enter();
        try
        {
            Device.Dispose();
        }
        finally
        {
            foreach (var q in _queues)
                q.Lock.Exit();
        }
    }

    /// <summary>One receive queue of the device, its reader thread, its read lock and its count.</summary>
    private sealed class QueueReader(IReceiveQueue source)
    {
        public readonly IReceiveQueue Source = source;
        public readonly Lock Lock = new();
        public Thread Thread = null!;
        public long Frames;
    }
}
