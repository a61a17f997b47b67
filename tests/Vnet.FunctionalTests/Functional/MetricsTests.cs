using System.Net;
using System.Net.Sockets;
using Vnet.Daemon;
using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// <c>vnet daemon --metrics</c> on real daemons in namespaces: a Prometheus scrape of a host
/// before and after VMs ping each other across the star shows the TAP's and the star link's
/// counters grown by at least the pings; other paths are 404; a daemon without the option opens
/// no port besides its link port.
/// </summary>
[Collection("Netns")]
public sealed class MetricsTests(ITestOutputHelper output)
{
    private const int Pings = 10;

    /// <summary>Where h1 serves metrics, inside its namespace.</summary>
    private static readonly string MetricsAt = $"{OverlayBed.HostIp(1)}:9464";

    [Fact]
    public async Task Metrics_PingsAcrossTheStar_TapAndLinkCountersGrowByThePings_OtherPaths404_NoPortWithoutTheOption()
    {
        using var o = new OverlayBed(output, hosts: 2, lan: false);
        o.StartProxy(lanNic: false);
        o.StartHost(1, metrics: MetricsAt);
        o.StartHost(2);
        o.WaitStar(2);
        o.AddVm(1, 1);
        o.AddVm(2, 2);
        using var http = ClientIn(o.Bed.Prefix + "-h1");
        // ARP and learning first, so that what follows is the echoes and their replies.
        Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: 2, timeoutSeconds: 10), "vm1 -> vm2 (warm-up)");

        var before = await Scrape(http);
        Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: Pings, timeoutSeconds: 15), $"{Pings} pings vm1 -> vm2");
        var after = await Scrape(http);

        (string, string)[] tap = [("interface", "tap0"), ("kind", "tap")];
        (string, string)[] star = [("peer", "proxy"), ("transport", "tcp"), ("star", "true")];
        // An echo request is 98 bytes on the wire without the FCS: 14 Ethernet, 20 IP, 8 ICMP, 56 data.
        Grew(before, after, Pings, "vnet_interface_rx_frames_total", tap);
        Grew(before, after, Pings, "vnet_interface_tx_frames_total", tap);
        Grew(before, after, Pings * 98, "vnet_interface_rx_bytes_total", tap);
        Grew(before, after, Pings * 98, "vnet_interface_tx_bytes_total", tap);
        Grew(before, after, Pings, "vnet_link_tx_frames_total", star);
        Grew(before, after, Pings, "vnet_link_rx_frames_total", star);
        Grew(before, after, Pings * 98, "vnet_link_tx_bytes_total", star);
        Grew(before, after, Pings * 98, "vnet_link_rx_bytes_total", star);
        Grew(before, after, 2 * Pings, "vnet_switch_forwarded_frames_total");
        Assert.Equal(1, after.Value("vnet_link_up", star));
        Assert.Equal(1, after.Value("vnet_daemon_info", ("name", "h1"), ("role", "host"), ("version", VnetDaemon.VersionText)));
        // What the metrics say is what vnet link list says (the counters are the same ones).
        var link = o.Links("h1").Single(l => l.Peer == "proxy");
        var again = await Scrape(http);
        Assert.True(again.Value("vnet_link_tx_frames_total", star) >= link.TxFrames, "metrics behind vnet link list");
        Assert.True(again.Value("vnet_link_rtt_seconds", star) is > 0 and < 1, "a smoothed RTT for the star link");

        using (var response = await http.GetAsync(new Uri($"http://{MetricsAt}/nope")))
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);

        // h1 listens on its link port and the metrics port; h2, started without --metrics, on its link port alone.
        Assert.Equal([$"{OverlayBed.HostIp(1)}:5500", MetricsAt], ListeningTcp(o, "h1"));
        Assert.Equal([$"{OverlayBed.HostIp(2)}:5500"], ListeningTcp(o, "h2"));
    }

    private void Grew(Exposition before, Exposition after, double atLeast, string name, params (string, string)[] labels)
    {
        var was = before.Value(name, labels) ?? 0;
        var now = after.Value(name, labels);
        output.WriteLine($"{name}{{{string.Join(",", labels.Select(l => $"{l.Item1}={l.Item2}"))}}}: {was} -> {now}");
        Assert.True(now - was >= atLeast, $"{name} grew by {now - was}, expected at least {atLeast}");
    }

    private static async Task<Exposition> Scrape(HttpClient http)
    {
        using var response = await http.GetAsync(new Uri($"http://{MetricsAt}/metrics"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return Exposition.Parse(await response.Content.ReadAsStringAsync());
    }

    /// <summary>An HTTP client whose connections are made inside a network namespace (a socket belongs to the namespace it was created in).</summary>
    private static HttpClient ClientIn(string netns) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (context, ct) =>
        {
            Socket socket;
            using (Netns.Enter(netns))
                socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await socket.ConnectAsync(context.DnsEndPoint, ct);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        },
    })
    { Timeout = TimeSpan.FromSeconds(10) };

    /// <summary>The TCP addresses listening in a namespace (its daemon is all that runs there).</summary>
    private static string[] ListeningTcp(OverlayBed o, string ns) =>
        [.. o.Bed.Run(ns, "ss -Hltn").Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[3]).Order(StringComparer.Ordinal)];
}
