using System.Buffers.Binary;
using System.Net;
using System.Runtime.CompilerServices;
using Vnet.Frames;

namespace Vnet.Vms;

/// <summary>
/// The IPv4 address each MAC was last seen using, read off the frames a daemon forwards: the
/// sender of an ARP packet (when it is the frame's source, and not a probe from 0.0.0.0) and the
/// address a DHCP server on the LAN acknowledged to a client (DHCPACK: <c>yiaddr</c> for <c>chaddr</c>).
/// <para>Data path: the switch calls <see cref="IsCandidate"/> on every frame (two to four byte
/// reads) and <see cref="Observe"/> only on ARP and UDP 67 → 68; nothing allocates. A frame too short
/// for what its headers say is ignored and counted (<see cref="Malformed"/>). The table is a fixed
/// array of <see cref="Slots"/> entries (open addressing, a short probe, the oldest slot of the
/// probe replaced when full), so no sender can grow it; a write takes a lock only when the address
/// changes, which ARP and DHCP make rare.</para>
/// </summary>
public sealed class AddressBook
{
    public const int Slots = 1024;
    private const int Probe = 8;

    private const ushort EtherTypeArp = 0x0806;
    private const ushort EtherTypeIpv4 = 0x0800;
    private const int Ethernet = 14;

    private readonly ulong[] _macs = new ulong[Slots];   // MAC value + 1; 0 = empty
    private readonly uint[] _addresses = new uint[Slots]; // network order as read, big-endian value
    private readonly long[] _written = new long[Slots];
    private readonly Lock _gate = new();
    private long _clock;
    private long _malformed;
    private long _learned;

    /// <summary>ARP or DHCP frames whose headers did not fit their length (ignored).</summary>
    public long Malformed => Interlocked.Read(ref _malformed);

    /// <summary>Times a MAC's address was recorded or changed.</summary>
    public long Learned => Interlocked.Read(ref _learned);

