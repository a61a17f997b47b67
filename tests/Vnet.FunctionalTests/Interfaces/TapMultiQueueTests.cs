using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Vnet.Frames;
using Vnet.Interfaces;
using Vnet.Tests.TestBed;

namespace Vnet.Tests.Interfaces;

/// <summary>
/// Multi-queue TAPs on a real kernel, in a fresh namespace removed afterwards: N descriptors on one
/// device, the kernel's view of it, the steering program's choice of queue for real frames (the
/// same as <see cref="TapSteering.QueueOf"/>, every flow on one queue and in order), and existing
/// persistent TAPs made with or without multi_queue.
/// </summary>
[Collection("Netns")]
public sealed class TapMultiQueueTests : IDisposable
{
    private const int IffMultiQueue = 0x0100;
    private readonly ScratchNetns _scratch = new("vtmq");

    public void Dispose() => _scratch.Dispose();

    [Fact]
    public void Open_FourQueues_FourDescriptorsAndTheKernelShowsFourQueues()
    {
        using var tap = Open("vmq0", OffloadSet.All, 4);
        Assert.Equal(4, tap.Queues.Count);
        Assert.Equal(4, DescriptorsOf("vmq0"));
        Assert.Equal(OffloadSet.All, tap.Offloads);
        Assert.True((TunFlags("vmq0") & IffMultiQueue) != 0, "the TAP has no IFF_MULTI_QUEUE");
        Assert.Equal(["rx-0", "rx-1", "rx-2", "rx-3", "tx-0", "tx-1", "tx-2", "tx-3"], KernelQueues("vmq0"));
        Assert.Contains("UP", Sh.Run($"ip -n {_scratch.Name} link show vmq0"), StringComparison.Ordinal);
    }

    [Fact]
    public void Open_OneQueue_APlainTapWithoutTheMultiQueueFlag()
    {
        using var tap = Open("vmq1", OffloadSet.All, 1);
        Assert.Single(tap.Queues);
        Assert.Equal(1, DescriptorsOf("vmq1"));
        Assert.Equal(0, TunFlags("vmq1") & IffMultiQueue);
        Assert.Equal(["rx-0", "tx-0"], KernelQueues("vmq1"));
    }

