using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Interfaces;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Tests.Links;
using Vnet.Vms;

namespace Vnet.Tests.Daemon;

/// <summary>
/// Real daemons in this process: a Proxy and hosts that dial it over loopback, each listening on
/// 127.0.0.1 at a port of its own, with the command dispatcher attached as the CLI attaches it.
/// Interfaces, when a test gives a daemon some, are in memory (<see cref="MemoryInterfaceFactory"/>),
/// so the whole control plane (learning, the directory, change sets, remote commands, dumps) runs
/// without root. A daemon can be stopped and started again at the same address.
/// </summary>
internal sealed class DaemonNet : IAsyncDisposable
{
    public static readonly TimeSpan UpTimeout = TimeSpan.FromSeconds(10);

    /// <summary>The Proxy's LAN NIC when the net has one.</summary>
    public const string Lan = "lan0";

    private readonly Dictionary<string, StaticKeyPair> _identities = new(StringComparer.Ordinal);
    private readonly Dictionary<string, VnetDaemon> _daemons = new(StringComparer.Ordinal);
    private readonly Dictionary<string, DaemonConfig> _configs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ListLogger> _logs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, MemoryInterfaceFactory> _devices = new(StringComparer.Ordinal);
    private readonly DirectoryOptions _directory;
    private readonly List<string> _order = [];
    private LinkTransport _transport = LinkTransport.Tcp;

    private DaemonNet(DirectoryOptions? directory) => _directory = directory ?? new DirectoryOptions();

    public VnetDaemon Proxy => _daemons["proxy"];

    public VnetDaemon this[string name] => _daemons[name];

    public IEnumerable<VnetDaemon> Daemons => _order.Where(_daemons.ContainsKey).Select(n => _daemons[n]);

    /// <summary>What a daemon logged (every start of it), to wait for a message it only logs.</summary>
    public ListLogger LogOf(string name) => _logs[name];

    /// <summary>A daemon's in-memory interfaces, by name (the latest opened under that name).</summary>
    public MemoryInterfaceFactory DevicesOf(string name) => _devices[name];

    /// <summary>Starts the Proxy and the hosts (no interfaces), and waits until every star link is up at both ends.</summary>
    public static Task<DaemonNet> StartAsync(params string[] hosts) =>
        StartAsync(hosts.Select(h => (h, (IReadOnlyList<InterfaceConfig>)[])).ToArray(), null);

    /// <summary>Starts the Proxy and hosts with in-memory interfaces, and waits for the star.</summary>
    /// <param name="lan">Gives the Proxy a LAN NIC in memory, <c>lan0</c>, as a real Proxy opens its NIC through libpcap.</param>
    /// <param name="metrics">Configures every daemon's metrics endpoint, on 127.0.0.1 at a port the kernel picks (<see cref="VnetDaemon.Http"/>).</param>
    /// <param name="web">Configures the Proxy's web front on 127.0.0.1 at a port the kernel picks (<see cref="VnetDaemon.Web"/>), with <paramref name="webToken"/> if given.</param>
    public static async Task<DaemonNet> StartAsync(IReadOnlyList<(string Name, IReadOnlyList<InterfaceConfig> Interfaces)> hosts,
        DirectoryOptions? directory, LinkTransport transport = LinkTransport.Tcp, bool lan = false, bool metrics = false,
        bool web = false, WebToken? webToken = null, WebTls? webTls = null)
    {
        var net = new DaemonNet(directory) { _transport = transport };
        var metricsAt = metrics ? new IPEndPoint(IPAddress.Loopback, 0) : null;
        try
        {
            var proxyConfig = new DaemonConfig
            {
                Name = "proxy",
                Role = DaemonRole.Proxy,
                Listen = new IPEndPoint(IPAddress.Loopback, FreePort()),
                Identity = net.IdentityOf("proxy"),
                Hosts = [.. hosts.Select(h => new AdmittedHost(h.Name, net.IdentityOf(h.Name).Public))],
                AdminKeys = [net.Admin.Public],
                Interfaces = lan ? [new InterfaceConfig { Name = Lan, Kind = InterfaceKind.Pcap, Lan = true, Learn = false }] : [],
                Metrics = metricsAt,
                Web = web ? new IPEndPoint(IPAddress.Loopback, 0) : null,
                WebToken = webToken,
                WebTls = webTls,
            };
            if (lan)
            {
                net._devices["proxy"] = new MemoryInterfaceFactory();
                net._devices["proxy"].Nics[Lan] = true;
            }
            var proxy = await net.StartDaemon(proxyConfig);
            foreach (var (h, interfaces) in hosts)
            {
                await net.StartDaemon(new DaemonConfig
                {
                    Name = h,
                    Role = DaemonRole.Host,
                    Listen = new IPEndPoint(IPAddress.Loopback, FreePort()),
                    Identity = net.IdentityOf(h),
                    ProxyKey = net.IdentityOf("proxy").Public,
                    ProxyAddress = proxy.Links.LocalEndPoint,
                    ProxyTransport = transport,
                    Interfaces = interfaces,
                    Metrics = metricsAt,
                });
            }
            foreach (var (h, _) in hosts)
                await net.WaitStar(h);
            return net;
        }
        catch
        {
            await net.DisposeAsync();
            throw;
        }
    }

    /// <summary>A port nobody listens on now, so a daemon can be restarted at the same address.</summary>
    private static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    private async Task<VnetDaemon> StartDaemon(DaemonConfig config)
    {
        if (!_logs.TryGetValue(config.Name, out var log))
            _logs[config.Name] = log = new ListLogger();
        if (!_devices.TryGetValue(config.Name, out var devices))
            _devices[config.Name] = devices = new MemoryInterfaceFactory();
        var daemon = new VnetDaemon(config.Validated(), new OneLoggerFactory(log), new DaemonOptions
        {
            Pool = new Vnet.Frames.FramePool(256),
            Interfaces = devices,
            Directory = _directory,
        });
        DaemonControl.Attach(daemon);
        _daemons[config.Name] = daemon;
        _configs[config.Name] = config;
        if (!_order.Contains(config.Name))
            _order.Add(config.Name);
        await daemon.StartAsync();
        return daemon;
    }

