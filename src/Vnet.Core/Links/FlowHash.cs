using System.Buffers.Binary;
using Vnet.Interfaces;

namespace Vnet.Links;

/// <summary>
/// Which of a link's parallel connections (streams) carries a frame: a function of the frame's
/// flow alone, so that a flow's frames all take one connection and stay in order.
/// <code>
/// IPv4 and IPv6: TapSteering's hash (addresses, and TCP/UDP/SCTP ports when not a fragment), so a
///   link spreads flows as a multi-queue TAP does and the two can be reasoned about together.
/// Anything else (ARP, VLAN-tagged frames, other EtherTypes): the two MAC addresses.
/// Both are symmetric (source and destination are combined with xor before mixing), so both
///   directions of a flow hash alike and take the stream of the same index at each end.
/// </code>
/// A few loads over the headers and one multiply; nothing allocated.
/// </summary>
public static class FlowHash
{
    private const uint Multiplier = 0x9E3779B1;

    /// <summary>A 16-bit hash of <paramref name="frame"/>'s flow (an Ethernet frame).</summary>
    public static int Of(ReadOnlySpan<byte> frame)
    {
        if (frame.Length < 14)
            return 0;
        var type = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        if (type is 0x0800 or 0x86dd)
            return TapSteering.Hash(frame);
        // Destination and source MACs: 6 bytes each, read as a 32-bit and a 16-bit word.
        var h = BinaryPrimitives.ReadUInt32BigEndian(frame) ^ BinaryPrimitives.ReadUInt32BigEndian(frame[6..])
            ^ BinaryPrimitives.ReadUInt16BigEndian(frame[4..]) ^ BinaryPrimitives.ReadUInt16BigEndian(frame[10..]);
        return (int)((h * Multiplier) >> 16);
    }

    /// <summary>The stream, of <paramref name="streams"/>, that carries <paramref name="frame"/>.</summary>
    public static int StreamOf(ReadOnlySpan<byte> frame, int streams) => streams <= 1 ? 0 : Of(frame) % streams;
}
