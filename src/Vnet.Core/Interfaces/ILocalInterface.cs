using Vnet.Frames;

namespace Vnet.Interfaces;

public enum ReadStatus
{
    /// <summary>A frame was read.</summary>
    Frame,

    /// <summary>Something arrived that is not a usable frame; it was discarded (count it).</summary>
    Bad,

    /// <summary>The interface was closed or disappeared; stop reading.</summary>
    Closed,

    /// <summary>Nothing is waiting right now (only from <see cref="IReceiveQueue.TryRead"/>).</summary>
    Empty,
}

/// <summary>
/// One receive queue of a device: read by one thread at a time (<see cref="Engine.InterfacePort"/>
/// serialises its reader and its helpers with the queue's own lock). A device hands over all the
/// frames of one flow on one queue, so reading each queue in order keeps every flow in order.
/// </summary>
public interface IReceiveQueue
{
    /// <summary>
    /// Reads a frame if one is waiting, without blocking: <see cref="ReadStatus.Empty"/> if none.
    /// Calls on one queue must not overlap.
    /// </summary>
    ReadStatus TryRead(Frame frame);

    /// <summary>Blocks until <see cref="TryRead"/> may have something, or the interface closes.</summary>
    void WaitReadable();
}

/// <summary>
/// A local interface back end: a TAP device or a NIC opened through a packet socket. Each receive
/// queue (<see cref="Queues"/>; one, except for a multi-queue TAP) is read by one thread at a
/// time; any thread may write to the device.
/// </summary>
public interface ILocalInterface : IReceiveQueue, IDisposable
{
    /// <summary>Device name, as the kernel knows it.</summary>
    string Name { get; }

    /// <summary>
    /// The offloads agreed with the device: the kinds of offload metadata (TSO super-frames, partial
    /// checksums) it takes on write (and, for a TAP, the only kinds it hands over on read; a packet
    /// socket takes them all). A writer hands over only frames whose
    /// metadata <see cref="OffloadSetExtensions.Takes"/> allows, and finalises the others into
    /// complete, MTU-sized frames; with <see cref="OffloadSet.None"/>, every frame.
    /// </summary>
    OffloadSet Offloads { get; }

    /// <summary>Largest plain frame (MTU plus Ethernet header) the device takes.</summary>
    int MaxFrameSize { get; }

    /// <summary>
    /// The device's receive queues, at least one; each holds whole flows (a multi-queue TAP steers
    /// every flow to one queue). The first reads what the device's own <see cref="IReceiveQueue.TryRead"/>
    /// and <see cref="IReceiveQueue.WaitReadable"/> read.
    /// </summary>
    IReadOnlyList<IReceiveQueue> Queues { get; }

    /// <summary>Sends a frame out of the device; false when the device refused it.</summary>
    bool Write(Frame frame);

    /// <summary>Unblocks every queue's <see cref="IReceiveQueue.WaitReadable"/> for good.</summary>
    void Close();
}
