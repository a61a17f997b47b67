using System.Buffers.Binary;

namespace Vnet.Frames;

/// <summary>
/// Turns frames that carry offload metadata (partial checksums, TSO/GSO super-frames) into frames
/// a device or peer without offloads accepts, and back.
/// <para>
/// Conventions, as Linux's virtio-net header and <c>CHECKSUM_PARTIAL</c> have them: with
/// <c>NEEDS_CSUM</c> the field at <c>CsumStart + CsumOffset</c> (offsets from the Ethernet header)
/// holds the folded, not inverted, pseudo-header sum, and completing it means summing from
/// <c>CsumStart</c> to the end of the IP packet, field included, and storing the inverted result.
/// Supported: one 802.1Q tag, IPv4 without fragments, IPv6 with at most a hop-by-hop header, GSO
/// types TCPv4, TCPv6 (with or without the ECN bit) and UDP_L4 (USO); UFO is refused.
/// </para>
/// <para>
/// Ownership: every method that takes a frame and an output list consumes the caller's reference
/// (the frame is either released or passed on as an output), every output frame carries one
/// reference for the caller, and on failure everything is released and nothing is added. A frame
/// with more than one reference may be in flight on another port at the same moment, so it is
/// never written to: the work goes into a copy from the pool. Nothing here allocates per frame,
/// as long as the output list has room.
/// </para>
/// </summary>
public static partial class Offloads
{
    private const byte TcpFin = 0x01;
    private const byte TcpPsh = 0x08;
    private const byte TcpAck = 0x10;
    private const byte TcpEce = 0x40;
    private const byte TcpCwr = 0x80;

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
        Segment(frame, pool, output, completeChecksums: true);

    /// <summary>
    /// Cuts a GSO super-frame into MTU-sized segments that keep a partial checksum
    /// (<c>NEEDS_CSUM</c>, pseudo-header sum in place) when <paramref name="completeChecksums"/> is
    /// false: for links whose far end writes to an offload-capable TAP. With
    /// <paramref name="completeChecksums"/> true this is <see cref="Finalize"/>. A frame that is not
    /// GSO passes through unchanged, unless its checksum must be completed. Segments carry
    /// <see cref="VirtioNetHeader.None"/> when complete, else <c>NEEDS_CSUM</c> with
    /// <c>CsumStart</c>/<c>CsumOffset</c> and no GSO. Same ownership rules as
    /// <see cref="Finalize"/>. With <paramref name="maxFrameLength"/> above zero, segments are cut
    /// smaller than <c>GsoSize</c> where needed so that no segment frame is longer than that: a link
    /// whose path MTU is below the VM's MTU still carries every segment unfragmented. A super-frame
    /// that would make more than <see cref="OffloadCheck.MaxSegments"/> segments is refused.
    /// </summary>
    public static bool Segment(Frame frame, FramePool pool, List<Frame> output, bool completeChecksums, int maxFrameLength = 0)
    {
        ArgumentNullException.ThrowIfNull(frame);
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(output);

        var offload = frame.Offload;
        if (offload.IsGso)
            return SplitSuperFrame(frame, pool, output, completeChecksums, maxFrameLength);
        if (completeChecksums && offload.NeedsChecksum)
            return CompleteChecksum(frame, pool, output);
        output.Add(frame);
        return true;
    }

    /// <summary>
    /// Marks a plain frame longer than one MTU (a NIC's GRO merged it, and a capture without offload
    /// metadata, such as libpcap's, lost its segment size) as a TCP
    /// super-frame: sets GSO metadata with <c>GsoSize</c> = MTU minus the IP and TCP headers and a
    /// partial checksum, so it travels on like a TAP's super-frame. False when it is not TCP over IP,
    /// when its IP packet fits in <paramref name="mtu"/>, when it already carries offload metadata,
    /// or when it is shared (it is modified in place).
    /// </summary>
    public static bool MarkAsSuperFrame(Frame frame, int mtu)
    {
        ArgumentNullException.ThrowIfNull(frame);
        if (!frame.Offload.IsPlain || frame.References > 1)
            return false;
        var data = frame.Data;
        if (!PacketLayout.TryParse(data, out var layout) || layout.Protocol != PacketLayout.ProtocolTcp)
            return false;
        var mss = mtu - (layout.L4 - layout.L3) - layout.L4HeaderLength;
        // Marked only as a super-frame Segment (and a peer's OffloadCheck) takes: at most MaxSegments
        // segments (found by fuzzing: a tiny MTU marked a frame that then did not segment).
        if (layout.End - layout.L3 <= mtu || mss <= 0 || layout.PayloadLength <= mss
            || (layout.PayloadLength + mss - 1) / mss > OffloadCheck.MaxSegments)
            return false;

        // Linux flags a super-frame whose first segment carries CWR with the ECN bit.
        var ecn = (data[layout.L4 + 13] & TcpCwr) != 0 ? VirtioNetHeader.GsoEcn : 0;
        SetPartialTcpChecksum(frame, layout, (byte)((layout.IsV6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4) | ecn), (ushort)mss);
        return true;
    }

