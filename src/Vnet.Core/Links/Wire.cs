using System.Buffers.Binary;
using Vnet.Frames;

namespace Vnet.Links;

/// <summary>Message types on a link. Values are part of the wire format: never renumber.</summary>
public enum MessageType : byte
{
    Hello = 1,
    Challenge = 2,
    Auth = 3,
    Welcome = 4,
    Reject = 5,
    Data = 16,
    KeepAlive = 17,
    KeepAliveAck = 18,
    UdpProbe = 19,
    UdpProbeAck = 20,
    Control = 32,
    Bye = 33,
}

[Flags]
public enum MessageFlags : byte
{
    None = 0,

    /// <summary>A 10-byte virtio-net header (little-endian) precedes the frame.</summary>
    Offload = 1,

    /// <summary>Reserved for AEAD-sealed payloads (a later protocol revision); refused in version 1.</summary>
    Encrypted = 2,
}

/// <summary>Why a received header was refused.</summary>
public enum WireError
{
    None,
    Truncated,
    BadMagic,
    BadVersion,
    UnknownType,
    UnknownFlags,
    ReservedNotZero,
    TooLong,
}

/// <summary>
/// The encapsulation header, 16 bytes, big-endian:
/// <code>
///  0      2        3      4       5          6          8            12             16
///  | 'VN' | version | type | flags | hop limit | reserved | session id | payload length | payload...
/// </code>
/// <para>The session id names the receiver's session (UDP demultiplexing; on TCP it must match).
/// The reserved field is where a later revision puts the key epoch for encrypted links.</para>
/// </summary>
public readonly record struct LinkHeader(MessageType Type, MessageFlags Flags, byte HopLimit, uint Session, int PayloadLength);

public static class Wire
{
    public const ushort Magic = 0x564E;
    public const byte Version = 1;
    public const int HeaderSize = 16;

    /// <summary>Largest data payload: a virtio header and a 64 KiB super-frame.</summary>
    public const int MaxDataPayload = VirtioNetHeader.Size + Frame.MaxLength;

    /// <summary>Largest control payload (handshake, JSON control messages).</summary>
    public const int MaxControlPayload = 2 << 20;

    public static void Write(Span<byte> dst, in LinkHeader h)
    {
        BinaryPrimitives.WriteUInt16BigEndian(dst, Magic);
        dst[2] = Version;
        dst[3] = (byte)h.Type;
        dst[4] = (byte)h.Flags;
        dst[5] = h.HopLimit;
        BinaryPrimitives.WriteUInt16BigEndian(dst.Slice(6), 0);
        BinaryPrimitives.WriteUInt32BigEndian(dst.Slice(8), h.Session);
        BinaryPrimitives.WriteInt32BigEndian(dst.Slice(12), h.PayloadLength);
    }

    public static WireError TryRead(ReadOnlySpan<byte> src, out LinkHeader header)
    {
        header = default;
        if (src.Length < HeaderSize)
            return WireError.Truncated;
        if (BinaryPrimitives.ReadUInt16BigEndian(src) != Magic)
            return WireError.BadMagic;
        if (src[2] != Version)
            return WireError.BadVersion;
        var type = (MessageType)src[3];
        if (!IsKnown(type))
            return WireError.UnknownType;
        var flags = (MessageFlags)src[4];
        if ((flags & ~MessageFlags.Offload) != 0)
            return WireError.UnknownFlags;
        if (BinaryPrimitives.ReadUInt16BigEndian(src.Slice(6)) != 0)
            return WireError.ReservedNotZero;
        var length = BinaryPrimitives.ReadInt32BigEndian(src.Slice(12));
        var max = type == MessageType.Data ? MaxDataPayload : MaxControlPayload;
        if (length < 0 || length > max)
            return WireError.TooLong;
        if (flags != MessageFlags.None && type != MessageType.Data)
            return WireError.UnknownFlags;
        header = new LinkHeader(type, flags, src[5], BinaryPrimitives.ReadUInt32BigEndian(src.Slice(8)), length);
        return WireError.None;
    }

    public static bool IsKnown(MessageType type) => type is
        MessageType.Hello or MessageType.Challenge or MessageType.Auth or MessageType.Welcome or MessageType.Reject or
        MessageType.Data or MessageType.KeepAlive or MessageType.KeepAliveAck or MessageType.UdpProbe or
        MessageType.UdpProbeAck or MessageType.Control or MessageType.Bye;

    public static string Describe(WireError error) => error switch
    {
        WireError.Truncated => "truncated header",
        WireError.BadMagic => "not a VNET message (bad magic)",
        WireError.BadVersion => "unsupported protocol version",
        WireError.UnknownType => "unknown message type",
        WireError.UnknownFlags => "unknown or misplaced flags",
        WireError.ReservedNotZero => "reserved field not zero",
        WireError.TooLong => "payload length out of range",
        _ => "ok",
    };
}
