using System.Buffers.Binary;
using Vnet.Frames;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// TSO/GSO segmentation and GRO (<see cref="Offloads"/>) on frames and virtio-net headers taken
/// from the input, as a TAP or a peer's data message hands them over. Documented: no exception
/// for any frame (false when it cannot be parsed), every reference consumed, every output carrying
/// one, nothing added on failure. Checked after each input: the pool got every buffer back (a
/// leak would starve a daemon's data path), Finalize's outputs need no offload, segments fit the
/// asked frame length, and Coalesce's super-frames segment again.
/// <para>Input: byte 0 chooses the operation, byte 1 options, then per operation:</para>
/// <code>
/// 0 Finalize           10-byte virtio-net header, frame
/// 1 Segment            u16 max frame length (0: none), 10-byte header, frame   (option bit 1: complete checksums)
/// 2 Coalesce           records: kind (bit 0 clear) u16 length, 10-byte header, frame bytes
///                               kind (bit 0 set)   u16 payload: the previous frame's next TCP segment
/// 3 MarkAsSuperFrame   u16 MTU, frame; then Finalize
/// option bit 0: the frame is shared (one more reference, held by the harness)
/// </code>
/// </summary>
public sealed class OffloadsTarget : FuzzTarget
{
    private const int PoolCapacity = 256;
    private const int MaxFrames = 64;

    // One pool for the process, as a daemon has: leaks show up as buffers that never come back.
    private static readonly FramePool Pool = new(PoolCapacity);

    private readonly List<Frame> _input = new(MaxFrames);
    private readonly List<Frame> _output = new(PoolCapacity);
    private readonly List<Frame> _held = new(MaxFrames);
    private readonly List<Frame> _segments = new(PoolCapacity);
    private readonly HashSet<Frame> _passedGso = new(ReferenceEqualityComparer.Instance);

    public override string Name => "offloads";

    public override string Description => "Vnet.Frames.Offloads: Finalize, Segment, Coalesce, MarkAsSuperFrame";

    public override IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        static byte[] Op(int op, byte options, params byte[][] parts) => [(byte)op, options, .. parts.SelectMany(p => p)];
        static byte[] U16(int value) => [(byte)(value >> 8), (byte)value];
        static byte[] Gso(byte[] frame, byte type, int size)
        {
            var l = Layout(frame);
            return Header(new VirtioNetHeader
            {
                Flags = VirtioNetHeader.FlagNeedsCsum,
                GsoType = type,
                HdrLen = (ushort)l.HeadersLength,
                GsoSize = (ushort)size,
                CsumStart = (ushort)l.L4,
                CsumOffset = (ushort)l.ChecksumOffset,
            });
        }

