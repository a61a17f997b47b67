using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Vnet.Adaptation;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Tests.TestBed;
using Xunit.Abstractions;
using static Vnet.Tests.Functional.OverlayBed;

namespace Vnet.Tests.Functional;

/// <summary>
/// Adaptation end to end: the Proxy turns the inferred traffic into direct links and rules (auto),
/// or only says what it would do (advise), follows a VM that migrates, and advises placement; link
/// emulation makes a star link slow on demand. Policies are set with the real CLI.
/// </summary>
/// <remarks>
/// Traffic is a rate-limited iperf3 stream (4 Mbit/s): plenty for inference (the floor is
/// 10 kB/s), light on the two CI cores, and small enough that the smoothed rate falls under the
/// floor soon after it stops (tau × ln(500 kB/s / 10 kB/s) ≈ 12 s), which bounds how long
/// adaptation keeps its link afterwards.
/// </remarks>
[Collection("Netns")]
public sealed partial class AdaptationTests(ITestOutputHelper output)
{
    private const RuleOrigin Adaptation = RuleOrigin.Adaptation;

    [Fact]
    public void AutoPolicy_TrafficBetweenTwoHosts_DirectLinkCarriesItUntilTheTrafficStops()
    {
        using var o = new OverlayBed(output, hosts: 3, lan: false);
        o.StartAll(lanNic: false);
        for (var n = 1; n <= 3; n++)
            o.AddVm(n, n);
        Assert.True(o.Bed.Ping("vm1", VmIp(2), count: 2, timeoutSeconds: 10));
        Assert.Contains("policy auto, at most 2 extra link(s) per daemon", o.Cli("proxy", "adapt policy auto --budget 2"), StringComparison.Ordinal);

        var proxyAtStart = ProxyRxFrames(o);
        var (server, client) = StartIperf(o, from: 1, to: 2);
        var clock = Stopwatch.StartNew();
        Wait.For(() => AdaptationRule(o, "h1", VmMac(2), "link:h2"), TimeSpan.FromSeconds(30), "h1's adaptation rule sending vm2 over link h2");
        Wait.For(() => AdaptationRule(o, "h2", VmMac(1), "link:h1"), TimeSpan.FromSeconds(10), "h2's adaptation rule sending vm1 over link h1");
        Wait.Until(() => o.Links("h1").Any(l => l.Peer == "h2" && l.Up) && o.Links("h2").Any(l => l.Peer == "h1" && l.Up),
            TimeSpan.FromSeconds(10), "the direct link h1-h2 up at both ends");
        var carriedByStar = ProxyRxFrames(o) - proxyAtStart;
        output.WriteLine(Invariant($"link and rules in place {clock.Elapsed.TotalSeconds:0.0} s after the traffic started; until then the Proxy got {carriedByStar} frames from h1 and h2"));
        Assert.True(carriedByStar >= 50, $"the star carried only {carriedByStar} frames before adaptation");

        var status = AdaptStatus(o);
        Assert.Equal("auto", EnumText.Of(status.Policy));
        Assert.Equal(2, status.Budget);
        Assert.Equal(["h1 -> h2"], status.Links);
        Assert.Contains(status.Plan, p => p.StartsWith("link h1 <-> h2: ", StringComparison.Ordinal));
        Assert.Contains(status.Log, a => a.Applied && a.Daemon == "h1" && a.Change.StartsWith("add link h2", StringComparison.Ordinal));
        Assert.Contains(status.Log, a => a.Applied && a.Daemon == "h2" && a.Change == $"add rule any -> {VmMac(1)} to link:h1");
        // Both ends hold the link as adaptation's, the one dialed into as well.
        Assert.Equal("adaptation", LinkOrigin(o, "h1", "h2"));
        Assert.Equal("adaptation", LinkOrigin(o, "h2", "h1"));
        // Only the chatty pair's hosts are touched.
        Assert.DoesNotContain(o.Rules("h3"), r => r.Origin == Adaptation);
        Assert.DoesNotContain(o.Links("h3"), l => l.Peer is "h1" or "h2");
        AssertDumpLeavesAdaptationOut(o);

        // The pair's traffic has left the Proxy: only stray broadcasts may still cross it. Frames
        // already in flight when the rules came are let through first.
        Thread.Sleep(500);
        var proxyBefore = ProxyRxFrames(o);
        var hitsBefore = (H1: AdaptationRule(o, "h1", VmMac(2), "link:h2")!.Bytes, H2: AdaptationRule(o, "h2", VmMac(1), "link:h1")!.Frames);
        Thread.Sleep(3000);
        var proxyAfter = ProxyRxFrames(o);
        var hitsAfter = (H1: AdaptationRule(o, "h1", VmMac(2), "link:h2")!.Bytes, H2: AdaptationRule(o, "h2", VmMac(1), "link:h1")!.Frames);
        output.WriteLine($"in 3 s: the Proxy got {proxyAfter - proxyBefore} frames from h1 and h2; h1's rule carried {hitsAfter.H1 - hitsBefore.H1} bytes to vm2, h2's {hitsAfter.H2 - hitsBefore.H2} frames to vm1");
        Assert.False(client.HasExited, "iperf3 ended early: " + client.Output);
        Assert.True(proxyAfter - proxyBefore <= 5, $"the Proxy still got {proxyAfter - proxyBefore} frames from h1 and h2");
        // 4 Mbit/s for 3 s is 1.5 MB (in super-frames of up to 64 KiB: counting frames says little); ACKs come back.
        Assert.True(hitsAfter.H1 - hitsBefore.H1 >= 1_000_000, $"h1's adaptation rule carried only {hitsAfter.H1 - hitsBefore.H1} bytes");
        Assert.True(hitsAfter.H2 - hitsBefore.H2 >= 10, $"h2's adaptation rule carried only {hitsAfter.H2 - hitsBefore.H2} frames");

        client.Stop();
        server.Stop();
        var stopped = Stopwatch.StartNew();
        Wait.Until(() => AdaptStatus(o).Links.Count == 0 && NoAdaptation(o, "h1") && NoAdaptation(o, "h2") &&
                !o.Links("h1").Any(l => l.Peer == "h2") && !o.Links("h2").Any(l => l.Peer == "h1"),
            TimeSpan.FromSeconds(40), "adaptation to remove its link and rules once the traffic stopped");
        output.WriteLine(Invariant($"link and rules removed {stopped.Elapsed.TotalSeconds:0.0} s after the traffic stopped"));
        status = AdaptStatus(o);
        Assert.Contains(status.Log, a => a.Applied && a.Daemon == "h1" && a.Change == "remove link h2");
        Assert.Contains(status.Log, a => a.Applied && a.Daemon == "h1" && a.Change == $"remove rule any -> {VmMac(2)} to link:h2");
        Assert.Empty(status.Plan);
        // The star carries the pair again.
        Assert.True(o.Bed.Ping("vm1", VmIp(2), count: 2, timeoutSeconds: 10));
    }

