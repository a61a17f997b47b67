using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// Faults while VMs move data: a host daemon killed, a host's WAN path cut, a lossy WAN. In each,
/// the TCP transfers (a VM to a VM on another host, that VM to the LAN machine and back) finish
/// with every byte (SHA-256 on both ends), and afterwards the overlay converges by itself: the
/// Proxy places every VM where it is and every VM pings every other VM and the LAN.
/// </summary>
[Collection("Netns")]
public sealed partial class FaultTests(ITestOutputHelper output)
{
    private static readonly TimeSpan TransferTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan ConvergeTimeout = TimeSpan.FromSeconds(20);
    private static readonly int[] Vms = [1, 2];

    [Fact]
    public async Task HostDaemon_KilledAndRestartedMidTransfer_TransfersCompleteAndOverlayConverges()
    {
        using var o = new OverlayBed(output, hosts: 2);
        try
        {
            Prepare(o, "tcp");

            // 4 MiB at 1 MiB/s in each transfer, all through h1: its daemon dies and comes back in the middle.
            const long Bytes = 4L << 20;
            var flows = StartFlows(o, Bytes, 1L << 20);
            await Task.Delay(1000);
            AssertRunning(flows, "h1 was killed");

            var before = o.Daemon("h1").Pid;
            o.Daemon("h1").Kill();
            await Task.Delay(500);
            o.StartHost(1);
            Assert.NotEqual(before, o.Daemon("h1").Pid);
            o.WaitStar(2, timeoutSeconds: 15);

            await AssertEveryByte(flows, Bytes);
            // The Proxy saw the host go and come back: a second session on its link.
            Assert.True(ProxyLink(o, "h1").Sessions >= 2, "the Proxy never saw h1 reconnect");
            Convergence.AssertConverged(o, Vms, lan: true, ConvergeTimeout, "after h1 was restarted");
        }
        catch
        {
            o.DumpAll();
            throw;
        }
    }

    [Theory]
    [InlineData("tcp")]
    [InlineData("udp")]
    public async Task HostWan_CutFor10s_LinksDeclaredDeadComeBackAndTransfersComplete(string transport)
    {
        using var o = new OverlayBed(output, hosts: 2);
        try
        {
            Prepare(o, transport);

            // 4 MiB at 512 KiB/s: about 1 s before the cut, the rest after it.
            const long Bytes = 4L << 20;
            var flows = StartFlows(o, Bytes, 512L << 10);
            await Task.Delay(1000);
            AssertRunning(flows, "the WAN was cut");

            // Everything h1 sends to or receives from the WAN vanishes, as on a dead uplink.
            var cut = Stopwatch.StartNew();
            o.Bed.Run("wan", "nft add table bridge outage && " +
                "nft add chain bridge outage cut '{ type filter hook forward priority 0; }' && " +
                "nft add rule bridge outage cut iifname h1 counter drop && " +
                "nft add rule bridge outage cut oifname h1 counter drop");
            // Keep-alives stop: both ends declare the star link dead (3 s of silence).
            Wait.Until(() => !ProxyLink(o, "h1").Up && !HostLink(o, "h1").Up, TimeSpan.FromSeconds(9),
                "both ends of the star link h1-proxy declared dead");
            output.WriteLine($"links dead {cut.ElapsedMilliseconds} ms into the cut: proxy says '{ProxyLink(o, "h1").LastDownReason}', " +
                $"h1 says '{HostLink(o, "h1").LastDownReason}'");
            Assert.Contains("no message", ProxyLink(o, "h1").LastDownReason ?? "", StringComparison.Ordinal);

            var rest = TimeSpan.FromSeconds(10) - cut.Elapsed;
            if (rest > TimeSpan.Zero)
                await Task.Delay(rest);
            Assert.True(flows.All(f => !f.Received.IsCompleted), "a transfer finished while h1 was cut off: the cut did not cut");
            var dropped = NftPackets(o.Bed.Run("wan", "nft list table bridge outage"));
            o.Bed.Run("wan", "nft delete table bridge outage");
            output.WriteLine($"WAN of h1 restored after {cut.ElapsedMilliseconds} ms; {dropped} packets dropped");
            Assert.True(dropped > 0, "the cut dropped nothing");

            // Back by itself: h1 dials again, nobody is told to.
            var restored = Stopwatch.StartNew();
            Wait.Until(() => ProxyLink(o, "h1").Up && HostLink(o, "h1").Up, TimeSpan.FromSeconds(20),
                "the star link h1-proxy up again without help");
            output.WriteLine($"star link back {restored.ElapsedMilliseconds} ms after the WAN came back");

            await AssertEveryByte(flows, Bytes);
            Assert.True(HostLink(o, "h1").Sessions >= 2, "h1's star link never had a new session");
            Convergence.AssertConverged(o, Vms, lan: true, ConvergeTimeout, "after the WAN came back");
        }
        catch
        {
            o.DumpAll();
            throw;
        }
    }

