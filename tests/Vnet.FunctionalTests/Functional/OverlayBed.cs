using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Links.Security;
using Vnet.Tests.TestBed;
using NetnsBed = Vnet.Tests.TestBed.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// A whole VNET deployment in namespaces, as the README draws it:
/// <code>
///  lanhost (10.50.0.1, dnsmasq) ── [lan: br0] ── lan0 (pcap) proxy wan0 192.0.2.1 ──┐
///                                                                                  [wan: br0]
///  vmN (10.50.0.1N) ── br0 ── tap0 (TAP) hN wan0 192.0.2.1N ───────────────────────┘
/// </code>
/// Daemons are real `vnet daemon` processes started from the build output; VMs are namespaces
/// whose veth reaches a host's bridge, on which the host daemon's TAP sits.
/// </summary>
internal sealed partial class OverlayBed : IDisposable
{
    public const string LanHostIp = "10.50.0.1";
    public const string LanHostMac = "02:50:00:00:00:01";

    /// <summary>A host's address behind the router of <see cref="BehindARouter"/>, and the router's on that side.</summary>
    public const string InsideHostIp = "10.99.0.2";

    public const string InsideRouterIp = "10.99.0.1";

    private readonly Dictionary<string, BackgroundProcess> _daemons = [];
    private readonly Dictionary<string, string> _vmHost = [];
    private readonly string _dir;

