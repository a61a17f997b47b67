using System.Buffers.Binary;
using Vnet.Frames;

namespace Vnet.Tests.Frames;

/// <summary>What a hand-built test packet looks like; offsets follow from it, independently of the code under test.</summary>
internal sealed record PacketSpec
{
    public bool V6 { get; init; }
    public bool Vlan { get; init; }
    public bool HopByHop { get; init; }
    public bool Udp { get; init; }

    /// <summary>TCP option bytes (a multiple of 4): NOP NOP timestamp first, then NOPs.</summary>
    public int TcpOptions { get; init; } = 12;

    public byte TcpFlags { get; init; } = TestPackets.Ack;
    public uint Seq { get; init; } = 0xFFFF_F000;
    public uint AckNumber { get; init; } = 0x0102_0304;
    public ushort Window { get; init; } = 502;
    public ushort Id { get; init; } = 0xFFF0;
    public bool DontFragment { get; init; } = true;
    public byte Ttl { get; init; } = 64;
    public byte Tos { get; init; }
    public ushort SourcePort { get; init; } = 40000;
    public ushort DestinationPort { get; init; } = 5201;
    public uint TimestampValue { get; init; } = 0x11223344;

    public int L3 => Vlan ? 18 : 14;
    public int IpHeaderLength => V6 ? 40 + (HopByHop ? 8 : 0) : 20;
    public int L4 => L3 + IpHeaderLength;
    public int L4HeaderLength => Udp ? 8 : 20 + TcpOptions;
    public int HeadersLength => L4 + L4HeaderLength;
    public byte Protocol => Udp ? (byte)17 : (byte)6;
    public int ChecksumOffset => Udp ? 6 : 16;
}

/// <summary>Builds frames byte by byte, and checks them with a naive checksum that shares no code with <see cref="Checksum"/>.</summary>
internal static class TestPackets
{
    public const byte Fin = 0x01;
    public const byte Syn = 0x02;
    public const byte Psh = 0x08;
    public const byte Ack = 0x10;
    public const byte Ece = 0x40;
    public const byte Cwr = 0x80;

