using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Interfaces;
using Vnet.Links;
using Vnet.Native;

namespace Vnet.Daemon;

/// <summary>
/// One VNET daemon: a host, or the Proxy on the user's LAN. It wires the data path (interfaces,
/// links, switch, rules) and runs the control plane: VM learning, the resilient star, the Proxy's
/// view of where every VM lives, and the command API that the control socket (and later the
/// language tools) use. Every command runs on one control loop, so commands never interleave.
/// </summary>
public sealed partial class VnetDaemon : ILinkEvents, IToolSessionHost, IAsyncDisposable
{
    private readonly ILogger _logger;
    private readonly ControlLoop _control;
    private readonly ConcurrentDictionary<string, LocalInterface> _interfaces = new(StringComparer.Ordinal);
    private readonly long _started = Stopwatch.GetTimestamp();
    private LocalInterface?[] _learningByPort = [];
    private bool _disposed;

    public VnetDaemon(DaemonConfig config, ILoggerFactory loggers, FramePool? pool = null)
    {
        Config = config;
        _logger = loggers.CreateLogger("vnet.daemon");
        Pool = pool ?? new FramePool(4096);
        Switch = new VirtualSwitch();
        Rules = new RuleBook(Switch);
        Links = new LinkManager(new LinkManagerOptions
        {
            Name = config.Name,
            Role = config.Role,
            Key = config.Key,
            Listen = config.Listen,
            QueueCapacity = config.QueueCapacity,
        }, Switch, Pool, loggers.CreateLogger("vnet.links"))
        {
            Events = this,
            ToolSessions = this,
        };
        _control = new ControlLoop(e => Log.ControlError(_logger, e));
        Switch.NewSourceHandler = OnNewSource;
    }

    public DaemonConfig Config { get; }

    public string Name => Config.Name;

    public bool IsProxy => Config.Role == DaemonRole.Proxy;

    public FramePool Pool { get; }

    public VirtualSwitch Switch { get; }

    public RuleBook Rules { get; }

    public LinkManager Links { get; }

    /// <summary>Port reference of the star link on a host.</summary>
    public PortRef ProxyLink => PortRef.Link(Config.ProxyName);

    public Task StartAsync()
    {
        Links.Start();
        // Group frames follow the star: every daemon floods along it.
        Rules.Edit(e => e.Add(new Rule
        {
            Source = MacMatch.Any,
            Destination = MacMatch.Multicast,
            Action = RuleAction.Flood,
            Origin = RuleOrigin.System,
        }));
        foreach (var i in Config.Interfaces)
            OpenInterface(i);
        if (!IsProxy)
            Links.AddLink(Config.ProxyName, Config.ProxyTransport, star: true, Config.ProxyAddress);
        foreach (var l in Config.Links)
            Links.AddLink(l.Peer, l.Transport, star: false, l.Address);
        Rules.Republish();
        StartVttif();
        Log.Started(_logger, Name, Config.Role, Links.LocalEndPoint!);
        return Task.CompletedTask;
    }

    // ---------------------------------------------------------------- command API

    /// <summary>Runs a command on the control loop; its exceptions reach the caller.</summary>
    public Task<T> Run<T>(Func<T> command) => _control.Invoke(command);

    public DaemonStatus Status()
    {
        var drops = new Dictionary<string, long>();
        foreach (var reason in Enum.GetValues<DropReason>())
            drops[reason.ToString()] = Switch.Dropped(reason);
        var links = Links.Links;
        var up = 0;
        foreach (var l in links)
        {
            if (l.IsUp)
                up++;
        }
        var localVms = 0;
        foreach (var i in _interfaces.Values)
            localVms += i.Vms.Count;
        return new DaemonStatus(Name, IsProxy ? "proxy" : "host", Links.LocalEndPoint?.ToString() ?? "", VersionText,
            Stopwatch.GetElapsedTime(_started).TotalSeconds, Switch.ForwardedFrames, drops, Rules.Count, links.Count, up,
            _interfaces.Count, localVms, _locations.Count, Pool.Created, Pool.Available, Links.Udp?.Rejected ?? 0,
            GC.GetTotalAllocatedBytes(precise: true), GC.CollectionCount(0));
    }

