using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Prometheus;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Http;
using Vnet.Metrics;
using Vnet.Tests.Support;
using Vnet.Tests.Vms;

namespace Vnet.Tests.Metrics;

/// <summary>
/// <c>GET /metrics</c> on real daemons in this process: the series mirror the daemon's own counters
/// (the ones <c>vnet status</c> and <c>vnet link list</c> show), grow with the traffic, belong to one
/// daemon each, and the exposition is well formed.
/// </summary>
public sealed class MetricsTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(15);

    private static readonly MacAddress Vm = SimVms.Mac(1);

    private static readonly IReadOnlyList<InterfaceConfig> OneTap = [new InterfaceConfig { Name = "vm1", Kind = InterfaceKind.Tap }];

    private static Task<DaemonNet> Net(bool metrics = true) =>
        DaemonNet.StartAsync([("h1", OneTap), ("h2", [])], null, lan: true, metrics: metrics);

    private static async Task<string> Get(HttpClient http, IPEndPoint at, string path = DaemonMetrics.Path)
    {
        using var response = await http.GetAsync(new Uri($"http://{at}{path}"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", response.Content.Headers.ContentType?.ToString());
        return await response.Content.ReadAsStringAsync();
    }

    private static async Task<Exposition> Scrape(HttpClient http, VnetDaemon daemon) => Exposition.Parse(await Get(http, daemon.Http!.LocalEndPoint));

    private static HttpClient Client() => new() { Timeout = TimeSpan.FromSeconds(10) };

    /// <summary>Frames from the VM on h1 to a machine on the LAN: h1's tap, the star link, the Proxy's LAN NIC.</summary>
    private static async Task SendToLan(DaemonNet net, int count)
    {
        var lan = net.DevicesOf("proxy")[DaemonNet.Lan];
        var before = lan.Writes;
        var frame = SimVms.FrameToLan(Vm);
        var tap = net.DevicesOf("h1")["vm1"];
        for (var i = 0; i < count; i++)
        {
            // The memory device holds a bounded queue: wait for room rather than lose a frame.
            await DaemonNet.Until(() => tap.Inject(frame), Deadline, "room in the memory TAP");
        }
        await DaemonNet.Until(() => lan.Writes - before >= count, Deadline, $"{count} frames on the Proxy's LAN");
    }

    private static (string, string)[] StarOf(string peer) => [("peer", peer), ("transport", "tcp"), ("star", "true")];

    [Fact]
    public async Task Scrape_TrafficFromAVmToTheLan_InterfaceAndLinkCountersGrowByAtLeastTheFramesSent()
    {
        await using var net = await Net();
        using var http = Client();
        const int Frames = 50;
        var h1Before = await Scrape(http, net["h1"]);
        var proxyBefore = await Scrape(http, net.Proxy);

        await SendToLan(net, Frames);

        var h1 = await Scrape(http, net["h1"]);
        var proxy = await Scrape(http, net.Proxy);
        double Grew(Exposition before, Exposition after, string name, params (string, string)[] labels) =>
            (after.Value(name, labels) ?? double.NaN) - (before.Value(name, labels) ?? 0);
        (string, string)[] tap = [("interface", "vm1"), ("kind", "tap")];
        (string, string)[] lan = [("interface", DaemonNet.Lan), ("kind", "pcap")];
        Assert.True(Grew(h1Before, h1, "vnet_interface_rx_frames_total", tap) >= Frames, "h1 vm1 rx frames");
        Assert.True(Grew(h1Before, h1, "vnet_interface_rx_bytes_total", tap) >= Frames * 60, "h1 vm1 rx bytes");
        Assert.True(Grew(h1Before, h1, "vnet_link_tx_frames_total", StarOf("proxy")) >= Frames, "h1 link proxy tx frames");
        Assert.True(Grew(h1Before, h1, "vnet_link_tx_bytes_total", StarOf("proxy")) >= Frames * 60, "h1 link proxy tx bytes");
        Assert.True(Grew(proxyBefore, proxy, "vnet_link_rx_frames_total", StarOf("h1")) >= Frames, "proxy link h1 rx frames");
        Assert.True(Grew(proxyBefore, proxy, "vnet_interface_tx_frames_total", lan) >= Frames, "proxy lan0 tx frames");
        Assert.True(Grew(proxyBefore, proxy, "vnet_switch_forwarded_frames_total") >= Frames, "proxy forwarded frames");

        // The same numbers vnet link list and vnet interface list show, read at the same moment
        // (no traffic now): the metrics are those counters, not counts of their own.
        var links = await net["h1"].Run(net["h1"].LinkCommands.List);
        var interfaces = await net["h1"].Run(() => net["h1"].Interfaces.List(net["h1"].Vms.CountOn));
        h1 = await Scrape(http, net["h1"]);
        Assert.Equal(links.Single(l => l.Peer == "proxy").TxFrames, h1.Value("vnet_link_tx_frames_total", StarOf("proxy")));
        Assert.Equal(interfaces.Single(i => i.Name == "vm1").RxFrames, h1.Value("vnet_interface_rx_frames_total", tap));
        Assert.Equal(1, h1.Value("vnet_link_up", StarOf("proxy")));
        Assert.Equal(1, h1.Value("vnet_interface_up", tap));
        Assert.Equal(1, h1.Value("vnet_interface_vms", tap));
        Assert.Equal(1, h1.Value("vnet_vms_local"));
        Assert.True(h1.Value("vnet_link_sessions_started_total", StarOf("proxy")) >= 1);
        // Keep-alives have measured the link by now, or will within a few seconds.
        await DaemonNet.UntilAsync(async () => (await Scrape(http, net["h1"])).Value("vnet_link_rtt_seconds", StarOf("proxy")) is > 0 and < 1,
            Deadline, "a smoothed RTT for the star link");
    }

    [Fact]
    public async Task Scrape_SeveralDaemonsInOneProcess_EachShowsOnlyItsOwn()
    {
        await using var net = await Net();
        using var http = Client();

        var proxy = await Scrape(http, net.Proxy);
        var h1 = await Scrape(http, net["h1"]);
        var h2 = await Scrape(http, net["h2"]);

        Assert.Equal(1, proxy.Value("vnet_daemon_info", ("name", "proxy"), ("role", "proxy"), ("version", VnetDaemon.VersionText)));
        Assert.Equal(1, h1.Value("vnet_daemon_info", ("name", "h1"), ("role", "host"), ("version", VnetDaemon.VersionText)));
        Assert.Single(h2.Of("vnet_daemon_info"));
        Assert.Equal(["h1", "h2"], proxy.Of("vnet_link_up").Select(s => s.Labels["peer"]).Order().ToArray());
        Assert.Equal(["proxy"], h1.Of("vnet_link_up").Select(s => s.Labels["peer"]).ToArray());
        Assert.Equal(["vm1"], h1.Of("vnet_interface_up").Select(s => s.Labels["interface"]).ToArray());
        Assert.Empty(h2.Of("vnet_interface_up"));
        Assert.NotEqual(net.Proxy.Http!.LocalEndPoint.Port, net["h1"].Http!.LocalEndPoint.Port);
    }

    [Fact]
    public async Task Scrape_EveryFamily_WellFormedWithUnitsInNamesAndCountersAsCounters()
    {
        await using var net = await Net();
        using var http = Client();
        await SendToLan(net, 5);

        var proxy = await Scrape(http, net.Proxy);

        foreach (var (name, type) in proxy.Types.Where(t => t.Key.StartsWith("vnet_", StringComparison.Ordinal)))
        {
            Assert.True(type is "counter" or "gauge", $"{name} is a {type}");
            Assert.True((type == "counter") == name.EndsWith("_total", StringComparison.Ordinal), $"{name}: a counter, and only a counter, ends in _total");
        }
        // Every drop reason, every handshake step, every adaptation outcome is there, zero or not.
        foreach (var reason in Enum.GetValues<DropReason>())
            Assert.NotNull(proxy.Value("vnet_switch_dropped_frames_total", ("reason", reason.ToString())));
        foreach (var step in new[] { "init", "no_init", "handshake" })
            Assert.NotNull(proxy.Value("vnet_handshakes_refused_total", ("step", step)));
        foreach (var outcome in new[] { "applied", "advised", "failed" })
            Assert.NotNull(proxy.Value("vnet_adaptation_actions_total", ("outcome", outcome)));
        foreach (var map in new[] { "vms", "keys" })
            Assert.NotNull(proxy.Value("vnet_directory_repairs_total", ("map", map)));
        Assert.True(proxy.Value("vnet_daemon_uptime_seconds") > 0);
        Assert.True(proxy.Value("vnet_peer_rx_messages_total") > 0);
        Assert.NotNull(proxy.Value("process_cpu_seconds_total"));

        // One series per rule, by id; the hits of the rules the frames took add up to them.
        var rules = await net.Proxy.Run(net.Proxy.RuleCommands.List);
        var exported = proxy.Of("vnet_rule_hits_total").ToDictionary(s => long.Parse(s.Labels["rule"], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(rules.Select(r => r.Id).Order(), exported.Keys.Order());
        foreach (var r in rules)
        {
            Assert.Equal(EnumText.Of(r.Origin), exported[r.Id].Labels["origin"]);
            Assert.Equal(r.Frames, exported[r.Id].Value);
        }
        Assert.True(exported.Values.Sum(s => s.Value) >= 5);
        Assert.Equal(rules.Count(r => r.Origin == RuleOrigin.System), proxy.Value("vnet_rules", ("origin", "system")));
    }

    [Fact]
    public async Task Http_OtherPathsAndMethods_NotFoundOrNotAllowed()
    {
        await using var net = await Net();
        using var http = Client();
        var at = net["h1"].Http!.LocalEndPoint;

        using (var r = await http.GetAsync(new Uri($"http://{at}/")))
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
        using (var r = await http.GetAsync(new Uri($"http://{at}/metrics/x")))
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
        using (var r = await http.PostAsync(new Uri($"http://{at}/metrics"), new StringContent("x")))
            Assert.Equal(HttpStatusCode.MethodNotAllowed, r.StatusCode);
        Assert.Contains("vnet_daemon_info", await Get(http, at), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Daemon_WithoutMetrics_HasNoHttpEndpoint_AndAStoppedOneClosesItsPort()
    {
        await using (var plain = await Net(metrics: false))
        {
            Assert.All(plain.Daemons, d => Assert.Null(d.Http));
        }
        await using var net = await Net();
        var at = net["h2"].Http!.LocalEndPoint;
        await net.Stop("h2");

        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var refused = await Assert.ThrowsAsync<SocketException>(async () => await probe.ConnectAsync(at));
        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
    }

    [Fact]
    public async Task HttpServer_OnAPortInUse_ThrowsAndTheFirstKeepsServing()
    {
        await using var net = await Net(metrics: false);
        var metrics = new DaemonMetrics(net["h1"]);
        await using var first = await HttpServer.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), metrics.Map, NullLoggerFactory.Instance);

        await Assert.ThrowsAnyAsync<IOException>(() => HttpServer.StartAsync(first.LocalEndPoint, metrics.Map, NullLoggerFactory.Instance));

        using var http = Client();
        var page = Exposition.Parse(await Get(http, first.LocalEndPoint));
        Assert.Equal(1, page.Value("vnet_daemon_info", ("name", "h1"), ("role", "host"), ("version", VnetDaemon.VersionText)));
    }

    [Fact]
    public async Task Scrape_DaemonStopped_FailsWithTheReasonInsteadOfStaleNumbers()
    {
        var net = await Net(metrics: false);
        var h2 = net["h2"];
        var metrics = new DaemonMetrics(h2);
        Assert.Contains("vnet_link_up", await metrics.ScrapeAsync(), StringComparison.Ordinal);
        await net.DisposeAsync();

        var failed = await Assert.ThrowsAsync<ScrapeFailedException>(() => metrics.ScrapeAsync());
        Assert.Contains("stopping", failed.Message, StringComparison.Ordinal);
    }
}

/// <summary>A scrape that cannot read the daemon says so (503 and why), and the next one works again.</summary>
public sealed class MetricsFailureTests
{
    [Fact]
    public async Task Scrape_ControlLoopBusyPastTheReadTimeout_503WithTheReason_ThenServesAgain()
    {
        await using var net = await DaemonNet.StartAsync([("h1", [])], null, metrics: true);
        var h1 = net["h1"];
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        var url = new Uri($"http://{h1.Http!.LocalEndPoint}{DaemonMetrics.Path}");
        using var release = new ManualResetEventSlim();

        // The loop stuck in one item (a bug, or a huge change set) for longer than a scrape waits.
        var stuck = h1.Run(() => release.Wait(TimeSpan.FromSeconds(20)));
        try
        {
            using var failed = await http.GetAsync(url);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, failed.StatusCode);
            Assert.Contains("control loop did not answer", await failed.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        finally
        {
            release.Set();
        }
        Assert.True(await stuck);
        using var ok = await http.GetAsync(url);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }
}

/// <summary>The bookkeeping that keeps mirrored series honest when what they mirror goes or starts again.</summary>
public sealed class MirroredSeriesTests
{
    private static (Counter Counter, MirroredSeries<Counter.Child> Series, CollectorRegistry Registry) New()
    {
        var registry = Prometheus.Metrics.NewCustomRegistry();
        var counter = Prometheus.Metrics.WithCustomRegistry(registry).CreateCounter("t_total", "test", "peer");
        return (counter, MirroredSeries.Of(counter), registry);
    }

    private static async Task<Exposition> Collect(CollectorRegistry registry)
    {
        using var s = new MemoryStream();
        await registry.CollectAndExportAsTextAsync(s);
        return Exposition.Parse(System.Text.Encoding.UTF8.GetString(s.ToArray()));
    }

    [Fact]
    public async Task Set_SameOwner_FollowsTheCount_NewOwner_StartsAgain_NotSet_Removed()
    {
        var (_, series, registry) = New();
        object port = new(), again = new();

        series.Begin();
        series.Set(10, port, "a");
        series.Set(7, port, "b");
        series.End();
        Assert.Equal(10, (await Collect(registry)).Value("t_total", ("peer", "a")));

        // Same owner: the count (a stale lower reading never lowers a counter).
        series.Begin();
        series.Set(25, port, "a");
        series.Set(7, port, "b");
        series.End();
        Assert.Equal(25, (await Collect(registry)).Value("t_total", ("peer", "a")));

        // Link a removed and added again (a new port, counting from zero); link b gone.
        series.Begin();
        series.Set(3, again, "a");
        series.End();
        var page = await Collect(registry);
        Assert.Equal(3, page.Value("t_total", ("peer", "a")));
        Assert.Null(page.Value("t_total", ("peer", "b")));
    }
}