    [Fact]
    public void AdvisePolicy_TrafficBetweenTwoHosts_PlansAndAdvisesColocationButChangesNothing()
    {
        using var o = new OverlayBed(output, hosts: 3, lan: false);
        o.StartAll(lanNic: false);
        for (var n = 1; n <= 3; n++)
            o.AddVm(n, n);
        Assert.True(o.Bed.Ping("vm1", VmIp(2), count: 2, timeoutSeconds: 10));
        o.Cli("proxy", "adapt policy advise --budget 2");

        var (server, client) = StartIperf(o, from: 1, to: 2);
        var clock = Stopwatch.StartNew();
        var status = Wait.For(() => AdaptStatus(o) is { Plan.Count: > 0 } s && s.Log.Count >= 4 ? s : null,
            TimeSpan.FromSeconds(30), "a plan and the would-be changes in adapt status");
        output.WriteLine(Invariant($"plan after {clock.Elapsed.TotalSeconds:0.0} s:"));
        output.WriteLine(o.Cli("proxy", "adapt status"));
        Assert.Contains(status.Plan, p => p.StartsWith("link h1 <-> h2: ", StringComparison.Ordinal));
        Assert.All(status.Log, a => Assert.False(a.Applied));
        Assert.Contains(status.Log, a => a.Daemon == "h1" && a.Change.StartsWith("add link h2", StringComparison.Ordinal));
        Assert.Contains(status.Log, a => a.Daemon == "h1" && a.Change == $"add rule any -> {VmMac(2)} to link:h2");
        Assert.Contains(status.Log, a => a.Daemon == "h2" && a.Change.StartsWith("add link h1", StringComparison.Ordinal));
        Assert.Contains(status.Log, a => a.Daemon == "h2" && a.Change == $"add rule any -> {VmMac(1)} to link:h1");
        o.Daemon("proxy").WaitForOutput("Adaptation advised at h1: add link h2", TimeSpan.FromSeconds(5));

        // Placement advice: with a free slot each, one move puts the pair on one host.
        var plan = Placement(o, null);
        output.WriteLine(o.Cli("proxy", "adapt plan"));
        var move = Assert.Single(plan.Moves);
        Assert.True(move is { From: "h1", To: "h2" } && move.Vm.ToString() == VmMac(1) || move is { From: "h2", To: "h1" } && move.Vm.ToString() == VmMac(2),
            $"the move is {move.Vm} {move.From} -> {move.To}");
        Assert.True(plan.InterHostBefore > 0 && plan.InterHostAfter <= 0.01 * plan.InterHostBefore,
            Invariant($"inter-host traffic {plan.InterHostBefore:0} -> {plan.InterHostAfter:0} B/s"));
        // Full hosts: nothing can move. Only h1 free: vm2 joins vm1.
        Assert.Empty(Placement(o, "h1=1,h2=1,h3=1").Moves);
        var toH1 = Assert.Single(Placement(o, "h1=2,h2=1,h3=1").Moves);
        Assert.Equal((VmMac(2), "h2", "h1"), (toH1.Vm.ToString(), toH1.From, toH1.To));

        // However long it is given (an apply takes well under a second), advise changes nothing.
        Thread.Sleep(1000);
        Assert.False(client.HasExited, "iperf3 ended early: " + client.Output);
        Assert.Empty(AdaptStatus(o).Links);
        foreach (var h in new[] { "h1", "h2", "h3" })
        {
            Assert.True(NoAdaptation(o, h), $"{h} has adaptation's rules or links");
            Assert.Equal(["proxy"], o.Links(h).Select(l => l.Peer));
        }
        // Placement advice moves nothing either.
        Assert.Contains(o.Vms("proxy"), v => v.Mac.ToString() == VmMac(1) && v.Daemon == "h1");
        Assert.Contains(o.Vms("proxy"), v => v.Mac.ToString() == VmMac(2) && v.Daemon == "h2");
        client.Stop();
        server.Stop();
    }