    public static string VersionText => typeof(VnetDaemon).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    public IReadOnlyList<LinkStatus> ListLinks()
    {
        var list = new List<LinkStatus>();
        foreach (var p in Links.Links.OrderBy(p => p.Peer, StringComparer.Ordinal))
        {
            var s = p.Session;
            var c = p.Counters;
            var rtt = s?.SmoothedRttMicros is long r && r >= 0 ? r / 1000.0 : (double?)null;
            list.Add(new LinkStatus(p.Peer, p.Emulation?.ToString(), (s?.Transport ?? p.Transport).ToString().ToLowerInvariant(), p.Star, p.DialAddress?.ToString(),
                p.IsUp, s?.RemoteEndPoint, s?.Started, rtt, c.TxFrames, c.TxBytes, c.RxFrames, c.RxBytes, c.TxDrops, c.RxErrors,
                s?.QueuedFrames ?? 0, p.SessionsStarted, p.LastDownReason.Length == 0 ? null : p.LastDownReason));
        }
        return list;
    }

    /// <summary>Adds a link this daemon dials; refused when the peer is this daemon or the link exists.</summary>
    public LinkStatus AddLink(string peer, IPEndPoint address, LinkTransport transport)
    {
        if (!Names.IsValid(peer))
            throw new DaemonCommandException($"'{peer}' is not a valid daemon name");
        if (peer == Name)
            throw new DaemonCommandException("a daemon cannot link to itself");
        if (Links.Find(peer) is not null)
            throw new DaemonCommandException($"link {peer} already exists");
        Links.AddLink(peer, transport, star: !IsProxy && peer == Config.ProxyName, address);
        Rules.Republish();
        Log.LinkAdded(_logger, peer, address, transport);
        return ListLinks().First(l => l.Peer == peer);
    }

    /// <summary>Removes a link; refused when user rules still send to or match on it.</summary>
    public void RemoveLink(string peer)
    {
        if (Links.Find(peer) is not { } port)
            throw new DaemonCommandException($"no link {peer}");
        if (port.Star)
            throw new DaemonCommandException(StarLinkRefusal(peer));
        RefuseIfUsed(PortRef.Link(peer), $"link {peer}");
        RemoveLinkForce(peer);
    }

    /// <summary>
    /// Why a star link cannot be removed: at a host it is the host's own configuration, and at the
    /// Proxy it is the host's (removing it would only cut the host off until it re-dials).
    /// </summary>
    private string StarLinkRefusal(string peer) => IsProxy
        ? $"the star link to {peer} is part of {peer}'s configuration"
        : $"the star link to {peer} is part of {Name}'s configuration";

    /// <summary>Refuses the command while user or adaptation rules still send to or match on the port.</summary>
    private void RefuseIfUsed(PortRef port, string what)
    {
        var users = Rules.List().Where(r => r.Rule.Origin != RuleOrigin.System && Uses(r.Rule, port)).Select(r => r.Rule.Id).ToList();
        if (users.Count > 0)
            throw new DaemonCommandException($"{what} is used by rule(s) {string.Join(", ", users)}; remove them first");
    }

    private readonly Dictionary<string, LinkEmulation> _emulation = new(StringComparer.Ordinal);

    /// <summary>The emulation for links to a peer: its own entry, else the <c>*</c> entry, else none.</summary>
    private LinkEmulation? EmulationFor(string peer)
    {
        lock (_emulation)
        {
            if (_emulation.Count == 0)
            {
                foreach (var (k, v) in Config.Emulation)
                    _emulation[k] = v;
            }
            return _emulation.TryGetValue(peer, out var e) ? e : _emulation.GetValueOrDefault("*");
        }
    }

    /// <summary>Sets (or with "none" clears) the emulation of links to a peer, or of every link ("*").</summary>
    public string SetEmulation(string peer, string settings)
    {
        if (peer != "*" && !Names.IsValid(peer))
            throw new DaemonCommandException($"'{peer}' is not a daemon name or *");
        LinkEmulation emulation;
        try
        {
            emulation = LinkEmulation.Parse(settings);
        }
        catch (FormatException e)
        {
            throw new DaemonCommandException(e.Message);
        }
        EmulationFor(peer);
        lock (_emulation)
            _emulation[peer] = emulation;
        foreach (var port in Links.Links)
            port.Emulation = EmulationFor(port.Peer);
        var text = emulation.ToString();
        Log.EmulationSet(_logger, peer, text);
        return text;
    }