    /// <summary>Whether a frame may carry an address to learn: ARP, or IPv4 UDP to port 68.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsCandidate(ReadOnlySpan<byte> frame)
    {
        if (frame.Length < Ethernet + 10)
            return false;
        var type = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(12));
        if (type == EtherTypeArp)
            return true;
        if (type != EtherTypeIpv4 || frame[Ethernet + 9] != 17)
            return false;
        // UDP to port 68 (a DHCP client): the destination port after the IP header.
        var port = Ethernet + ((frame[Ethernet] & 0x0f) * 4) + 2;
        return (uint)(port + 1) < (uint)frame.Length && frame[port] == 0 && frame[port + 1] == 68;
    }

    /// <summary>
    /// Data path: learns from an ARP packet, or from a DHCPACK when <paramref name="fromLan"/> (the
    /// frame came in through the Proxy's LAN interface, where the user's DHCP server is). A DHCPACK
    /// names another machine (<c>chaddr</c>), so one from a VM, or relayed from one over a link,
    /// could set any MAC's address: it is passed over. Anything else is passed over too.
    /// </summary>
    public void Observe(ReadOnlySpan<byte> frame, bool fromLan)
    {
        if (frame.Length < Ethernet + 2)
            return;
        var type = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(12));
        if (type == EtherTypeArp)
            ObserveArp(frame);
        else if (type == EtherTypeIpv4 && fromLan)
            ObserveDhcp(frame);
    }

    private void ObserveArp(ReadOnlySpan<byte> frame)
    {
        // htype 1, ptype IPv4, hlen 6, plen 4, op, sha(6) spa(4) tha(6) tpa(4): 28 bytes.
        var arp = frame.Slice(Ethernet);
        if (arp.Length < 28 || BinaryPrimitives.ReadUInt16BigEndian(arp) != 1 || BinaryPrimitives.ReadUInt16BigEndian(arp.Slice(2)) != EtherTypeIpv4 ||
            arp[4] != 6 || arp[5] != 4)
        {
            Interlocked.Increment(ref _malformed);
            return;
        }
        var sender = MacAddress.Read(arp.Slice(8));
        // Only a MAC speaking for itself: a frame from one machine cannot set another's address.
        if (sender != MacAddress.Read(frame.Slice(6)))
            return;
        Record(sender, BinaryPrimitives.ReadUInt32BigEndian(arp.Slice(14)));
    }

    private void ObserveDhcp(ReadOnlySpan<byte> frame)
    {
        var ip = frame.Slice(Ethernet);
        if (ip.Length < 20 || ip[9] != 17)
            return;
        var headerLength = (ip[0] & 0x0f) * 4;
        if ((ip[0] >> 4) != 4 || headerLength < 20 || ip.Length < headerLength + 8)
        {
            Interlocked.Increment(ref _malformed);
            return;
        }
        // A fragment's payload is not a UDP header.
        if ((BinaryPrimitives.ReadUInt16BigEndian(ip.Slice(6)) & 0x1fff) != 0)
            return;
        var udp = ip.Slice(headerLength);
        if (BinaryPrimitives.ReadUInt16BigEndian(udp) != 67 || BinaryPrimitives.ReadUInt16BigEndian(udp.Slice(2)) != 68)
            return;
        // BOOTP: op(1) htype(1) hlen(1) hops(1) xid(4) secs(2) flags(2) ciaddr yiaddr siaddr giaddr
        // (4 each), chaddr(16) at 28, sname(64) file(128), the magic cookie at 236, options from 240.
        var udpLength = BinaryPrimitives.ReadUInt16BigEndian(udp.Slice(4));
        if (udpLength < 8 || udpLength > udp.Length)
        {
            Interlocked.Increment(ref _malformed);
            return;
        }
        var bootp = udp.Slice(8, udpLength - 8);
        if (bootp.Length < 240 || bootp[0] != 2 || bootp[1] != 1 || bootp[2] != 6 ||
            BinaryPrimitives.ReadUInt32BigEndian(bootp.Slice(236)) != 0x63825363)
        {
            Interlocked.Increment(ref _malformed);
            return;
        }
        if (MessageType(bootp.Slice(240)) != 5)
            return;
        Record(MacAddress.Read(bootp.Slice(28)), BinaryPrimitives.ReadUInt32BigEndian(bootp.Slice(16)));
    }

    /// <summary>The DHCP message type (option 53), 0 when absent or the options run past their end.</summary>
    private int MessageType(ReadOnlySpan<byte> options)
    {
        var i = 0;
        while (i < options.Length)
        {
            var code = options[i];
            if (code == 255)
                return 0;
            if (code == 0)
            {
                i++;
                continue;
            }
            if (i + 1 >= options.Length || i + 2 + options[i + 1] > options.Length)
            {
                Interlocked.Increment(ref _malformed);
                return 0;
            }
            if (code == 53 && options[i + 1] == 1)
                return options[i + 2];
            i += 2 + options[i + 1];
        }
        return 0;
    }

    private void Record(MacAddress mac, uint address)
    {
        // Not a unicast machine, or no address to speak of (0.0.0.0, 255.255.255.255, multicast).
        if (mac.IsGroup || mac == MacAddress.Zero || address == 0 || address == uint.MaxValue || (address >> 28) == 0xe)
            return;
        var key = mac.Value + 1;
        var start = Index(key);
        // A look without the lock first: the address is almost always the one recorded already.
        for (var p = 0; p < Probe; p++)
        {
            var slot = (start + p) & (Slots - 1);
            if (Volatile.Read(ref _macs[slot]) == key && Volatile.Read(ref _addresses[slot]) == address)
                return;
        }
        lock (_gate)
        {
            var victim = start;
            for (var p = 0; p < Probe; p++)
            {
                var slot = (start + p) & (Slots - 1);
                if (_macs[slot] == key || _macs[slot] == 0)
                {
                    victim = slot;
                    break;
                }
                if (_written[slot] < _written[victim])
                    victim = slot;
            }
            _macs[victim] = key;
            _addresses[victim] = address;
            _written[victim] = ++_clock;
            _learned++;
        }
    }

    /// <summary>The address <paramref name="mac"/> was last seen using, if any (any thread).</summary>
    public IPAddress? Find(MacAddress mac)
    {
        var key = mac.Value + 1;
        var start = Index(key);
        lock (_gate)
        {
            for (var p = 0; p < Probe; p++)
            {
                var slot = (start + p) & (Slots - 1);
                if (_macs[slot] == key)
                {
                    Span<byte> bytes = stackalloc byte[4];
                    BinaryPrimitives.WriteUInt32BigEndian(bytes, _addresses[slot]);
                    return new IPAddress(bytes);
                }
            }
        }
        return null;
    }

    private static int Index(ulong key) => (int)((key * 0x9E3779B97F4A7C15UL) >> 54) & (Slots - 1);
}
