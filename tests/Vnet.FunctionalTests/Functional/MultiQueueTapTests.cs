using System.Text.Json.Nodes;
using Vnet.Daemon;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// A host whose TAP has 4 queues (a reader thread each): a VM behind it sends parallel flows
/// through the Proxy to the LAN machine. Every UDP stream arrives with no datagram out of order,
/// the TCP streams complete, and more than one queue carried frames.
/// </summary>
[Collection("Netns")]
public sealed class MultiQueueTapTests(ITestOutputHelper output)
{
    [Fact]
    public void FourQueueTap_ParallelFlowsFromAVm_EachInOrder_SeveralQueuesRead()
    {
        using var o = new OverlayBed(output, hosts: 1);
        try
        {
            o.StartProxy();
            o.AddVm(1, 1);
            o.StartHost(1, tapQueues: 4);
            o.WaitStar(1);
            var tap = Tap(o);
            Assert.Equal(4, tap.Queues);
            var unreached = Convergence.WaitMeshPing(o, [1], lan: true, TimeSpan.FromSeconds(20));
            Assert.True(unreached.Count == 0, $"vm1 does not reach the LAN: {string.Join("; ", unreached)}");

            // UDP: 4 streams of 20 Mbit/s, datagrams small enough not to be fragmented (a
            // fragment is steered by its addresses alone, so fragments would share a queue).
            var udp = Iperf(o, 5301, "-u", "-b", "20M", "-l", "1200", "-P", "4", "-t", "3", "--get-server-output");
            var streams = udp["end"]!["streams"]!.AsArray();
            Assert.Equal(4, streams.Count);
            foreach (var s in streams)
            {
                var u = s!["udp"]!;
                output.WriteLine($"UDP stream: {u["packets"]} datagrams, {u["lost_packets"]} lost, {u["out_of_order"]} out of order");
                Assert.True(u["packets"]!.GetValue<long>() > 1000, $"a stream sent too little: {u}");
                Assert.Equal(0, u["out_of_order"]!.GetValue<long>());
            }
            // The receiver's own count, where iperf3 measures it.
            foreach (var s in udp["server_output_json"]?["end"]?["streams"]?.AsArray() ?? [])
                Assert.Equal(0, s!["udp"]!["out_of_order"]!.GetValue<long>());

            // TCP: 4 streams, unpaced.
            var tcp = Iperf(o, 5302, "-P", "4", "-t", "3");
            var received = tcp["end"]!["sum_received"]!["bytes"]!.GetValue<long>();
            output.WriteLine($"TCP: {received} bytes received, {tcp["end"]!["sum_sent"]!["retransmits"]} retransmits");
            foreach (var s in tcp["end"]!["streams"]!.AsArray())
                Assert.True(s!["receiver"]!["bytes"]!.GetValue<long>() > 0, "a TCP stream carried nothing");
            output.WriteLine("LAN machine: " + o.Bed.Run("lanhost", "nstat -az TcpExtTCPOFOQueue TcpExtTCPSACKReorder").Trim());

            tap = Tap(o);
            output.WriteLine($"tap0 on h1: {tap.RxFrames} frames read, per queue {string.Join("/", tap.QueueRxFrames!)}");
            Assert.Equal(4, tap.QueueRxFrames!.Count);
            Assert.Equal(tap.RxFrames, tap.QueueRxFrames.Sum());
            var busy = tap.QueueRxFrames.Count(n => n > 100);
            Assert.True(busy >= 2, $"only {busy} queue(s) read more than 100 frames: {string.Join("/", tap.QueueRxFrames)}");
            output.WriteLine(o.Cli("h1", "interface list"));

            // Every forwarding thread (a reader per queue, the link's receiver and sender) runs
            // at forwarding_nice's default, ahead of the VMs' own threads; the rest do not.
            var threads = ThreadNices(o.Daemon("h1").Pid);
            output.WriteLine("h1's threads: " + string.Join(", ", threads.Select(t => $"{t.Name} {t.Nice}")));
            var forwarding = threads.Where(t => t.Name.StartsWith("if-", StringComparison.Ordinal) || t.Name.StartsWith("link-", StringComparison.Ordinal)).ToList();
            Assert.True(forwarding.Count(t => t.Name.StartsWith("if-", StringComparison.Ordinal)) >= 4, "fewer than 4 interface readers");
            Assert.All(forwarding, t => Assert.Equal(-10, t.Nice));
            Assert.Equal(0, threads.Single(t => t.Name == "vnet-clock").Nice);
        }
        catch
        {
            o.DumpAll();
            throw;
        }
    }

    /// <summary>Each thread's name and nice value.</summary>
    private static List<(string Name, int Nice)> ThreadNices(int pid)
    {
        var threads = new List<(string, int)>();
        foreach (var task in Directory.GetDirectories($"/proc/{pid}/task"))
        {
            var tid = int.Parse(Path.GetFileName(task), System.Globalization.CultureInfo.InvariantCulture);
            threads.Add((File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n'), Vnet.Engine.ForwardingPriority.ThreadNice(pid, tid)));
        }
        return threads;
    }

    private static InterfaceStatus Tap(OverlayBed o) =>
        DaemonJson.FromNode<List<InterfaceStatus>>(o.Control("h1", "interface.list"))!.Single(i => i.Name == "tap0");

    /// <summary>Runs an iperf3 client in vm1 against a one-shot server on the LAN machine; its JSON report.</summary>
    private static JsonNode Iperf(OverlayBed o, int port, params string[] options) => o.Iperf("vm1", "lanhost", OverlayBed.LanHostIp, port, options);
}
