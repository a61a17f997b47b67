using System.Buffers.Binary;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Interfaces;

namespace Vnet.Tests.Interfaces;

/// <summary>
/// An interface port over a device with several receive queues (a memory device that steers
/// injected frames as a multi-queue TAP's program does): one reader per queue, every flow's frames
/// forwarded in order, frames counted per queue, and a helping thread that drains every queue.
/// </summary>
public sealed class MultiQueuePortTests : IDisposable
{
    private const int Queues = 4;
    private readonly FramePool _pool = new(4096);
    private readonly VirtualSwitch _switch = new();
    private readonly MemoryInterface _device = new("mq0", 1500, queues: Queues);
    private readonly MemoryInterface _sink = new("sink0", 1500);
    private readonly InterfacePort _port;
    private readonly InterfacePort _sinkPort;

    public MultiQueuePortTests()
    {
        _port = new InterfacePort(_device, _switch, _pool);
        _sinkPort = new InterfacePort(_sink, _switch, _pool);
        _switch.AddPort(_port);
        _switch.AddPort(_sinkPort);
        var rules = new List<Rule>
        {
            new() { Id = 1, Source = MacMatch.Any, Destination = MacMatch.Any, Ingress = _port.Name, Action = RuleAction.To(_sinkPort.Name) },
            new() { Id = 2, Source = MacMatch.Any, Destination = MacMatch.Any, Ingress = _sinkPort.Name, Action = RuleAction.To(_port.Name) },
        };
        _switch.Publish(new ForwardingTable(rules, _switch.ResolvePort, _ => new RuleStats()));
    }

    public void Dispose()
    {
        _port.Dispose();
        _sinkPort.Dispose();
    }

    [Fact]
    public void Port_FourQueueDevice_OneReaderPerQueue()
    {
        Assert.Equal(Queues, _device.Queues.Count);
        Assert.Equal(Queues, _port.QueueCount);
        using var single = new InterfacePort(new MemoryInterface("one0"), _switch, _pool);
        Assert.Equal(1, single.QueueCount);
    }

    [Fact]
    public void Readers_ManyFlowsOverFourQueues_EveryFlowInOrderAndEveryQueueRead()
    {
        var flows = FlowsCoveringEveryQueue(2);
        // Checked as the sink is written (on the readers' threads): it keeps only the last frames.
        var next = new int[flows.Length];
        var faults = new List<string>();
        _sink.FrameWritten += (_, frame) =>
        {
            var (flow, seq) = Read(frame);
            lock (next)
            {
                if (seq != next[flow] && faults.Count < 10)
                    faults.Add($"flow {flow}: frame {seq} came after {next[flow] - 1}");
                next[flow] = seq + 1;
            }
        };
        _port.Start();
        const int perFlow = 2000;
        // Injected flow by flow, interleaved, in bounded bursts so that the pool never runs dry.
        for (var seq = 0; seq < perFlow; seq++)
        {
            for (var flow = 0; flow < flows.Length; flow++)
                Assert.True(_device.Inject(Udp(flows[flow], flow, seq)), "the device's queue is full");
            if (seq % 100 == 99)
                Support.Wait.Until(() => _sink.Writes >= (long)(seq - 50) * flows.Length, TimeSpan.FromSeconds(10), "the readers to catch up");
        }
        var total = (long)perFlow * flows.Length;
        Support.Wait.Until(() => _sink.Writes >= total, TimeSpan.FromSeconds(20), $"{total} frames at the sink");

        lock (next)
        {
            Assert.Empty(faults);
            Assert.All(next, n => Assert.Equal(perFlow, n));
        }
        for (var q = 0; q < Queues; q++)
            Assert.Equal(2L * perFlow, _port.QueueFrames(q));
        Assert.Equal(total, _port.Counters.RxFrames);
    }

    [Fact]
    public void Help_NoReadersRunning_HelperDrainsEveryQueueUpToItsBudget()
    {
        // The readers are not started: whatever is read is the helper's.
        var flows = FlowsCoveringEveryQueue(1);
        for (var seq = 0; seq < 40; seq++)
        {
            for (var flow = 0; flow < flows.Length; flow++)
                _device.Inject(Udp(flows[flow], flow, seq));
        }

        var helper = new Thread(() =>
        {
            TransmitBatch.Begin();
            InterfacePort.BeginHelping();
            // A frame from the sink side written to the device: what makes a link's receiver help.
            var frame = _pool.TryRent()!;
            var bytes = Udp(flows[0], 0, 999);
            bytes.CopyTo(frame.Buffer.AsSpan(Frame.Headroom));
            frame.SetBounds(Frame.Headroom, bytes.Length);
            _port.Transmit(frame);
            InterfacePort.HelpWritten();
            TransmitBatch.End();
        });
        helper.Start();
        Assert.True(helper.Join(TimeSpan.FromSeconds(10)), "the helper did not finish");

        // 32 of each queue's 40 (one flow per queue).
        Assert.Equal(4L * 32, _port.HelpedFrames);
        for (var q = 0; q < Queues; q++)
            Assert.Equal(32L, _port.QueueFrames(q));
        var next = new int[flows.Length];
        while (_sink.TryTake(out var frame))
        {
            var (flow, seq) = Read(frame);
            Assert.Equal(next[flow]++, seq);
        }
        Assert.All(next, n => Assert.Equal(32, n));
    }

    /// <summary>Source ports of flows, <paramref name="perQueue"/> for each queue the steering hash gives.</summary>
    private static ushort[] FlowsCoveringEveryQueue(int perQueue)
    {
        var byQueue = new List<ushort>[Queues];
        for (var q = 0; q < Queues; q++)
            byQueue[q] = [];
        for (ushort port = 40000; byQueue.Any(l => l.Count < perQueue); port++)
        {
            var q = TapSteering.QueueOf(Udp(port, 0, 0), Queues);
            if (byQueue[q].Count < perQueue)
                byQueue[q].Add(port);
        }
        return byQueue.SelectMany(l => l).ToArray();
    }

    /// <summary>An Ethernet/IPv4/UDP frame of the flow from source port <paramref name="port"/>, carrying <paramref name="flow"/> and <paramref name="seq"/>.</summary>
    private static byte[] Udp(ushort port, int flow, int seq)
    {
        var f = new byte[14 + 20 + 8 + 8];
        f[5] = 2; // destination 00:00:00:00:00:02
        f[6] = 2;
        f[11] = 1; // source 02:00:00:00:00:01
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0800);
        f[14] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), 20 + 8 + 8);
        f[22] = 64;
        f[23] = 17;
        f.AsSpan(26, 4).Fill(10);
        f[29] = 1;
        f.AsSpan(30, 4).Fill(10);
        f[33] = 2;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(34), port);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(36), 5201);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(38), 16);
        BinaryPrimitives.WriteInt32BigEndian(f.AsSpan(42), flow);
        BinaryPrimitives.WriteInt32BigEndian(f.AsSpan(46), seq);
        return f;
    }

    private static (int Flow, int Seq) Read(byte[] frame) =>
        (BinaryPrimitives.ReadInt32BigEndian(frame.AsSpan(42)), BinaryPrimitives.ReadInt32BigEndian(frame.AsSpan(46)));
}