    [Fact]
    public async Task AutoPolicy_VmMigratesWhileTrafficFlows_StaleRuleGoesAndTheLinkFollowsToTheNewHost()
    {
        using var o = new OverlayBed(output, hosts: 3, lan: false);
        o.StartAll(lanNic: false);
        o.AddVm(1, 1);
        o.AddVm(2, 2);
        Assert.True(o.Bed.Ping("vm1", VmIp(2), count: 2, timeoutSeconds: 10));
        o.Cli("proxy", "adapt policy auto --budget 2");

        // 16 MiB at 1 MiB/s: it flows before, during and after the move, and every byte is checked.
        const long Bytes = 16L << 20;
        var received = TcpTransfer.Receive(o.Bed.Prefix + "-vm2", 7000, TimeSpan.FromSeconds(90));
        var sent = TcpTransfer.Send(o.Bed.Prefix + "-vm1", new IPEndPoint(IPAddress.Parse(VmIp(2)), 7000), Bytes, 1L << 20, TimeSpan.FromSeconds(90));
        var clock = Stopwatch.StartNew();
        Wait.For(() => AdaptationRule(o, "h1", VmMac(2), "link:h2"), TimeSpan.FromSeconds(30), "h1's adaptation rule sending vm2 over link h2");
        Wait.Until(() => o.Links("h1").Any(l => l.Peer == "h2" && l.Up), TimeSpan.FromSeconds(10), "the direct link h1-h2 up");
        output.WriteLine(Invariant($"link h1-h2 in place {clock.Elapsed.TotalSeconds:0.0} s after the transfer started"));
        Assert.False(sent.IsCompleted, "the transfer ended before the migration");

        var moved = Stopwatch.StartNew();
        o.MoveVm(2, toHost: 3, announce: true);
        Wait.Until(() => AdaptationRule(o, "h1", VmMac(2), "link:h2") is null, TimeSpan.FromSeconds(5), "h1 to drop its rule sending vm2 to h2");
        output.WriteLine(Invariant($"h1 dropped the stale rule {moved.Elapsed.TotalMilliseconds:0} ms after the move began"));
        Wait.For(() => AdaptationRule(o, "h1", VmMac(2), "link:h3"), TimeSpan.FromSeconds(20), "h1's adaptation rule sending vm2 over link h3");
        Wait.For(() => AdaptationRule(o, "h3", VmMac(1), "link:h1"), TimeSpan.FromSeconds(10), "h3's adaptation rule sending vm1 over link h1");
        Wait.Until(() => o.Links("h1").Any(l => l.Peer == "h3" && l.Up), TimeSpan.FromSeconds(10), "the direct link h1-h3 up");
        Assert.Equal("adaptation", LinkOrigin(o, "h1", "h3"));
        Assert.Equal("adaptation", LinkOrigin(o, "h3", "h1"));
        output.WriteLine(Invariant($"link h1-h3 and its rules in place {moved.Elapsed.TotalSeconds:0.0} s after the move"));
        // The link that served the old placement goes in the same change.
        Wait.Until(() => AdaptStatus(o).Links.SequenceEqual(["h1 -> h3"]) && !o.Links("h1").Any(l => l.Peer == "h2") && NoAdaptation(o, "h2"),
            TimeSpan.FromSeconds(10), "adaptation to keep only link h1-h3");

        var results = await Task.WhenAll(sent, received).WaitAsync(TimeSpan.FromSeconds(90));
        output.WriteLine($"sent {results[0].Bytes}, received {results[1].Bytes}; transfer took {clock.Elapsed.TotalSeconds:0.0} s");
        Assert.Equal(Bytes, results[0].Bytes);
        Assert.Equal(results[0], results[1]);
        Assert.True(AdaptationRule(o, "h1", VmMac(2), "link:h3")!.Frames > 0, "the new link carried nothing");
    }

