using Vnet.Frames;
using Vnet.Inference;
using static Vnet.Tests.Inference.Vttif;

namespace Vnet.Tests.Inference;

/// <summary>
/// Whole-pipeline runs on recorded matrices: daemons that count what their VMs send (with noisy
/// rates, background chatter and broadcasts), report cumulative counters every second at their own
/// jittered moments, a Proxy that ticks the aggregator and the inference every second.
/// </summary>
public sealed class RecordedPatternTests
{
    public static TheoryData<string, int, int> Patterns => new()
    {
        { "all-to-all", 4, 3 },
        { "all-to-all", 6, 3 },
        { "ring", 5, 3 },
        { "ring", 8, 4 },
        { "mesh", 6, 3 },
        { "mesh", 8, 4 },
    };

    [Theory]
    [MemberData(nameof(Patterns))]
    public void Pipeline_ApplicationPattern_InferredWithinFivePeriodsAndOnlyOnce(string pattern, int vms, int daemons)
    {
        var edges = Edges(pattern, vms);
        var run = new Recording(vms, daemons, seed: vms * 31 + daemons);

        // The network idles first: background chatter alone never makes a topology.
        run.RunUntil(0, _ => false);
        Assert.Empty(run.Inference.Current.Edges);
        Assert.Empty(run.Inference.Events);

        run.RunUntil(5, p => edges.Contains(p));
        Assert.Equal(Sorted(edges), Pairs(run.Inference.Current));

        run.RunUntil(60, p => edges.Contains(p));
        Assert.Single(run.Inference.Events);
        Assert.Equal(Sorted(edges), Pairs(run.Inference.Current));
    }

    [Fact]
    public void Pipeline_SwitchRingToMeshWithHoldCoveringTheFilter_OneEvent()
    {
        // HoldTime above tau * ln(1 / PruneThreshold) = 6.9 s: the old edges have faded before the
        // new set has held, so a switch is one event.
        var options = new VttifOptions { HoldTime = TimeSpan.FromSeconds(8) };
        var ring = Edges("ring", 6);
        var mesh = Edges("mesh", 6);
        var run = new Recording(6, 3, seed: 5, options);
        run.RunUntil(30, p => ring.Contains(p));
        Assert.Single(run.Inference.Events);

        run.RunUntil(90, p => mesh.Contains(p));

        Assert.Equal(2, run.Inference.Events.Count);
        var e = run.Inference.Events[1];
        Assert.Equal(Sorted(mesh.Except(ring)), e.Added);
        Assert.Equal(Sorted(ring.Except(mesh)), e.Removed);
        Assert.Equal(Sorted(mesh), Pairs(run.Inference.Current));
    }

    [Fact]
    public void Pipeline_SwitchRingToMeshWithDefaultHold_OneEvent()
    {
        // With the default 3 s hold the new edges pass the threshold long before the old ones fade
        // under it; the wait restarts while old edges are still falling, so the switch is one event.
        var ring = Edges("ring", 6);
        var mesh = Edges("mesh", 6);
        var run = new Recording(6, 3, seed: 9);
        run.RunUntil(30, p => ring.Contains(p));
        Assert.Single(run.Inference.Events);

        run.RunUntil(90, p => mesh.Contains(p));

        var switchEvents = run.Inference.EventsSince(1);
        var e = Assert.Single(switchEvents);
        Assert.Equal(Sorted(mesh.Except(ring)), e.Added);
        Assert.Equal(Sorted(ring.Except(mesh)), e.Removed);
        Assert.Equal(Sorted(mesh), Pairs(run.Inference.Current));
        // Up to a report period to see it, 6.9 s for the old edges to fade, 3 s of hold.
        Assert.True(e.At <= T(30 + 13), "the switch is complete within 13 s");
    }

