using System.Buffers.Binary;

namespace Vnet.Frames;

/// <summary>
/// Where the IP and transport headers of an Ethernet frame sit: what the offload code needs to cut
/// and merge frames. Offsets count from the start of the Ethernet header. Understands one 802.1Q
/// tag, IPv4 (unfragmented) and IPv6 with at most a hop-by-hop options header.
/// </summary>
internal struct PacketLayout
{
    public const byte ProtocolTcp = 6;
    public const byte ProtocolUdp = 17;
    public const int TcpChecksumOffset = 16;
    public const int UdpChecksumOffset = 6;

    private const ushort EtherTypeVlan = 0x8100;
    private const ushort EtherTypeIpv4 = 0x0800;
    private const ushort EtherTypeIpv6 = 0x86DD;
    private const byte Ipv6HopByHop = 0;

    /// <summary>Start of the IP header: 14, or 18 behind a VLAN tag.</summary>
    public int L3;

    /// <summary>Start of the transport header (after IPv4 options or the IPv6 hop-by-hop header).</summary>
    public int L4;

    /// <summary>End of the IP packet; bytes after it in the frame are Ethernet padding.</summary>
    public int End;

    /// <summary>TCP header length with options, 8 for UDP, 0 for other protocols.</summary>
    public int L4HeaderLength;

    /// <summary>The upper-layer protocol (IPv6: after the hop-by-hop header).</summary>
    public byte Protocol;

    public bool IsV6;

    /// <summary>Ethernet, IP and transport headers: the bytes every segment repeats.</summary>
    public readonly int HeadersLength => L4 + L4HeaderLength;

    public readonly int PayloadLength => End - HeadersLength;

    public readonly int ChecksumOffset => Protocol == ProtocolTcp ? TcpChecksumOffset : UdpChecksumOffset;

    /// <summary>
    /// Parses <paramref name="frame"/>. False for anything that is not IPv4/IPv6, for IPv4
    /// fragments, IPv6 jumbograms, unsupported extension headers and truncated headers.
    /// </summary>
    public static bool TryParse(ReadOnlySpan<byte> frame, out PacketLayout layout)
    {
        layout = default;
        if (frame.Length < 14)
            return false;
        var l3 = 14;
        var etherType = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(12, 2));
        if (etherType == EtherTypeVlan)
        {
            if (frame.Length < 18)
                return false;
            etherType = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(16, 2));
            l3 = 18;
        }

        int l4, end;
        byte protocol;
        if (etherType == EtherTypeIpv4)
        {
            if (frame.Length < l3 + 20 || frame[l3] >> 4 != 4)
                return false;
            var ihl = (frame[l3] & 0xF) * 4;
            var total = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(l3 + 2, 2));
            // A fragment (MF or an offset) carries no whole transport header to work on.
            if (ihl < 20 || total < ihl || l3 + total > frame.Length ||
                (BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(l3 + 6, 2)) & 0x3FFF) != 0)
                return false;
            l4 = l3 + ihl;
            end = l3 + total;
            protocol = frame[l3 + 9];
        }
        else if (etherType == EtherTypeIpv6)
        {
            if (frame.Length < l3 + 40 || frame[l3] >> 4 != 6)
                return false;
            var payload = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(l3 + 4, 2));
            l4 = l3 + 40;
            end = l4 + payload;
            // Payload length 0 means a jumbogram (hop-by-hop jumbo option): not for us.
            if (payload == 0 || end > frame.Length)
                return false;
            protocol = frame[l3 + 6];
            if (protocol == Ipv6HopByHop)
            {
                if (l4 + 8 > end)
                    return false;
                protocol = frame[l4];
                l4 += (frame[l4 + 1] + 1) * 8;
                if (l4 > end)
                    return false;
            }
        }
        else
        {
            return false;
        }

        var l4HeaderLength = 0;
        if (protocol == ProtocolTcp)
        {
            if (l4 + 20 > end)
                return false;
            l4HeaderLength = (frame[l4 + 12] >> 4) * 4;
            if (l4HeaderLength < 20 || l4 + l4HeaderLength > end)
                return false;
        }
        else if (protocol == ProtocolUdp)
        {
            if (l4 + 8 > end)
                return false;
            l4HeaderLength = 8;
        }

        layout = new PacketLayout
        {
            L3 = l3,
            L4 = l4,
            End = end,
            L4HeaderLength = l4HeaderLength,
            Protocol = protocol,
            IsV6 = etherType == EtherTypeIpv6,
        };
        return true;
    }

    /// <summary>The pseudo-header sum of a transport segment of <paramref name="l4Length"/> bytes.</summary>
    public readonly uint PseudoHeader(ReadOnlySpan<byte> frame, int l4Length) => IsV6
        ? Checksum.PseudoHeaderV6(frame.Slice(L3, 40), Protocol, l4Length)
        : Checksum.PseudoHeaderV4(frame.Slice(L3, 20), Protocol, l4Length);

    /// <summary>
    /// Rewrites the IP length fields for a packet that now ends at <paramref name="end"/> (IPv4: and
    /// the identification, then the header checksum).
    /// </summary>
    public readonly void WriteIpLengthAndId(Span<byte> frame, int end, ushort id)
    {
        if (IsV6)
        {
            BinaryPrimitives.WriteUInt16BigEndian(frame.Slice(L3 + 4, 2), (ushort)(end - L3 - 40));
            return;
        }
        var ip = frame.Slice(L3, L4 - L3);
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(2, 2), (ushort)(end - L3));
        BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(4, 2), id);
        Checksum.WriteIpv4Header(ip);
    }

    /// <summary>The IPv4 identification (0 for IPv6, which has none outside fragments).</summary>
    public readonly ushort ReadId(ReadOnlySpan<byte> frame) =>
        IsV6 ? (ushort)0 : BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(L3 + 4, 2));
}
