using Vnet.Frames;
using static Vnet.Tests.Frames.TestPackets;

namespace Vnet.Tests.Frames;

/// <summary>
/// The offload header a peer sends with a frame: what the daemon produces passes, every field out of
/// range is refused with its own reason, <c>DATA_VALID</c> is stripped, and no header makes one
/// super-frame into more than 64 segments, neither here nor in <see cref="Offloads.Segment"/>.
/// </summary>
public sealed class OffloadCheckTests
{
    private const int Mss = 1448;

    private readonly FramePool _pool = new(128);
    private readonly List<Frame> _output = new(128);

    private static readonly Dictionary<string, PacketSpec> TcpShapes = new()
    {
        ["v4"] = new(),
        ["v4-vlan"] = new() { Vlan = true },
        ["v4-no-options"] = new() { TcpOptions = 0 },
        ["v4-40-option-bytes"] = new() { TcpOptions = 40 },
        ["v6"] = new() { V6 = true },
        ["v6-vlan"] = new() { V6 = true, Vlan = true },
        ["v6-hop-by-hop"] = new() { V6 = true, HopByHop = true },
    };

    public static TheoryData<string> Shapes() => [.. TcpShapes.Keys];

    // ---------------------------------------------------------------- what the daemon produces passes

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Check_TapTcpSuperFrameOf64KiB_Accepted(string shape)
    {
        var spec = TcpShapes[shape];
        // As large as one IP packet gets: what a TAP hands over for a bulk TCP flow.
        // (IPv4's length field counts its header; IPv6's counts what follows the fixed 40 bytes.)
        var payload = RandomPayload(65535 - spec.IpHeaderLength - spec.L4HeaderLength + (spec.V6 ? 40 : 0), 1);
        var frame = SuperFrame(_pool, spec, payload, Mss);

        Assert.Equal(OffloadFault.None, OffloadCheck.Check(frame.Offload, frame.Data));

        frame.Release();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Check_EcnSuperFrame_Accepted(bool v6)
    {
        var spec = new PacketSpec { V6 = v6, TcpFlags = Ack | Cwr };
        var frame = SuperFrame(_pool, spec, RandomPayload(20_000, 2), Mss);
        frame.Offload.GsoType |= VirtioNetHeader.GsoEcn;

        Assert.Equal(OffloadFault.None, OffloadCheck.Check(frame.Offload, frame.Data));

        frame.Release();
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void Check_PartialChecksumFrame_Accepted(bool v6, bool udp)
    {
        var frame = Partial(_pool, new PacketSpec { V6 = v6, Udp = udp }, RandomPayload(1000, 3));

        Assert.Equal(OffloadFault.None, OffloadCheck.Check(frame.Offload, frame.Data));

        frame.Release();
    }

    [Fact]
    public void Check_SixtyFourSegmentsExactly_Accepted()
    {
        var spec = new PacketSpec();
        var frame = SuperFrame(_pool, spec, RandomPayload(64 * 1000, 4), 1000);

        Assert.Equal(OffloadFault.None, OffloadCheck.Check(frame.Offload, frame.Data));
        Assert.True(Offloads.Finalize(frame, _pool, _output));
        Assert.Equal(64, _output.Count);

        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Check_SegmentsOfAUdpLinkCoalescedAgain_Accepted()
    {
        var spec = new PacketSpec { TcpFlags = Ack | Psh };
        var payload = RandomPayload(60_000, 5);
        var input = new List<Frame>();
        Assert.True(Offloads.Segment(SuperFrame(_pool, spec, payload, Mss), _pool, input, completeChecksums: false, maxFrameLength: 1446));

        Offloads.Coalesce(input, _pool, _output);

        var merged = Assert.Single(_output);
        Assert.True(merged.Offload.IsGso);
        Assert.Equal(OffloadFault.None, OffloadCheck.Check(merged.Offload, merged.Data));
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Check_LongCaptureMarkedAsSuperFrame_Accepted(bool v6)
    {
        var frame = Plain(_pool, new PacketSpec { V6 = v6 }, RandomPayload(30_000, 6));
        Assert.True(Offloads.MarkAsSuperFrame(frame, 1500));

        Assert.Equal(OffloadFault.None, OffloadCheck.Check(frame.Offload, frame.Data));

        frame.Release();
    }

    [Fact]
    public void Check_DataValidAlone_AcceptedAndStrippedByFromPeer()
    {
        var frame = Plain(_pool, new PacketSpec(), RandomPayload(500, 7));
        var header = new VirtioNetHeader { Flags = VirtioNetHeader.FlagDataValid };

        Assert.Equal(OffloadFault.None, OffloadCheck.FromPeer(ref header, frame.Data));

        Assert.Equal(VirtioNetHeader.None, header);
        frame.Release();
    }

    [Fact]
    public void FromPeer_DataValidWithNeedsChecksum_KeepsOnlyNeedsChecksum()
    {
        var spec = new PacketSpec();
        var frame = Partial(_pool, spec, RandomPayload(500, 8));
        var header = frame.Offload;
        header.Flags |= VirtioNetHeader.FlagDataValid;

        Assert.Equal(OffloadFault.None, OffloadCheck.FromPeer(ref header, frame.Data));

        Assert.Equal(PartialHeader(spec), header);
        frame.Release();
    }

    [Fact]
    public void FromPeer_RefusedHeader_LosesDataValidToo()
    {
        var frame = Plain(_pool, new PacketSpec(), RandomPayload(500, 9));
        var header = new VirtioNetHeader { Flags = VirtioNetHeader.FlagDataValid | 0x10 };

        Assert.Equal(OffloadFault.UnknownFlags, OffloadCheck.FromPeer(ref header, frame.Data));

        Assert.Equal(0x10, header.Flags);
        frame.Release();
    }

    // ---------------------------------------------------------------- every field out of range

    public static TheoryData<string, OffloadFault> Refusals() => new()
    {
        { "flag 0x04 (RSC_INFO)", OffloadFault.UnknownFlags },
        { "flag 0x80", OffloadFault.UnknownFlags },
        { "gso UFO", OffloadFault.UnknownGsoType },
        { "gso UDP_L4", OffloadFault.UnknownGsoType },
        { "gso type 7", OffloadFault.UnknownGsoType },
        { "ECN bit alone", OffloadFault.UnknownGsoType },
        { "gso size without gso", OffloadFault.GsoSizeWithoutGso },
        { "gso without NEEDS_CSUM", OffloadFault.GsoWithoutChecksum },
        { "gso with DATA_VALID instead of NEEDS_CSUM", OffloadFault.GsoWithoutChecksum },
        { "hdr_len past the end", OffloadFault.HeaderLengthOutOfFrame },
        { "csum_start 0", OffloadFault.ChecksumStartOutOfRange },
        { "csum_start inside the Ethernet header", OffloadFault.ChecksumStartOutOfRange },
        { "csum_start at the end", OffloadFault.ChecksumStartOutOfRange },
        { "csum_start 65535", OffloadFault.ChecksumStartOutOfRange },
        { "TCPv6 csum_start inside the IPv6 header", OffloadFault.ChecksumStartOutOfRange },
        { "checksum field one byte past the end", OffloadFault.ChecksumFieldOutOfFrame },
        { "csum_offset 65535", OffloadFault.ChecksumFieldOutOfFrame },
        { "gso with UDP's checksum offset", OffloadFault.ChecksumOffsetNotTcp },
        { "TCP header cut by the end", OffloadFault.TcpHeaderOutOfFrame },
        { "TCP data offset below 5", OffloadFault.TcpHeaderOutOfFrame },
        { "TCP data offset past the end", OffloadFault.TcpHeaderOutOfFrame },
        { "gso size 0", OffloadFault.GsoSizeOutOfRange },
        { "gso size 16", OffloadFault.GsoSizeOutOfRange },
        { "gso size 47", OffloadFault.GsoSizeOutOfRange },
        { "gso size 65535 (GSO_BY_FRAGS)", OffloadFault.GsoSizeOutOfRange },
        { "gso frame of one segment", OffloadFault.NotASuperFrame },
        { "gso size larger than the frame", OffloadFault.NotASuperFrame },
        { "65 segments", OffloadFault.TooManySegments },
        { "gso size 100 on 64 KiB", OffloadFault.TooManySegments },
        { "longer than Frame.MaxLength", OffloadFault.TooLong },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void Check_FieldOutOfRange_RefusedWithItsReason(string which, OffloadFault expected)
    {
        var (header, bytes) = Case(which);

        Assert.Equal(expected, OffloadCheck.Check(header, bytes));
        // FromPeer refuses the same, whatever it strips.
        Assert.Equal(expected, OffloadCheck.FromPeer(ref header, bytes));
    }

    /// <summary>A real frame and its header, with one thing wrong.</summary>
    private static (VirtioNetHeader Header, byte[] Bytes) Case(string which)
    {
        var v4 = new PacketSpec();
        var v6 = new PacketSpec { V6 = true };
        var bigPayload = RandomPayload(40 * Mss, 10);
        var big = Bytes(v4, bigPayload, partialChecksum: true);
        var gso = Gso(v4, Mss);
        var partial = PartialHeader(v4);
        var small = Bytes(v4, RandomPayload(600, 11), partialChecksum: true);
        return which switch
        {
            "flag 0x04 (RSC_INFO)" => (partial with { Flags = VirtioNetHeader.FlagNeedsCsum | 0x04 }, small),
            "flag 0x80" => (new VirtioNetHeader { Flags = 0x80 }, small),
            "gso UFO" => (gso with { GsoType = VirtioNetHeader.GsoUdp }, big),
            "gso UDP_L4" => (gso with { GsoType = VirtioNetHeader.GsoUdpL4 }, big),
            "gso type 7" => (gso with { GsoType = 7 }, big),
            "ECN bit alone" => (partial with { GsoType = VirtioNetHeader.GsoEcn }, small),
            "gso size without gso" => (partial with { GsoSize = Mss }, small),
            "gso without NEEDS_CSUM" => (gso with { Flags = 0, CsumStart = 0, CsumOffset = 0 }, big),
            "gso with DATA_VALID instead of NEEDS_CSUM" => (gso with { Flags = VirtioNetHeader.FlagDataValid }, big),
            "hdr_len past the end" => (gso with { HdrLen = (ushort)(big.Length + 1) }, big),
            "csum_start 0" => (partial with { CsumStart = 0 }, small),
            "csum_start inside the Ethernet header" => (partial with { CsumStart = 12, CsumOffset = 2 }, small),
            "csum_start at the end" => (partial with { CsumStart = (ushort)small.Length, CsumOffset = 0 }, small),
            "csum_start 65535" => (partial with { CsumStart = 65535 }, small),
            "TCPv6 csum_start inside the IPv6 header" => (Gso(v6, Mss) with { CsumStart = 40 }, Bytes(v6, bigPayload, partialChecksum: true)),
            "checksum field one byte past the end" => (partial with { CsumOffset = (ushort)(small.Length - v4.L4 - 1) }, small),
            "csum_offset 65535" => (partial with { CsumOffset = 65535 }, small),
            "gso with UDP's checksum offset" => (gso with { CsumOffset = 6 }, big),
            "TCP header cut by the end" => (gso with { CsumStart = (ushort)(big.Length - 19) }, big),
            "TCP data offset below 5" => (gso, WithDataOffset(big, v4.L4, 4)),
            "TCP data offset past the end" => (gso with { CsumStart = (ushort)(big.Length - 40) }, WithDataOffset(big, big.Length - 40, 15)),
            "gso size 0" => (gso with { GsoSize = 0 }, big),
            "gso size 16" => (gso with { GsoSize = 16 }, Bytes(v4, RandomPayload(64_000, 12), partialChecksum: true)),
            "gso size 47" => (gso with { GsoSize = 47 }, Bytes(v4, RandomPayload(1000, 13), partialChecksum: true)),
            "gso size 65535 (GSO_BY_FRAGS)" => (gso with { GsoSize = 65535 }, big),
            "gso frame of one segment" => (gso, Bytes(v4, RandomPayload(Mss, 14), partialChecksum: true)),
            "gso size larger than the frame" => (gso with { GsoSize = 60_000 }, big),
            "65 segments" => (gso with { GsoSize = 1000 }, Bytes(v4, RandomPayload((64 * 1000) + 1, 15), partialChecksum: true)),
            "gso size 100 on 64 KiB" => (gso with { GsoSize = 100 }, Bytes(v4, RandomPayload(65_000, 16), partialChecksum: true)),
            "longer than Frame.MaxLength" => (partial, new byte[Frame.MaxLength + 1]),
            _ => throw new ArgumentException(which),
        };
    }

    private static VirtioNetHeader Gso(PacketSpec spec, int gsoSize) => PartialHeader(spec) with
    {
        GsoType = spec.V6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4,
        GsoSize = (ushort)gsoSize,
        HdrLen = (ushort)spec.HeadersLength,
    };

    private static byte[] WithDataOffset(byte[] frame, int tcpHeader, int words)
    {
        var copy = (byte[])frame.Clone();
        copy[tcpHeader + 12] = (byte)(words << 4);
        return copy;
    }

    // ---------------------------------------------------------------- amplification

    [Fact]
    public void Check_GsoSize16On64KiB_RefusedInsteadOfFourThousandSegments()
    {
        var spec = new PacketSpec();
        var frame = SuperFrame(_pool, spec, RandomPayload(65_000, 17), 16);

        Assert.NotEqual(OffloadFault.None, OffloadCheck.Check(frame.Offload, frame.Data));

        // Segment does not make them either, for a header that never met the check (a local one).
        Assert.False(Offloads.Finalize(frame, _pool, _output));
        Assert.Empty(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Segment_HeaderThatPassedByNamingAFakeTcpHeader_StillCutsAtMost64Segments()
    {
        // The header names a "TCP header" near the end of the frame, so that the check sees a small
        // payload (10 segments of 100 bytes); the IP header says the payload is 65,000 bytes.
        var spec = new PacketSpec();
        var bytes = Bytes(spec, RandomPayload(65_000, 18), partialChecksum: true);
        var fake = bytes.Length - 1020;
        bytes[fake + 12] = 5 << 4;
        var header = Gso(spec, 100) with { CsumStart = (ushort)fake };
        Assert.Equal(OffloadFault.None, OffloadCheck.Check(header, bytes));
        var frame = ToFrame(_pool, bytes, header);

        Assert.False(Offloads.Segment(frame, _pool, _output, completeChecksums: false));

        Assert.Empty(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Segment_SeventyOneSegmentsFromALocalHeader_Refused()
    {
        var frame = SuperFrame(_pool, new PacketSpec(), RandomPayload(71 * 900, 19), 900);

        Assert.False(Offloads.Segment(frame, _pool, _output, completeChecksums: true));

        Assert.Empty(_output);
        AssertPoolFull();
    }

    private void AssertPoolFull() => Assert.Equal(_pool.Created, _pool.Available);
}
