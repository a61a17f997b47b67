using System.Buffers.Binary;
using Vnet.Links;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// The 16-byte link message header (<see cref="Wire.TryRead"/>): never throws, refuses with a
/// <see cref="WireError"/>, and what it accepts is in range and writes back to the same bytes.
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
        if (!Wire.IsKnown(header.Type) || (header.Flags != MessageFlags.None && header.Type != MessageType.Data))
            throw new FuzzFindingException($"accepted type {header.Type} with flags {header.Flags}");
        Span<byte> written = stackalloc byte[Wire.HeaderSize];
        Wire.Write(written, header);
        if (!written.SequenceEqual(data[..Wire.HeaderSize]))
            throw new FuzzFindingException($"accepted header does not write back to the bytes read: {Convert.ToHexString(data[..Wire.HeaderSize])} -> {Convert.ToHexString(written)}");
    }

    public override IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        static byte[] Header(MessageType type, MessageFlags flags, byte hops, uint session, int length, int payload = 0)
        {
            var bytes = new byte[Wire.HeaderSize + payload];
            Wire.Write(bytes, new LinkHeader(type, flags, hops, session, length));
            return bytes;
        }
        yield return ("hello", Header(MessageType.Hello, MessageFlags.None, 0, 0, 40, 40));
        yield return ("data-offload", Header(MessageType.Data, MessageFlags.Offload, 8, 0x01020304, 1524));
        yield return ("data-max", Header(MessageType.Data, MessageFlags.None, 8, 7, Wire.MaxDataPayload));
        yield return ("control", Header(MessageType.Control, MessageFlags.None, 1, 9, 128));
        yield return ("keepalive", Header(MessageType.KeepAlive, MessageFlags.None, 1, 9, 8, 8));
        yield return ("bye", Header(MessageType.Bye, MessageFlags.None, 0, 9, 0));
        var tooLong = Header(MessageType.Control, MessageFlags.None, 1, 9, 0);
        BinaryPrimitives.WriteInt32BigEndian(tooLong.AsSpan(12), Wire.MaxControlPayload + 1);
        yield return ("control-too-long", tooLong);
    }
}
