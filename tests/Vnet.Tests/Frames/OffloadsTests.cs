using System.Buffers.Binary;
using Vnet.Frames;
using static Vnet.Tests.Frames.TestPackets;

namespace Vnet.Tests.Frames;

public sealed class OffloadsTests
{
    private const int Mss = 1360;
    private const int BigPayload = (48 * Mss) + 77;

    private readonly FramePool _pool = new(64);
    private readonly List<Frame> _output = new(64);

    private static readonly Dictionary<string, PacketSpec> TcpShapeSpecs = new()
    {
        ["v4"] = new(),
        ["v4-vlan"] = new() { Vlan = true },
        ["v4-no-options-no-df"] = new() { TcpOptions = 0, DontFragment = false },
        ["v4-40-option-bytes"] = new() { TcpOptions = 40 },
        ["v6"] = new() { V6 = true },
        ["v6-vlan"] = new() { V6 = true, Vlan = true },
        ["v6-hop-by-hop"] = new() { V6 = true, HopByHop = true },
    };

    public static TheoryData<string, bool> TcpShapes()
    {
        var data = new TheoryData<string, bool>();
        foreach (var shape in TcpShapeSpecs.Keys)
        {
            data.Add(shape, true);
            data.Add(shape, false);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(TcpShapes))]
    public void Segment_TcpSuperFrame_SegmentsAreValidAndCarryThePayload(string shape, bool complete)
    {
        var spec = TcpShapeSpecs[shape] with { TcpFlags = Ack | Psh | Fin | Cwr | Ece };
        var payload = RandomPayload(BigPayload, 1);
        var original = Bytes(spec, payload, partialChecksum: true);
        var frame = SuperFrame(_pool, spec, payload, Mss);

        Assert.True(Offloads.Segment(frame, _pool, _output, complete));

        AssertSegments(_output, spec, payload, original, Mss, complete);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void Segment_UsoSuperFrame_EachDatagramHasItsOwnValidHeader(bool v6, bool vlan)
    {
        var spec = new PacketSpec { V6 = v6, Vlan = vlan, Udp = true };
        var payload = RandomPayload(20_000, 2);
        var original = Bytes(spec, payload, partialChecksum: true);

        Assert.True(Offloads.Segment(SuperFrame(_pool, spec, payload, 1200), _pool, _output, completeChecksums: true));

        AssertSegments(_output, spec, payload, original, 1200, complete: true);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Segment_PartialSegments_CompleteToTheSameBytesAsCompleteSegments(bool v6)
    {
        var spec = new PacketSpec { V6 = v6, TcpFlags = Ack | Psh };
        var payload = RandomPayload(10_001, 3);
        var partial = new List<Frame>();
        var complete = new List<Frame>();

        Assert.True(Offloads.Segment(SuperFrame(_pool, spec, payload, Mss), _pool, partial, completeChecksums: false));
        Assert.True(Offloads.Segment(SuperFrame(_pool, spec, payload, Mss), _pool, complete, completeChecksums: true));

        Assert.Equal(complete.Count, partial.Count);
        for (var i = 0; i < partial.Count; i++)
            Assert.Equal(complete[i].Data.ToArray(), CompletedCopy(partial[i]));
        ReleaseAll(partial);
        ReleaseAll(complete);
        AssertPoolFull();
    }

    [Fact]
    public void Segment_SharedSuperFrame_LeavesTheOriginalUntouched()
    {
        var spec = new PacketSpec { TcpFlags = Ack | Psh };
        var payload = RandomPayload(BigPayload, 4);
        var frame = SuperFrame(_pool, spec, payload, Mss);
        frame.AddReference();
        var before = frame.Data.ToArray();
        var offloadBefore = frame.Offload;

        Assert.True(Offloads.Segment(frame, _pool, _output, completeChecksums: false));

        Assert.DoesNotContain(frame, _output);
        Assert.Equal(1, frame.References);
        Assert.Equal(before, frame.Data.ToArray());
        Assert.Equal(offloadBefore, frame.Offload);
        AssertSegments(_output, spec, payload, before, Mss, complete: false);
        frame.Release();
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Segment_PayloadFitsOneSegment_GivesOneSegmentWithAllFlags()
    {
        var spec = new PacketSpec { TcpFlags = Ack | Psh | Fin | Cwr };
        var payload = RandomPayload(1000, 5);
        var original = Bytes(spec, payload, partialChecksum: true);

        Assert.True(Offloads.Finalize(SuperFrame(_pool, spec, payload, Mss), _pool, _output));

        AssertSegments(_output, spec, payload, original, Mss, complete: true);
        Assert.Equal(Ack | Psh | Fin | Cwr, _output[0].Data[spec.L4 + 13]);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Segment_UfoGsoType_ReturnsFalseAndReleasesTheFrame()
    {
        var spec = new PacketSpec { Udp = true };
        var frame = SuperFrame(_pool, spec, RandomPayload(5000, 6), 1400);
        frame.Offload.GsoType = VirtioNetHeader.GsoUdp;

        Assert.False(Offloads.Segment(frame, _pool, _output, completeChecksums: true));

        Assert.Empty(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Segment_GsoTypeDisagreesWithPacket_ReturnsFalse()
    {
        var frame = SuperFrame(_pool, new PacketSpec(), RandomPayload(5000, 7), 1400);
        frame.Offload.GsoType = VirtioNetHeader.GsoTcpV6;

        Assert.False(Offloads.Finalize(frame, _pool, _output));

        Assert.Empty(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Segment_TruncatedSuperFrame_ReturnsFalse()
    {
        var frame = SuperFrame(_pool, new PacketSpec(), RandomPayload(5000, 8), 1400);
        frame.Length -= 100;

        Assert.False(Offloads.Finalize(frame, _pool, _output));

        AssertPoolFull();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Segment_PoolRunsDry_ReturnsFalseAndReleasesEverything(bool shared)
    {
        var pool = new FramePool(10);
        var frame = SuperFrame(pool, new PacketSpec(), RandomPayload(BigPayload, 9), Mss);
        if (shared)
            frame.AddReference();
        var earlier = ToFrame(pool, new byte[60]);
        _output.Add(earlier);

        Assert.False(Offloads.Segment(frame, pool, _output, completeChecksums: false));

        Assert.Equal([earlier], _output);
        Assert.Equal(shared ? 1 : 0, frame.References);
        if (shared)
            frame.Release();
        ReleaseAll(_output);
        Assert.Equal(pool.Created, pool.Available);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Segment_FrameWithoutGso_PassesThroughWhenChecksumsMayStayPartial(bool partialChecksum)
    {
        var spec = new PacketSpec();
        var frame = partialChecksum ? Partial(_pool, spec, RandomPayload(100, 10)) : Plain(_pool, spec, RandomPayload(100, 10));
        var before = frame.Data.ToArray();

        Assert.True(Offloads.Segment(frame, _pool, _output, completeChecksums: false));

        Assert.Same(frame, Assert.Single(_output));
        Assert.Equal(before, frame.Data.ToArray());
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Finalize_PlainFrame_PassesThroughTheSameFrame()
    {
        var frame = Plain(_pool, new PacketSpec(), RandomPayload(100, 11));

        Assert.True(Offloads.Finalize(frame, _pool, _output));

        Assert.Same(frame, Assert.Single(_output));
        Assert.Equal(1, frame.References);
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void Finalize_NeedsChecksumOnly_CompletesInPlace(bool v6, bool udp)
    {
        var spec = new PacketSpec { V6 = v6, Udp = udp, Vlan = true };
        var payload = RandomPayload(333, 12);
        var frame = Partial(_pool, spec, payload);

        Assert.True(Offloads.Finalize(frame, _pool, _output));

        Assert.Same(frame, Assert.Single(_output));
        Assert.Equal(VirtioNetHeader.None, frame.Offload);
        Assert.Equal(Bytes(spec, payload), frame.Data.ToArray());
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Finalize_SharedNeedsChecksumFrame_CompletesACopyAndLeavesTheOriginal()
    {
        var spec = new PacketSpec();
        var payload = RandomPayload(500, 13);
        var frame = Partial(_pool, spec, payload);
        frame.IngressPort = 3;
        frame.AddReference();
        var before = frame.Data.ToArray();

        Assert.True(Offloads.Finalize(frame, _pool, _output));

        var copy = Assert.Single(_output);
        Assert.NotSame(frame, copy);
        Assert.Equal(3, copy.IngressPort);
        Assert.Equal(Bytes(spec, payload), copy.Data.ToArray());
        Assert.Equal(before, frame.Data.ToArray());
        Assert.True(frame.Offload.NeedsChecksum);
        Assert.Equal(1, frame.References);
        frame.Release();
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void Finalize_UdpChecksumComesOutZero_WritesFfff()
    {
        var spec = new PacketSpec { Udp = true };
        var payload = RandomPayload(100, 14);
        payload[^2] = payload[^1] = 0;
        // Choose the last payload word so that the whole datagram sums to 0xFFFF: checksum 0.
        var bytes = Bytes(spec, payload);
        BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(spec.L4 + 6), 0);
        var sum = RefFold(RefSum(bytes.AsSpan(spec.L4), RefPseudo(bytes, spec, bytes.Length - spec.L4)));
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(payload.Length - 2), (ushort)(0xFFFF - sum));
        var frame = Partial(_pool, spec, payload);

        Assert.True(Offloads.Finalize(frame, _pool, _output));

        Assert.Equal(0xFFFF, BinaryPrimitives.ReadUInt16BigEndian(frame.Data.Slice(spec.L4 + 6)));
        Assert.True(L4ChecksumValid(frame.Data, spec));
        ReleaseAll(_output);
    }

    [Fact]
    public void Finalize_ChecksumFieldOutsideThePacket_ReturnsFalse()
    {
        var frame = Partial(_pool, new PacketSpec(), RandomPayload(10, 15));
        frame.Offload.CsumOffset = 2000;

        Assert.False(Offloads.Finalize(frame, _pool, _output));

        Assert.Empty(_output);
        AssertPoolFull();
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void MarkAsSuperFrame_TcpFrameLongerThanMtu_BecomesASuperFrameThatSegmentsToMtu(bool v6, bool vlan)
    {
        const int mtu = 1500;
        var spec = new PacketSpec { V6 = v6, Vlan = vlan, TcpFlags = Ack | Psh };
        var payload = RandomPayload(9000, 16);
        var original = Bytes(spec, payload);
        var frame = ToFrame(_pool, original);
        var mss = mtu - spec.IpHeaderLength - spec.L4HeaderLength;

        Assert.True(Offloads.MarkAsSuperFrame(frame, mtu));

        var o = frame.Offload;
        Assert.Equal(VirtioNetHeader.FlagNeedsCsum, o.Flags);
        Assert.Equal(v6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4, o.GsoType);
        Assert.Equal(mss, o.GsoSize);
        Assert.Equal(spec.HeadersLength, o.HdrLen);
        Assert.Equal(spec.L4, o.CsumStart);
        Assert.Equal(16, o.CsumOffset);
        Assert.Equal(Bytes(spec, payload, partialChecksum: true), frame.Data.ToArray());

        Assert.True(Offloads.Finalize(frame, _pool, _output));
        AssertSegments(_output, spec, payload, original, mss, complete: true);
        Assert.All(_output, s => Assert.True(s.Length <= mtu + spec.L3));
        ReleaseAll(_output);
        AssertPoolFull();
    }

    [Fact]
    public void MarkAsSuperFrame_VlanFrameOfExactlyOneMtu_ReturnsFalse()
    {
        var spec = new PacketSpec { Vlan = true };
        var frame = Plain(_pool, spec, RandomPayload(1500 - 20 - spec.L4HeaderLength, 17));
        Assert.Equal(1500 + 18, frame.Length);
        var before = frame.Data.ToArray();

        Assert.False(Offloads.MarkAsSuperFrame(frame, 1500));

        Assert.Equal(before, frame.Data.ToArray());
        Assert.True(frame.Offload.IsPlain);
        frame.Release();
    }

    [Fact]
    public void MarkAsSuperFrame_UdpFrame_ReturnsFalse()
    {
        var frame = Plain(_pool, new PacketSpec { Udp = true }, RandomPayload(5000, 18));

        Assert.False(Offloads.MarkAsSuperFrame(frame, 1500));

        Assert.True(frame.Offload.IsPlain);
        frame.Release();
    }

    [Fact]
    public void MarkAsSuperFrame_FrameWithOffloadMetadata_ReturnsFalse()
    {
        var frame = Partial(_pool, new PacketSpec(), RandomPayload(5000, 19));

        Assert.False(Offloads.MarkAsSuperFrame(frame, 1500));

        frame.Release();
    }

    /// <summary>Checks every segment of a split super-frame against the packet it came from.</summary>
    internal static void AssertSegments(List<Frame> segments, PacketSpec spec, byte[] payload, byte[] original, int mss, bool complete)
    {
        var count = Math.Max(1, (payload.Length + mss - 1) / mss);
        Assert.Equal(count, segments.Count);
        var originalFlags = original[spec.L4 + 13];
        var joined = new List<byte>(payload.Length);
        for (var i = 0; i < count; i++)
        {
            var segment = segments[i];
            var d = segment.Data.ToArray();
            var length = Math.Min(mss, payload.Length - (i * mss));
            Assert.Equal(1, segment.References);
            Assert.Equal(spec.HeadersLength + length, d.Length);
            Assert.Equal(original.AsSpan(0, spec.L3), d.AsSpan(0, spec.L3));

            if (spec.V6)
            {
                Assert.Equal(d.Length - spec.L3 - 40, BinaryPrimitives.ReadUInt16BigEndian(d.AsSpan(spec.L3 + 4)));
                Assert.Equal(original.AsSpan(spec.L3, 4), d.AsSpan(spec.L3, 4));
                Assert.Equal(original.AsSpan(spec.L3 + 6, spec.IpHeaderLength - 6), d.AsSpan(spec.L3 + 6, spec.IpHeaderLength - 6));
            }
            else
            {
                Assert.Equal(d.Length - spec.L3, BinaryPrimitives.ReadUInt16BigEndian(d.AsSpan(spec.L3 + 2)));
                Assert.Equal((ushort)(spec.Id + i), BinaryPrimitives.ReadUInt16BigEndian(d.AsSpan(spec.L3 + 4)));
                Assert.Equal(original.AsSpan(spec.L3 + 6, 4), d.AsSpan(spec.L3 + 6, 4));
                Assert.Equal(original.AsSpan(spec.L3 + 12, 8), d.AsSpan(spec.L3 + 12, 8));
                Assert.True(Ipv4HeaderValid(d, spec), $"IPv4 header checksum of segment {i}");
            }

            if (spec.Udp)
            {
                Assert.Equal(d.Length - spec.L4, BinaryPrimitives.ReadUInt16BigEndian(d.AsSpan(spec.L4 + 4)));
            }
            else
            {
                Assert.Equal(spec.Seq + (uint)(i * mss), BinaryPrimitives.ReadUInt32BigEndian(d.AsSpan(spec.L4 + 4)));
                var flags = originalFlags;
                if (i > 0)
                    flags &= unchecked((byte)~Cwr);
                if (i < count - 1)
                    flags &= unchecked((byte)~(Fin | Psh));
                Assert.Equal(flags, d[spec.L4 + 13]);
                Assert.Equal(original.AsSpan(spec.L4 + 8, 5), d.AsSpan(spec.L4 + 8, 5));
                Assert.Equal(original.AsSpan(spec.L4 + 14, 2), d.AsSpan(spec.L4 + 14, 2));
                Assert.Equal(original.AsSpan(spec.L4 + 18, spec.L4HeaderLength - 18), d.AsSpan(spec.L4 + 18, spec.L4HeaderLength - 18));
            }
            Assert.Equal(original.AsSpan(spec.L4, 4), d.AsSpan(spec.L4, 4));

            if (complete)
            {
                Assert.Equal(VirtioNetHeader.None, segment.Offload);
                Assert.True(L4ChecksumValid(d, spec), $"L4 checksum of segment {i}");
            }
            else
            {
                Assert.Equal(PartialHeader(spec), segment.Offload);
                Assert.Equal(RefFold(RefPseudo(d, spec, d.Length - spec.L4)), BinaryPrimitives.ReadUInt16BigEndian(d.AsSpan(spec.L4 + spec.ChecksumOffset)));
                Assert.True(L4ChecksumValid(CompletedCopy(segment), spec), $"completed L4 checksum of segment {i}");
            }
            joined.AddRange(d.AsSpan(spec.HeadersLength).ToArray());
        }
        Assert.Equal(payload, joined.ToArray());
    }

    private void AssertPoolFull() => Assert.Equal(_pool.Created, _pool.Available);
}
