using System.Buffers.Binary;
using Vnet.Links;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// The 16-byte link message header, version 2 (<see cref="Wire.TryRead"/>): never throws, refuses
/// with a <see cref="WireError"/>, and what it accepts is in range, sealed exactly when it is not a
/// handshake message, and writes back to the same bytes.
/// </summary>
public sealed class WireTarget : FuzzTarget
{
    public override string Name => "wire";

    public override string Description => "Vnet.Links.Wire.TryRead: the link message header";

    protected override void Run(ReadOnlySpan<byte> data)
    {
        var error = Wire.TryRead(data, out var header);
        if (error != WireError.None)
        {
            if (header != default)
                throw new FuzzFindingException($"refused ({error}) but the header was filled in: {header}");
            return;
        }
        var max = header.Type == MessageType.Data ? Wire.MaxDataPayload : Wire.MaxControlPayload;
        if (header.PayloadLength < 0 || header.PayloadLength > max)
            throw new FuzzFindingException($"accepted a payload length of {header.PayloadLength} (type {header.Type})");
        if (!Wire.IsKnown(header.Type) || ((header.Flags & MessageFlags.Offload) != 0 && header.Type != MessageType.Data) ||
            (header.Flags & ~(MessageFlags.Offload | MessageFlags.Encrypted)) != 0)
            throw new FuzzFindingException($"accepted type {header.Type} with flags {header.Flags}");
        // Sealed after the handshake, plain (and of key epoch 0) during it.
        var sealedFlag = (header.Flags & MessageFlags.Encrypted) != 0;
        if (sealedFlag == Wire.IsHandshake(header.Type) || (Wire.IsHandshake(header.Type) && header.Epoch != 0))
            throw new FuzzFindingException($"accepted type {header.Type} with flags {header.Flags} and key epoch {header.Epoch}");
        Span<byte> written = stackalloc byte[Wire.HeaderSize];
        Wire.Write(written, header);
        if (!written.SequenceEqual(data[..Wire.HeaderSize]))
            throw new FuzzFindingException($"accepted header does not write back to the bytes read: {Convert.ToHexString(data[..Wire.HeaderSize])} -> {Convert.ToHexString(written)}");
    }

    public override IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        static byte[] Header(MessageType type, MessageFlags flags, byte hops, uint session, int length, int payload = 0, byte epoch = 0)
        {
            var bytes = new byte[Wire.HeaderSize + payload];
            Wire.Write(bytes, new LinkHeader(type, flags, hops, session, length, epoch));
            return bytes;
        }
        const MessageFlags Sealed = MessageFlags.Encrypted;
        yield return ("handshake-init", Header(MessageType.HandshakeInit, MessageFlags.None, 0, 0, 140, 140));
        yield return ("handshake-response", Header(MessageType.HandshakeResponse, MessageFlags.None, 0, 0x0a0b0c0d, 64, 64));
        yield return ("handshake-confirm", Header(MessageType.HandshakeConfirm, MessageFlags.None, 0, 0x01020304, 32, 32));
        yield return ("reject", Header(MessageType.Reject, MessageFlags.None, 0, 0x0a0b0c0d, 12, 12));
        yield return ("data-offload", Header(MessageType.Data, MessageFlags.Offload | Sealed, 8, 0x01020304, 1524, epoch: 3));
        yield return ("data-max", Header(MessageType.Data, Sealed, 8, 7, Wire.MaxDataPayload));
        yield return ("control", Header(MessageType.Control, Sealed, 1, 9, 128));
        yield return ("keepalive", Header(MessageType.KeepAlive, Sealed, 1, 9, 32, 32));
        yield return ("udp-probe", Header(MessageType.UdpProbe, Sealed, 0, 9, 24, 24, epoch: 255));
        yield return ("bye", Header(MessageType.Bye, Sealed, 0, 9, 24));
        var tooLong = Header(MessageType.Control, Sealed, 1, 9, 0);
        BinaryPrimitives.WriteInt32BigEndian(tooLong.AsSpan(12), Wire.MaxControlPayload + 1);
        yield return ("control-too-long", tooLong);
        // Refused: a data message that is not sealed, and a handshake message that claims to be.
        yield return ("data-not-sealed", Header(MessageType.Data, MessageFlags.None, 8, 7, 100));
        yield return ("init-sealed", Header(MessageType.HandshakeInit, Sealed, 0, 0, 140));
    }
}
