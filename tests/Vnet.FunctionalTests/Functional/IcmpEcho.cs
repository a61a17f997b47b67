using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Vnet.Tests.TestBed;

namespace Vnet.Tests.Functional;

/// <summary>
/// ICMP echo from inside namespaces, many at once from one thread: a raw socket is opened in each
/// namespace, one echo request goes to each target, and the answers are collected until all came
/// or the wait is over. What ping does, without a process per target.
/// </summary>
internal static class IcmpEcho
{
    private const byte EchoRequest = 8;
    private const byte EchoReply = 0;

    /// <summary>For each namespace, the targets (IPv4 addresses) that answered within <paramref name="wait"/>.</summary>
    public static Dictionary<string, HashSet<string>> Probe(IReadOnlyDictionary<string, IReadOnlyCollection<string>> targets, TimeSpan wait)
    {
        var probes = new List<(string Netns, Socket Socket, ushort Id, HashSet<string> Asked, HashSet<string> Answered)>();
        try
        {
            foreach (var (netns, asked) in targets)
            {
                Socket socket;
                using (Netns.Enter(netns))
                    socket = new Socket(AddressFamily.InterNetwork, SocketType.Raw, ProtocolType.Icmp);
                probes.Add((netns, socket, (ushort)Random.Shared.Next(1, ushort.MaxValue), [.. asked], []));
            }
            foreach (var p in probes)
            {
                ushort seq = 0;
                foreach (var target in p.Asked)
                {
                    try
                    {
                        p.Socket.SendTo(Request(p.Id, seq++), new IPEndPoint(IPAddress.Parse(target), 0));
                    }
                    catch (SocketException)
                    {
                        // No route, or a full neighbour queue: this target simply does not answer.
                    }
                }
            }

            var buffer = new byte[2048];
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed < wait)
            {
                var waiting = probes.Where(p => p.Answered.Count < p.Asked.Count).Select(p => p.Socket).ToList();
                if (waiting.Count == 0)
                    break;
                var left = wait - clock.Elapsed;
                Socket.Select(waiting, null, null, left > TimeSpan.Zero ? left : TimeSpan.Zero);
                foreach (var socket in waiting)
                {
                    var p = probes.First(x => x.Socket == socket);
                    while (socket.Available > 0)
                    {
                        EndPoint from = new IPEndPoint(IPAddress.Any, 0);
                        var n = socket.ReceiveFrom(buffer, ref from);
                        // A raw IPv4 socket hands over the IP header; the ICMP message follows it.
                        var ihl = (buffer[0] & 0x0f) * 4;
                        if (n < ihl + 8 || buffer[ihl] != EchoReply || BinaryPrimitives.ReadUInt16BigEndian(buffer.AsSpan(ihl + 4)) != p.Id)
                            continue;
                        var source = ((IPEndPoint)from).Address.ToString();
                        if (p.Asked.Contains(source))
                            p.Answered.Add(source);
                    }
                }
            }
            return probes.ToDictionary(p => p.Netns, p => p.Answered);
        }
        finally
        {
            foreach (var p in probes)
                p.Socket.Dispose();
        }
    }

    private static byte[] Request(ushort id, ushort seq)
    {
        var m = new byte[8 + 32];
        m[0] = EchoRequest;
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(4), id);
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(6), seq);
        "vnet-convergence-probe-payload!!"u8.CopyTo(m.AsSpan(8));
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(2), Checksum(m));
        return m;
    }

    /// <summary>The Internet checksum (RFC 1071) of the message, its checksum field zero.</summary>
    private static ushort Checksum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        for (var i = 0; i + 1 < data.Length; i += 2)
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        if ((data.Length & 1) != 0)
            sum += (uint)data[^1] << 8;
        while (sum > 0xffff)
            sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }
}