    /// <summary>
    /// Gives a TCP super-frame whose checksum is complete (a kernel's GRO merged it and marked it
    /// verified, <c>DATA_VALID</c>) the partial checksum every super-frame VNET passes on carries
    /// (<see cref="OffloadCheck"/> refuses GSO without <c>NEEDS_CSUM</c>), keeping its GSO type and
    /// size. True when the frame now has <c>NEEDS_CSUM</c> or is not a super-frame; false when it is
    /// not TCP of its GSO type, or is shared (it is modified in place).
    /// </summary>
    public static bool RequestChecksum(Frame frame)
    {
        ArgumentNullException.ThrowIfNull(frame);
        var offload = frame.Offload;
        if (!offload.IsGso || offload.NeedsChecksum)
            return true;
        if (frame.References > 1 || !PacketLayout.TryParse(frame.Data, out var layout)
            || layout.Protocol != PacketLayout.ProtocolTcp || !GsoTypeFits(offload.GsoType, layout))
            return false;
        SetPartialTcpChecksum(frame, layout, offload.GsoType, offload.GsoSize);
        return true;
    }

    private static void SetPartialTcpChecksum(Frame frame, in PacketLayout layout, byte gsoType, ushort gsoSize)
    {
        // Ethernet padding would otherwise be taken for payload by whoever segments the frame.
        frame.Length = layout.End;
        var data = frame.Data;
        var pseudo = layout.PseudoHeader(data, layout.End - layout.L4);
        BinaryPrimitives.WriteUInt16BigEndian(data.Slice(layout.L4 + PacketLayout.TcpChecksumOffset, 2), Checksum.Fold(pseudo));
        frame.Offload = new VirtioNetHeader
        {
            Flags = VirtioNetHeader.FlagNeedsCsum,
            GsoType = gsoType,
            HdrLen = (ushort)layout.HeadersLength,
            GsoSize = gsoSize,
            CsumStart = (ushort)layout.L4,
            CsumOffset = PacketLayout.TcpChecksumOffset,
        };
    }

    private static bool SplitSuperFrame(Frame frame, FramePool pool, List<Frame> output, bool complete, int maxFrameLength)
    {
        var mss = (int)frame.Offload.GsoSize;
        var data = frame.Data;
        if (mss == 0 || !PacketLayout.TryParse(data, out var layout) || !GsoTypeFits(frame.Offload.GsoType, layout))
            return Fail(frame);

        var headers = layout.HeadersLength;
        if (maxFrameLength > 0 && headers + mss > maxFrameLength)
        {
            mss = maxFrameLength - headers;
            // Segments of a few bytes would only multiply frames; such a path is misconfigured.
            if (mss < 64)
                return Fail(frame);
        }
        var payload = layout.PayloadLength;
        var count = payload <= mss ? 1 : (payload + mss - 1) / mss;
        // A header from a peer was checked (OffloadCheck), but against the TCP header its CsumStart
        // names; the count here follows the IP header, so it is bounded again: no frame may empty
        // the pool or grow the caller's list.
        if (count > OffloadCheck.MaxSegments)
            return Fail(frame);
        var tcp = layout.Protocol == PacketLayout.ProtocolTcp;
        var id = layout.ReadId(data);
        var seq = tcp ? BinaryPrimitives.ReadUInt32BigEndian(data.Slice(layout.L4 + 4, 4)) : 0;
        var flags = tcp ? data[layout.L4 + 13] : (byte)0;

        // An unshared super-frame becomes its own first segment: its headers and first payload are
        // already in place, so only the later segments are copied (before the first is rewritten).
        var inPlace = frame.References == 1;
        var first = output.Count;
        var head = inPlace ? frame : pool.TryRent();
        if (head is null)
            return Fail(frame);
        output.Add(head);
        var headPayload = Math.Min(mss, payload);
        if (!inPlace)
            CopyInto(frame, head, data.Slice(0, headers + headPayload));

        for (var i = 1; i < count; i++)
        {
            var segment = pool.TryRent();
            if (segment is null)
            {
                ReleaseFrom(output, first);
                if (!inPlace)
                    frame.Release();
                return false;
            }
            output.Add(segment);
            var length = Math.Min(mss, payload - (i * mss));
            CopyInto(frame, segment, data.Slice(0, headers));
            data.Slice(headers + (i * mss), length).CopyTo(segment.Buffer.AsSpan(segment.Offset + headers));
            segment.Length = headers + length;
            WriteSegmentHeaders(segment, layout, (ushort)(id + i), seq + (uint)(i * mss), SegmentFlags(flags, i, count), complete);
        }

        head.Length = headers + headPayload;
        WriteSegmentHeaders(head, layout, id, seq, SegmentFlags(flags, 0, count), complete);
        if (!inPlace)
            frame.Release();
        return true;
    }

