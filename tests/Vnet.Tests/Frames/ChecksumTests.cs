using System.Buffers.Binary;
using Vnet.Frames;
using static Vnet.Tests.Frames.TestPackets;

namespace Vnet.Tests.Frames;

public sealed class ChecksumTests
{
    public static TheoryData<int> Lengths()
    {
        var data = new TheoryData<int>();
        for (var n = 0; n <= 140; n++)
            data.Add(n);
        foreach (var n in new[] { 255, 256, 257, 1023, 1499, 1500, 1501, 9001, 65535, 65536, 65537 + 1024 })
            data.Add(n);
        return data;
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void Sum_RandomDataAtEveryAlignment_MatchesBytewiseReference(int length)
    {
        var rng = new Random(length);
        var buffer = new byte[length + 8];
        rng.NextBytes(buffer);
        for (var offset = 0; offset < 8; offset++)
        {
            var data = buffer.AsSpan(offset, length);
            var initial = (uint)rng.Next();
            Assert.Equal(RefFold(RefSum(data)), Checksum.Fold(Checksum.Sum(data)));
            Assert.Equal(RefFold(RefSum(data, initial)), Checksum.Fold(Checksum.Sum(data, initial)));
        }
    }

    [Fact]
    public void Sum_AllOnes_FoldsToFfff()
    {
        var data = new byte[65536];
        data.AsSpan().Fill(0xFF);
        Assert.Equal(0xFFFF, Checksum.Fold(Checksum.Sum(data, 0xFFFF_FFFF)));
        Assert.Equal(0, Checksum.Finish(Checksum.Sum(data)));
    }

    [Fact]
    public void Sum_Zeros_IsZero()
    {
        Assert.Equal(0u, Checksum.Sum(new byte[1000]));
        Assert.Equal(0u, Checksum.Sum([]));
    }

    [Fact]
    public void Sum_Rfc1071Example_GivesDdf2()
    {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        byte[] data = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7];
        Assert.Equal(0xDDF2, Checksum.Fold(Checksum.Sum(data)));
        Assert.Equal(0x220D, Checksum.Finish(Checksum.Sum(data)));
    }

    [Theory]
    [InlineData(0, 1501)]
    [InlineData(2, 1000)]
    [InlineData(64, 65000)]
    [InlineData(2, 3)]
    public void Sum_SplitAtEvenOffset_ComposesLikeOneSum(int split, int length)
    {
        var data = RandomPayload(length, split + length);
        var whole = Checksum.Sum(data);
        var parts = Checksum.Sum(data.AsSpan(split), Checksum.Sum(data.AsSpan(0, split)));
        Assert.Equal(Checksum.Fold(whole), Checksum.Fold(parts));
    }

    [Fact]
    public void Add_WithCarry_WrapsAround()
    {
        Assert.Equal(1u, Checksum.Add(0xFFFF_FFFF, 1));
        Assert.Equal(0xFFFF, Checksum.Fold(Checksum.Add(0xFFFF_0000, 0xFFFF)));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PseudoHeader_RandomHeaders_MatchesReference(bool v6)
    {
        var rng = new Random(v6 ? 6 : 4);
        for (var round = 0; round < 200; round++)
        {
            var header = new byte[40];
            rng.NextBytes(header);
            var length = v6 ? rng.Next(0, 200_000) : rng.Next(0, 65536);
            var protocol = (byte)rng.Next(256);
            var expected = v6
                ? RefSum([.. header.AsSpan(8, 32), (byte)(length >> 24), (byte)(length >> 16), (byte)(length >> 8), (byte)length, 0, 0, 0, protocol])
                : RefSum([.. header.AsSpan(12, 8), 0, protocol, (byte)(length >> 8), (byte)length]);
            var actual = v6
                ? Checksum.PseudoHeaderV6(header, protocol, length)
                : Checksum.PseudoHeaderV4(header.AsSpan(0, 20), protocol, length);
            Assert.Equal(RefFold(expected), Checksum.Fold(actual));
        }
    }

    [Theory]
    [InlineData(20)]
    [InlineData(24)]
    [InlineData(60)]
    public void Ipv4Header_RandomHeader_WritesAValidChecksum(int length)
    {
        var rng = new Random(length);
        for (var round = 0; round < 100; round++)
        {
            var header = new byte[length];
            rng.NextBytes(header);
            Checksum.WriteIpv4Header(header);
            Assert.Equal(0xFFFF, RefFold(RefSum(header)));
            Assert.True(Checksum.IsValidIpv4Header(header));
            header[rng.Next(length)] ^= 0x10;
            Assert.False(Checksum.IsValidIpv4Header(header));
        }
    }

    [Fact]
    public void Ipv4Header_KnownHeader_GivesKnownChecksum()
    {
        // A classic example header: 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7.
        byte[] header = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xC0, 0xA8, 0x00, 0x01, 0xC0, 0xA8, 0x00, 0xC7];
        Assert.Equal(0xB861, Checksum.Ipv4Header(header));
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(10), 0xB861);
        Assert.True(Checksum.IsValidIpv4Header(header));
    }
}