    public OverlayBed(ITestOutputHelper output, int hosts = 3, bool lan = true, [CallerMemberName] string testName = "")
    {
        Bed = new NetnsBed(output, testName);
        Output = output;
        _dir = Directory.CreateTempSubdirectory("vnet-overlay-").FullName;
        HostCount = hosts;
        try
        {
            Build(lan);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public NetnsBed Bed { get; }

    public ITestOutputHelper Output { get; }

    /// <summary>Key pairs of the daemons (proxy, h1 ...) and of the overlay's administrator ("admin"), made on first use.</summary>
    private readonly Dictionary<string, StaticKeyPair> _keys = new(StringComparer.Ordinal);

    public PublicKeyId PublicKeyOf(string name) => Keys(name).Public;

    /// <summary>The private key of <paramref name="name"/> in a file only its owner reads, as the daemon demands.</summary>
    public string KeyFileOf(string name) => WriteKeyFile(name, Keys(name));

    private StaticKeyPair Keys(string name)
    {
        if (!_keys.TryGetValue(name, out var pair))
            _keys[name] = pair = StaticKeyPair.Generate();
        return pair;
    }

    private string WriteKeyFile(string name, StaticKeyPair pair)
    {
        var path = Path.Combine(_dir, name + ".key");
        File.WriteAllText(path, pair.ExportPrivate() + "\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return path;
    }

    public int HostCount { get; }

    public static string VnetDll => Path.Combine(AppContext.BaseDirectory, "vnet.dll");

    public static string HostIp(int i) => $"192.0.2.{10 + i}";

    public static string VmIp(int n) => $"10.50.0.{10 + n}";

    public static string VmMac(int n) => $"02:00:00:00:00:{n:x2}";

    private void Build(bool lan)
    {
        Bed.Namespace("wan");
        Bed.Bridge("wan", "br0");
        if (lan)
        {
            Bed.Namespace("lan");
            Bed.Bridge("lan", "br0");
            Bed.Namespace("lanhost");
            Bed.Veth("lanhost", "eth0", "lan", "lh");
            Bed.Attach("lan", "lh", "br0");
            Bed.SetMac("lanhost", "eth0", LanHostMac);
            // Checksum offload stays on (a veth's default): the Proxy's packet socket tells the
            // partial checksums of such a local sender from complete ones.
            Bed.Address("lanhost", "eth0", LanHostIp + "/24");
        }
        Bed.Namespace("proxy");
        Bed.Veth("proxy", "wan0", "wan", "p");
        Bed.Attach("wan", "p", "br0");
        Bed.Address("proxy", "wan0", "192.0.2.1/24");
        if (lan)
        {
            Bed.Veth("proxy", "lan0", "lan", "px");
            Bed.Attach("lan", "px", "br0");
        }
        for (var i = 1; i <= HostCount; i++)
        {
            var h = $"h{i}";
            Bed.Namespace(h);
            Bed.Veth(h, "wan0", "wan", h);
            Bed.Attach("wan", h, "br0");
            Bed.Address(h, "wan0", HostIp(i) + "/24");
            Bed.Bridge(h, "br0");
        }
    }

    public string SocketOf(string daemon) => Path.Combine(_dir, daemon + ".sock");

    /// <summary>A file of the bed's own folder (removed with the bed).</summary>
    public string FileOf(string name) => Path.Combine(_dir, name);

    /// <summary>
    /// Starts the Proxy with the LAN NIC (lan0) through pcap, or with no interface. It admits every
    /// host of the bed (h1 ... hN, each with its key) and takes remote CLI sessions made with the admin key.
    /// </summary>
    /// <param name="web">Serve the web front there (<c>web</c> in the configuration).</param>
    /// <param name="webToken">The web front's token, written to a private file (<c>web_token_file</c>).</param>
    public BackgroundProcess StartProxy(bool lanNic = true, string? web = null, string? webToken = null)
    {
        var webSettings = web is null ? "" : $"web = \"{web}\"\n";
        if (webToken is not null)
        {
            var tokenFile = Path.Combine(_dir, "web.token");
            File.WriteAllText(tokenFile, webToken + "\n");
            File.SetUnixFileMode(tokenFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            webSettings += $"web_token_file = \"{tokenFile}\"\n";
        }
        var iface = lanNic ? "\n[[interface]]\nname = \"lan0\"\nkind = \"pcap\"\nlan = true\n" : "";
        var hosts = string.Concat(Enumerable.Range(1, HostCount).Select(i => $"\n[[host]]\nname = \"h{i}\"\npublic_key = \"{PublicKeyOf($"h{i}")}\"\n"));
        return StartDaemon("proxy", $"""
            name = "proxy"
            role = "proxy"
            listen = "192.0.2.1:5500"
            key_file = "{KeyFileOf("proxy")}"
            admin_keys = ["{PublicKeyOf("admin")}"]
            control_socket = "{SocketOf("proxy")}"
            {webSettings}{iface}{hosts}
            """);
    }

    /// <summary>
    /// Starts host hN with a TAP on its bridge and the star link to the Proxy. With
    /// <paramref name="bridgeInConfig"/> false the daemon's TAP has no bridge setting and the bed
    /// puts it on br0 itself, as a VM manager would: the interface is then what <c>vnet topo gen</c> writes.
    /// </summary>
    /// <param name="identity">A key pair other than hN's own (the Proxy admitted hN's): an intruder's.</param>
    /// <param name="listenIp">The address hN listens on, when a test gave it another than <see cref="HostIp"/> (e.g. behind a NAT).</param>
    /// <param name="pcapInterface">Instead of a TAP, this device of hN (a VM's veth, see <see cref="AddVm"/>) as interface kind pcap.</param>
    /// <param name="tapQueues">Receive queues of hN's TAP (<c>queues</c> in its configuration; 1 writes none).</param>
    /// <param name="metrics">Serve metrics there: the daemon gets <c>--metrics ADDR:PORT</c> besides its configuration file.</param>
    /// <param name="vmProvider">The host makes VMs on the Proxy's order (<c>vm_provider</c>), keeping its files in <see cref="VmDirOf"/>.</param>
    /// <param name="streams">Streams (parallel sessions) of the star link (<c>[proxy] streams</c>; 1 writes none).</param>
    public BackgroundProcess StartHost(int i, string transport = "tcp", StaticKeyPair? identity = null, bool bridgeInConfig = true,
        string? listenIp = null, string? pcapInterface = null, int tapQueues = 1, string? metrics = null, string? vmProvider = null,
        int streams = 1)
    {
        var process = LaunchHost(i, transport, identity, bridgeInConfig, listenIp, pcapInterface, tapQueues, metrics, vmProvider, streams);
        WaitReady(process);
        if (!bridgeInConfig && pcapInterface is null)
            Bed.Attach($"h{i}", "tap0", "br0");
        return process;
    }

    /// <summary>
    /// Starts several hosts at once, as after a site's power cut: every daemon is launched before
    /// any is waited for, so that they come up (and dial the Proxy) together.
    /// </summary>
    public void StartHosts(IEnumerable<int> hosts, string transport = "tcp")
    {
        var launched = hosts.Select(i => LaunchHost(i, transport, identity: null, bridgeInConfig: true)).ToList();
        foreach (var process in launched)
            WaitReady(process);
    }

    /// <summary>Where host <paramref name="daemon"/> keeps its VM provider's files (a QEMU guest's console socket: NAME.console).</summary>
    public string VmDirOf(string daemon) => Path.Combine(_dir, daemon + "-vms");

    private BackgroundProcess LaunchHost(int i, string transport, StaticKeyPair? identity, bool bridgeInConfig, string? listenIp = null,
        string? pcapInterface = null, int tapQueues = 1, string? metrics = null, string? vmProvider = null, int streams = 1)
    {
        var name = $"h{i}";
        var keyFile = identity is null ? KeyFileOf(name) : WriteKeyFile(name + "-other", identity);
        var bridge = bridgeInConfig ? "bridge = \"br0\"" : "";
        var queues = tapQueues == 1 ? "" : $"\nqueues = {tapQueues}";
        var iface = pcapInterface is null ? $"name = \"tap0\"\n{bridge}{queues}" : $"name = \"{pcapInterface}\"\nkind = \"pcap\"";
        return LaunchDaemon(name, $"""
            name = "{name}"
            role = "host"
            listen = "{listenIp ?? HostIp(i)}:5500"
            key_file = "{keyFile}"
            control_socket = "{SocketOf(name)}"
            {(vmProvider is null ? "" : $"vm_provider = \"{vmProvider}\"\nvm_dir = \"{VmDirOf(name)}\"")}

            [proxy]
            name = "proxy"
            address = "192.0.2.1:5500"
            public_key = "{PublicKeyOf("proxy")}"
            transport = "{transport}"{(streams == 1 ? "" : $"\nstreams = {streams}")}

            [[interface]]
            {iface}
            """, metrics is null ? [] : ["--metrics", metrics]);
    }

    private BackgroundProcess StartDaemon(string name, string config)
    {
        var process = LaunchDaemon(name, config);
        WaitReady(process);
        return process;
    }

    /// <summary>Starts a daemon (stopping the one of that name, if any) without waiting for it.</summary>
    private BackgroundProcess LaunchDaemon(string name, string config, string[]? options = null)
    {
        var path = Path.Combine(_dir, name + ".toml");
        File.WriteAllText(path, config);
        if (_daemons.Remove(name, out var old))
            old.Stop();
        var process = Bed.Start(name, name, "dotnet", [VnetDll, "daemon", "--config", path, "--log-level", "debug", .. options ?? []]);
        _daemons[name] = process;
        return process;
    }

    private static void WaitReady(BackgroundProcess daemon) =>
        daemon.WaitForOutput("Control socket", TimeSpan.FromSeconds(30));

    public BackgroundProcess Daemon(string name) => _daemons[name];

    /// <summary>Starts the Proxy and every host, and waits until each host's star link is up.</summary>
    public void StartAll(string transport = "tcp", bool lanNic = true, bool bridgeInConfig = true)
    {
        StartProxy(lanNic);
        for (var i = 1; i <= HostCount; i++)
            StartHost(i, transport, bridgeInConfig: bridgeInConfig);
        WaitStar(HostCount);
    }

    public void WaitStar(int hosts, int timeoutSeconds = 20) =>
        Wait.Until(() => Links("proxy").Count(l => l.Up && l.Star) == hosts, TimeSpan.FromSeconds(timeoutSeconds),
            $"{hosts} hosts linked to the Proxy");

    /// <summary>
    /// Adds VM number n (10.50.0.1n, 02:00:00:00:00:0n) on host hI: a namespace whose eth0 is a veth
    /// whose other end, vmN in hI, is on hI's bridge (or, with <paramref name="bridge"/> false, on
    /// nothing: for a host daemon that opens it as interface kind pcap).
    /// </summary>
    public string AddVm(int n, int host, bool address = true, bool bridge = true)
    {
        var vm = $"vm{n}";
        Bed.Namespace(vm);
        Bed.Veth(vm, "eth0", $"h{host}", vm);
        if (bridge)
            Bed.Attach($"h{host}", vm, "br0");
        Bed.SetMac(vm, "eth0", VmMac(n));
        if (address)
            Bed.Address(vm, "eth0", VmIp(n) + "/24");
        _vmHost[vm] = $"h{host}";
        return vm;
    }

    /// <summary>
    /// Puts host hI behind a router, as a host at a site is: hI's WAN veth ends in a new namespace
    /// "nat" (the router, <see cref="InsideRouterIp"/> on that side, forwarding) instead of on the
    /// WAN bridge, hI takes <see cref="InsideHostIp"/> with the router as its default route, and the
    /// router reaches the WAN bridge with the <paramref name="outside"/> addresses (/24). What the
    /// router does with the traffic (its nftables rules) is the test's.
    /// </summary>
    public void BehindARouter(int i, params string[] outside)
    {
        const string routerInside = InsideRouterIp;
        const string hostInside = InsideHostIp;
        var h = $"h{i}";
        Bed.Namespace("nat");
        Bed.MoveLink("wan", h, "nat");
        Bed.Address("nat", h, routerInside + "/24");
        Bed.Up("nat", h);
        Bed.Veth("nat", "wan0", "wan", "nat");
        Bed.Attach("wan", "nat", "br0");
        foreach (var address in outside)
            Bed.Address("nat", "wan0", address + "/24");
        Bed.Run("nat", "sysctl -qw net.ipv4.ip_forward=1");
        Bed.Run(h, $"ip addr flush dev wan0 && ip addr add {hostInside}/24 dev wan0 && ip route add default via {routerInside}");
    }

    /// <summary>The packets counted so far by the nftables rule commented <paramref name="comment"/> in <paramref name="chain"/> ("FAMILY TABLE CHAIN") of namespace <paramref name="ns"/>.</summary>
    public long NftPackets(string ns, string chain, string comment)
    {
        var line = Bed.Run(ns, $"nft list chain {chain}").Split('\n').Single(l => l.Contains($"comment \"{comment}\"", StringComparison.Ordinal));
        return long.Parse(NftPacketsPattern().Match(line).Groups[1].Value, CultureInfo.InvariantCulture);
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"counter packets (\d+)")]
    private static partial System.Text.RegularExpressions.Regex NftPacketsPattern();

    /// <summary>The host (h1, h2 ...) whose bridge VM number n is on now.</summary>
    public string HostOf(int n) => _vmHost[$"vm{n}"];

    /// <summary>
    /// Live migration as the network sees it: the VM's NIC now reaches another host's bridge. With
    /// <paramref name="announce"/> the VM then broadcasts a gratuitous ARP, as hypervisors do after
    /// a migration (QEMU's self-announce): a VM that only receives would otherwise stay unseen at its
    /// new host, and frames kept going to the old one, until it sent something.
    /// </summary>
    public void MoveVm(int n, int toHost, bool announce = false)
    {
        var vm = $"vm{n}";
        var from = _vmHost[vm];
        var to = $"h{toHost}";
        Bed.MoveLink(from, vm, to);
        Bed.Attach(to, vm, "br0");
        Bed.Up(to, vm);
        _vmHost[vm] = to;
        // In the background: arping lingers a second after it has sent.
        if (announce)
            Bed.Start(vm, vm + "-announce", "arping", "-q", "-U", "-c", "1", "-I", "eth0", VmIp(n));
    }

    public JsonNode? Control(string daemon, string command, JsonObject? args = null)
    {
        // VM orders and moves wait for hosts; everything else answers within 10 s.
        var limit = ControlClient.TimeoutFor(command) > ControlClient.Timeout ? ControlClient.TimeoutFor(command) : TimeSpan.FromSeconds(10);
        using var cts = new CancellationTokenSource(limit);
        return ControlClient.SendAsync(SocketOf(daemon), command, args, cts.Token).GetAwaiter().GetResult();
    }

    public List<LinkStatus> Links(string daemon) => DaemonJson.FromNode<List<LinkStatus>>(Control(daemon, "link.list")) ?? [];

    public List<RuleStatus> Rules(string daemon) => DaemonJson.FromNode<List<RuleStatus>>(Control(daemon, "rule.list")) ?? [];

    public List<VmStatus> Vms(string daemon) => DaemonJson.FromNode<List<VmStatus>>(Control(daemon, "vm.list")) ?? [];

    public DaemonStatus Status(string daemon) => DaemonJson.FromNode<DaemonStatus>(Control(daemon, "status"))!;

    /// <summary>Starts a one-shot iperf3 server in <paramref name="serverNs"/> and, once it listens, a JSON client in <paramref name="clientNs"/>.</summary>
    public BackgroundProcess StartIperf(string clientNs, string serverNs, string serverIp, int port, params string[] options)
    {
        var p = port.ToString(CultureInfo.InvariantCulture);
        var server = Bed.Start(serverNs, $"iperf3-server-{p}", "iperf3", "-s", "-1", "-p", p, "--forceflush");
        server.WaitForOutput("Server listening", TimeSpan.FromSeconds(10));
        return Bed.Start(clientNs, $"iperf3-client-{p}", "iperf3", ["-c", serverIp, "-p", p, "-J", .. options]);
    }

    /// <summary>Runs <see cref="StartIperf"/> to its end (at most 40 s) and returns the client's JSON report.</summary>
    public JsonNode Iperf(string clientNs, string serverNs, string serverIp, int port, params string[] options)
    {
        var client = StartIperf(clientNs, serverNs, serverIp, port, options);
        return IperfResult(client, port);
    }

    /// <summary>The JSON report of an iperf3 client from <see cref="StartIperf"/>, once it ended (at most 40 s) with success.</summary>
    public static JsonNode IperfResult(BackgroundProcess client, int port)
    {
        var timeout = TimeSpan.FromSeconds(40);
        Assert.True(client.WaitForExit(timeout), $"iperf3 on port {port} did not finish in {timeout.TotalSeconds} s");
        Assert.True(client.ExitCode == 0, $"iperf3 on port {port} failed: {client.Output}");
        return JsonNode.Parse(client.Stdout)!;
    }

    /// <summary>Writes every daemon's links, interfaces, rules and drops to the test output (for failures).</summary>
    public void DumpCounters()
    {
        foreach (var name in _daemons.Keys)
        {
            foreach (var what in new[] { "status", "show links", "show interfaces", "rule list", "vms" })
            {
                var r = Sh.TryRun($"dotnet {Sh.Quote(VnetDll)} {what} --socket {Sh.Quote(SocketOf(name))}", 15);
                Output.WriteLine($"--- {name}: vnet {what}\n{r.Stdout}{r.Stderr}");
            }
        }
    }

    /// <summary>Everything a failed test wants to show: each daemon's tables and counters, and its log's tail.</summary>
    public void DumpAll()
    {
        DumpCounters();
        DumpLogs();
    }

    /// <summary>Writes the last lines of every daemon's log to the test output (for failures).</summary>
    public void DumpLogs(int lines = 40)
    {
        foreach (var (name, daemon) in _daemons)
        {
            var all = daemon.Lines;
            Output.WriteLine($"--- {name}: last {Math.Min(lines, all.Count)} of {all.Count} log lines ({daemon.LogPath})");
            foreach (var line in all.Skip(Math.Max(0, all.Count - lines)))
                Output.WriteLine(line);
        }
    }

    /// <summary>Runs the vnet CLI against a daemon's socket and returns its output (throws on failure).</summary>
    public string Cli(string daemon, string arguments) =>
        Sh.Run($"dotnet {Sh.Quote(VnetDll)} {arguments} --socket {Sh.Quote(SocketOf(daemon))}", 30);

    public static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    public void Dispose()
    {
        foreach (var d in _daemons.Values)
        {
            try
            {
                d.Stop(TimeSpan.FromSeconds(3));
            }
            catch (InvalidOperationException)
            {
            }
        }
        Bed.Dispose();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