    private static bool GsoTypeFits(byte gsoType, in PacketLayout layout) => (gsoType & ~VirtioNetHeader.GsoEcn) switch
    {
        VirtioNetHeader.GsoTcpV4 => !layout.IsV6 && layout.Protocol == PacketLayout.ProtocolTcp,
        VirtioNetHeader.GsoTcpV6 => layout.IsV6 && layout.Protocol == PacketLayout.ProtocolTcp,
        VirtioNetHeader.GsoUdpL4 => layout.Protocol == PacketLayout.ProtocolUdp,
        // UFO (IP fragmentation of one big datagram) is deprecated in Linux and not done here.
        _ => false,
    };

    /// <summary>What tcp_gso_segment does: CWR stays on the first segment, FIN and PSH on the last.</summary>
    private static byte SegmentFlags(byte flags, int index, int count)
    {
        if (index > 0)
            flags &= unchecked((byte)~TcpCwr);
        if (index < count - 1)
            flags &= unchecked((byte)~(TcpFin | TcpPsh));
        return flags;
    }

    /// <summary>
    /// Fixes the IP and transport headers of one segment whose bytes are in place, and its checksum
    /// (complete, or the pseudo-header sum with <c>NEEDS_CSUM</c>).
    /// </summary>
    private static void WriteSegmentHeaders(Frame segment, in PacketLayout layout, ushort id, uint seq, byte flags, bool complete)
    {
        var d = segment.Data;
        var l4 = layout.L4;
        layout.WriteIpLengthAndId(d, d.Length, id);
        var tcp = layout.Protocol == PacketLayout.ProtocolTcp;
        if (tcp)
        {
            BinaryPrimitives.WriteUInt32BigEndian(d.Slice(l4 + 4, 4), seq);
            d[l4 + 13] = flags;
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(d.Slice(l4 + 4, 2), (ushort)(d.Length - l4));
        }

        var csumOffset = layout.ChecksumOffset;
        var field = d.Slice(l4 + csumOffset, 2);
        var pseudo = layout.PseudoHeader(d, d.Length - l4);
        if (complete)
        {
            field.Clear();
            BinaryPrimitives.WriteUInt16BigEndian(field, TransportChecksum(Checksum.Sum(d.Slice(l4), pseudo), tcp));
            segment.Offload = VirtioNetHeader.None;
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(field, Checksum.Fold(pseudo));
            segment.Offload = new VirtioNetHeader
            {
                Flags = VirtioNetHeader.FlagNeedsCsum,
                CsumStart = (ushort)l4,
                CsumOffset = (ushort)csumOffset,
            };
        }
    }

    /// <summary>A UDP checksum that comes out 0 is sent as 0xFFFF: 0 means "none" (RFC 768).</summary>
    private static ushort TransportChecksum(uint sum, bool tcp)
    {
        var value = Checksum.Finish(sum);
        return value == 0 && !tcp ? (ushort)0xFFFF : value;
    }

    private static bool CompleteChecksum(Frame frame, FramePool pool, List<Frame> output)
    {
        var offload = frame.Offload;
        var data = frame.Data;
        // The sum runs to the end of the IP packet, not into Ethernet padding; a frame that is not
        // IP (or not parsed here) is summed to its end, as the kernel would.
        var parsed = PacketLayout.TryParse(data, out var layout);
        var end = parsed ? layout.End : data.Length;
        var start = (int)offload.CsumStart;
        var field = start + offload.CsumOffset;
        if (start < 14 || field + 2 > end)
            return Fail(frame);

        var target = frame;
        if (frame.References > 1)
        {
            target = pool.TryRent();
            if (target is null)
                return Fail(frame);
            CopyInto(frame, target, data);
            frame.Release();
        }

        var d = target.Data;
        var udp = parsed && layout.Protocol == PacketLayout.ProtocolUdp && start == layout.L4;
        BinaryPrimitives.WriteUInt16BigEndian(d.Slice(field, 2), TransportChecksum(Checksum.Sum(d.Slice(start, end - start)), !udp));
        target.Offload = VirtioNetHeader.None;
        output.Add(target);
        return true;
    }

    /// <summary>Copies <paramref name="bytes"/> to the start of <paramref name="target"/>, with the frame's metadata.</summary>
    private static void CopyInto(Frame source, Frame target, ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(target.Buffer.AsSpan(target.Offset));
        target.Length = bytes.Length;
        target.Offload = source.Offload;
        target.IngressPort = source.IngressPort;
        target.HopLimit = source.HopLimit;
    }

    private static void ReleaseFrom(List<Frame> output, int first)
    {
        for (var i = first; i < output.Count; i++)
            output[i].Release();
        output.RemoveRange(first, output.Count - first);
    }

    private static bool Fail(Frame frame)
    {
        frame.Release();
        return false;
    }
}