    private static HashSet<VmPair> Edges(string pattern, int n)
    {
        var edges = new HashSet<VmPair>();
        switch (pattern)
        {
            case "all-to-all":
                for (var i = 1; i <= n; i++)
                {
                    for (var j = i + 1; j <= n; j++)
                        edges.Add(P(i, j));
                }
                break;
            case "ring":
                for (var i = 1; i <= n; i++)
                    edges.Add(P(i, (i % n) + 1));
                break;
            case "mesh":
                // Two rows, each VM talks to its grid neighbours (as a stencil code does).
                var cols = n / 2;
                for (var i = 0; i < n; i++)
                {
                    if (i % cols != cols - 1)
                        edges.Add(P(i + 1, i + 2));
                    if (i + cols < n)
                        edges.Add(P(i + 1, i + cols + 1));
                }
                break;
            default:
                throw new ArgumentException(pattern, nameof(pattern));
        }
        return edges;
    }

    /// <summary>The simulated system, stepped every 50 ms.</summary>
    private sealed class Recording
    {
        private const double Step = 0.05;
        private const int StepsPerSecond = 20;

        private readonly int _vms;
        private readonly int _daemons;
        private readonly Random _random;
        private readonly TrafficAggregator _aggregator;
        private readonly Dictionary<(int Src, int Dst), double> _bytes = [];
        private readonly Dictionary<(int Src, int Dst, int Second), double> _noise = [];
        private readonly double[] _nextReport;
        private long _step;

        public Recording(int vms, int daemons, int seed, VttifOptions? options = null)
        {
            _vms = vms;
            _daemons = daemons;
            _random = new Random(seed);
            _aggregator = new TrafficAggregator(options);
            Inference = new TopologyInference(options);
            // Daemons start 20 s before the test's time 0, each at its own phase of the second.
            _step = -20 * StepsPerSecond;
            _nextReport = [.. Enumerable.Range(0, daemons).Select(_ => -20 + 0.1 + (_random.NextDouble() * 0.7))];
        }

        public TopologyInference Inference { get; }

        private double Now => _step / (double)StepsPerSecond;

        /// <summary>Runs to <paramref name="until"/> seconds with <paramref name="talking"/> pairs exchanging bulk traffic.</summary>
        public void RunUntil(double until, Func<VmPair, bool> talking)
        {
            while (Now < until)
            {
                _step++;
                var second = (int)Math.Floor(Now);
                for (var s = 1; s <= _vms; s++)
                {
                    for (var d = 1; d <= _vms; d++)
                    {
                        if (s == d)
                            continue;
                        // Bulk one way, acknowledgements the other; 1-2 kB/s of chatter for everyone.
                        var rate = talking(P(s, d)) ? (s < d ? 800_000 : 120_000) * Noise(s, d, second) : 1_000 + (500 * Noise(s, d, second));
                        _bytes[(s, d)] = _bytes.GetValueOrDefault((s, d)) + (rate * Step);
                    }
                    _bytes[(s, 0)] = _bytes.GetValueOrDefault((s, 0)) + (300 * Step);
                }

                for (var daemon = 0; daemon < _daemons; daemon++)
                {
                    if (_nextReport[daemon] > Now)
                        continue;
                    _aggregator.Report($"h{daemon}", T(Now), Report(daemon));
                    _nextReport[daemon] += 1 + ((_random.NextDouble() - 0.5) * 0.1);
                }

                if (_step % StepsPerSecond == 0)
                    Inference.Update(_aggregator.Tick(T(Now)), T(Now));
            }
        }

        // +-20 % per pair and second.
        private double Noise(int s, int d, int second)
        {
            if (!_noise.TryGetValue((s, d, second), out var n))
                _noise[(s, d, second)] = n = 0.8 + (_random.NextDouble() * 0.4);
            return n;
        }

        // VM i lives on daemon (i - 1) % daemons and that daemon counts what it sends.
        private List<MatrixEntry> Report(int daemon) =>
        [
            .. _bytes
                .Where(p => (p.Key.Src - 1) % _daemons == daemon)
                .Select(p => new MatrixEntry(Mac(p.Key.Src), p.Key.Dst == 0 ? MacAddress.Broadcast : Mac(p.Key.Dst), (long)p.Value, (long)(p.Value / 1000))),
        ];
    }
}