    [Fact]
    public void LinkEmulate_DelayAtBothEndsOfAStarLink_RaisesVmRttAndNoneRemovesIt()
    {
        using var o = new OverlayBed(output, hosts: 2, lan: false);
        o.StartAll(lanNic: false);
        o.AddVm(1, 1);
        o.AddVm(2, 2);
        Assert.True(o.Bed.Ping("vm1", VmIp(2), count: 2, timeoutSeconds: 10));
        var before = AverageRtt(o, "vm1", VmIp(2));

        // vm1 -> vm2 goes h1 -> proxy -> h2 and back: each direction of link h1-proxy adds 20 ms.
        output.WriteLine(o.Cli("h1", "link emulate proxy delay=20ms"));
        output.WriteLine(o.Cli("proxy", "link emulate h1 delay=20ms"));
        Assert.Contains("delay=20ms", o.Links("h1").Single(l => l.Peer == "proxy").Emulation, StringComparison.Ordinal);
        Assert.Contains("delay=20ms", o.Links("proxy").Single(l => l.Peer == "h1").Emulation, StringComparison.Ordinal);
        Assert.Null(o.Links("proxy").Single(l => l.Peer == "h2").Emulation);
        var delayed = AverageRtt(o, "vm1", VmIp(2));

        o.Cli("h1", "link emulate proxy none");
        o.Cli("proxy", "link emulate h1 none");
        Assert.Null(o.Links("h1").Single(l => l.Peer == "proxy").Emulation);
        var after = AverageRtt(o, "vm1", VmIp(2));
        output.WriteLine(Invariant($"vm1 -> vm2 RTT: {before:0.00} ms, with 20 ms each way {delayed:0.00} ms, without again {after:0.00} ms"));
        Assert.True(delayed - before >= 35, Invariant($"the RTT rose by {delayed - before:0.00} ms only"));
        Assert.True(after < before + 10, Invariant($"the RTT stayed at {after:0.00} ms (was {before:0.00} ms)"));
    }

