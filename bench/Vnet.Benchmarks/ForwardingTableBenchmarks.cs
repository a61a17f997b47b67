using BenchmarkDotNet.Attributes;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Benchmarks;

/// <summary>
/// Rule sets shaped like a daemon's: per VM a delivery rule (any/exact), a default (exact/none) and a
/// few direct pairs (exact/exact) from adaptation, plus one flood rule (any/multicast).
/// </summary>
internal static class RuleMix
{
    public static readonly PortRef[] Ports =
    [
        PortRef.Interface("vm0"), PortRef.Interface("vm1"), PortRef.Interface("vm2"), PortRef.Interface("vm3"),
        PortRef.Link("proxy"), PortRef.Link("peer1"), PortRef.Link("peer2"), PortRef.Link("peer3"),
    ];

    public static MacAddress Vm(int i) => new(0x0200_0000_0000UL | (uint)i);

    /// <summary>Exactly <paramref name="count"/> rules; the VMs they name are 0 .. <paramref name="vms"/>-1.</summary>
    public static List<Rule> Build(int count, out int vms)
    {
        var rules = new List<Rule>(count)
        {
            new() { Id = 0, Source = MacMatch.Any, Destination = MacMatch.Multicast, Action = RuleAction.Flood },
        };
        var vm = 0;
        while (rules.Count < count)
        {
            var home = Ports[vm % Ports.Length];
            var shape = (rules.Count - 1) % 4;
            rules.Add(shape switch
            {
                0 => new Rule { Id = rules.Count, Source = MacMatch.Any, Destination = MacMatch.Exact(Vm(vm)), Action = RuleAction.To(home) },
                1 => new Rule { Id = rules.Count, Source = MacMatch.Exact(Vm(vm)), Destination = MacMatch.None, Action = RuleAction.To(Ports[4]) },
                // Direct pairs in both directions, with and without an arrival port.
                2 => new Rule { Id = rules.Count, Source = MacMatch.Exact(Vm(vm)), Destination = MacMatch.Exact(Vm(vm + 1)), Action = RuleAction.To(Ports[5]) },
                _ => new Rule
                {
                    Id = rules.Count,
                    Source = MacMatch.Exact(Vm(vm + 1)),
                    Destination = MacMatch.Exact(Vm(vm)),
                    Ingress = Ports[(vm + 1) % Ports.Length],
                    Action = RuleAction.To(home),
                },
            });
            if (shape == 3)
                vm++;
        }
        vms = Math.Max(vm, 1);
        return rules;
    }

    public static ForwardingTable Table(List<Rule> rules) =>
        new(rules, static p => Array.IndexOf(Ports, p), static _ => new RuleStats());
}

/// <summary>Cost of one <see cref="ForwardingTable.Lookup"/> at several table sizes, for hits and misses.</summary>
[MemoryDiagnoser]
public class ForwardingTableBenchmarks
{
    // Enough distinct frames to defeat branch prediction, few enough to stay out of the measurement.
    private const int Batch = 1024;

    private ForwardingTable _table = ForwardingTable.Empty;
    private (MacAddress Src, MacAddress Dst, int Ingress)[] _hits = [];
    private (MacAddress Src, MacAddress Dst, int Ingress)[] _misses = [];

    [Params(10, 1000, 100000)]
    public int Rules { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var rules = RuleMix.Build(Rules, out var vms);
        _table = RuleMix.Table(rules);
        var rng = new Random(12345);
        _hits = new (MacAddress, MacAddress, int)[Batch];
        _misses = new (MacAddress, MacAddress, int)[Batch];
        for (var i = 0; i < Batch; i++)
        {
            var src = RuleMix.Vm(rng.Next(vms));
            var dst = (i % 8) switch
            {
                0 => MacAddress.Broadcast,
                1 => new MacAddress(0x0100_5e00_0000UL | (uint)rng.Next(256)),
                _ => RuleMix.Vm(rng.Next(vms)),
            };
            _hits[i] = (src, dst, rng.Next(-1, RuleMix.Ports.Length));
            // Unknown source and unknown unicast destination: no rule matches, every subtable is probed.
            _misses[i] = (new MacAddress(0x0600_0000_0000UL | (uint)i), new MacAddress(0x0600_0100_0000UL | (uint)i), rng.Next(RuleMix.Ports.Length));
        }
        foreach (var (src, dst, ingress) in _hits)
        {
            if (_table.Lookup(src, dst, ingress).IsEmpty)
                throw new InvalidOperationException($"hit frame {src} -> {dst} matches nothing");
        }
        foreach (var (src, dst, ingress) in _misses)
        {
            if (!_table.Lookup(src, dst, ingress).IsEmpty)
                throw new InvalidOperationException($"miss frame {src} -> {dst} matches a rule");
        }
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public int LookupHit()
    {
        var table = _table;
        var matched = 0;
        foreach (var (src, dst, ingress) in _hits)
            matched += table.Lookup(src, dst, ingress).Count;
        return matched;
    }

    [Benchmark(OperationsPerInvoke = Batch)]
    public int LookupMiss()
    {
        var table = _table;
        var matched = 0;
        foreach (var (src, dst, ingress) in _misses)
            matched += table.Lookup(src, dst, ingress).Count;
        return matched;
    }
}

/// <summary>
/// Cost of <see cref="VirtualSwitch.Forward"/> per frame with ports that do nothing, so that what
/// is measured is parsing, lookup, hit counting, target selection and reference counting.
/// </summary>
[MemoryDiagnoser]
public class SwitchForwardingBenchmarks
{
    private readonly VirtualSwitch _switch = new();
    private Frame _unicast = null!;
    private Frame _broadcast = null!;

    [GlobalSetup]
    public void Setup()
    {
        foreach (var name in RuleMix.Ports)
            _switch.AddPort(new NoOpPort(name));
        var rules = RuleMix.Build(1000, out _);
        _switch.Publish(new ForwardingTable(rules, _switch.ResolvePort, static _ => new RuleStats()));
        // vm1 to vm2, arriving on vm1's port: the direct pair (exact/exact) wins, one target.
        _unicast = NewFrame(RuleMix.Vm(1), RuleMix.Vm(2), ingress: 1);
        // A broadcast from vm0: flooded to the 7 other tree ports.
        _broadcast = NewFrame(RuleMix.Vm(0), MacAddress.Broadcast, ingress: 0);
    }

    [Benchmark]
    public void ForwardUnicast()
    {
        // Forward takes over one reference and the port drops it; put it back for the next call.
        _unicast.AddReference();
        _switch.Forward(_unicast);
    }

    [Benchmark]
    public void ForwardFlood()
    {
        _broadcast.AddReference();
        _switch.Forward(_broadcast);
    }

    private static Frame NewFrame(MacAddress src, MacAddress dst, int ingress)
    {
        var frame = Frame.CreateUnpooled();
        frame.Length = 64;
        dst.Write(frame.Buffer.AsSpan(frame.Offset, 6));
        src.Write(frame.Buffer.AsSpan(frame.Offset + 6, 6));
        frame.IngressPort = ingress;
        // The benchmark adds one reference per call; start from zero so the count stays bounded.
        frame.Release();
        return frame;
    }

    private sealed class NoOpPort(PortRef name) : Port(name)
    {
        public override bool IsUp => true;

        public override bool InFloodTree => true;

        public override void Transmit(Frame frame) => frame.Release();
    }
}
