using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Vnet.Daemon;
using Vnet.Inference;
using Vnet.Patterns;
using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// VTTIF end to end: BSP patterns (<c>vnet patterns</c>, one process per VM namespace) run across
/// hosts, and the Proxy must infer exactly the pattern's edge set, in bounded time, and see a
/// pattern switch as one change.
/// </summary>
/// <remarks>
/// Two VMs on the same host talk through that host's bridge: their frames never reach the
/// daemon's TAP, so no daemon can count them. Where VMs share a host, the placement keeps every
/// edge of the pattern between hosts (checked below); the co-located pairs are non-edges, which
/// the inference could not show anyway. All-to-all has no non-edges, so it gets a host per VM.
/// </remarks>
[Collection("Netns")]
public sealed class InferenceTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Period = VttifOptions.Default.ReportPeriod;

    [Theory]
    [InlineData("all-to-all", new[] { 1, 2, 3, 4 })]
    [InlineData("ring", new[] { 1, 2, 3, 1, 2, 3 })]
    [InlineData("neighbor-mesh", new[] { 1, 2, 3, 2, 3, 1 })]
    [InlineData("tree", new[] { 1, 2, 3, 1, 3, 2 })]
    public void Pattern_RunAmongVmsOnSeveralHosts_InferredTopologyIsExactlyItsEdgeSet(string pattern, int[] hostOfRank)
    {
        Assert.True(PatternGraph.TryParse(pattern, out var kind));
        var n = hostOfRank.Length;
        var expected = ExpectedEdges(kind, n);
        foreach (var (a, b) in kind.Edges(n))
            Assert.True(hostOfRank[a] != hostOfRank[b], $"edge {a}-{b} would join two VMs of one host, which no daemon sees");

        using var o = new OverlayBed(output, hosts: hostOfRank.Max(), lan: false);
        o.StartAll(lanNic: false);
        for (var rank = 0; rank < n; rank++)
            o.AddVm(rank + 1, hostOfRank[rank]);

        var ranks = StartPattern(o, pattern, n, 7000);
        var (clock, startedAt) = WaitFirstRound(ranks[0]);
        var inferred = WaitForTopology(o, expected, clock, TimeSpan.FromSeconds(30), pattern);
        var fromRound1 = (inferred.Topology.Since - startedAt) / Period;
        var fromTraffic = (inferred.Topology.Since - inferred.TrafficSeenAfter) / Period;
        output.WriteLine(Invariant($"{pattern} ({n} VMs on {hostOfRank.Max()} hosts): inferred {fromRound1:0.00} report periods after round 1, {fromTraffic:0.00} after the Proxy's matrix first carried the traffic; seen by polling {inferred.Seen.TotalSeconds:0.00} s after round 1"));
        var events = Events(o, 0);
        foreach (var e in events)
            output.WriteLine(Invariant($"  event {e.Id} at +{(e.At - startedAt).TotalSeconds:0.00} s: +[{string.Join(" ", e.Added)}] -[{string.Join(" ", e.Removed)}]"));

        // The first topology is the whole pattern at once, not a series of partial ones.
        var first = Assert.Single(events);
        Assert.Equal(expected, EdgeSet(first.Edges));
        Assert.Empty(first.Removed);

        // How fast, in report periods (the Proxy ticks once a period; the hold is 3 periods):
        // - From the tick at which the Proxy's matrix first carried the traffic, at most 5 (the
        //   requirement): the candidate set is whole at that tick, or one or two later when a
        //   host's first report covered only a sliver of the traffic (its edges then fall under
        //   10 % of the strongest), and must then hold 3 periods. Measured: 3 or 4.
        // - From round 1, at most 7: before the Proxy can see the traffic, each host reports on
        //   its own clock (up to a period later) and the Proxy folds reports in at its own ticks
        //   (up to a period more). Measured: 3.5 to 4.9.
        // A quarter period more on both covers tick jitter and the poll's resolution.
        Assert.True(fromTraffic <= 5.25, Invariant($"inferred {fromTraffic:0.00} report periods after the Proxy first saw the traffic"));
        Assert.True(fromRound1 <= 7.25, Invariant($"inferred {fromRound1:0.00} report periods after round 1"));

        // The CLI shows the same edge set.
        var cli = DaemonJson.FromNode<VttifTopology>(JsonNode.Parse(o.Cli("proxy", "vttif topology --json")))!;
        Assert.Equal(expected, EdgeSet(cli.Edges));

        foreach (var r in ranks)
            r.Stop();
    }

    /// <summary>
    /// Ring to all-to-all adds the diagonals; back to the ring removes them, which is the hard way:
    /// the new set passes the threshold at once, while the dropped edges take about 7 s to fade
    /// under it. Each switch must be one event with exactly those edges, and nothing after it.
    /// </summary>
    [Fact]
    public void Pattern_SwitchedMidRun_EachSwitchIsOneChangeEvent()
    {
        const int N = 4;
        var ring = ExpectedEdges(PatternKind.Ring, N);
        var allToAll = ExpectedEdges(PatternKind.AllToAll, N);
        using var o = new OverlayBed(output, hosts: N, lan: false);
        o.StartAll(lanNic: false);
        for (var v = 1; v <= N; v++)
            o.AddVm(v, v);

        var ranks = StartPattern(o, "ring", N, 7000);
        var (clock, _) = WaitFirstRound(ranks[0]);
        WaitForTopology(o, ring, clock, TimeSpan.FromSeconds(30), "the ring");

        // Each run gets a port of its own: the previous one's sockets may linger in TIME_WAIT.
        ranks = Switch(o, ranks, "all-to-all", 7001, allToAll, added: allToAll.Except(ring), removed: []);
        ranks = Switch(o, ranks, "ring", 7002, ring, added: [], removed: allToAll.Except(ring));

        foreach (var r in ranks)
            r.Stop();
    }

    /// <summary>Stops the running pattern, starts the next among the same VMs and checks the one event it makes.</summary>
    private List<BackgroundProcess> Switch(OverlayBed o, List<BackgroundProcess> running, string next, int port, HashSet<string> expected,
        IEnumerable<string> added, IEnumerable<string> removed)
    {
        var lastId = Events(o, 0).Max(e => e.Id);
        // The CLI's view of the same: `vnet vttif watch` prints each change from now on.
        var watch = o.Bed.Start("proxy", $"watch-{next}", "dotnet", OverlayBed.VnetDll, "vttif", "watch", "--timeout", "90", "--socket", o.SocketOf("proxy"));
        Thread.Sleep(1500);
        foreach (var r in running)
            r.Stop();
        var stoppedAt = DateTimeOffset.UtcNow;
        var ranks = StartPattern(o, next, running.Count, port);
        var (clock, startedAt) = WaitFirstRound(ranks[0]);
        var inferred = WaitForTopology(o, expected, clock, TimeSpan.FromSeconds(40), next);
        // A flapping series would go on after its first change: give it a hold time and two
        // periods more to show itself.
        Thread.Sleep(VttifOptions.Default.HoldTime + 2 * Period);

        var after = Events(o, lastId);
        foreach (var e in after)
        {
            output.WriteLine(Invariant($"switch to {next}: event {e.Id} {(e.At - stoppedAt).TotalSeconds:0.00} s after the old pattern stopped, {(e.At - startedAt).TotalSeconds:0.00} s after round 1 of {next}: +[{string.Join(" ", e.Added)}] -[{string.Join(" ", e.Removed)}]"));
        }
        var change = Assert.Single(after);
        Assert.Equal(added.Order(StringComparer.Ordinal), change.Added.Select(NormalizePair).Order(StringComparer.Ordinal));
        Assert.Equal(removed.Order(StringComparer.Ordinal), change.Removed.Select(NormalizePair).Order(StringComparer.Ordinal));
        Assert.Equal(expected, EdgeSet(change.Edges));
        Assert.Equal(inferred.Topology.Since, change.At);
        watch.Stop();
        var line = Assert.Single(watch.Lines, l => l.Contains(" change ", StringComparison.Ordinal));
        Assert.Contains($" change {change.Id}: {expected.Count} edges; +[{string.Join(" ", change.Added)}] -[{string.Join(" ", change.Removed)}]", line, StringComparison.Ordinal);
        return ranks;
    }

    // ------------------------------------------------------------------ helpers

    /// <summary>An event names a pair as "A-B" (MACs with colons, A before B).</summary>
    private static string NormalizePair(string pair)
    {
        var dash = pair.IndexOf('-', StringComparison.Ordinal);
        return Pair(pair[..dash], pair[(dash + 1)..]);
    }

    private static HashSet<string> ExpectedEdges(PatternKind kind, int n) =>
        kind.Edges(n).Select(e => Pair(OverlayBed.VmMac(e.Item1 + 1), OverlayBed.VmMac(e.Item2 + 1))).ToHashSet();

    private static string Pair(string a, string b)
    {
        a = a.ToLowerInvariant();
        b = b.ToLowerInvariant();
        return string.CompareOrdinal(a, b) <= 0 ? $"{a}-{b}" : $"{b}-{a}";
    }

    private static HashSet<string> EdgeSet(IEnumerable<TopologyEdge> edges) => edges.Select(e => Pair(e.A.ToString(), e.B.ToString())).ToHashSet();

    /// <summary>Starts rank i of the pattern in VM i + 1; enough rounds to keep the traffic flowing for the whole test.</summary>
    private static List<BackgroundProcess> StartPattern(OverlayBed o, string pattern, int n, int port, string bytes = "256K")
    {
        var peers = string.Join(',', Enumerable.Range(1, n).Select(v => $"{OverlayBed.VmIp(v)}:{port}"));
        return Enumerable.Range(0, n).Select(rank => o.Bed.Start($"vm{rank + 1}", $"{pattern}-rank{rank}", "dotnet", OverlayBed.VnetDll,
            "patterns", "--pattern", pattern, "--peers", peers, "--rank", rank.ToString(CultureInfo.InvariantCulture),
            "--bytes", bytes, "--rounds", "1000000")).ToList();
    }

    /// <summary>Traffic starts with round 1 (setup and the start barrier carry next to nothing).</summary>
    private static (Stopwatch Clock, DateTimeOffset At) WaitFirstRound(BackgroundProcess rank0)
    {
        rank0.WaitForOutput("round 1:", TimeSpan.FromSeconds(40));
        return (Stopwatch.StartNew(), DateTimeOffset.UtcNow);
    }

    private static VttifTopology CurrentTopology(OverlayBed o) => DaemonJson.FromNode<VttifTopology>(o.Control("proxy", "vttif.topology"))!;

    private static List<VttifEvent> Events(OverlayBed o, long since) =>
        DaemonJson.FromNode<List<VttifEvent>>(o.Control("proxy", "vttif.events", new JsonObject { ["since"] = since })) ?? [];

    /// <summary>What polling the Proxy saw while a pattern got inferred.</summary>
    private sealed record Inferred(VttifTopology Topology, DateTimeOffset TrafficSeenAfter, TimeSpan Seen);

    /// <summary>
    /// Polls the Proxy until its topology is <paramref name="expected"/>. Also notes when its
    /// smoothed matrix first carried the pattern's traffic: the matrix changes only at the Proxy's
    /// ticks, so that tick came after the previous poll was sent (the time returned: an upper
    /// bound on the latency measured from it) and before the poll that saw it.
    /// </summary>
    private Inferred WaitForTopology(OverlayBed o, HashSet<string> expected, Stopwatch clock, TimeSpan timeout, string what)
    {
        var vms = expected.SelectMany(p => p.Split('-')).ToHashSet();
        var deadline = clock.Elapsed + timeout;
        DateTimeOffset? trafficAfter = null;
        VttifTopology? last = null;
        var previousPoll = DateTimeOffset.UtcNow;
        var nextTopologyPoll = TimeSpan.Zero;
        while (true)
        {
            var poll = DateTimeOffset.UtcNow;
            if (trafficAfter is null && CarriesTraffic(o, vms))
                trafficAfter = previousPoll;
            previousPoll = poll;
            if (clock.Elapsed >= nextTopologyPoll)
            {
                nextTopologyPoll = clock.Elapsed + TimeSpan.FromMilliseconds(250);
                if (EdgeSet((last = CurrentTopology(o)).Edges).SetEquals(expected))
                    return new Inferred(last, trafficAfter ?? previousPoll, clock.Elapsed);
            }
            if (clock.Elapsed > deadline)
                break;
            Thread.Sleep(50);
        }
        output.WriteLine($"expected: {string.Join(" ", expected.Order(StringComparer.Ordinal))}");
        output.WriteLine($"inferred: {string.Join(" ", last?.Edges.Select(e => $"{Pair(e.A.ToString(), e.B.ToString())}={e.BytesPerSecond:0}") ?? [])}");
        output.WriteLine(o.Cli("proxy", "vttif matrix"));
        throw new TimeoutException($"timed out after {timeout.TotalSeconds:0} s waiting for the inferred topology to be {what}");
    }

    /// <summary>True once the Proxy's smoothed matrix has a pair of these VMs above the pruning floor (setup traffic stays far below).</summary>
    private static bool CarriesTraffic(OverlayBed o, HashSet<string> vms) =>
        DaemonJson.FromNode<VttifMatrix>(o.Control("proxy", "vttif.matrix"))!.Cells.Any(c =>
            vms.Contains(c.Src.ToString()) && vms.Contains(c.Dst.ToString()) && c.BytesPerSecond >= VttifOptions.Default.MinRate);

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
