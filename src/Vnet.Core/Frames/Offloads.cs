namespace Vnet.Frames;

/// <summary>
/// Turns frames that carry offload metadata (partial checksums, TSO/GSO super-frames) into frames
/// a device or peer without offloads accepts, and back.
/// </summary>
public static class Offloads
{
    /// <summary>
    /// Makes <paramref name="frame"/> fit a device without offloads: a plain frame passes as is; a
    /// frame that only needs its checksum gets it completed (in place when it is not shared, else
    /// in a copy); a GSO super-frame is cut into segments of at most <c>GsoSize</c> payload bytes
    /// with complete IP and TCP/UDP checksums. Takes over the caller's reference to
    /// <paramref name="frame"/>; every frame added to <paramref name="output"/> carries one reference
    /// for the caller. Returns false (and releases everything) when the frame cannot be parsed or no
    /// buffer is free.
    /// </summary>
    public static bool Finalize(Frame frame, FramePool pool, List<Frame> output) =>
        throw new NotImplementedException();

    /// <summary>
    /// Cuts a GSO super-frame into MTU-sized segments that keep a partial checksum
    /// (<c>NEEDS_CSUM</c>, pseudo-header sum in place) when <paramref name="completeChecksums"/> is
    /// false: for links whose far end writes to an offload-capable TAP. Same ownership rules as
    /// <see cref="Finalize"/>.
    /// </summary>
    public static bool Segment(Frame frame, FramePool pool, List<Frame> output, bool completeChecksums) =>
        throw new NotImplementedException();

    /// <summary>
    /// Marks a plain frame longer than one MTU (a NIC's GRO merged it before libpcap saw it) as a TCP
    /// super-frame: sets GSO metadata with <c>GsoSize</c> = MTU minus the IP and TCP headers and a
    /// partial checksum, so it travels on like a TAP's super-frame. False when it is not TCP over IP.
    /// </summary>
    public static bool MarkAsSuperFrame(Frame frame, int mtu) =>
        throw new NotImplementedException();
}