    private static bool Uses(Rule rule, PortRef port) =>
        (!rule.Action.IsFlood && rule.Action.Port == port) || rule.Ingress == port;

    public IReadOnlyList<RuleStatus> ListRules() =>
        Rules.List().Select(e => ToStatus(e.Rule, e.Stats)).ToList();

    private static RuleStatus ToStatus(Rule r, RuleStats s) => new(r.Id, r.Source.ToString(), r.Destination.ToString(),
        r.Ingress?.ToString(), r.Action.ToString(), r.Origin.ToString().ToLowerInvariant(), r.Priority, s.Frames, s.Bytes);

    /// <summary>Adds a rule after checking it and that the ports it names exist.</summary>
    public RuleStatus AddRule(Rule rule)
    {
        if (rule.Validate() is { } problem)
            throw new DaemonCommandException(problem);
        if (!rule.Action.IsFlood && Switch.ResolvePort(rule.Action.Port) < 0)
            throw new DaemonCommandException($"no port {rule.Action.Port} on {Name}");
        if (rule.Ingress is { } i && Switch.ResolvePort(i) < 0)
            throw new DaemonCommandException($"no port {i} on {Name}");
        var added = Rules.Edit(e => e.Add(rule with { Id = 0 }));
        Log.RuleAdded(_logger, added.Id, added);
        return ToStatus(added, Rules.List().First(r => r.Rule.Id == added.Id).Stats);
    }

    public void RemoveRule(long id)
    {
        if (!Rules.Edit(e => e.Remove(id)))
            throw new DaemonCommandException($"no rule {id}");
        Log.RuleRemoved(_logger, id);
    }

    public IReadOnlyList<InterfaceStatus> ListInterfaces() =>
        _interfaces.Values.OrderBy(i => i.Config.Name, StringComparer.Ordinal).Select(i =>
        {
            var c = i.Port.Counters;
            return new InterfaceStatus(i.Config.Name, i.Config.Kind.ToString().ToLowerInvariant(), i.Config.Mtu, i.Port.IsUp,
                i.Port.Device.AcceptsOffloads, i.Config.Lan, i.Config.Learn, i.Vms.Count,
                c.TxFrames, c.TxBytes, c.RxFrames, c.RxBytes, c.TxDrops, c.RxErrors);
        }).ToList();