    /// <summary>A daemon's key pair (made the first time it is asked for, kept across restarts).</summary>
    /// <summary>The key of this overlay's administrator: the Proxy takes remote CLI sessions made with it.</summary>
    public StaticKeyPair Admin { get; } = StaticKeyPair.Generate();

    public StaticKeyPair IdentityOf(string name)
    {
        lock (_identities)
        {
            if (!_identities.TryGetValue(name, out var pair))
                _identities[name] = pair = StaticKeyPair.Generate();
            return pair;
        }
    }

    /// <summary>Admits one more host at the Proxy (as 'vnet host admit' does) and starts it, with no interfaces.</summary>
    public async Task<VnetDaemon> AddHost(string name)
    {
        await Proxy.Run(() => Proxy.Keys.AdmitHost(name, IdentityOf(name).Public.ToString()));
        return await StartDaemon(new DaemonConfig
        {
            Name = name,
            Role = DaemonRole.Host,
            Listen = new IPEndPoint(IPAddress.Loopback, FreePort()),
            Identity = IdentityOf(name),
            ProxyKey = IdentityOf("proxy").Public,
            ProxyAddress = Proxy.Links.LocalEndPoint,
            ProxyTransport = _transport,
        });
    }

    /// <summary>Stops a daemon (its links close, its peers see it go).</summary>
    public async Task Stop(string name)
    {
        if (_daemons.Remove(name, out var daemon))
            await daemon.DisposeAsync();
    }

    /// <summary>Starts a stopped daemon again with its configuration, at its address.</summary>
    public Task<VnetDaemon> Restart(string name) => StartDaemon(_configs[name]);

    /// <summary>
    /// Waits until the star link of <paramref name="host"/> is up at both ends and the host has the
    /// Proxy's key list (without it, it refuses links to other hosts: it could not authenticate them).
    /// </summary>
    public Task WaitStar(string host) =>
        Until(() => _daemons.TryGetValue("proxy", out var proxy) && _daemons.TryGetValue(host, out var h) &&
            proxy.Links.Find(host) is { IsUp: true } && h.Links.Find("proxy") is { IsUp: true } && h.Keys.Version > 1,
            UpTimeout, $"star link {host} - proxy up, with the Proxy's key list");

    /// <summary>Self-repairs of every running daemon's directory (zero in a healthy run: a repair there is a bug).</summary>
    public async Task<string> Repairs()
    {
        var lines = new List<string>();
        foreach (var d in Daemons)
        {
            var status = await d.Run(d.Vms.Status);
            foreach (var r in status.RecentRepairs)
                lines.Add($"{d.Name}: {r.Topic} from {r.Peer}: {r.Kind}");
        }
        return string.Join('\n', lines);
    }

    /// <summary>Where a daemon listens, as a description writes it.</summary>
    public string At(string name) => _daemons[name].Links.LocalEndPoint!.ToString();

    /// <summary>Applies a change set at one daemon, on its control loop, as the Proxy's request would.</summary>
    public Task<ApplyResult> Apply(string daemon, params DaemonChange[] changes)
    {
        var d = _daemons[daemon];
        return d.Run(() => d.ChangeSets.Apply(changes));
    }

    public Task<DaemonState> State(string daemon)
    {
        var d = _daemons[daemon];
        return d.Run(d.State);
    }

    /// <summary>What a change set may change: user rules, links and interfaces (counters and link state left out).</summary>
    public async Task<string> Shape(string daemon)
    {
        var s = await State(daemon);
        var rules = s.Rules.Select(r => $"rule {r.Id} {r.Source} -> {r.Destination} in {r.Ingress} to {r.Action} ({r.Origin})");
        var links = s.Links.Select(l => $"link {l.Peer} {l.Transport} star={l.Star} dial={l.Dial}");
        var interfaces = s.Interfaces.Select(i => $"interface {i.Name} {i.Kind} vms={string.Join(",", i.Vms)}");
        return string.Join('\n', rules.Concat(links).Concat(interfaces));
    }

    /// <summary>Bounded asynchronous polling (the daemons' own work runs on the thread pool meanwhile).</summary>
    public static async Task Until(Func<bool> condition, TimeSpan timeout, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout)
                throw new TimeoutException($"timed out after {timeout.TotalSeconds:0.#} s waiting for {what}");
            await Task.Delay(10);
        }
    }

    /// <summary>As <see cref="Until"/>, with a condition that runs on daemons' control loops.</summary>
    public static async Task UntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what, Func<Task<string>>? explain = null)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            if (clock.Elapsed > timeout)
            {
                var why = explain is null ? "" : "\n" + await explain();
                throw new TimeoutException($"timed out after {timeout.TotalSeconds:0.#} s waiting for {what}{why}");
            }
            await Task.Delay(20);
        }
    }

    public async ValueTask DisposeAsync()
    {
        // Hosts first, so the Proxy does not watch them re-dial while it stops.
        for (var i = _order.Count - 1; i >= 0; i--)
        {
            if (_daemons.Remove(_order[i], out var d))
                await d.DisposeAsync();
        }
    }

    /// <summary>Every category of one daemon goes to one list.</summary>
    private sealed class OneLoggerFactory(ListLogger log) : ILoggerFactory
    {
        public ILogger CreateLogger(string categoryName) => log;

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose()
        {
        }
    }
}