        var tcp4 = Packet(v6: false, udp: false, payload: 1200, partial: true);
        yield return ("finalize-tcp4-gso", Op(0, 0, Gso(tcp4, VirtioNetHeader.GsoTcpV4, 500), tcp4));
        var tcp6 = Packet(v6: true, udp: false, payload: 1000, partial: true, vlan: true);
        yield return ("finalize-tcp6-vlan-gso-shared", Op(0, 1, Gso(tcp6, VirtioNetHeader.GsoTcpV6 | VirtioNetHeader.GsoEcn, 400), tcp6));
        var udp4 = Packet(v6: false, udp: true, payload: 900, partial: true);
        yield return ("finalize-udp4-uso", Op(0, 0, Gso(udp4, VirtioNetHeader.GsoUdpL4, 300), udp4));
        var small = Packet(v6: false, udp: false, payload: 100, partial: true);
        var sl = Layout(small);
        var csumOnly = new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum, CsumStart = (ushort)sl.L4, CsumOffset = PacketLayout.TcpChecksumOffset };
        yield return ("finalize-csum-only", Op(0, 0, Header(csumOnly), small));
        yield return ("finalize-plain", Op(0, 0, Header(VirtioNetHeader.None), Packet(v6: true, udp: true, payload: 60, partial: false)));
        var big = Packet(v6: false, udp: false, payload: 1500, partial: true);
        yield return ("segment-max-length", Op(1, 2, U16(600), Gso(big, VirtioNetHeader.GsoTcpV4, 1000), big));
        yield return ("segment-partial", Op(1, 0, U16(0), Gso(tcp6, VirtioNetHeader.GsoTcpV6, 300), tcp6));

        var first = Packet(v6: false, udp: false, payload: 200, partial: true);
        var fl = Layout(first);
        var partialHeader = Header(new VirtioNetHeader { Flags = VirtioNetHeader.FlagNeedsCsum, CsumStart = (ushort)fl.L4, CsumOffset = PacketLayout.TcpChecksumOffset });
        // Record kinds: bit 0 next segment, bits 1-2 its checksum (0 partial, 1 DATA_VALID, 2 complete, 3 as before), 0x10 PSH.
        yield return ("coalesce-run-tcp4", Op(2, 0, [0], U16(first.Length), partialHeader, first, [1], U16(200), [1], U16(200), [0x11], U16(100)));
        var v6 = Packet(v6: true, udp: false, payload: 150, partial: false);
        yield return ("coalesce-run-tcp6-complete-shared", Op(2, 1, [0], U16(v6.Length), Header(VirtioNetHeader.None), v6, [5], U16(150), [3], U16(150), [5], U16(10)));
        yield return ("coalesce-mixed", Op(2, 0, [0], U16(small.Length), Header(csumOnly), small, [0], U16(first.Length), partialHeader, first, [1], U16(200), [0], U16(udp4.Length), Header(VirtioNetHeader.None), udp4));
        yield return ("mark-super-frame", Op(3, 0, U16(576), Packet(v6: false, udp: false, payload: 1400, partial: false)));
        yield return ("mark-super-frame-v6", Op(3, 1, U16(700), Packet(v6: true, udp: false, payload: 1400, partial: false)));
    }

    private static PacketLayout Layout(byte[] frame) =>
        PacketLayout.TryParse(frame, out var layout) ? layout : throw new InvalidOperationException("a seed frame does not parse");

    private static byte[] Header(VirtioNetHeader header)
    {
        var bytes = new byte[VirtioNetHeader.Size];
        header.Write(bytes);
        return bytes;
    }

    /// <summary>Consecutive TCP/IPv4 segments of one flow with complete checksums, as a peer sends them (seeds of other targets).</summary>
    internal static IEnumerable<byte[]> TcpFlow(int count, int payload)
    {
        var first = Packet(v6: false, udp: false, payload: payload, partial: false);
        var layout = Layout(first);
        for (var i = 0; i < count; i++)
        {
            var f = (byte[])first.Clone();
            var seq = BinaryPrimitives.ReadUInt32BigEndian(f.AsSpan(layout.L4 + 4)) + (uint)(i * payload);
            BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(layout.L4 + 4), seq);
            layout.WriteIpLengthAndId(f, f.Length, (ushort)(layout.ReadId(first) + i));
            var field = f.AsSpan(layout.L4 + PacketLayout.TcpChecksumOffset, 2);
            CompleteChecksum(f.AsSpan(layout.L4), field, layout.PseudoHeader(f, f.Length - layout.L4));
            yield return f;
        }
    }

    /// <summary>An Ethernet frame with IPv4 or IPv6 and TCP (with a timestamp option) or UDP, checksum complete or partial.</summary>
    private static byte[] Packet(bool v6, bool udp, int payload, bool partial, bool vlan = false)
    {
        var l3 = vlan ? 18 : 14;
        var l4 = l3 + (v6 ? 40 : 20);
        var l4Header = udp ? 8 : 32;
        var f = new byte[l4 + l4Header + payload];
        byte[] macs = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        macs.CopyTo(f, 0);
        if (vlan)
        {
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x8100);
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(14), 100);
        }
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l3 - 2), v6 ? (ushort)0x86DD : (ushort)0x0800);
        var protocol = udp ? PacketLayout.ProtocolUdp : PacketLayout.ProtocolTcp;
        if (v6)
        {
            f[l3] = 0x60;
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l3 + 4), (ushort)(l4Header + payload));
            f[l3 + 6] = protocol;
            f[l3 + 7] = 64;
            f[l3 + 8] = 0xFD;
            f[l3 + 23] = 1;
            f[l3 + 24] = 0xFD;
            f[l3 + 39] = 2;
        }
        else
        {
            f[l3] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l3 + 2), (ushort)(20 + l4Header + payload));
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l3 + 4), 0x1000);
            f[l3 + 6] = 0x40;
            f[l3 + 8] = 64;
            f[l3 + 9] = protocol;
            byte[] addresses = [10, 0, 0, 1, 10, 0, 0, 2];
            addresses.CopyTo(f, l3 + 12);
            Checksum.WriteIpv4Header(f.AsSpan(l3, 20));
        }
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l4), 40000);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l4 + 2), 5201);
        if (udp)
        {
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l4 + 4), (ushort)(8 + payload));
        }
        else
        {
            BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(l4 + 4), 1000);
            BinaryPrimitives.WriteUInt32BigEndian(f.AsSpan(l4 + 8), 2000);
            f[l4 + 12] = 8 << 4;
            f[l4 + 13] = 0x10;
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l4 + 14), 502);
            byte[] options = [1, 1, 8, 10, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1];
            options.CopyTo(f, l4 + 20);
        }
        for (var i = 0; i < payload; i++)
            f[l4 + l4Header + i] = (byte)(i * 7);
        var layout = Layout(f);
        var field = f.AsSpan(l4 + layout.ChecksumOffset, 2);
        var pseudo = layout.PseudoHeader(f, f.Length - l4);
        if (partial)
            PartialChecksum(field, pseudo, l4);
        else
            CompleteChecksum(f.AsSpan(l4), field, pseudo);
        return f;
    }

    protected override void Run(ReadOnlySpan<byte> data)
    {
        if (data.Length < 2)
            return;
        var op = data[0] & 3;
        var options = data[1];
        data = data[2..];
        try
        {
            switch (op)
            {
                case 0:
                    FinalizeOne(data, options);
                    break;
                case 1:
                    SegmentOne(data, options);
                    break;
                case 2:
                    CoalesceMany(data, options);
                    break;
                default:
                    MarkOne(data, options);
                    break;
            }
        }
        finally
        {
            ReleaseAll(_output);
            ReleaseAll(_held);
            ReleaseAll(_input);
            ReleaseAll(_segments);
        }
        if (Pool.Available != Pool.Created)
            throw new FuzzFindingException($"{Pool.Created - Pool.Available} frame buffer(s) never came back to the pool");
    }

    private void FinalizeOne(ReadOnlySpan<byte> data, byte options)
    {
        if (Frame(ref data, prefixed: false, withHeader: true, shared: (options & 1) != 0) is not { } frame)
            return;
        var ok = Offloads.Finalize(frame, Pool, _output);
        CheckResult(ok, 0, "Finalize");
        if (ok)
            CheckFinal(_output, "Finalize");
    }

    private void SegmentOne(ReadOnlySpan<byte> data, byte options)
    {
        if (data.Length < 2)
            return;
        var maxFrameLength = BinaryPrimitives.ReadUInt16BigEndian(data);
        data = data[2..];
        if (Frame(ref data, prefixed: false, withHeader: true, shared: (options & 1) != 0) is not { } frame)
            return;
        var gso = frame.Offload.IsGso;
        var complete = (options & 2) != 0;
        var ok = Offloads.Segment(frame, Pool, _output, complete, maxFrameLength);
        CheckResult(ok, 0, "Segment");
        if (!ok)
            return;
        if (complete)
            CheckFinal(_output, "Segment(complete)");
        foreach (var f in _output)
        {
            if (f.Offload.IsGso && gso)
                throw new FuzzFindingException($"Segment left a GSO frame: {Describe(f)}");
            if (gso && maxFrameLength > 0 && f.Length > maxFrameLength)
                throw new FuzzFindingException($"Segment made a {f.Length}-byte frame for a limit of {maxFrameLength}");
        }
    }

    private void MarkOne(ReadOnlySpan<byte> data, byte options)
    {
        if (data.Length < 2)
            return;
        var mtu = BinaryPrimitives.ReadUInt16BigEndian(data);
        data = data[2..];
        if (Frame(ref data, prefixed: false, withHeader: false, shared: (options & 1) != 0) is not { } frame)
            return;
        var shared = frame.References > 1;
        var marked = Offloads.MarkAsSuperFrame(frame, mtu);
        if (marked && (shared || !frame.Offload.IsGso))
            throw new FuzzFindingException($"MarkAsSuperFrame marked what it should not: {Describe(frame)}");
        // A marked frame must segment again, unless it would take more buffers than the pool has.
        var fits = marked && PacketLayout.TryParse(frame.Data, out var layout) &&
            layout.PayloadLength / Math.Max(1, (int)frame.Offload.GsoSize) < PoolCapacity / 2;
        var description = Describe(frame);
        var ok = Offloads.Finalize(frame, Pool, _output);
        if (fits && !ok)
            throw new FuzzFindingException($"a frame MarkAsSuperFrame marked (mtu {mtu}) does not segment: {description}");
        CheckResult(ok, 0, "Finalize");
        if (ok)
            CheckFinal(_output, "Finalize");
    }

    private void CoalesceMany(ReadOnlySpan<byte> data, byte options)
    {
        Frame? previous = null;
        while (data.Length >= 3 && _input.Count < MaxFrames)
        {
            var kind = data[0];
            data = data[1..];
            Frame? frame;
            if ((kind & 1) == 0)
            {
                frame = Frame(ref data, prefixed: true, withHeader: true, shared: false);
            }
            else
            {
                var payload = BinaryPrimitives.ReadUInt16BigEndian(data) % 9000;
                data = data[2..];
                frame = previous is null ? null : NextSegment(previous, payload, kind);
            }
            if (frame is null)
                break;
            frame.IngressPort = 3;
            frame.HopLimit = 8;
            _input.Add(frame);
            previous = frame;
        }
        if (_input.Count == 0)
            return;

        // Shared inputs: the harness keeps one more reference, so Coalesce must copy, not write.
        foreach (var f in _input)
        {
            if ((options & 1) != 0)
            {
                f.AddReference();
                _held.Add(f);
            }
        }
        var snapshot = _held.Select(f => (f, f.Data.ToArray())).ToList();
        _passedGso.Clear();
        foreach (var f in _input)
        {
            if (f.Offload.IsGso)
                _passedGso.Add(f);
        }
        Offloads.Coalesce(_input, Pool, _output);
        if (_input.Count != 0)
            throw new FuzzFindingException("Coalesce left frames in its input list");
        foreach (var (f, bytes) in snapshot)
        {
            if (!f.Data.SequenceEqual(bytes))
                throw new FuzzFindingException($"Coalesce wrote into a shared frame: {Describe(f)}");
        }

        // A merged super-frame goes on to a TAP without offloads or a link: it must segment again.
        foreach (var f in _output)
        {
            if (f.Length > Vnet.Frames.Frame.MaxLength)
                throw new FuzzFindingException($"Coalesce made a {f.Length}-byte frame");
            // Only what Coalesce made: a GSO frame it was given passes through as it came.
            if (!f.Offload.IsGso || _passedGso.Contains(f))
                continue;
            f.AddReference();
            var description = Describe(f);
            var count = _segments.Count;
            if (!Offloads.Finalize(f, Pool, _segments))
                throw new FuzzFindingException($"a super-frame made by Coalesce does not segment: {description}");
            if (_segments.Count == count)
                throw new FuzzFindingException("Finalize succeeded without output");
            CheckFinal(_segments, "Finalize after Coalesce");
        }
    }

    /// <summary>The next TCP segment of <paramref name="previous"/>'s flow, as the sender would send it.</summary>
    private static Frame? NextSegment(Frame previous, int payload, byte kind)
    {
        var p = previous.Data;
        if (!PacketLayout.TryParse(p, out var layout) || layout.Protocol != PacketLayout.ProtocolTcp)
            return null;
        var headers = layout.HeadersLength;
        if (headers + payload > Vnet.Frames.Frame.MaxLength || Pool.TryRent() is not { } frame)
            return null;
        var d = frame.Buffer.AsSpan(frame.Offset, headers + payload);
        p[..headers].CopyTo(d);
        d[headers..].Fill(kind);
        frame.Length = d.Length;
        var seq = BinaryPrimitives.ReadUInt32BigEndian(p.Slice(layout.L4 + 4, 4)) + (uint)layout.PayloadLength;
        BinaryPrimitives.WriteUInt32BigEndian(d.Slice(layout.L4 + 4, 4), seq);
        if ((kind & 0x10) != 0)
            d[layout.L4 + 13] |= 0x08;
        else
            d[layout.L4 + 13] &= unchecked((byte)~0x08);
        layout.WriteIpLengthAndId(d, d.Length, (ushort)(layout.ReadId(p) + 1));
        var field = d.Slice(layout.L4 + PacketLayout.TcpChecksumOffset, 2);
        var pseudo = layout.PseudoHeader(d, d.Length - layout.L4);
        frame.Offload = ((kind >> 1) & 3) switch
        {
            // As the TAP hands it over: the pseudo-header sum in place, the rest to do.
            0 => PartialChecksum(field, pseudo, layout.L4),
            1 => new VirtioNetHeader { Flags = VirtioNetHeader.FlagDataValid },
            2 => CompleteChecksum(d[layout.L4..], field, pseudo),
            _ => previous.Offload,
        };
        return frame;
    }

    private static VirtioNetHeader PartialChecksum(Span<byte> field, uint pseudo, int l4)
    {
        BinaryPrimitives.WriteUInt16BigEndian(field, Checksum.Fold(pseudo));
        return new VirtioNetHeader
        {
            Flags = VirtioNetHeader.FlagNeedsCsum,
            CsumStart = (ushort)l4,
            CsumOffset = PacketLayout.TcpChecksumOffset,
        };
    }

    private static VirtioNetHeader CompleteChecksum(ReadOnlySpan<byte> segment, Span<byte> field, uint pseudo)
    {
        field.Clear();
        BinaryPrimitives.WriteUInt16BigEndian(field, Checksum.Finish(Checksum.Sum(segment, pseudo)));
        return VirtioNetHeader.None;
    }

    /// <summary>
    /// A pooled frame from the input: a u16 length first when <paramref name="prefixed"/> (else the
    /// rest of the input), then a 10-byte virtio-net header when <paramref name="withHeader"/>,
    /// then its bytes. With <paramref name="shared"/> the harness holds a second reference.
    /// </summary>
    private Frame? Frame(ref ReadOnlySpan<byte> data, bool prefixed, bool withHeader, bool shared)
    {
        var length = data.Length;
        if (prefixed)
        {
            if (data.Length < 2)
                return null;
            length = BinaryPrimitives.ReadUInt16BigEndian(data);
            data = data[2..];
        }
        var header = VirtioNetHeader.None;
        if (withHeader)
        {
            if (data.Length < VirtioNetHeader.Size)
                return null;
            header = VirtioNetHeader.Read(data);
            data = data[VirtioNetHeader.Size..];
        }
        length = Math.Min(Math.Min(length, data.Length), Vnet.Frames.Frame.MaxLength);
        if (Pool.TryRent() is not { } frame)
            return null;
        data[..length].CopyTo(frame.Buffer.AsSpan(frame.Offset));
        data = data[length..];
        frame.Length = length;
        frame.Offload = header;
        if (shared)
        {
            frame.AddReference();
            _held.Add(frame);
        }
        return frame;
    }

    /// <summary>On failure nothing may have been added to the output (documented).</summary>
    private void CheckResult(bool ok, int countBefore, string what)
    {
        if (!ok && _output.Count != countBefore)
            throw new FuzzFindingException($"{what} failed but added {_output.Count - countBefore} frame(s) to the output");
    }

    private static void CheckFinal(List<Frame> frames, string what)
    {
        foreach (var f in frames)
        {
            if (f.Offload.NeedsChecksum || f.Offload.IsGso)
                throw new FuzzFindingException($"{what} passed on a frame that still needs offloads: {Describe(f)}");
            if (f.Length > Vnet.Frames.Frame.MaxLength || f.References < 1)
                throw new FuzzFindingException($"{what} passed on a bad frame: {Describe(f)}");
        }
    }

    private static void ReleaseAll(List<Frame> frames)
    {
        foreach (var f in frames)
            f.Release();
        frames.Clear();
    }

    private static string Describe(Frame f) =>
        $"{f.Length} bytes, refs {f.References}, flags {f.Offload.Flags}, gso {f.Offload.GsoType}/{f.Offload.GsoSize}, " +
        $"csum {f.Offload.CsumStart}+{f.Offload.CsumOffset}, hdr {f.Offload.HdrLen}";
}