    public InterfaceStatus AddInterface(InterfaceConfig config)
    {
        if (_interfaces.ContainsKey(config.Name))
            throw new DaemonCommandException($"interface {config.Name} already exists");
        try
        {
            (Config with { Interfaces = [config] }).Validated();
        }
        catch (ConfigException e)
        {
            throw new DaemonCommandException(e.Message);
        }
        try
        {
            OpenInterface(config);
        }
        catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException or DllNotFoundException)
        {
            throw new DaemonCommandException($"cannot open {config.Name}: {e.Message}");
        }
        Rules.Republish();
        return ListInterfaces().First(i => i.Name == config.Name);
    }

    public void RemoveInterface(string name)
    {
        if (!_interfaces.TryGetValue(name, out var state))
            throw new DaemonCommandException($"no interface {name}");
        RefuseIfUsed(PortRef.Interface(name), $"interface {name}");
        CloseInterface(state, "removed by command");
    }

    public IReadOnlyList<VmStatus> ListVms()
    {
        var list = new List<VmStatus>();
        var local = new Dictionary<MacAddress, string>();
        foreach (var i in _interfaces.Values)
        {
            foreach (var mac in i.Vms.Keys)
                local[mac] = i.Config.Name;
        }
        foreach (var (mac, iface) in local)
            list.Add(new VmStatus(mac.ToString(), Name, iface, true));
        foreach (var (mac, daemon) in _locations)
        {
            if (!local.ContainsKey(mac))
                list.Add(new VmStatus(mac.ToString(), daemon, null, false));
        }
        list.Sort((a, b) => string.CompareOrdinal(a.Mac, b.Mac));
        return list;
    }

    // ---------------------------------------------------------------- interfaces

    /// <summary>A local interface and the VMs learned on it.</summary>
    private sealed class LocalInterface(InterfaceConfig config, InterfacePort port)
    {
        public InterfaceConfig Config { get; } = config;

        public InterfacePort Port { get; } = port;

        /// <summary>The device's own address (a TAP's host side), never learned as a VM.</summary>
        public MacAddress? OwnMac { get; set; }

        /// <summary>VM MACs on this interface (pinned in the configuration or learned).</summary>
        public ConcurrentDictionary<MacAddress, bool> Vms { get; } = new();
    }

    private void OpenInterface(InterfaceConfig config)
    {
        ILocalInterface device = config.Kind switch
        {
            InterfaceKind.Tap => TapInterface.Open(config.Name, config.Mtu, config.Offloads),
            _ => PcapInterface.Open(config.Name, config.Mtu, InitialFilter(config)),
        };
        if (config.Bridge is not null)
        {
            try
            {
                NetDevice.AddToBridge(config.Bridge, device.Name);
            }
            catch
            {
                device.Dispose();
                throw;
            }
        }
        var port = new InterfacePort(device, Switch, Pool, Config.HopLimit);
        var state = new LocalInterface(config, port);
        Switch.AddPort(port);
        _interfaces[config.Name] = state;
        port.Closed += p =>
        {
            if (!_disposed)
                _control.Post(() => CloseInterface(state, "the device went away"));
        };
        if (config.Kind == InterfaceKind.Tap)
        {
            // The host's own side of the TAP talks too (ARP, IPv6 ND); it is not a VM.
            state.OwnMac = MacAddress.Read(NetDevice.GetHardwareAddress(device.Name));
        }
        RebuildLearningIndex();
        if (config.Lan)
        {
            Rules.Edit(e => e.Add(new Rule
            {
                Source = MacMatch.Any,
                Destination = MacMatch.None,
                Action = RuleAction.To(port.Name),
                Origin = RuleOrigin.System,
            }));
        }
        foreach (var mac in config.Macs)
            LearnLocal(state, mac, announce: false);
        port.Start();
        Log.InterfaceOpened(_logger, device.Name, config.Kind, config.Mtu, device.AcceptsOffloads);
    }

    private string? InitialFilter(InterfaceConfig config)
    {
        if (config.Lan)
            return BpfFilters.ForProxyNic(KnownVmMacs());
        return config.Learn ? null : BpfFilters.ForHostInterface(config.Macs.ToList());
    }

    private void CloseInterface(LocalInterface state, string reason)
    {
        if (!_interfaces.TryRemove(new KeyValuePair<string, LocalInterface>(state.Config.Name, state)))
            return;
        var port = state.Port.Name;
        var gone = state.Vms.Keys.ToList();
        Rules.Edit(e =>
        {
            e.RemoveWhere(r => r.Origin == RuleOrigin.System && Uses(r, port));
            foreach (var mac in gone)
                RemoveLocalVmRules(e, mac);
        });
        Switch.RemovePort(state.Port);
        RebuildLearningIndex();
        state.Port.Dispose();
        Rules.Republish();
        foreach (var mac in gone)
            OnLocalVmGone(mac);
        Log.InterfaceClosed(_logger, state.Config.Name, reason);
    }

    private void RebuildLearningIndex()
    {
        var index = new LocalInterface?[64];
        foreach (var s in _interfaces.Values)
        {
            var id = s.Port.Id;
            if (id < 0 || !s.Config.Learn || s.Config.Lan)
                continue;
            if (id >= index.Length)
                Array.Resize(ref index, id + 64);
            index[id] = s;
        }
        Volatile.Write(ref _learningByPort, index);
        PublishSources();
    }

    // ---------------------------------------------------------------- lifecycle

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
            return;
        _disposed = true;
        await StopVttif();
        Log.Stopping(_logger, "links");
        await Links.DisposeAsync();
        Log.Stopping(_logger, "interfaces");
        foreach (var i in _interfaces.Values)
            i.Port.Dispose();
        _interfaces.Clear();
        Log.Stopping(_logger, "control loop");
        await _control.DisposeAsync();
        Log.Stopped(_logger, Name);
    }
}