    [Theory]
    [InlineData("tcp")]
    [InlineData("udp")]
    public async Task Wan_FivePercentRandomLoss_TransfersCompleteWithEveryByte(string transport)
    {
        using var o = new OverlayBed(output, hosts: 2);
        try
        {
            Prepare(o, transport);

            // Every frame the WAN bridge forwards (each way, every host and the Proxy) is dropped
            // with probability 5%: the VM-to-VM path crosses it twice.
            o.Bed.Run("wan", "nft add table bridge loss && " +
                "nft add chain bridge loss lossy '{ type filter hook forward priority 0; }' && " +
                "nft add rule bridge loss lossy numgen random mod 100 lt 5 counter drop");
            const long Bytes = 4L << 20;
            var flows = StartFlows(o, Bytes, 8L << 20);
            await AssertEveryByte(flows, Bytes);

            var dropped = NftPackets(o.Bed.Run("wan", "nft list table bridge loss"));
            o.Bed.Run("wan", "nft delete table bridge loss");
            output.WriteLine($"the lossy WAN dropped {dropped} packets");
            Assert.True(dropped > 0, "the lossy WAN dropped nothing");
            foreach (var h in new[] { "h1", "h2" })
                output.WriteLine($"{h}: star link sessions {HostLink(o, h).Sessions}, up {HostLink(o, h).Up}");
            Convergence.AssertConverged(o, Vms, lan: true, ConvergeTimeout, "after the loss");
        }
        catch
        {
            o.DumpAll();
            throw;
        }
    }

    /// <summary>
    /// A Proxy with the LAN, hosts h1 and h2 with vm1 and vm2, converged before the fault. The VMs
    /// come one after the other, as VMs usually boot (VMs that appear at the same moment are
    /// StartupConvergenceTests' subject).
    /// </summary>
    private static void Prepare(OverlayBed o, string transport)
    {
        o.StartAll(transport);
        foreach (var n in Vms)
        {
            o.AddVm(n, n);
            var unreached = Convergence.WaitMeshPing(o, [n], lan: true, ConvergeTimeout);
            Assert.True(unreached.Count == 0, $"vm{n} does not reach the LAN: {string.Join("; ", unreached)}");
        }
        Convergence.AssertConverged(o, Vms, lan: true, ConvergeTimeout, "before the fault");
    }

    /// <summary>A TCP transfer and its two ends.</summary>
    private sealed record Flow(string Name, Task<TcpTransfer.Result> Sent, Task<TcpTransfer.Result> Received);

    /// <summary>vm1 (on h1) sends to vm2 (on h2) and to the LAN machine, and the LAN machine sends to vm1.</summary>
    private static Flow[] StartFlows(OverlayBed o, long bytes, long bytesPerSecond) =>
    [
        StartFlow(o, "vm1", "vm2", OverlayBed.VmIp(2), 7001, bytes, bytesPerSecond),
        StartFlow(o, "vm1", "lanhost", OverlayBed.LanHostIp, 7002, bytes, bytesPerSecond),
        StartFlow(o, "lanhost", "vm1", OverlayBed.VmIp(1), 7003, bytes, bytesPerSecond),
    ];

    private static Flow StartFlow(OverlayBed o, string from, string to, string toIp, int port, long bytes, long bytesPerSecond)
    {
        var received = TcpTransfer.Receive(o.Bed.Prefix + "-" + to, port, TransferTimeout);
        var sent = TcpTransfer.Send(o.Bed.Prefix + "-" + from, new IPEndPoint(IPAddress.Parse(toIp), port), bytes, bytesPerSecond, TransferTimeout);
        return new Flow($"{from} -> {to}", sent, received);
    }

    private static void AssertRunning(Flow[] flows, string what)
    {
        foreach (var f in flows)
            Assert.False(f.Sent.IsCompleted, $"{f.Name} ended before {what}: {f.Sent.Exception?.GetBaseException().Message}");
    }

    private async Task AssertEveryByte(Flow[] flows, long bytes)
    {
        var clock = Stopwatch.StartNew();
        foreach (var f in flows)
        {
            var results = await Task.WhenAll(f.Sent, f.Received).WaitAsync(TransferTimeout + TimeSpan.FromSeconds(10));
            output.WriteLine($"{f.Name}: sent {results[0].Bytes} received {results[1].Bytes} bytes, SHA-256 {results[1].Sha256[..16]}... " +
                $"({clock.ElapsedMilliseconds} ms after the wait began)");
            Assert.Equal(bytes, results[0].Bytes);
            Assert.Equal(results[0], results[1]);
        }
    }

    private static Vnet.Daemon.LinkStatus ProxyLink(OverlayBed o, string host) => o.Links("proxy").Single(l => l.Peer == host);

    private static Vnet.Daemon.LinkStatus HostLink(OverlayBed o, string host) => o.Links(host).Single(l => l.Peer == "proxy");

    /// <summary>The packets counted by every counter in an <c>nft list</c> output.</summary>
    private static long NftPackets(string listing) =>
        CounterPattern().Matches(listing).Sum(m => long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));

    [GeneratedRegex(@"counter packets (\d+)")]
    private static partial Regex CounterPattern();
}
