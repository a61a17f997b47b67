using System.Buffers.Binary;
using Vnet.Frames;
using static Vnet.Tests.Frames.TestPackets;

namespace Vnet.Tests.Frames;

public sealed class OffloadsCoalesceTests
{
    private const int Mss = 1360;

    private readonly FramePool _pool = new(64);
    private readonly List<Frame> _input = new(64);
    private readonly List<Frame> _output = new(64);

    private static readonly Dictionary<string, PacketSpec> ShapeSpecs = new()
    {
        ["v4"] = new(),
        ["v4-vlan-no-options"] = new() { Vlan = true, TcpOptions = 0 },
        ["v4-no-df-id-wraps"] = new() { DontFragment = false, Id = 0xFFFE },
        ["v6"] = new() { V6 = true },
        ["v6-vlan"] = new() { V6 = true, Vlan = true },
    };

    public static TheoryData<string, bool> Shapes()
    {
        var data = new TheoryData<string, bool>();
        foreach (var shape in ShapeSpecs.Keys)
        {
            data.Add(shape, true);
            data.Add(shape, false);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Coalesce_SegmentsOfASuperFrame_RestoresTheSuperFrame(string shape, bool completeSegments)
    {
        var spec = ShapeSpecs[shape] with { TcpFlags = Ack | Psh };
        var payload = RandomPayload((47 * Mss) + 500, 1);
        var original = Bytes(spec, payload, partialChecksum: true);
        Assert.True(Offloads.Segment(SuperFrame(_pool, spec, payload, Mss), _pool, _input, completeSegments));
        Assert.Equal(48, _input.Count);

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Empty(_input);
        var merged = Assert.Single(_output);
        Assert.Equal(1, merged.References);
        Assert.Equal(original, merged.Data.ToArray());
        AssertSuperFrameHeader(merged, spec, Mss);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_ThenSegment_GivesTheSameSegmentsAgain()
    {
        var spec = new PacketSpec { TcpFlags = Ack | Psh };
        var payload = RandomPayload(20_000, 2);
        Assert.True(Offloads.Segment(SuperFrame(_pool, spec, payload, Mss), _pool, _input, completeChecksums: true));
        var first = new List<byte[]>();
        foreach (var f in _input)
            first.Add(f.Data.ToArray());

        Offloads.Coalesce(_input, _pool, _output);
        var again = new List<Frame>();
        Assert.True(Offloads.Segment(Assert.Single(_output), _pool, again, completeChecksums: true));

        Assert.Equal(first.Count, again.Count);
        for (var i = 0; i < first.Count; i++)
            Assert.Equal(first[i], again[i].Data.ToArray());
        ReleaseAll(again);
        _output.Clear();
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_MixedTraffic_MergesOnlyNeighboursAndKeepsOrder()
    {
        var a = new PacketSpec();
        var b = new PacketSpec { SourcePort = 40001 };
        var arp = ToFrame(_pool, new byte[] { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0, 0, 1, 0x08, 0x06 }.Concat(new byte[46]).ToArray());
        var udp = Plain(_pool, new PacketSpec { Udp = true }, RandomPayload(300, 3));
        var pureAck = Plain(_pool, b, []);
        _input.Add(arp);
        AddSegments(a, 0, 3);
        _input.Add(udp);
        AddSegments(a, 3, 2);
        AddSegments(b, 0, 1);
        _input.Add(pureAck);
        AddSegments(b, 1, 2);
        var plainCopies = new[] { arp.Data.ToArray(), udp.Data.ToArray(), pureAck.Data.ToArray() };
        var singleB = _input[7].Data.ToArray();

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(7, _output.Count);
        Assert.Equal(plainCopies[0], _output[0].Data.ToArray());
        AssertMergedSegments(_output[1], a, 0, 3);
        Assert.Equal(plainCopies[1], _output[2].Data.ToArray());
        AssertMergedSegments(_output[3], a, 3, 2);
        Assert.True(_output[4].Offload.IsPlain);
        Assert.Equal(singleB, _output[4].Data.ToArray());
        Assert.Equal(plainCopies[2], _output[5].Data.ToArray());
        AssertMergedSegments(_output[6], b, 1, 2);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_GapInSequence_StartsANewRun()
    {
        var spec = new PacketSpec();
        AddSegments(spec, 0, 2);
        AddSegments(spec, 3, 2);

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(2, _output.Count);
        AssertMergedSegments(_output[0], spec, 0, 2);
        AssertMergedSegments(_output[1], spec, 3, 2);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_PshSegment_EndsTheRun()
    {
        var spec = new PacketSpec();
        AddSegments(spec, 0, 1);
        AddSegments(spec with { TcpFlags = Ack | Psh }, 1, 1);
        AddSegments(spec, 2, 2);

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(2, _output.Count);
        Assert.Equal(Ack | Psh, _output[0].Data[spec.L4 + 13]);
        AssertMergedSegments(_output[0], spec with { TcpFlags = Ack | Psh }, 0, 2);
        AssertMergedSegments(_output[1], spec, 2, 2);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_ShortSegment_EndsTheRun()
    {
        var spec = new PacketSpec();
        AddSegments(spec, 0, 2);
        _input.Add(Plain(_pool, spec with { Seq = spec.Seq + (2 * Mss) }, RandomPayload(100, 4)));
        AddSegments(spec with { Seq = spec.Seq + 100 }, 2, 2);

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(2, _output.Count);
        Assert.Equal((3 * 20) + (2 * Mss) + 100 + 32 + 14 - 40, _output[0].Length);
        Assert.Equal(Mss, _output[0].Offload.GsoSize);
        AssertMergedSegments(_output[1], spec with { Seq = spec.Seq + 100 }, 2, 2);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_DifferentWindow_MergesAndKeepsTheLastWindow()
    {
        var spec = new PacketSpec();
        AddSegments(spec, 0, 2);
        AddSegments(spec with { Window = 999 }, 2, 1);

        Offloads.Coalesce(_input, _pool, _output);

        var merged = Assert.Single(_output);
        Assert.Equal(999, BinaryPrimitives.ReadUInt16BigEndian(merged.Data.Slice(spec.L4 + 14)));
        ReleaseAll(_output);
        AssertPoolFull();
    }

    private static readonly Dictionary<string, PacketSpec> UnmergeableSpecs = new()
    {
        ["other-timestamp"] = new() { TimestampValue = 7 },
        ["other-ack"] = new() { AckNumber = 5 },
        ["other-ttl"] = new() { Ttl = 63 },
        ["other-tos"] = new() { Tos = 2 },
        ["no-df"] = new() { DontFragment = false },
        ["ece"] = new() { TcpFlags = Ack | Ece },
        ["fin"] = new() { TcpFlags = Ack | Fin },
        ["vlan"] = new() { Vlan = true },
        ["other-port"] = new() { DestinationPort = 1 },
    };

    public static TheoryData<string> Unmergeable() => [.. UnmergeableSpecs.Keys];

    [Theory]
    [MemberData(nameof(Unmergeable))]
    public void Coalesce_SegmentThatDiffersFromTheRun_IsNotMerged(string difference)
    {
        var spec = new PacketSpec();
        AddSegments(spec, 0, 2);
        AddSegments(UnmergeableSpecs[difference], 2, 1);
        var oddBytes = _input[2].Data.ToArray();

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(2, _output.Count);
        AssertMergedSegments(_output[0], spec, 0, 2);
        Assert.Equal(oddBytes, _output[1].Data.ToArray());
        Assert.True(_output[1].Offload.IsPlain);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_WithoutDfIdsOutOfStep_StartsANewRun()
    {
        var spec = new PacketSpec { DontFragment = false };
        AddSegments(spec, 0, 2);
        AddSegments(spec with { Id = (ushort)(spec.Id + 5) }, 2, 2);

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(2, _output.Count);
        AssertMergedSegments(_output[0], spec, 0, 2);
        AssertMergedSegments(_output[1], spec with { Id = (ushort)(spec.Id + 5) }, 2, 2);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Coalesce_IpOptionsOrExtensionHeaders_PassThrough(bool v6)
    {
        var spec = new PacketSpec { V6 = true, HopByHop = true };
        if (v6)
        {
            AddSegments(spec, 0, 3);
        }
        else
        {
            // IPv4 with 4 bytes of options (NOP NOP NOP EOL), checksums redone by hand.
            for (var i = 0; i < 3; i++)
            {
                var s = new PacketSpec { Seq = new PacketSpec().Seq + (uint)(i * Mss) };
                var b = Bytes(s, RandomPayload(Mss, i)).ToList();
                b.InsertRange(s.L4, new byte[] { 1, 1, 1, 0 });
                var bytes = b.ToArray();
                bytes[s.L3] = 0x46;
                BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(s.L3 + 2), (ushort)(bytes.Length - s.L3));
                Checksum.WriteIpv4Header(bytes.AsSpan(s.L3, 24));
                _input.Add(ToFrame(_pool, bytes));
            }
        }

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(3, _output.Count);
        Assert.All(_output, f => Assert.True(f.Offload.IsPlain));
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_SegmentWithBadChecksum_IsNotMerged()
    {
        var spec = new PacketSpec();
        AddSegments(spec, 0, 4);
        _input[2].Data[^1] ^= 0x01;
        var bad = _input[2].Data.ToArray();

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(3, _output.Count);
        AssertMergedSegments(_output[0], spec, 0, 2);
        Assert.Equal(bad, _output[1].Data.ToArray());
        Assert.True(_output[2].Offload.IsPlain);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_DataValidSegmentWithAWrongChecksum_IsNotTrustedAndStaysApart()
    {
        // Segments come from the wire: DATA_VALID there proves nothing. This one's field holds only
        // the pseudo-header sum, so its checksum is wrong and it must not disappear into a
        // super-frame whose checksum a kernel would then compute anew.
        var spec = new PacketSpec();
        AddSegments(spec, 0, 3, partial: true);
        _input[1].Offload = new VirtioNetHeader { Flags = VirtioNetHeader.FlagDataValid };
        var before = _input.Select(f => f.Data.ToArray()).ToList();

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(3, _output.Count);
        for (var i = 0; i < 3; i++)
            Assert.Equal(before[i], _output[i].Data.ToArray());
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_DataValidSegmentWithARightChecksum_IsCheckedAndMerged()
    {
        var spec = new PacketSpec();
        AddSegments(spec, 0, 3);
        _input[1].Offload = new VirtioNetHeader { Flags = VirtioNetHeader.FlagDataValid };

        Offloads.Coalesce(_input, _pool, _output);

        AssertMergedSegments(Assert.Single(_output), spec, 0, 3);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_LongRun_StopsAt64SegmentsAsALinkAccepts()
    {
        const int Small = 500;
        var pool = new FramePool(80);
        var spec = new PacketSpec { TcpOptions = 0 };
        for (var i = 0; i < 70; i++)
        {
            var s = spec with { Seq = spec.Seq + (uint)(i * Small), Id = (ushort)(spec.Id + i) };
            _input.Add(Partial(pool, s, StreamBytes(i * Small, Small)));
        }

        Offloads.Coalesce(_input, pool, _output);

        Assert.Equal(2, _output.Count);
        Assert.Equal(spec.HeadersLength + (64 * Small), _output[0].Length);
        Assert.Equal(OffloadFault.None, OffloadCheck.Check(_output[0].Offload, _output[0].Data));
        Assert.Equal(OffloadFault.None, OffloadCheck.Check(_output[1].Offload, _output[1].Data));
        ReleaseAll(_output);
        Assert.Equal(pool.Created, pool.Available);
    }

    [Fact]
    public void Coalesce_TinySegments_StayApart()
    {
        var spec = new PacketSpec();
        for (var i = 0; i < 4; i++)
        {
            var s = spec with { Seq = spec.Seq + (uint)(i * 20), Id = (ushort)(spec.Id + i) };
            _input.Add(Partial(_pool, s, StreamBytes(i * 20, 20)));
        }

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(4, _output.Count);
        Assert.All(_output, f => Assert.False(f.Offload.IsGso));
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_SharedFrames_CopiesTheHeadAndLeavesEveryOriginalUntouched()
    {
        var spec = new PacketSpec();
        AddSegments(spec, 0, 3);
        var originals = _input.ToArray();
        var before = new List<byte[]>();
        foreach (var f in originals)
        {
            f.AddReference();
            before.Add(f.Data.ToArray());
        }

        Offloads.Coalesce(_input, _pool, _output);

        var merged = Assert.Single(_output);
        Assert.DoesNotContain(merged, originals);
        AssertMergedSegments(merged, spec, 0, 3);
        for (var i = 0; i < originals.Length; i++)
        {
            Assert.Equal(1, originals[i].References);
            Assert.Equal(before[i], originals[i].Data.ToArray());
            Assert.True(originals[i].Offload.IsPlain);
            originals[i].Release();
        }
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_SharedHeadAndNoFreeBuffer_PassesEverythingThroughUnmerged()
    {
        var pool = new FramePool(3);
        var spec = new PacketSpec();
        for (var i = 0; i < 3; i++)
            _input.Add(ToFrame(pool, Bytes(spec with { Seq = spec.Seq + (uint)(i * Mss), Id = (ushort)(spec.Id + i) }, StreamBytes(i * Mss, Mss))));
        var head = _input[0];
        head.AddReference();

        Offloads.Coalesce(_input, pool, _output);

        // The head stays alone; the other two merge inside the second frame, which is not shared.
        Assert.Equal(2, _output.Count);
        Assert.Same(head, _output[0]);
        Assert.True(head.Offload.IsPlain);
        AssertMergedSegments(_output[1], spec, 1, 2);
        head.Release();
        ReleaseAll(_output);
        Assert.Equal(pool.Created, pool.Available);
    }

    [Fact]
    public void Coalesce_MoreThanOneIpPacketHolds_SplitsIntoTwoSuperFrames()
    {
        var spec = new PacketSpec();
        AddSegments(spec, 0, 60);

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(2, _output.Count);
        var firstCount = (65535 - 20 - 32) / Mss;
        AssertMergedSegments(_output[0], spec, 0, firstCount);
        AssertMergedSegments(_output[1], spec, firstCount, 60 - firstCount);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Coalesce_SingleSegments_PassThroughUnchanged()
    {
        var spec = new PacketSpec();
        AddSegments(spec, 0, 1);
        AddSegments(spec with { SourcePort = 1 }, 0, 1, partial: true);
        var before = new[] { _input[0].Data.ToArray(), _input[1].Data.ToArray() };
        var offloads = new[] { _input[0].Offload, _input[1].Offload };
        var frames = _input.ToArray();

        Offloads.Coalesce(_input, _pool, _output);

        Assert.Equal(frames, _output);
        for (var i = 0; i < 2; i++)
        {
            Assert.Equal(before[i], _output[i].Data.ToArray());
            Assert.Equal(offloads[i], _output[i].Offload);
        }
        ReleaseAll(_output);
        AssertPoolFull();
    }

    /// <summary>Adds MTU-sized segments <paramref name="first"/>.. of a stream whose payload byte k is (byte)k.</summary>
    private void AddSegments(PacketSpec spec, int first, int count, bool partial = false)
    {
        for (var i = first; i < first + count; i++)
        {
            var s = spec with { Seq = spec.Seq + (uint)(i * Mss), Id = (ushort)(spec.Id + i) };
            var payload = StreamBytes(i * Mss, Mss);
            _input.Add(partial ? Partial(_pool, s, payload) : Plain(_pool, s, payload));
        }
    }

    private static byte[] StreamBytes(int start, int length)
    {
        var bytes = new byte[length];
        for (var k = 0; k < length; k++)
            bytes[k] = (byte)((start + k) * 7);
        return bytes;
    }

    /// <summary>Checks a super-frame made of segments first.. of <see cref="AddSegments"/>.</summary>
    private static void AssertMergedSegments(Frame merged, PacketSpec spec, int first, int count)
    {
        var s = spec with { Seq = spec.Seq + (uint)(first * Mss), Id = (ushort)(spec.Id + first) };
        Assert.Equal(Bytes(s, StreamBytes(first * Mss, count * Mss), partialChecksum: true), merged.Data.ToArray());
        AssertSuperFrameHeader(merged, s, Mss);
    }

    private static void AssertSuperFrameHeader(Frame merged, PacketSpec spec, int gsoSize)
    {
        var o = merged.Offload;
        Assert.Equal(VirtioNetHeader.FlagNeedsCsum, o.Flags);
        Assert.Equal(spec.V6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4, o.GsoType);
        Assert.Equal(gsoSize, o.GsoSize);
        Assert.Equal(spec.HeadersLength, o.HdrLen);
        Assert.Equal(spec.L4, o.CsumStart);
        Assert.Equal(16, o.CsumOffset);
    }

    private void AssertPoolFull() => Assert.Equal(_pool.Created, _pool.Available);
}
