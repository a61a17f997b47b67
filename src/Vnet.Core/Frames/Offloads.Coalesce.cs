using System.Buffers.Binary;

namespace Vnet.Frames;

public static partial class Offloads
{
    /// <summary>
    /// User-space GRO for frames that arrive MTU-sized over a UDP link: merges each run of
    /// consecutive segments of one TCP flow in <paramref name="input"/> into one super-frame (GSO
    /// TCPv4/TCPv6, <c>NEEDS_CSUM</c> over the whole, <c>GsoSize</c> = payload of the run's first
    /// segment) and passes everything else through unchanged, in order.
    /// <para>
    /// A segment joins a run only where Linux GRO would merge it: same Ethernet header (VLAN tag
    /// included), IP addresses, TOS/traffic class and flow label, TTL/hop limit, IPv4 without options
    /// and with the same DF (without DF, consecutive ids), IPv6 without extension headers, same
    /// ports, ACK number and TCP options, the next sequence number, flags ACK (and ECE) with PSH only
    /// on the segment that ends the run, a payload of at most <c>GsoSize</c> bytes (a shorter one
    /// ends the run), and a merged IP length of at most 65535. The window may differ; the last one
    /// is kept. A segment with a complete checksum is merged only when that checksum is right (the
    /// merged frame's partial checksum would otherwise hide the damage); a <c>NEEDS_CSUM</c> one is
    /// trusted (its sender asks for the sum to be made, as it could for any bytes), a
    /// <c>DATA_VALID</c> one is not (the segments come from the wire, and that flag would make a
    /// damaged segment's bytes part of a super-frame whose checksum a kernel then computes anew).
    /// A run stays within what <see cref="OffloadCheck"/> accepts from a link: at most
    /// <see cref="OffloadCheck.MaxSegments"/> segments of at least <see cref="OffloadCheck.MinGsoSize"/>
    /// payload bytes each.
    /// </para>
    /// <para>
    /// Ownership: every reference in <paramref name="input"/> is consumed and the list is cleared;
    /// every frame added to <paramref name="output"/> carries one reference. A run grows inside its
    /// first frame's buffer (every buffer holds a 64 KiB super-frame); a shared first frame is copied
    /// first, and when the pool is empty it simply stays unmerged. Allocates nothing as long as
    /// <paramref name="output"/> has room.
    /// </para>
    /// </summary>
    public static void Coalesce(List<Frame> input, FramePool pool, List<Frame> output)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(output);
        if (ReferenceEquals(input, output))
            throw new ArgumentException("Input and output must be different lists.", nameof(output));