    public static byte[] RandomPayload(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    /// <summary>The frame's bytes with complete checksums (or a partial one, as a TAP hands it over).</summary>
    public static byte[] Bytes(PacketSpec s, ReadOnlySpan<byte> payload, bool partialChecksum = false)
    {
        var f = new byte[s.HeadersLength + payload.Length];
        // Ethernet
        new byte[] { 0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02 }.CopyTo(f, 0);
        var p = 12;
        if (s.Vlan)
        {
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(p), 0x8100);
            BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(p + 2), 0x2007);
            p += 4;
        }
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(p), s.V6 ? (ushort)0x86DD : (ushort)0x0800);

        var ip = f.AsSpan(s.L3);
        if (s.V6)
        {
            BinaryPrimitives.WriteUInt32BigEndian(ip, 0x6000_0000u | ((uint)s.Tos << 20) | 0x12345);
            BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(4), (ushort)(f.Length - s.L3 - 40));
            ip[6] = s.HopByHop ? (byte)0 : s.Protocol;
            ip[7] = s.Ttl;
            for (var i = 0; i < 16; i++)
            {
                ip[8 + i] = (byte)(0xFD + i);
                ip[24 + i] = (byte)(0x20 + i);
            }
            if (s.HopByHop)
            {
                ip[40] = s.Protocol;
                ip[41] = 0;
                // PadN option filling the 6 remaining bytes.
                ip[42] = 1;
                ip[43] = 4;
            }
        }
        else
        {
            ip[0] = 0x45;
            ip[1] = s.Tos;
            BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(2), (ushort)(f.Length - s.L3));
            BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(4), s.Id);
            ip[6] = s.DontFragment ? (byte)0x40 : (byte)0;
            ip[8] = s.Ttl;
            ip[9] = s.Protocol;
            new byte[] { 10, 0, 0, 1, 10, 0, 0, 2 }.CopyTo(ip.Slice(12));
            BinaryPrimitives.WriteUInt16BigEndian(ip.Slice(10), (ushort)~RefFold(RefSum(ip.Slice(0, 20))));
        }

        var l4 = f.AsSpan(s.L4);
        BinaryPrimitives.WriteUInt16BigEndian(l4, s.SourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(l4.Slice(2), s.DestinationPort);
        if (s.Udp)
        {
            BinaryPrimitives.WriteUInt16BigEndian(l4.Slice(4), (ushort)(f.Length - s.L4));
        }
        else
        {
            BinaryPrimitives.WriteUInt32BigEndian(l4.Slice(4), s.Seq);
            BinaryPrimitives.WriteUInt32BigEndian(l4.Slice(8), s.AckNumber);
            l4[12] = (byte)((s.L4HeaderLength / 4) << 4);
            l4[13] = s.TcpFlags;
            BinaryPrimitives.WriteUInt16BigEndian(l4.Slice(14), s.Window);
            var options = l4.Slice(20, s.TcpOptions);
            options.Fill(1);
            if (options.Length >= 12)
            {
                options[2] = 8;
                options[3] = 10;
                BinaryPrimitives.WriteUInt32BigEndian(options.Slice(4), s.TimestampValue);
                BinaryPrimitives.WriteUInt32BigEndian(options.Slice(8), 0x55667788);
            }
        }
        payload.CopyTo(f.AsSpan(s.HeadersLength));

        var pseudo = RefPseudo(f, s, f.Length - s.L4);
        var field = f.AsSpan(s.L4 + s.ChecksumOffset, 2);
        if (partialChecksum)
        {
            BinaryPrimitives.WriteUInt16BigEndian(field, RefFold(pseudo));
        }
        else
        {
            var c = (ushort)~RefFold(RefSum(f.AsSpan(s.L4), pseudo));
            BinaryPrimitives.WriteUInt16BigEndian(field, c == 0 && s.Udp ? (ushort)0xFFFF : c);
        }
        return f;
    }

    public static Frame ToFrame(FramePool pool, ReadOnlySpan<byte> bytes, VirtioNetHeader offload = default)
    {
        var frame = pool.TryRent() ?? throw new InvalidOperationException("test pool empty");
        bytes.CopyTo(frame.Buffer.AsSpan(frame.Offset));
        frame.Length = bytes.Length;
        frame.Offload = offload;
        return frame;
    }

    public static Frame Plain(FramePool pool, PacketSpec s, ReadOnlySpan<byte> payload) => ToFrame(pool, Bytes(s, payload));

    /// <summary>A frame with only NEEDS_CSUM, as a TAP hands over a small TCP/UDP packet.</summary>
    public static Frame Partial(FramePool pool, PacketSpec s, ReadOnlySpan<byte> payload) =>
        ToFrame(pool, Bytes(s, payload, partialChecksum: true), PartialHeader(s));

    /// <summary>A TSO/USO super-frame as a TAP hands it over: partial checksum, GSO metadata.</summary>
    public static Frame SuperFrame(FramePool pool, PacketSpec s, ReadOnlySpan<byte> payload, int gsoSize)
    {
        var header = PartialHeader(s);
        header.GsoType = s.Udp ? VirtioNetHeader.GsoUdpL4 : s.V6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4;
        header.GsoSize = (ushort)gsoSize;
        header.HdrLen = (ushort)s.HeadersLength;
        return ToFrame(pool, Bytes(s, payload, partialChecksum: true), header);
    }

    public static VirtioNetHeader PartialHeader(PacketSpec s) => new()
    {
        Flags = VirtioNetHeader.FlagNeedsCsum,
        CsumStart = (ushort)s.L4,
        CsumOffset = (ushort)s.ChecksumOffset,
    };

    // ---- naive reference checksum: one 16-bit word at a time, carry folded at every step ----

    public static uint RefSum(ReadOnlySpan<byte> data, uint initial = 0)
    {
        uint acc = RefFold(initial);
        for (var i = 0; i < data.Length; i += 2)
        {
            var word = (uint)(data[i] << 8) | (i + 1 < data.Length ? data[i + 1] : 0u);
            acc += word;
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        return acc;
    }

    public static ushort RefFold(uint sum)
    {
        var s = (ulong)sum;
        while (s > 0xFFFF)
            s = (s & 0xFFFF) + (s >> 16);
        return (ushort)s;
    }

    public static uint RefPseudo(ReadOnlySpan<byte> frame, PacketSpec s, int l4Length)
    {
        var ip = frame.Slice(s.L3);
        var pseudo = new List<byte>();
        if (s.V6)
        {
            pseudo.AddRange(ip.Slice(8, 32).ToArray());
            pseudo.AddRange(new byte[] { (byte)(l4Length >> 24), (byte)(l4Length >> 16), (byte)(l4Length >> 8), (byte)l4Length, 0, 0, 0, s.Protocol });
        }
        else
        {
            pseudo.AddRange(ip.Slice(12, 8).ToArray());
            pseudo.AddRange(new byte[] { 0, s.Protocol, (byte)(l4Length >> 8), (byte)l4Length });
        }
        return RefSum(pseudo.ToArray());
    }

    /// <summary>True when the transport checksum of <paramref name="frame"/> (complete form) is right.</summary>
    public static bool L4ChecksumValid(ReadOnlySpan<byte> frame, PacketSpec s)
    {
        var l4Length = frame.Length - s.L4;
        return RefFold(RefSum(frame.Slice(s.L4), RefPseudo(frame, s, l4Length))) == 0xFFFF;
    }

    public static bool Ipv4HeaderValid(ReadOnlySpan<byte> frame, PacketSpec s) =>
        RefFold(RefSum(frame.Slice(s.L3, 20))) == 0xFFFF;

    /// <summary>Completes a NEEDS_CSUM frame's checksum the way a kernel would, on a copy.</summary>
    public static byte[] CompletedCopy(Frame frame)
    {
        var bytes = frame.Data.ToArray();
        int start = frame.Offload.CsumStart;
        var c = (ushort)~RefFold(RefSum(bytes.AsSpan(start)));
        BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(start + frame.Offload.CsumOffset), c);
        return bytes;
    }

    public static void ReleaseAll(List<Frame> frames)
    {
        foreach (var f in frames)
            f.Release();
        frames.Clear();
    }
}
