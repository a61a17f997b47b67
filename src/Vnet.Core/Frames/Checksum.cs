using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Vnet.Frames;

/// <summary>
/// The Internet checksum (RFC 1071): one's-complement sums of big-endian 16-bit words.
/// <para>
/// A partial sum is a <see cref="uint"/> that is only meaningful modulo 0xFFFF: sums compose
/// (<c>Sum(b, Sum(a))</c> equals <c>Sum(a ‖ b)</c> when <c>a</c> has an even length), and
/// <see cref="Fold"/> turns one into the 16-bit value Linux keeps in a <c>CHECKSUM_PARTIAL</c>
/// field, <see cref="Finish"/> into the value a complete header carries.
/// </para>
/// </summary>
public static class Checksum
{
    /// <summary>
    /// Adds the bytes of <paramref name="data"/> (as big-endian 16-bit words, an odd last byte
    /// padded with a zero) to <paramref name="initial"/>.
    /// </summary>
    public static uint Sum(ReadOnlySpan<byte> data, uint initial = 0)
    {
        // The one's-complement sum is byte-order independent (RFC 1071 §2B): add native words,
        // swap the folded result once. 2^16 ≡ 1 (mod 0xFFFF), so 32-bit words summed into 64-bit
        // lanes are as good as 16-bit words, and the lanes cannot overflow below 2^31 bytes.
        ref var p = ref MemoryMarshal.GetReference(data);
        var n = (nuint)data.Length;
        nuint i = 0;
        ulong acc = 0;

        if (Vector256.IsHardwareAccelerated && n >= 64)
        {
            var low = Vector256.Create(0xFFFF_FFFFUL);
            var a0 = Vector256<ulong>.Zero;
            var a1 = Vector256<ulong>.Zero;
            for (; i + 64 <= n; i += 64)
            {
                var v0 = Vector256.LoadUnsafe(ref p, i).AsUInt64();
                var v1 = Vector256.LoadUnsafe(ref p, i + 32).AsUInt64();
                a0 += (v0 & low) + (v0 >> 32);
                a1 += (v1 & low) + (v1 >> 32);
            }
            acc = Vector256.Sum(a0 + a1);
        }
        else if (Vector128.IsHardwareAccelerated && n >= 32)
        {
            var low = Vector128.Create(0xFFFF_FFFFUL);
            var a0 = Vector128<ulong>.Zero;
            var a1 = Vector128<ulong>.Zero;
            for (; i + 32 <= n; i += 32)
            {
                var v0 = Vector128.LoadUnsafe(ref p, i).AsUInt64();
                var v1 = Vector128.LoadUnsafe(ref p, i + 16).AsUInt64();
                a0 += (v0 & low) + (v0 >> 32);
                a1 += (v1 & low) + (v1 >> 32);
            }
            acc = Vector128.Sum(a0 + a1);
        }

        for (; i + 8 <= n; i += 8)
        {
            var v = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, i));
            acc += (v & 0xFFFF_FFFF) + (v >> 32);
        }
        if (i + 4 <= n)
        {
            acc += Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref p, i));
            i += 4;
        }
        if (i + 2 <= n)
        {
            acc += Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref p, i));
            i += 2;
        }
        if (i < n)
        {
            // The odd byte is the high half of a big-endian word, i.e. the low half of a native
            // little-endian one.
            ulong last = Unsafe.Add(ref p, i);
            acc += BitConverter.IsLittleEndian ? last : last << 8;
        }

        acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
        acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
        var folded = Fold((uint)acc);
        if (BitConverter.IsLittleEndian)
            folded = BinaryPrimitives.ReverseEndianness(folded);
        return Add(initial, folded);
    }

    /// <summary>Adds two partial sums with the end-around carry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Add(uint a, uint b)
    {
        var s = a + b;
        return s < b ? s + 1 : s;
    }

    /// <summary>Folds a partial sum to 16 bits, not inverted: what a CHECKSUM_PARTIAL field holds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Fold(uint sum)
    {
        sum = (sum & 0xFFFF) + (sum >> 16);
        sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)sum;
    }

    /// <summary>Folds and inverts: the value a complete checksum field holds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort Finish(uint sum) => (ushort)~Fold(sum);

    /// <summary>
    /// The TCP/UDP pseudo-header sum for IPv4: addresses from <paramref name="ipHeader"/>,
    /// <paramref name="protocol"/> and the transport length (header plus payload).
    /// </summary>
    public static uint PseudoHeaderV4(ReadOnlySpan<byte> ipHeader, byte protocol, int l4Length)
    {
        var src = BinaryPrimitives.ReadUInt32BigEndian(ipHeader.Slice(12, 4));
        var dst = BinaryPrimitives.ReadUInt32BigEndian(ipHeader.Slice(16, 4));
        return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + protocol + (uint)l4Length;
    }

    /// <summary>
    /// The TCP/UDP pseudo-header sum for IPv6 (RFC 8200 §8.1): addresses from the 40-byte fixed
    /// header, the upper-layer protocol (after any extension headers) and its length.
    /// </summary>
    public static uint PseudoHeaderV6(ReadOnlySpan<byte> ipHeader, byte protocol, int l4Length)
    {
        var addresses = ipHeader.Slice(8, 32);
        ulong s = 0;
        for (var i = 0; i < 32; i += 4)
            s += BinaryPrimitives.ReadUInt32BigEndian(addresses.Slice(i, 4));
        s += protocol + ((uint)l4Length >> 16) + ((uint)l4Length & 0xFFFF);
        s = (s & 0xFFFF_FFFF) + (s >> 32);
        return (uint)s + (uint)(s >> 32);
    }

    /// <summary>
    /// The header checksum of the IPv4 header <paramref name="header"/> (its whole length, options
    /// included), computed as if the checksum field were zero.
    /// </summary>
    public static ushort Ipv4Header(ReadOnlySpan<byte> header)
    {
        ulong s = 0;
        var i = 0;
        for (; i + 4 <= header.Length; i += 4)
            s += BinaryPrimitives.ReadUInt32BigEndian(header.Slice(i, 4));
        // Taking the field out of the integer total is exact: it is one of the summed words.
        s -= BinaryPrimitives.ReadUInt16BigEndian(header.Slice(10, 2));
        s = (s & 0xFFFF_FFFF) + (s >> 32);
        return Finish((uint)s + (uint)(s >> 32));
    }

    /// <summary>Computes and stores the header checksum of the IPv4 header <paramref name="header"/>.</summary>
    public static void WriteIpv4Header(Span<byte> header) =>
        BinaryPrimitives.WriteUInt16BigEndian(header.Slice(10, 2), Ipv4Header(header));

    /// <summary>True when the IPv4 header <paramref name="header"/> carries a correct checksum.</summary>
    public static bool IsValidIpv4Header(ReadOnlySpan<byte> header)
    {
        // Summing with the field included accepts both encodings of zero (0x0000 and 0xFFFF).
        ulong s = 0;
        for (var i = 0; i + 4 <= header.Length; i += 4)
            s += BinaryPrimitives.ReadUInt32BigEndian(header.Slice(i, 4));
        s = (s & 0xFFFF_FFFF) + (s >> 32);
        return Fold((uint)s + (uint)(s >> 32)) == 0xFFFF;
    }
}