        var run = default(Run);
        foreach (var frame in input)
        {
            if (run.Head is not null && TryAppend(ref run, frame, pool, output))
                continue;
            CloseRun(ref run);
            output.Add(frame);
            TryOpenRun(ref run, frame, output.Count - 1);
        }
        CloseRun(ref run);
        input.Clear();
    }

    /// <summary>The super-frame being built: at most one at a time, since only neighbours merge.</summary>
    private struct Run
    {
        /// <summary>The run's first frame, growing in place; null when no run is open.</summary>
        public Frame? Head;

        /// <summary>Where <see cref="Head"/> sits in the output list (it is replaced by a copy when shared).</summary>
        public int Index;

        public PacketLayout Layout;

        /// <summary>End of the merged IP packet inside <see cref="Head"/>.</summary>
        public int End;

        public uint NextSeq;
        public int GsoSize;
        public int Count;
        public ushort Window;
        public byte LastFlags;

        /// <summary>Whether the head's own checksum was found right (checked once a second segment comes).</summary>
        public bool HeadVerified;
    }

    private static void TryOpenRun(ref Run run, Frame frame, int index)
    {
        if (!IsMergeCandidate(frame, out var layout))
            return;
        var d = frame.Data;
        var payload = layout.PayloadLength;
        var flags = d[layout.L4 + 13];
        // A PSH segment would end the run at once (Linux flushes it); a tiny one would set a GSO size
        // that a link's receiver refuses (and Linux never sends such segments in bulk).
        if (payload < OffloadCheck.MinGsoSize || (flags & TcpPsh) != 0)
            return;
        run = new Run
        {
            Head = frame,
            Index = index,
            Layout = layout,
            End = layout.End,
            NextSeq = BinaryPrimitives.ReadUInt32BigEndian(d.Slice(layout.L4 + 4, 4)) + (uint)payload,
            GsoSize = payload,
            Count = 1,
            Window = BinaryPrimitives.ReadUInt16BigEndian(d.Slice(layout.L4 + 14, 2)),
            LastFlags = flags,
        };
    }

    /// <summary>An unsegmented TCP frame whose shape allows merging at all.</summary>
    private static bool IsMergeCandidate(Frame frame, out PacketLayout layout)
    {
        var offload = frame.Offload;
        var d = frame.Data;
        if (offload.IsGso || !PacketLayout.TryParse(d, out layout) || layout.Protocol != PacketLayout.ProtocolTcp)
        {
            layout = default;
            return false;
        }
        var flags = d[layout.L4 + 13];
        var plainHeaders = layout.L4 - layout.L3 == (layout.IsV6 ? 40 : 20);
        var ok = plainHeaders &&
            (flags & TcpAck) != 0 && (flags & ~(TcpAck | TcpPsh | TcpEce)) == 0 &&
            (!offload.NeedsChecksum ||
                (offload.CsumStart == layout.L4 && offload.CsumOffset == PacketLayout.TcpChecksumOffset)) &&
            (layout.IsV6 || Checksum.IsValidIpv4Header(d.Slice(layout.L3, 20)));
        return ok;
    }

    private static bool TryAppend(ref Run run, Frame frame, FramePool pool, List<Frame> output)
    {
        var head = run.Head!;
        if (frame.IngressPort != head.IngressPort || frame.HopLimit != head.HopLimit ||
            !IsMergeCandidate(frame, out var layout))
            return false;
        ref readonly var hl = ref run.Layout;
        var payload = layout.PayloadLength;
        if (layout.L3 != hl.L3 || layout.IsV6 != hl.IsV6 || layout.L4HeaderLength != hl.L4HeaderLength ||
            payload == 0 || payload > run.GsoSize || run.Count >= OffloadCheck.MaxSegments)
            return false;

        var d = frame.Data;
        var h = head.Data;
        if (!SameFlow(h, d, hl, run.Count) ||
            BinaryPrimitives.ReadUInt32BigEndian(d.Slice(hl.L4 + 4, 4)) != run.NextSeq)
            return false;
        var end = run.End + payload;
        if (end - hl.L3 > ushort.MaxValue || end > Frame.MaxLength || head.Offset + end > head.Buffer.Length)
            return false;
        if (!run.HeadVerified)
        {
            if (!HasGoodChecksum(head, hl))
                return false;
            run.HeadVerified = true;
        }
        if (!HasGoodChecksum(frame, layout))
            return false;

        if (run.Count == 1)
        {
            // From here on the head is written to: it must be ours alone.
            if (head.References > 1)
            {
                var copy = pool.TryRent();
                if (copy is null)
                    return false;
                CopyInto(head, copy, h.Slice(0, run.End));
                head.Release();
                output[run.Index] = copy;
                run.Head = head = copy;
            }
            else
            {
                head.Length = run.End;
            }
        }

        d.Slice(layout.HeadersLength, payload).CopyTo(head.Buffer.AsSpan(head.Offset + run.End));
        run.End = end;
        head.Length = end;
        run.Count++;
        run.NextSeq += (uint)payload;
        run.Window = BinaryPrimitives.ReadUInt16BigEndian(d.Slice(hl.L4 + 14, 2));
        run.LastFlags = d[hl.L4 + 13];
        frame.Release();
        if (payload < run.GsoSize || (run.LastFlags & TcpPsh) != 0)
            CloseRun(ref run);
        return true;
    }

    /// <summary>
    /// Header fields that must match between the run's head <paramref name="h"/> and a candidate
    /// <paramref name="d"/> (both with layout <paramref name="l"/>); lengths, ids, checksums,
    /// sequence number and window are checked elsewhere or may differ.
    /// </summary>
    private static bool SameFlow(ReadOnlySpan<byte> h, ReadOnlySpan<byte> d, in PacketLayout l, int count)
    {
        var l3 = l.L3;
        if (!h.Slice(0, l3).SequenceEqual(d.Slice(0, l3)))
            return false;
        if (l.IsV6)
        {
            // Version, traffic class, flow label; next header, hop limit, addresses.
            if (!h.Slice(l3, 4).SequenceEqual(d.Slice(l3, 4)) || !h.Slice(l3 + 6, 34).SequenceEqual(d.Slice(l3 + 6, 34)))
                return false;
        }
        else
        {
            // Version/IHL, TOS; flags and fragment offset, TTL, protocol; addresses.
            if (h[l3] != d[l3] || h[l3 + 1] != d[l3 + 1] ||
                !h.Slice(l3 + 6, 4).SequenceEqual(d.Slice(l3 + 6, 4)) ||
                !h.Slice(l3 + 12, 8).SequenceEqual(d.Slice(l3 + 12, 8)))
                return false;
            // Without DF the ids must count up, or re-segmenting would invent different ones.
            if ((d[l3 + 6] & 0x40) == 0 &&
                BinaryPrimitives.ReadUInt16BigEndian(d.Slice(l3 + 4, 2)) != (ushort)(BinaryPrimitives.ReadUInt16BigEndian(h.Slice(l3 + 4, 2)) + count))
                return false;
        }

        var l4 = l.L4;
        // Ports; ACK number and data offset; flags but PSH; urgent pointer and options.
        return h.Slice(l4, 4).SequenceEqual(d.Slice(l4, 4)) &&
            h.Slice(l4 + 8, 5).SequenceEqual(d.Slice(l4 + 8, 5)) &&
            ((h[l4 + 13] ^ d[l4 + 13]) & ~TcpPsh) == 0 &&
            h.Slice(l4 + 18, l.L4HeaderLength - 18).SequenceEqual(d.Slice(l4 + 18, l.L4HeaderLength - 18));
    }

    private static bool HasGoodChecksum(Frame frame, in PacketLayout layout)
    {
        if (frame.Offload.NeedsChecksum)
            return true;
        var d = frame.Data;
        var l4Length = layout.End - layout.L4;
        return Checksum.Finish(Checksum.Sum(d.Slice(layout.L4, l4Length), layout.PseudoHeader(d, l4Length))) == 0;
    }

    /// <summary>Turns a run of two or more segments into a super-frame; a single one stays as it came.</summary>
    private static void CloseRun(ref Run run)
    {
        var head = run.Head;
        if (head is not null && run.Count > 1)
        {
            ref readonly var l = ref run.Layout;
            var h = head.Data;
            var l4 = l.L4;
            l.WriteIpLengthAndId(h, run.End, l.ReadId(h));
            BinaryPrimitives.WriteUInt16BigEndian(h.Slice(l4 + 14, 2), run.Window);
            h[l4 + 13] |= (byte)(run.LastFlags & TcpPsh);
            var pseudo = l.PseudoHeader(h, run.End - l4);
            BinaryPrimitives.WriteUInt16BigEndian(h.Slice(l4 + PacketLayout.TcpChecksumOffset, 2), Checksum.Fold(pseudo));
            head.Offload = new VirtioNetHeader
            {
                Flags = VirtioNetHeader.FlagNeedsCsum,
                GsoType = l.IsV6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4,
                HdrLen = (ushort)l.HeadersLength,
                GsoSize = (ushort)run.GsoSize,
                CsumStart = (ushort)l4,
                CsumOffset = PacketLayout.TcpChecksumOffset,
            };
        }
        run = default;
    }
}
