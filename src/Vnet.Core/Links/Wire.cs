using System.Buffers.Binary;
using Vnet.Frames;

namespace Vnet.Links;

/// <summary>Message types on a link. Values are part of the wire format: never renumber.</summary>
public enum MessageType : byte
{
    Reject = 5,
    HandshakeInit = 6,
    HandshakeResponse = 7,
    HandshakeConfirm = 8,
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

    /// <summary>The payload is sealed with the session key (every message after the handshake must be).</summary>
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

    /// <summary>A message after the handshake that is not sealed, or a handshake message that claims to be.</summary>
    NotSealed,
}

/// <summary>
/// The encapsulation header, 16 bytes, big-endian:
/// <code>
///  0      2        3      4       5          6           7          8            12             16
///  | 'VN' | version | type | flags | hop limit | key epoch | reserved | session id | payload length | payload...
/// </code>
/// <para>The session id names the receiver's session (UDP demultiplexing; on TCP it must match).
/// After the handshake every message is sealed (flag <see cref="MessageFlags.Encrypted"/>): the
/// header is the AEAD's associated data, so none of its fields can be changed on the way, and the
/// key epoch says which step of the session key sealed it.</para>
/// </summary>
public readonly record struct LinkHeader(MessageType Type, MessageFlags Flags, byte HopLimit, uint Session, int PayloadLength, byte Epoch = 0);

public static class Wire
{
    public const ushort Magic = 0x564E;

    /// <summary>2: sealed messages after a Noise handshake (1 was plaintext with an HMAC handshake).</summary>
    public const byte Version = 2;

    public const int HeaderSize = 16;

    /// <summary>AEAD tag after every sealed payload.</summary>
    public const int TagSize = 16;

    /// <summary>A sealed datagram's explicit counter (its nonce), before the ciphertext.</summary>
    public const int CounterSize = 8;

    /// <summary>Largest data payload: a datagram counter, a virtio header, a 64 KiB super-frame and the tag.</summary>
    public const int MaxDataPayload = CounterSize + VirtioNetHeader.Size + Frame.MaxLength + TagSize;

    /// <summary>Largest control payload (handshake, JSON control messages).</summary>
    public const int MaxControlPayload = 2 << 20;

    public static void Write(Span<byte> dst, in LinkHeader h)
    {
        BinaryPrimitives.WriteUInt16BigEndian(dst, Magic);
        dst[2] = Version;
        dst[3] = (byte)h.Type;
        dst[4] = (byte)h.Flags;
        dst[5] = h.HopLimit;
        dst[6] = h.Epoch;
        dst[7] = 0;
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
        if ((flags & ~(MessageFlags.Offload | MessageFlags.Encrypted)) != 0)
            return WireError.UnknownFlags;
        if (src[7] != 0)
            return WireError.ReservedNotZero;
        var length = BinaryPrimitives.ReadInt32BigEndian(src.Slice(12));
        var max = type == MessageType.Data ? MaxDataPayload : MaxControlPayload;
        if (length < 0 || length > max)
            return WireError.TooLong;
        if ((flags & MessageFlags.Offload) != 0 && type != MessageType.Data)
            return WireError.UnknownFlags;
        // Sealed after the handshake, plain during it: nothing else is accepted.
        if (((flags & MessageFlags.Encrypted) != 0) == IsHandshake(type))
            return WireError.NotSealed;
        if (IsHandshake(type) && src[6] != 0)
            return WireError.ReservedNotZero;
        header = new LinkHeader(type, flags, src[5], BinaryPrimitives.ReadUInt32BigEndian(src.Slice(8)), length, src[6]);
        return WireError.None;
    }

    /// <summary>Messages of the handshake, which travel before there are session keys.</summary>
    public static bool IsHandshake(MessageType type) =>
        type is MessageType.HandshakeInit or MessageType.HandshakeResponse or MessageType.HandshakeConfirm or MessageType.Reject;

    public static bool IsKnown(MessageType type) => type is
        MessageType.HandshakeInit or MessageType.HandshakeResponse or MessageType.HandshakeConfirm or MessageType.Reject or
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
        WireError.NotSealed => "a message that is not sealed with the session key",
        _ => "ok",
    };
}
