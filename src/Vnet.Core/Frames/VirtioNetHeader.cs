using System.Buffers.Binary;

namespace Vnet.Frames;

/// <summary>
/// The offload metadata that travels with a frame: Linux's <c>struct virtio_net_hdr</c> (10 bytes,
/// little-endian on the TAP of a little-endian host and always little-endian on VNET's wire).
/// A frame without offloads has <see cref="None"/>: complete checksums, at most one MTU.
/// </summary>
public struct VirtioNetHeader : IEquatable<VirtioNetHeader>
{
    public const int Size = 10;

    public const byte FlagNeedsCsum = 1;
    public const byte FlagDataValid = 2;

    public const byte GsoNone = 0;
    public const byte GsoTcpV4 = 1;
    public const byte GsoUdp = 3;
    public const byte GsoTcpV6 = 4;

    /// <summary>UDP segmentation (USO): <c>GsoSize</c> payload bytes per datagram, each with its own header.</summary>
    public const byte GsoUdpL4 = 5;
    public const byte GsoEcn = 0x80;

    public byte Flags;
    public byte GsoType;
    public ushort HdrLen;
    public ushort GsoSize;
    public ushort CsumStart;
    public ushort CsumOffset;

    public static VirtioNetHeader None => default;

    public readonly bool NeedsChecksum => (Flags & FlagNeedsCsum) != 0;

    public readonly bool IsGso => (GsoType & ~GsoEcn) != GsoNone;

    public readonly bool IsPlain => Flags == 0 && GsoType == GsoNone;

    public static VirtioNetHeader Read(ReadOnlySpan<byte> src) => new()
    {
        Flags = src[0],
        GsoType = src[1],
        HdrLen = BinaryPrimitives.ReadUInt16LittleEndian(src.Slice(2)),
        GsoSize = BinaryPrimitives.ReadUInt16LittleEndian(src.Slice(4)),
        CsumStart = BinaryPrimitives.ReadUInt16LittleEndian(src.Slice(6)),
        CsumOffset = BinaryPrimitives.ReadUInt16LittleEndian(src.Slice(8)),
    };

    public readonly void Write(Span<byte> dst)
    {
        dst[0] = Flags;
        dst[1] = GsoType;
        BinaryPrimitives.WriteUInt16LittleEndian(dst.Slice(2), HdrLen);
        BinaryPrimitives.WriteUInt16LittleEndian(dst.Slice(4), GsoSize);
        BinaryPrimitives.WriteUInt16LittleEndian(dst.Slice(6), CsumStart);
        BinaryPrimitives.WriteUInt16LittleEndian(dst.Slice(8), CsumOffset);
    }

    public readonly bool Equals(VirtioNetHeader other) =>
        Flags == other.Flags && GsoType == other.GsoType && HdrLen == other.HdrLen &&
        GsoSize == other.GsoSize && CsumStart == other.CsumStart && CsumOffset == other.CsumOffset;

    public override readonly bool Equals(object? obj) => obj is VirtioNetHeader h && Equals(h);

    public override readonly int GetHashCode() => HashCode.Combine(Flags, GsoType, HdrLen, GsoSize, CsumStart, CsumOffset);

    public static bool operator ==(VirtioNetHeader a, VirtioNetHeader b) => a.Equals(b);

    public static bool operator !=(VirtioNetHeader a, VirtioNetHeader b) => !a.Equals(b);
}
