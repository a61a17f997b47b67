using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Interfaces;

namespace Vnet.Engine;

/// <summary>
/// A local interface as a switch port.
/// <code>
/// Receive: a dedicated thread reads the device into pooled frames and calls VirtualSwitch.Forward,
///          holding the port's read lock from the first frame of a burst until the burst's
///          frames have been flushed to their links; it releases it before it sleeps.
/// Help:    a link's receiver thread that has just written frames to this port's device reads
///          what the device holds right then (up to HelpBudget frames), if the lock is free,
///          before it sleeps itself. A VM answers a frame while the write that carried it is still
///          in the kernel, so the answer is usually there already: it goes out on this thread,
///          without waking the reader (on this machine a wake-up is tens of microseconds, and a
///          ping's round trip crossed four of them). Under the lock, frames leave in the order
///          they were read, whichever thread reads them.
/// Transmit: the sending thread writes to the device itself (a TAP write never blocks); frames with
///           offload metadata are finalised first when the device did not agree to that kind
///           (a TAP takes what TUNSETOFFLOAD accepted, a packet socket all): whatever a peer sent, a
///           kernel gets only the kinds of metadata it offered itself.
/// </code>
/// </summary>
public sealed class InterfacePort : Port, IDisposable
{
    /// <summary>Most frames a helping thread reads before it goes back to its own work.</summary>
    private const int HelpBudget = 32;

    private readonly VirtualSwitch _switch;
    private readonly FramePool _pool;
    private readonly Thread _reader;
    private readonly Lock _readLock = new();
    private volatile bool _up = true;
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
        _reader = new Thread(ReadLoop) { IsBackground = true, Name = $"if-{device.Name}" };
    }

    public ILocalInterface Device { get; }

    /// <summary>Frames read from the device by a link's receiver (helping) rather than by the port's reader.</summary>
    public long HelpedFrames => Interlocked.Read(ref _helped);

    public byte HopLimit { get; }

    public override bool IsUp => _up;

    public override bool InFloodTree => true;

    /// <summary>Raised once, on the reader thread, when the device goes away.</summary>
    public event Action<InterfacePort>? Closed;

    public void Start() => _reader.Start();

    private void ReadLoop()
    {
        TransmitBatch.Begin();
        while (_up)
        {
            ReadStatus last;
            lock (_readLock)
            {
                last = Drain(int.MaxValue, out _);
                TransmitBatch.Flush();
            }
            if (last == ReadStatus.Closed)
                break;
            if (last == ReadStatus.Empty)
                Device.WaitReadable();
            else if (last == ReadStatus.Frame)
                Thread.Sleep(1); // Every buffer is in flight: let the senders catch up rather than spin.
        }
        TransmitBatch.End();
        _up = false;
        Closed?.Invoke(this);
    }

    /// <summary>
    /// Reads and forwards up to <paramref name="budget"/> frames (under the read lock): Empty when
    /// the device has nothing more, Closed when it went away, Frame when the budget or the frame
    /// pool ran out first.
    /// </summary>
    private ReadStatus Drain(int budget, out int read)
    {
        read = 0;
        for (var i = 0; i < budget && _up; i++)
        {
            var frame = _pool.TryRent();
            if (frame is null)
            {
                _switch.CountDrop(DropReason.NoBuffer);
                return ReadStatus.Frame;
            }
            var status = Device.TryRead(frame);
            if (status == ReadStatus.Frame)
            {
                Counters.CountRx(frame.Length);
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
        if (!_up || !_readLock.TryEnter())
            return;
        try
        {
            Drain(HelpBudget, out var read);
            TransmitBatch.Flush();
            if (read > 0)
                Interlocked.Add(ref _helped, read);
        }
        finally
        {
            _readLock.Exit();
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
        if (_reader.IsAlive && Thread.CurrentThread != _reader)
            _reader.Join(TimeSpan.FromSeconds(2));
        Device.Dispose();
    }
}
