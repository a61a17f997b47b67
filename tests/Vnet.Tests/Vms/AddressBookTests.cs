using System.Buffers.Binary;
using Vnet.Frames;
using Vnet.Vms;

namespace Vnet.Tests.Vms;

/// <summary>The IPv4 address a MAC uses, learned from crafted ARP and DHCP frames; hostile frames are ignored and counted.</summary>
public sealed class AddressBookTests
{
    private static readonly MacAddress Vm = MacAddress.Parse("02:56:00:00:00:01");
    private static readonly MacAddress Server = MacAddress.Parse("02:50:00:00:00:01");

    private static byte[] Arp(MacAddress frameSource, MacAddress sender, string senderIp, ushort op = 1)
    {
        var f = new byte[42];
        MacAddress.Broadcast.Write(f);
        frameSource.Write(f.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0806);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(14), 1);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), 0x0800);
        f[18] = 6;
        f[19] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(20), op);
        sender.Write(f.AsSpan(22));
        System.Net.IPAddress.Parse(senderIp).TryWriteBytes(f.AsSpan(28), out _);
        System.Net.IPAddress.Parse("10.50.0.1").TryWriteBytes(f.AsSpan(38), out _);
        return f;
    }

    /// <summary>Ethernet + IPv4 (20 bytes) + UDP 67 → 68 + BOOTP with the given message type for <paramref name="client"/>.</summary>
    internal static byte[] Dhcp(MacAddress client, string yiaddr, byte messageType, byte op = 2, int? udpLength = null, bool truncateOptions = false)
    {
        var bootp = new byte[240 + (truncateOptions ? 2 : 4)];
        bootp[0] = op;
        bootp[1] = 1;
        bootp[2] = 6;
        System.Net.IPAddress.Parse(yiaddr).TryWriteBytes(bootp.AsSpan(16), out _);
        client.Write(bootp.AsSpan(28));
        BinaryPrimitives.WriteUInt32BigEndian(bootp.AsSpan(236), 0x63825363);
        bootp[240] = 53;
        if (truncateOptions)
        {
            bootp[241] = 9; // a length that runs past the end
        }
        else
        {
            bootp[241] = 1;
            bootp[242] = messageType;
            bootp[243] = 255;
        }
        var f = new byte[14 + 20 + 8 + bootp.Length];
        client.Write(f);
        Server.Write(f.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0800);
        f[14] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), (ushort)(20 + 8 + bootp.Length));
        f[14 + 9] = 17;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(34), 67);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(36), 68);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(38), (ushort)(udpLength ?? 8 + bootp.Length));
        bootp.CopyTo(f.AsSpan(42));
        return f;
    }

    private static void Feed(AddressBook book, byte[] frame, bool fromLan = true)
    {
        if (AddressBook.IsCandidate(frame))
            book.Observe(frame, fromLan);
    }

    [Fact]
    public void DhcpAck_NotFromTheLan_IsNotLearned_ArpStillIs()
    {
        // A VM (or a frame relayed over a link from one) forging a server's answer for another MAC.
        var book = new AddressBook();
        Feed(book, Dhcp(Vm, "10.50.0.99", 5), fromLan: false);
        Assert.Null(book.Find(Vm));
        Assert.Equal(0, book.Learned);
        Feed(book, Arp(Vm, Vm, "10.50.0.120"), fromLan: false);
        Assert.Equal("10.50.0.120", book.Find(Vm)?.ToString());
    }

    [Fact]
    public void Arp_SenderSpeakingForItself_IsLearned()
    {
        var book = new AddressBook();
        Feed(book, Arp(Vm, Vm, "10.50.0.120"));
        Assert.Equal("10.50.0.120", book.Find(Vm)?.ToString());
        // A newer ARP with another address replaces it.
        Feed(book, Arp(Vm, Vm, "10.50.0.121", op: 2));
        Assert.Equal("10.50.0.121", book.Find(Vm)?.ToString());
        Assert.Equal(2, book.Learned);
        Feed(book, Arp(Vm, Vm, "10.50.0.121", op: 2));
        Assert.Equal(2, book.Learned);
    }

    [Fact]
    public void Arp_ForAnotherMacOrFromNoAddress_IsNotLearned()
    {
        var book = new AddressBook();
        var other = MacAddress.Parse("02:56:00:00:00:02");
        Feed(book, Arp(other, Vm, "10.50.0.66"));   // one machine cannot set another's address
        Feed(book, Arp(Vm, Vm, "0.0.0.0"));         // an ARP probe
        Feed(book, Arp(Vm, Vm, "255.255.255.255"));
        Feed(book, Arp(Vm, Vm, "224.0.0.1"));
        Assert.Null(book.Find(Vm));
        Assert.Null(book.Find(other));
        Assert.Equal(0, book.Learned);
    }

    [Fact]
    public void DhcpAck_TeachesTheClientsAddress_OtherMessagesDoNot()
    {
        var book = new AddressBook();
        Feed(book, Dhcp(Vm, "10.50.0.130", messageType: 2)); // OFFER
        Assert.Null(book.Find(Vm));
        Feed(book, Dhcp(Vm, "10.50.0.130", messageType: 5)); // ACK
        Assert.Equal("10.50.0.130", book.Find(Vm)?.ToString());
        Assert.Equal(0, book.Malformed);
    }

    [Fact]
    public void HostileFrames_AreIgnoredAndCounted()
    {
        var book = new AddressBook();
        // ARP cut short, an ARP with wrong lengths, a DHCP whose UDP length runs past the frame,
        // a BOOTP without its cookie's room, options that run past their end.
        var shortArp = Arp(Vm, Vm, "10.50.0.1")[..30];
        var badLengths = Arp(Vm, Vm, "10.50.0.1");
        badLengths[18] = 8;
        var longUdp = Dhcp(Vm, "10.50.0.131", 5, udpLength: 4000);
        var shortBootp = Dhcp(Vm, "10.50.0.132", 5)[..200];
        BinaryPrimitives.WriteUInt16BigEndian(shortBootp.AsSpan(38), 200 - 34);
        var badOptions = Dhcp(Vm, "10.50.0.133", 5, truncateOptions: true);
        foreach (var frame in new[] { shortArp, badLengths, longUdp, shortBootp, badOptions })
            Feed(book, frame);
        Assert.Null(book.Find(Vm));
        Assert.Equal(5, book.Malformed);
        // Frames far too short for any header are not even looked at.
        Feed(book, new byte[10]);
        Feed(book, []);
        Assert.Equal(5, book.Malformed);
    }

    [Fact]
    public void OtherTraffic_IsNotACandidate()
    {
        var tcp = Dhcp(Vm, "10.50.0.1", 5);
        tcp[14 + 9] = 6;
        Assert.False(AddressBook.IsCandidate(tcp));
        var toServer = Dhcp(Vm, "10.50.0.1", 5);
        BinaryPrimitives.WriteUInt16BigEndian(toServer.AsSpan(36), 67);
        Assert.False(AddressBook.IsCandidate(toServer));
        Assert.True(AddressBook.IsCandidate(Dhcp(Vm, "10.50.0.1", 5)));
        Assert.True(AddressBook.IsCandidate(Arp(Vm, Vm, "10.50.0.1")));
    }

    [Fact]
    public void ManyMacs_TheTableStaysBoundedAndRecentOnesAreKept()
    {
        var book = new AddressBook();
        for (var i = 1; i <= 20_000; i++)
        {
            var mac = new MacAddress(0x0256_0000_0000UL | (uint)i);
            Feed(book, Arp(mac, mac, $"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"));
        }
        var last = new MacAddress(0x0256_0000_0000UL | 20_000u);
        Assert.Equal("10.0.78.32", book.Find(last)?.ToString());
        var found = 0;
        for (var i = 1; i <= 20_000; i++)
        {
            if (book.Find(new MacAddress(0x0256_0000_0000UL | (uint)i)) is not null)
                found++;
        }
        Assert.InRange(found, 1, AddressBook.Slots);
    }

    [Fact]
    public void Observe_AllocatesNothing()
    {
        var book = new AddressBook();
        var arp = Arp(Vm, Vm, "10.50.0.120");
        var ack = Dhcp(Vm, "10.50.0.120", 5);
        Feed(book, arp);
        Feed(book, ack);
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1000; i++)
        {
            Feed(book, arp);
            Feed(book, ack);
        }
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
    }
}
