using System.Text.Json.Nodes;
using Vnet.Daemon;
using Vnet.Links;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// A direct link of 4 streams (parallel sessions), TCP or UDP, between two host daemons, added with
/// `vnet link add --transport T --streams 4` while the peer has no setting (it answers on what it is
/// dialed): 4 parallel iperf3 TCP streams complete over it, more than one stream carries them, every
/// UDP flow arrives in order, and a stream's connection killed under load (`ss -K`) comes back while
/// the transfer goes on. On UDP, each stream above the first has a UDP socket of its own at each end,
/// and a stream killed and made again leaves no socket behind.
/// </summary>
[Collection("Netns")]
public sealed class LinkStreamsTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("tcp")]
    [InlineData("udp")]
    public void FourStreamLink_ParallelFlows_SpreadInOrder_AKilledConnectionComesBack(string transport)
    {
        using var o = new OverlayBed(output, hosts: 2, lan: false);
        try
        {
            o.StartAll(lanNic: false);
            o.AddVm(1, 1);
            o.AddVm(2, 2);
            Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: 2, timeoutSeconds: 10));

            output.WriteLine(o.Cli("h1", $"link add h2 {OverlayBed.HostIp(2)}:5500 --transport {transport} --streams 4"));
            Wait.Until(() => Link(o, "h1", "h2") is { StreamsUp: 4 } && Link(o, "h2", "h1") is { StreamsUp: 4 }, TimeSpan.FromSeconds(15),
                "4 streams up at both ends");
            Assert.Equal(4, Link(o, "h1", "h2")!.Streams);
            Assert.Equal(transport == "udp" ? LinkTransport.Udp : LinkTransport.Tcp, Link(o, "h1", "h2")!.Transport);
            Assert.Contains("4/4", o.Cli("h1", "link list"), StringComparison.Ordinal);
            if (transport == "udp")
            {
                // Streams 1-3 each have a socket of their own at both ends, besides the daemon's.
                Assert.Equal(3, StreamSockets(o, 1));
                Assert.Equal(3, StreamSockets(o, 2));
            }
            o.Cli("h1", $"rule add --src any --dst {OverlayBed.VmMac(2)} --to link:h2");
            o.Cli("h2", $"rule add --src any --dst {OverlayBed.VmMac(1)} --to link:h1");
            Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: 3, timeoutSeconds: 10), "ping over the direct link");

            // UDP: 4 flows, datagrams that are not fragmented; each must arrive in order.
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
            foreach (var s in udp["server_output_json"]?["end"]?["streams"]?.AsArray() ?? [])
                Assert.Equal(0, s!["udp"]!["out_of_order"]!.GetValue<long>());

            // TCP: 4 streams; more than one connection of the link carries them.
            var before = Link(o, "h1", "h2")!.StreamTxFrames!.ToArray();
            var tcp = Iperf(o, 5302, "-P", "4", "-t", "3");
            foreach (var s in tcp["end"]!["streams"]!.AsArray())
                Assert.True(s!["receiver"]!["bytes"]!.GetValue<long>() > 0, "a TCP stream carried nothing");
            var after = Link(o, "h1", "h2")!;
            var carried = after.StreamTxFrames!.Select((n, i) => n - before[i]).ToArray();
            output.WriteLine($"TCP: {tcp["end"]!["sum_received"]!["bytes"]} bytes; frames per connection at h1: {string.Join("/", carried)}");
            Assert.True(carried.Count(n => n > 100) >= 2, $"only one connection carried the flows: {string.Join("/", carried)}");
            Assert.True(Link(o, "h2", "h1")!.StreamRxFrames!.Count(n => n > 100) >= 2, "h2 received on one connection only");

            // A connection killed under load: the transfer goes on and the connection comes back.
            var sessions = after.StreamSessions;
            var client = o.StartIperf("vm1", "vm2", OverlayBed.VmIp(2), 5303, "-P", "4", "-t", "6");
            Thread.Sleep(2000);
            var established = o.Bed.Run("h1", $"ss -tnH state established dst {OverlayBed.HostIp(2)} dport = :5500").Trim()
                .Split('\n', StringSplitOptions.RemoveEmptyEntries);
            output.WriteLine("connections before the kill:\n" + string.Join('\n', established));
            Assert.Equal(4, established.Length);
            var local = established[1].Split(' ', StringSplitOptions.RemoveEmptyEntries)[2];
            var sport = local[(local.LastIndexOf(':') + 1)..];
            o.Bed.Run("h1", $"ss -K -tn state established dst {OverlayBed.HostIp(2)} dport = :5500 sport = :{sport}");
            var killed = OverlayBed.IperfResult(client, 5303);
            var intervals = killed["intervals"]!.AsArray().Select(i => i!["sum"]!["bytes"]!.GetValue<long>()).ToArray();
            output.WriteLine($"bytes per second around the kill: {string.Join(" ", intervals)}");
            Assert.All(intervals, b => Assert.True(b > 0, $"a second carried nothing: {string.Join(" ", intervals)}"));
            Wait.Until(() => Link(o, "h1", "h2") is { StreamsUp: 4 } l && l.StreamSessions > sessions, TimeSpan.FromSeconds(15),
                "the killed connection back");
            var now = Link(o, "h1", "h2")!;
            output.WriteLine($"after the kill: {now.StreamsUp}/{now.Streams} up, {now.StreamSessions} connections made (was {sessions}), link sessions {now.Sessions}");
            Assert.Equal(4, o.Bed.Run("h1", $"ss -tnH state established dst {OverlayBed.HostIp(2)} dport = :5500").Trim()
                .Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
            output.WriteLine(o.Cli("h1", "link list"));
            if (transport == "udp")
            {
                // The killed stream's sockets went with it, at both ends.
                Wait.Until(() => StreamSockets(o, 1) == 3 && StreamSockets(o, 2) == 3, TimeSpan.FromSeconds(10),
                    $"3 stream sockets at each end (h1 {StreamSockets(o, 1)}, h2 {StreamSockets(o, 2)})");
            }
        }
        catch
        {
            o.DumpAll();
            throw;
        }
    }

    /// <summary>UDP sockets in host <paramref name="host"/>'s namespace bound to its address and a port other than the daemon's: the streams' own.</summary>
    private static int StreamSockets(OverlayBed o, int host) =>
        o.Bed.Run($"h{host}", "ss -uanH").Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Count(l => l.Contains($"{OverlayBed.HostIp(host)}:", StringComparison.Ordinal) && !l.Contains($"{OverlayBed.HostIp(host)}:5500 ", StringComparison.Ordinal));

    private static LinkStatus? Link(OverlayBed o, string daemon, string peer) => o.Links(daemon).SingleOrDefault(l => l.Peer == peer);

    /// <summary>Runs an iperf3 client in vm1 against a one-shot server in vm2; its JSON report.</summary>
    private static JsonNode Iperf(OverlayBed o, int port, params string[] options) => o.Iperf("vm1", "vm2", OverlayBed.VmIp(2), port, options);
}