    // ------------------------------------------------------------------ helpers

    private static (BackgroundProcess Server, BackgroundProcess Client) StartIperf(OverlayBed o, int from, int to)
    {
        var server = o.Bed.Start($"vm{to}", "iperf3-server", "iperf3", "-s", "--forceflush");
        server.WaitForOutput("Server listening", TimeSpan.FromSeconds(10));
        var client = o.Bed.Start($"vm{from}", "iperf3-client", "iperf3", "-c", VmIp(to), "-t", "300", "-b", "4M", "-l", "16K", "--forceflush");
        return (server, client);
    }

    private static AdaptationStatus AdaptStatus(OverlayBed o) =>
        DaemonJson.FromNode<AdaptationStatus>(JsonNode.Parse(o.Cli("proxy", "adapt status --json")))!;

    private static PlacementPlan Placement(OverlayBed o, string? capacity) =>
        DaemonJson.FromNode<PlacementPlan>(JsonNode.Parse(o.Cli("proxy", "adapt plan --json" + (capacity is null ? "" : " --capacity " + capacity))))!;

    private static RuleStatus? AdaptationRule(OverlayBed o, string daemon, string dst, string action) =>
        o.Rules(daemon).SingleOrDefault(r => r.Origin == Adaptation && r.Destination.ToString() == dst && r.Action.ToString() == action);

    /// <summary>No rule of adaptation's and no link but the star one.</summary>
    private static bool NoAdaptation(OverlayBed o, string daemon) =>
        !o.Rules(daemon).Any(r => r.Origin == Adaptation) && o.Links(daemon).All(l => l.Star);

    private static string? LinkOrigin(OverlayBed o, string daemon, string peer) =>
        DaemonJson.FromNode<DaemonState>(o.Control(daemon, "state"))!.Links.SingleOrDefault(l => l.Peer == peer) is { } link ? EnumText.Of(link.Origin) : null;

    private static long ProxyRxFrames(OverlayBed o) => o.Links("proxy").Where(l => l.Peer is "h1" or "h2").Sum(l => l.RxFrames);

    /// <summary>`vnet topo dump` is the user's overlay: adaptation's link and rules never show in it.</summary>
    private void AssertDumpLeavesAdaptationOut(OverlayBed o)
    {
        var dump = o.Cli("proxy", "topo dump");
        output.WriteLine(dump);
        Assert.DoesNotMatch(HostToHostLink(), dump);
        Assert.DoesNotContain("to link h", dump, StringComparison.Ordinal);
    }

    [GeneratedRegex(@"^link h\d -> h\d", RegexOptions.Multiline)]
    private static partial Regex HostToHostLink();

    /// <summary>Mean RTT of 10 pings, in milliseconds.</summary>
    private static double AverageRtt(OverlayBed o, string ns, string ip)
    {
        var text = o.Bed.Run(ns, $"ping -n -q -c 10 -i 0.2 -w 15 {ip}", timeoutSeconds: 25);
        var m = RttLine().Match(text);
        Assert.True(m.Success, "no rtt line in: " + text);
        return double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    [GeneratedRegex(@"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms")]
    private static partial Regex RttLine();
}