    [Fact]
    public void Read_FlowsFromTheKernel_EachOnTheQueueTheHashGives_InOrder_OverSeveralQueues()
    {
        const int flows = 16;
        const int perFlow = 20;
        using var tap = Open("vmq2", OffloadSet.None, 4);
        Sh.Run($"ip -n {_scratch.Name} addr add 10.9.0.1/24 dev vmq2");
        Sh.Run($"ip -n {_scratch.Name} neigh add 10.9.0.2 lladdr 02:00:00:00:00:99 dev vmq2 nud permanent");
        Sh.Run($"ip -n {_scratch.Name} -6 addr add fd09::1/64 dev vmq2 nodad");
        Sh.Run($"ip -n {_scratch.Name} -6 neigh add fd09::2 lladdr 02:00:00:00:00:99 dev vmq2 nud permanent");

        // 16 IPv4 and 16 IPv6 UDP flows from distinct source ports, their datagrams interleaved.
        var sockets = new List<(Socket Socket, EndPoint To)>();
        var thread = new Thread(() =>
        {
            using (Netns.Enter(_scratch.Name))
            {
                for (var i = 0; i < flows; i++)
                {
                    var v4 = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                    v4.Bind(new IPEndPoint(IPAddress.Parse("10.9.0.1"), 41000 + i));
                    sockets.Add((v4, new IPEndPoint(IPAddress.Parse("10.9.0.2"), 5201)));
                }
                for (var i = 0; i < flows; i++)
                {
                    var v6 = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp);
                    v6.Bind(new IPEndPoint(IPAddress.Parse("fd09::1"), 42000 + i));
                    sockets.Add((v6, new IPEndPoint(IPAddress.Parse("fd09::2"), 5201)));
                }
            }
        });
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(10)), "making the sockets did not finish");
        try
        {
            var payload = new byte[8];
            for (var seq = 0; seq < perFlow; seq++)
            {
                for (var f = 0; f < sockets.Count; f++)
                {
                    BinaryPrimitives.WriteInt32BigEndian(payload, f);
                    BinaryPrimitives.WriteInt32BigEndian(payload.AsSpan(4), seq);
                    sockets[f].Socket.SendTo(payload, sockets[f].To);
                }
            }
        }
        finally
        {
            foreach (var (socket, _) in sockets)
                socket.Dispose();
        }

        var expected = sockets.Count * perFlow;
        var queueOf = new int[sockets.Count];
        var next = new int[sockets.Count];
        Array.Fill(queueOf, -1);
        var got = 0;
        var pool = new FramePool(4);
        var frame = pool.TryRent()!;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (got < expected && DateTime.UtcNow < deadline)
        {
            var any = false;
            for (var q = 0; q < tap.Queues.Count; q++)
            {
                while (tap.Queues[q].TryRead(frame) == ReadStatus.Frame)
                {
                    any = true;
                    var data = frame.Data.ToArray();
                    Assert.True(TapSteering.QueueOf(data, 4) == q,
                        $"a frame came on queue {q}, the hash says {TapSteering.QueueOf(data, 4)}: {Convert.ToHexString(data.AsSpan(0, Math.Min(64, data.Length)))}");
                    // The others (IPv6 router solicitations, MLD reports) only had to be on their queue.
                    if (Flow(data) is not { } flow)
                        continue;
                    var (f, seq) = flow;
                    if (queueOf[f] < 0)
                        queueOf[f] = q;
                    Assert.True(queueOf[f] == q, $"flow {f} came on queues {queueOf[f]} and {q}");
                    Assert.True(next[f] == seq, $"flow {f}: datagram {seq} came after {next[f] - 1}");
                    next[f]++;
                    got++;
                }
            }
            if (!any)
                Thread.Sleep(20);
        }
        frame.Release();
        Assert.Equal(expected, got);
        var used = queueOf.Distinct().Count();
        Assert.True(used >= 3, $"{sockets.Count} flows came on {used} queue(s) only: {string.Join(",", queueOf)}");
    }

    [Fact]
    public void Open_ExistingPersistentTaps_TheSameMultiQueueChoiceAttaches_TheOtherIsRefusedWithTheReason()
    {
        Sh.Run($"ip -n {_scratch.Name} tuntap add dev vmq3 mode tap");
        Sh.Run($"ip -n {_scratch.Name} tuntap add dev vmq4 mode tap multi_queue");

        var single = Assert.IsType<InvalidOperationException>(Record.Exception(() => Open("vmq3", OffloadSet.All, 4)));
        Assert.Contains("without multi_queue", single.InnerException!.Message, StringComparison.Ordinal);
        using (var tap = Open("vmq3", OffloadSet.All, 1))
            Assert.Single(tap.Queues);

        var multi = Assert.IsType<InvalidOperationException>(Record.Exception(() => Open("vmq4", OffloadSet.All, 1)));
        Assert.Contains("made with multi_queue", multi.InnerException!.Message, StringComparison.Ordinal);
        using (var tap = Open("vmq4", OffloadSet.All, 4))
        {
            Assert.Equal(4, tap.Queues.Count);
            Assert.Equal(["rx-0", "rx-1", "rx-2", "rx-3", "tx-0", "tx-1", "tx-2", "tx-3"], KernelQueues("vmq4"));
        }
    }

    /// <summary>The flow index and sequence number of one of the test's datagrams, or null.</summary>
    private static (int Flow, int Seq)? Flow(byte[] frame)
    {
        int l4;
        switch (BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(12)))
        {
            case 0x0800 when frame[23] == 17:
                l4 = 14 + ((frame[14] & 0xf) << 2);
                break;
            case 0x86dd when frame[20] == 17:
                l4 = 54;
                break;
            default:
                return null;
        }
        if (frame.Length < l4 + 16 || BinaryPrimitives.ReadUInt16BigEndian(frame.AsSpan(l4 + 2)) != 5201)
            return null;
        return (BinaryPrimitives.ReadInt32BigEndian(frame.AsSpan(l4 + 8)), BinaryPrimitives.ReadInt32BigEndian(frame.AsSpan(l4 + 12)));
    }

    /// <summary>This process's descriptors attached to <paramref name="device"/> (a TAP's fdinfo names it).</summary>
    private static int DescriptorsOf(string device)
    {
        var count = 0;
        foreach (var info in Directory.GetFiles("/proc/self/fdinfo"))
        {
            try
            {
                if (File.ReadAllText(info).Contains($"iff:\t{device}\n", StringComparison.Ordinal))
                    count++;
            }
            catch (IOException)
            {
                // A descriptor closed meanwhile.
            }
        }
        return count;
    }

    private int TunFlags(string device) =>
        Convert.ToInt32(Sh.Run($"ip netns exec {_scratch.Name} cat /sys/class/net/{device}/tun_flags").Trim(), 16);

    private string[] KernelQueues(string device) =>
        Sh.Run($"ip netns exec {_scratch.Name} ls /sys/class/net/{device}/queues").Split((char[])['\n', ' ', '\t'], StringSplitOptions.RemoveEmptyEntries)
            .Order(StringComparer.Ordinal).ToArray();

    private TapInterface Open(string name, OffloadSet set, int queues)
    {
        return _scratch.Run(() => TapInterface.Open(name, 1500, set, queues),
            $"opening {name} with {queues.ToString(CultureInfo.InvariantCulture)} queue(s)");
    }
}
