namespace Vnet.Frames;

/// <summary>Why a virtio-net header that came from a peer was refused.</summary>
public enum OffloadFault : byte
{
    None,

    /// <summary>A flag other than <c>NEEDS_CSUM</c> and <c>DATA_VALID</c>.</summary>
    UnknownFlags,

    /// <summary>A GSO type the daemon never produces: UFO, USO, the ECN bit alone, anything unknown.</summary>
    UnknownGsoType,

    /// <summary>A <c>GsoSize</c> on a frame that is not a super-frame.</summary>
    GsoSizeWithoutGso,

    /// <summary>A super-frame without <c>NEEDS_CSUM</c>.</summary>
    GsoWithoutChecksum,

    /// <summary><c>HdrLen</c> beyond the end of the frame.</summary>
    HeaderLengthOutOfFrame,

    /// <summary><c>CsumStart</c> before the first byte a transport header can start at, or past the frame.</summary>
    ChecksumStartOutOfRange,

    /// <summary>The checksum field (<c>CsumStart + CsumOffset</c>, two bytes) not inside the frame.</summary>
    ChecksumFieldOutOfFrame,

    /// <summary>A TCP super-frame whose checksum field is not TCP's (offset 16).</summary>
    ChecksumOffsetNotTcp,

    /// <summary>A TCP super-frame whose TCP header (at <c>CsumStart</c>, as long as its data offset says) does not fit.</summary>
    TcpHeaderOutOfFrame,

    /// <summary><c>GsoSize</c> below a TCP segment's least payload or above what one IP packet holds.</summary>
    GsoSizeOutOfRange,

    /// <summary>A super-frame that is no longer than one segment.</summary>
    NotASuperFrame,

    /// <summary>A super-frame that would be cut into more than <see cref="OffloadCheck.MaxSegments"/> segments.</summary>
    TooManySegments,

    /// <summary>Longer than <see cref="Frame.MaxLength"/>.</summary>
    TooLong,
}

/// <summary>
/// Checks the offload header (<c>virtio_net_hdr</c>) that a peer sent with a frame before the frame
/// goes anywhere: the header reaches a TAP, where the kernel of the host (and of the VM behind it)
/// acts on it, and it drives <see cref="Offloads.Segment"/>. A peer is authenticated but not
/// trusted with either.
/// <para>
/// What passes is what the daemon itself produces: a TAP's TCP super-frames (TSO4, TSO6, ECN), the
/// super-frames <see cref="Offloads.MarkAsSuperFrame"/> and <see cref="Offloads.Coalesce"/> make,
/// and partial checksums (<c>NEEDS_CSUM</c>). Every offset lies inside the frame; a super-frame is
/// longer than one segment, has at most <see cref="MaxSegments"/> of them (a GSO size of 16 would
/// otherwise turn one 64 KiB frame into about 4,000 segments, in the daemon or in a kernel), and
/// checks the segment count the way Linux will cut it: from its TCP header at <c>CsumStart</c>.
/// <c>DATA_VALID</c> is never taken from the wire: it tells a kernel to skip checksum verification,
/// which is the receiver's business; <see cref="FromPeer"/> strips it.
/// </para>
/// <para>Allocation-free and a few comparisons: it runs for every frame with offloads that a link delivers.</para>
/// </summary>
public static class OffloadCheck
{
    /// <summary>Most segments one super-frame may be cut into, here or by a kernel it is handed to.</summary>
    public const int MaxSegments = 64;

    /// <summary>Least GSO size: Linux never sends TCP segments of fewer payload bytes (TCP_MIN_SND_MSS).</summary>
    public const int MinGsoSize = 48;

    /// <summary>Largest GSO size: a segment with the smallest IP and TCP headers still is one IP packet (excludes GSO_BY_FRAGS, 0xFFFF).</summary>
    public const int MaxGsoSize = 65535 - 20 - 20;

    /// <summary>Ethernet and the smallest IPv4 header: no transport header (and no checksum start) begins earlier.</summary>
    public const int MinChecksumStart = 14 + 20;

    /// <summary>Ethernet and an IPv6 header: where the TCP header of a TCPv6 super-frame begins at the earliest.</summary>
    public const int MinChecksumStartV6 = 14 + 40;

    private const int TcpChecksumOffset = 16;
    private const int TcpMinHeader = 20;
    private const byte KnownFlags = VirtioNetHeader.FlagNeedsCsum | VirtioNetHeader.FlagDataValid;

    /// <summary>
    /// Checks <paramref name="header"/> against the frame it came with and strips <c>DATA_VALID</c>
    /// from it. <see cref="OffloadFault.None"/> when the frame may go on; anything else: drop it.
    /// </summary>
    public static OffloadFault FromPeer(ref VirtioNetHeader header, ReadOnlySpan<byte> frame)
    {
        var fault = Check(header, frame);
        header.Flags &= unchecked((byte)~VirtioNetHeader.FlagDataValid);
        return fault;
    }

    /// <summary>The checks of <see cref="FromPeer"/>, without changing the header (<c>DATA_VALID</c> is not a fault).</summary>
    public static OffloadFault Check(in VirtioNetHeader header, ReadOnlySpan<byte> frame)
    {
        var length = frame.Length;
        if (length > Frame.MaxLength)
            return OffloadFault.TooLong;
        if ((header.Flags & ~KnownFlags) != 0)
            return OffloadFault.UnknownFlags;
        if (header.HdrLen > length)
            return OffloadFault.HeaderLengthOutOfFrame;
        int start = header.CsumStart;
        if (header.NeedsChecksum)
        {
            if (start < MinChecksumStart || start >= length)
                return OffloadFault.ChecksumStartOutOfRange;
            if (start + header.CsumOffset + 2 > length)
                return OffloadFault.ChecksumFieldOutOfFrame;
        }

        if (header.GsoType == VirtioNetHeader.GsoNone)
            return header.GsoSize == 0 ? OffloadFault.None : OffloadFault.GsoSizeWithoutGso;
        var type = header.GsoType & ~VirtioNetHeader.GsoEcn;
        if (type is not (VirtioNetHeader.GsoTcpV4 or VirtioNetHeader.GsoTcpV6))
            return OffloadFault.UnknownGsoType;
        // Every producer of super-frames marks them NEEDS_CSUM; without it a kernel has to guess
        // where the transport header is (the path of several past virtio_net_hdr bugs).
        if (!header.NeedsChecksum)
            return OffloadFault.GsoWithoutChecksum;
        if (header.CsumOffset != TcpChecksumOffset)
            return OffloadFault.ChecksumOffsetNotTcp;
        if (type == VirtioNetHeader.GsoTcpV6 && start < MinChecksumStartV6)
            return OffloadFault.ChecksumStartOutOfRange;
        if (start + TcpMinHeader > length)
            return OffloadFault.TcpHeaderOutOfFrame;
        var tcpHeader = (frame[start + 12] >> 4) * 4;
        if (tcpHeader < TcpMinHeader || start + tcpHeader > length)
            return OffloadFault.TcpHeaderOutOfFrame;

        int size = header.GsoSize;
        if (size < MinGsoSize || size > MaxGsoSize)
            return OffloadFault.GsoSizeOutOfRange;
        // Linux cuts the payload after the TCP header it finds at CsumStart; Offloads.Segment, which
        // parses the IP header instead, bounds its own count as well.
        var payload = length - start - tcpHeader;
        if (payload <= size)
            return OffloadFault.NotASuperFrame;
        if ((payload + size - 1) / size > MaxSegments)
            return OffloadFault.TooManySegments;
        return OffloadFault.None;
    }
}
