using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Engine;

/// <summary>Traffic counters of one port. Written from several data-path threads, hence Interlocked.</summary>
public sealed class PortCounters
{
    private long _rxFrames;
    private long _rxBytes;
    private long _txFrames;
    private long _txBytes;
    private long _txDrops;
    private long _rxErrors;

    public long RxFrames => Volatile.Read(ref _rxFrames);

    public long RxBytes => Volatile.Read(ref _rxBytes);

    public long TxFrames => Volatile.Read(ref _txFrames);

    public long TxBytes => Volatile.Read(ref _txBytes);

    /// <summary>Frames this port could not send: down, queue full, or a write error.</summary>
    public long TxDrops => Volatile.Read(ref _txDrops);

    /// <summary>Frames that arrived malformed or could not be read.</summary>
    public long RxErrors => Volatile.Read(ref _rxErrors);

    public void CountRx(int bytes)
    {
        Interlocked.Increment(ref _rxFrames);
        Interlocked.Add(ref _rxBytes, bytes);
    }

    public void CountTx(int bytes)
    {
        Interlocked.Increment(ref _txFrames);
        Interlocked.Add(ref _txBytes, bytes);
    }

    public void CountTx(int frames, int bytes)
    {
        Interlocked.Add(ref _txFrames, frames);
        Interlocked.Add(ref _txBytes, bytes);
    }

    public void CountTxDrop() => Interlocked.Increment(ref _txDrops);

    public void CountRxError() => Interlocked.Increment(ref _rxErrors);
}

/// <summary>
/// Where frames enter and leave a daemon: a local interface or a link. The switch knows ports by a
/// small integer id so that rules compile to array indices.
/// </summary>
public abstract class Port
{
    protected Port(PortRef name)
    {
        Name = name;
        IsInterface = name.Kind == PortKind.Interface;
    }

    /// <summary>A local interface (TAP or NIC), not a link: kept as a field for the data path.</summary>
    public bool IsInterface { get; }

    /// <summary>Index in the switch's port array, assigned when the port is added.</summary>
    public int Id { get; internal set; } = -1;

    public PortRef Name { get; }

    public PortCounters Counters { get; } = new();

    public abstract bool IsUp { get; }

    /// <summary>
    /// Whether broadcast and multicast frames travel over this port. Local interfaces always do;
    /// links only when they belong to the star, which is the overlay's loop-free flooding tree.
    /// </summary>
    public abstract bool InFloodTree { get; }

    /// <summary>
    /// Sends a frame out of this port, taking over one reference to it (the port releases it).
    /// Never blocks on the network: a port that cannot take the frame drops and counts it.
    /// </summary>
    public abstract void Transmit(Frame frame);

    public override string ToString() => Name.ToString();
}
