using System.Buffers.Binary;
using Vnet.Interfaces;

namespace Vnet.Tests.Interfaces;

/// <summary>
/// The multi-queue TAP's steering hash, as computed in C# (the kernel runs the same as eBPF; the
/// functional TapMultiQueueTests check that both agree on real frames).
/// </summary>
public sealed class TapSteeringTests
{
    [Theory]
    [InlineData(false, 17)]
    [InlineData(false, 6)]
    [InlineData(true, 17)]
    [InlineData(true, 6)]
    public void Hash_BothDirectionsOfAFlow_Alike(bool v6, byte protocol)
    {
        var there = Packet(v6, protocol, 1, 2, 40001, 5201);
        var back = Packet(v6, protocol, 2, 1, 5201, 40001);
        Assert.Equal(TapSteering.Hash(there), TapSteering.Hash(back));
        Assert.NotEqual(TapSteering.Hash(there), TapSteering.Hash(Packet(v6, protocol, 1, 2, 40002, 5201)));
    }

    [Fact]
    public void Hash_ManyFlowsBetweenTwoAddresses_SpreadOverFourQueues()
    {
        var counts = new int[4];
        for (ushort port = 40000; port < 40400; port++)
            counts[TapSteering.QueueOf(Packet(false, 6, 1, 2, port, 5201), 4)]++;
        // 100 each if perfectly even; a hash that ignored ports would put all 400 on one.
        Assert.All(counts, c => Assert.InRange(c, 60, 140));
    }

    [Fact]
    public void Hash_Ipv4Fragment_PortsIgnored()
    {
        var a = Packet(false, 17, 1, 2, 40001, 5201);
        var b = Packet(false, 17, 1, 2, 40002, 5201);
        foreach (var p in new[] { a, b })
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(20), 0x2000); // more fragments
        Assert.Equal(TapSteering.Hash(a), TapSteering.Hash(b));
        Assert.Equal(TapSteering.Hash(a), TapSteering.Hash(Packet(false, 1, 1, 2, 0, 0))); // as ICMP: addresses only
    }

    [Fact]
    public void Hash_NotIp_Or_TooShort_FirstQueue()
    {
        var arp = new byte[60];
        BinaryPrimitives.WriteUInt16BigEndian(arp.AsSpan(12), 0x0806);
        Assert.Equal(0, TapSteering.Hash(arp));
        Assert.Equal(0, TapSteering.Hash(Packet(false, 17, 1, 2, 40001, 5201).AsSpan(0, 33)));
        Assert.Equal(0, TapSteering.Hash(Packet(false, 17, 1, 2, 40001, 5201).AsSpan(0, 36)));
        Assert.Equal(0, TapSteering.QueueOf(Packet(false, 17, 1, 2, 40001, 5201), 1));
    }

    [Fact]
    public void Program_WellFormed()
    {
        var program = TapSteering.Program();
        Assert.Equal(0, program.Length % 8);
        var count = program.Length / 8;
        Assert.Equal(0x95, program[^8]); // ends with exit
        for (var i = 0; i < count; i++)
        {
            var code = program[i * 8];
            if ((code & 0x07) == 0x05 && code != 0x95)
            {
                var target = i + 1 + BinaryPrimitives.ReadInt16LittleEndian(program.AsSpan(i * 8 + 2));
                Assert.InRange(target, i + 1, count - 1); // forward only, inside the program
            }
        }
    }

    /// <summary>Ethernet, IPv4 or IPv6 from host <paramref name="src"/> to <paramref name="dst"/>, then the ports.</summary>
    internal static byte[] Packet(bool v6, byte protocol, byte src, byte dst, ushort sport, ushort dport)
    {
        var l4 = v6 ? 54 : 34;
        var f = new byte[l4 + 20];
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), v6 ? (ushort)0x86dd : (ushort)0x0800);
        if (v6)
        {
            f[14] = 0x60;
            f[20] = protocol;
            f[22] = 0xfd;
            f[37] = src;
            f[38] = 0xfd;
            f[53] = dst;
        }
        else
        {
            f[14] = 0x45;
            f[23] = protocol;
            f[26] = 10;
            f[29] = src;
            f[30] = 10;
            f[33] = dst;
        }
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l4), sport);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(l4 + 2), dport);
        return f;
    }
}
