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

    /// <summary>Nothing is waiting right now (only from <see cref="ILocalInterface.TryRead"/>).</summary>
    Empty,
}

/// <summary>
/// A local interface back end: a TAP device or a NIC opened through a packet socket. One thread reads it;
/// any thread may write to it.
/// </summary>
public interface ILocalInterface : IDisposable
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

    /// <summary>Blocks until a frame arrives (filling <paramref name="frame"/>) or the interface closes.</summary>
    ReadStatus Read(Frame frame);

    /// <summary>
    /// Reads a frame if one is waiting, without blocking: <see cref="ReadStatus.Empty"/> if none.
    /// Calls must not overlap (the switch port serialises its reader and its helpers).
    /// </summary>
    ReadStatus TryRead(Frame frame);

    /// <summary>Blocks until <see cref="TryRead"/> may have something, or the interface closes.</summary>
    void WaitReadable();

    /// <summary>
    /// Called on the reading thread just before <see cref="Read"/> blocks because nothing is waiting:
    /// the moment to flush what the frames read so far produced (see <c>TransmitBatch</c>).
    /// </summary>
    Action? BeforeWait { get; set; }

    /// <summary>Sends a frame out of the device; false when the device refused it.</summary>
    bool Write(Frame frame);

    /// <summary>Unblocks <see cref="Read"/> for good.</summary>
    void Close();
}
