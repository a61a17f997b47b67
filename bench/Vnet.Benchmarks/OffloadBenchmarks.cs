using System.Buffers.Binary;
using BenchmarkDotNet.Attributes;
using Vnet.Frames;

namespace Vnet.Benchmarks;

/// <summary>
/// The user-space GSO/GRO path of a UDP link: checksums, cutting a 64 KiB TCP super-frame into
/// 48 segments of MSS 1360, and merging them back. Every case must show 0 B allocated.
/// </summary>
[MemoryDiagnoser]
public class OffloadBenchmarks
{
    private const int Mss = 1360;
    private const int Segments = 48;
    private const int TcpHeaderLength = 32;

    private readonly byte[] _mtuBytes = new byte[1500];
    private readonly byte[] _superBytes = new byte[64 * 1024];
    private readonly List<Frame> _input = new(64);
    private readonly List<Frame> _output = new(64);
    private FramePool _pool = null!;
    private Frame _superFrame = null!;
    private Frame[] _partialSegments = [];
    private Frame[] _completeSegments = [];

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(42);
        rng.NextBytes(_mtuBytes);
        rng.NextBytes(_superBytes);
        _pool = new FramePool(256);
        _superFrame = BuildSuperFrame(_pool, rng);
        _partialSegments = SegmentsOf(_superFrame, complete: false);
        _completeSegments = SegmentsOf(_superFrame, complete: true);
    }

    [Benchmark]
    public uint ChecksumSum1500() => Checksum.Sum(_mtuBytes);

    [Benchmark]
    public uint ChecksumSum64K() => Checksum.Sum(_superBytes);

    /// <summary>The super-frame is shared, so all 48 segments are copied and the original stays intact.</summary>
    [Benchmark]
    public int SegmentPartial() => Segment(complete: false);

    [Benchmark]
    public int SegmentComplete() => Segment(complete: true);

    /// <summary>Segments with NEEDS_CSUM are trusted: the cost is the copy of 47 payloads.</summary>
    [Benchmark]
    public int Coalesce48Partial() => Coalesce(_partialSegments);

    /// <summary>Segments with complete checksums are verified before they are merged.</summary>
    [Benchmark]
    public int Coalesce48Complete() => Coalesce(_completeSegments);

    private int Segment(bool complete)
    {
        _superFrame.AddReference();
        Offloads.Segment(_superFrame, _pool, _output, complete);
        return ReleaseOutput();
    }

    private int Coalesce(Frame[] segments)
    {
        // Shared segments: the head is copied into a fresh buffer, the originals survive the call.
        foreach (var segment in segments)
        {
            segment.AddReference();
            _input.Add(segment);
        }
        Offloads.Coalesce(_input, _pool, _output);
        return ReleaseOutput();
    }

    private int ReleaseOutput()
    {
        var count = _output.Count;
        foreach (var frame in _output)
            frame.Release();
        _output.Clear();
        return count;
    }

    private Frame[] SegmentsOf(Frame superFrame, bool complete)
    {
        superFrame.AddReference();
        if (!Offloads.Segment(superFrame, _pool, _output, complete) || _output.Count != Segments)
            throw new InvalidOperationException("segmenting the benchmark super-frame failed");
        var segments = _output.ToArray();
        _output.Clear();
        return segments;
    }

    /// <summary>Ethernet + IPv4 + TCP with timestamps + 48 × MSS payload, marked as a TSO super-frame.</summary>
    private static Frame BuildSuperFrame(FramePool pool, Random rng)
    {
        var frame = pool.TryRent()!;
        var length = 14 + 20 + TcpHeaderLength + (Segments * Mss);
        var f = frame.Buffer.AsSpan(frame.Offset, length);
        rng.NextBytes(f);
        BinaryPrimitives.WriteUInt16BigEndian(f.Slice(12), 0x0800);
        var ip = f.Slice(14, 20);
        ip[0] = 0x45;
        ip[1] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(2), (ushort)(length - 14));
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(6), 0x4000);
        ip[8] = 64;
        ip[9] = 6;
        Checksum.WriteIpv4Header(ip);
        var tcp = f.Slice(34, TcpHeaderLength);
        tcp[12] = (TcpHeaderLength / 4) << 4;
        tcp[13] = 0x18;
        tcp[18] = tcp[19] = 0;
        tcp.Slice(20, 2).Fill(1);
        tcp[22] = 8;
        tcp[23] = 10;
        frame.Length = length;
        if (!Offloads.MarkAsSuperFrame(frame, mtu: 20 + TcpHeaderLength + Mss))
            throw new InvalidOperationException("the benchmark super-frame is not a TCP super-frame");
        return frame;
    }
}
