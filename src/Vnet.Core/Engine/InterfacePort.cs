using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Interfaces;

namespace Vnet.Engine;

/// <summary>
/// A local interface as a switch port.
/// <code>
/// Receive: a dedicated thread reads the device into pooled frames and calls VirtualSwitch.Forward.
/// Transmit: the sending thread writes to the device itself (a TAP write never blocks); frames with
///           offload metadata are finalised first when the device did not agree to that kind
///           (a TAP takes what TUNSETOFFLOAD accepted, a packet socket all): whatever a peer sent, a
///           kernel gets only the kinds of metadata it offered itself.
/// </code>
/// </summary>
public sealed class InterfacePort : Port, IDisposable
{
    private readonly VirtualSwitch _switch;
    private readonly FramePool _pool;
    private readonly Thread _reader;
    private volatile bool _up = true;

    [ThreadStatic]
    private static List<Frame>? t_segments;

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

    public byte HopLimit { get; }

    public override bool IsUp => _up;

    public override bool InFloodTree => true;

    /// <summary>Raised once, on the reader thread, when the device goes away.</summary>
    public event Action<InterfacePort>? Closed;

    public void Start() => _reader.Start();

    private void ReadLoop()
    {
        TransmitBatch.Begin();
        Device.BeforeWait = TransmitBatch.Flush;
        while (_up)
        {
            var frame = _pool.TryRent();
            if (frame is null)
            {
                // Every buffer is in flight: let the senders catch up rather than spin.
                _switch.CountDrop(DropReason.NoBuffer);
                Thread.Sleep(1);
                continue;
            }
            var status = Device.Read(frame);
            if (status == ReadStatus.Frame)
            {
                Counters.CountRx(frame.Length);
                frame.IngressPort = Id;
                frame.HopLimit = HopLimit;
                _switch.Forward(frame);
                continue;
            }
            frame.Release();
            if (status == ReadStatus.Bad)
            {
                Counters.CountRxError();
                continue;
            }
            break;
        }
        TransmitBatch.End();
        _up = false;
        Closed?.Invoke(this);
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
            Counters.CountTx(length);
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
