using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Tests.Links;

namespace Vnet.Tests.Daemon;

/// <summary>
/// Real daemons in this process, without interfaces: a Proxy and hosts that dial it over loopback,
/// each listening on 127.0.0.1 at a port of its own. Nothing is created in any network namespace,
/// so the control plane (change sets, remote commands, dumps) can be tested without root.
/// </summary>
internal sealed class DaemonNet : IAsyncDisposable
{
    public static readonly TimeSpan UpTimeout = TimeSpan.FromSeconds(10);

    private readonly NetworkKey _key = NetworkKey.Generate();
    private readonly Dictionary<string, VnetDaemon> _daemons = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ListLogger> _logs = new(StringComparer.Ordinal);
    private readonly List<VnetDaemon> _order = [];

    private DaemonNet()
    {
    }

    public VnetDaemon Proxy => _daemons["proxy"];

    public VnetDaemon this[string name] => _daemons[name];

    /// <summary>What a daemon logged, to wait for a message it only logs (an ignored request).</summary>
    public ListLogger LogOf(string name) => _logs[name];

    /// <summary>Starts the Proxy and the hosts, and waits until every star link is up at both ends.</summary>
    public static async Task<DaemonNet> StartAsync(params string[] hosts)
    {
        var net = new DaemonNet();
        try
        {
            var proxy = await net.StartDaemon(new DaemonConfig
            {
                Name = "proxy",
                Role = DaemonRole.Proxy,
                Listen = new IPEndPoint(IPAddress.Loopback, 0),
                Key = net._key,
            });
            foreach (var h in hosts)
            {
                await net.StartDaemon(new DaemonConfig
                {
                    Name = h,
                    Role = DaemonRole.Host,
                    Listen = new IPEndPoint(IPAddress.Loopback, 0),
                    Key = net._key,
                    ProxyAddress = proxy.Links.LocalEndPoint,
                });
            }
            foreach (var h in hosts)
            {
                await Until(() => proxy.Links.Find(h) is { IsUp: true } && net[h].Links.Find("proxy") is { IsUp: true },
                    UpTimeout, $"star link {h} - proxy up");
            }
            return net;
        }
        catch
        {
            await net.DisposeAsync();
            throw;
        }
    }

    private async Task<VnetDaemon> StartDaemon(DaemonConfig config)
    {
        var log = new ListLogger();
        var daemon = new VnetDaemon(config.Validated(), new OneLoggerFactory(log));
        _daemons[config.Name] = daemon;
        _logs[config.Name] = log;
        _order.Add(daemon);
        await daemon.StartAsync();
        return daemon;
    }

    /// <summary>Where a daemon listens, as a description writes it.</summary>
    public string At(string name) => _daemons[name].Links.LocalEndPoint!.ToString();

    /// <summary>Applies a change set at one daemon, on its control loop, as the Proxy's request would.</summary>
    public Task<ApplyResult> Apply(string daemon, params DaemonChange[] changes)
    {
        var d = _daemons[daemon];
        return d.Run(() => d.Apply(changes));
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

    public async ValueTask DisposeAsync()
    {
        // Hosts first, so the Proxy does not watch them re-dial while it stops.
        for (var i = _order.Count - 1; i >= 0; i--)
            await _order[i].DisposeAsync();
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
