using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Vnet.Adaptation;
using Vnet.ChangeSets;
using Vnet.Configuration;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Http;
using Vnet.Inference;
using Vnet.Interfaces;
using Vnet.Links;
using Vnet.Metrics;
using Vnet.Overlay;
using Vnet.Peers;
using Vnet.Vms;
using Vnet.Web;
using Vnet.Vms.Providers;

namespace Vnet.Daemon;

/// <summary>What a daemon is built with besides its configuration (tests and simulations change these).</summary>
public sealed record DaemonOptions
{
    /// <summary>Frame buffers; null: a pool of 4096 (created as needed).</summary>
    public FramePool? Pool { get; init; }

    /// <summary>Where interfaces come from: real devices, or memory in tests.</summary>
    public IInterfaceFactory Interfaces { get; init; } = SystemInterfaceFactory.Instance;

    public DirectoryOptions Directory { get; init; } = new();
}

/// <summary>
/// One VNET daemon, a host or the Proxy: the composition root. It builds the data path (switch,
/// rule book, links) and the services that own the control plane, wires their events, and starts
/// and stops them in order. Every service keeps its state on the one <see cref="ControlLoop"/>:
/// <list type="bullet">
/// <item><see cref="InterfaceService"/>: local interfaces (TAP, pcap, memory) and their ports.</item>
/// <item><see cref="VmDirectory"/>: the daemon's VMs, where every VM lives, learning, anti-entropy.</item>
/// <item><see cref="PeerChannel"/>: messages, requests and responses with other daemons.</item>
/// <item><see cref="KeyRing"/>: who may be who on the links (admitted hosts, pinned keys, administrators).</item>
/// <item><see cref="LinkService"/> and <see cref="RuleService"/>: link and rule commands.</item>
/// <item><see cref="ChangeSetService"/>: change sets applied whole or undone.</item>
/// <item><see cref="VttifService"/> and <see cref="AdaptationService"/>: traffic inference and adaptation.</item>
/// <item><see cref="OverlayService"/>: the Proxy's view of the whole overlay for the language tools.</item>
/// </list>
/// Commands reach it through a dispatcher that whoever hosts the daemon attaches (the daemon does
/// not know the control socket); see docs/architecture.md.
/// </summary>
public sealed partial class VnetDaemon : IAsyncDisposable
{
    /// <summary>Remote CLI sessions (over TCP, with the key) served at once; more are refused.</summary>
    public const int MaxToolSessions = 16;

    private readonly ILogger _logger;
    private readonly DirectoryOptions _directoryOptions;
    private readonly long _started = Stopwatch.GetTimestamp();
    // An exception on the loop is a bug, but one a peer's message may trigger again and again.
    private readonly LogLimiter _errorLog = new();
    private bool _disposed;

    public VnetDaemon(DaemonConfig config, ILoggerFactory loggers, DaemonOptions? options = null)
    {
        options ??= new DaemonOptions();
        _directoryOptions = options.Directory;
        Config = config;
        Loggers = loggers;
        _logger = loggers.CreateLogger("vnet.daemon");
        // Before any forwarding thread starts: each takes this priority as it begins.
        switch (ForwardingPriority.Configure(config.ForwardingNice))
        {
            case ForwardingPriorityResult.Raised:
                Log.ForwardingNiceSet(_logger, config.ForwardingNice);
                break;
            case ForwardingPriorityResult.NotPermitted:
                Log.ForwardingPriorityRefused(_logger, config.ForwardingNice);
                break;
        }
        // One clock thread for the loop's periodic jobs and the link clock: an idle daemon wakes once per grid instant.
        Clock = new DaemonClock(OnControlError);
        Loop = new ControlLoop(OnControlError, Clock);
        // A burst of errors followed by quiet still gets its "N more" line.
        Loop.Every(LogLimiter.Window, () => _errorLog.Drain((_, count) => Log.ErrorsSuppressed(_logger, count)));
        Pool = options.Pool ?? new FramePool(4096);
        Switch = new VirtualSwitch { HopLimit = config.HopLimit };
        Rules = new RuleBook(Switch, Loop);
        Keys = new KeyRing(config, loggers.CreateLogger("vnet.keys"));
        Links = new LinkManager(new LinkManagerOptions
        {
            Name = config.Name,
            Role = config.Role,
            Identity = config.Identity,
            Peers = Keys,
            Psk = config.Psk,
            AcceptTools = config.ServesTools,
            Listen = config.Listen,
            QueueCapacity = config.QueueCapacity,
        }, Switch, Pool, loggers.CreateLogger("vnet.links"), Clock);
        Peers = new PeerChannel(config.Name, IsProxy, config.ProxyName, Links, Loop, loggers.CreateLogger("vnet.peers"));
        Links.Events = Peers;
        Interfaces = new InterfaceService(config, Switch, Rules, Pool, options.Interfaces, Loop, loggers.CreateLogger("vnet.interfaces"));
        Vms = new VmDirectory(config, options.Directory, Switch, Rules, Interfaces, Peers, Links, Loop, loggers.CreateLogger("vnet.vms"));
        LinkCommands = new LinkService(config, Links, Rules, Keys, loggers.CreateLogger("vnet.links"));
        RuleCommands = new RuleService(config.Name, Rules, Switch, loggers.CreateLogger("vnet.rules"));
        ChangeSets = new ChangeSetService(config, Links, LinkCommands, Interfaces, Vms, Rules, () => State().Version, device => VmHost?.CloseRefusal(device),
            loggers.CreateLogger("vnet.changes"));
        // A quiet host's VTTIF heartbeat goes with its digest heartbeat: one wake-up for both.
        Vttif = new VttifService(config, Switch, Links, Peers, Loop, loggers.CreateLogger("vnet.vttif"), options.Directory.DigestHeartbeat);
        Overlay = new OverlayService(config.Name, IsProxy, Peers, Links, () => Run(State), (set, version) => Run(() => ChangeSets.Apply(set, version)));
        Adaptation = new AdaptationService(config, Vttif, Vms, Overlay, Links, Rules, Loop, loggers.CreateLogger("vnet.adapt"));
        Addresses = new AddressBook();
        Switch.Addresses = Addresses;
        if (IsProxy)
            Inventory = new VmInventory(Peers, Links, Vms, Loop, loggers.CreateLogger("vnet.inventory"));
        else
            VmHost = new VmHostService(VmProviders.Create(config, loggers.CreateLogger("vnet.provider")), Interfaces, Vms, Loop, loggers.CreateLogger("vnet.vmhost"));
    }

    public DaemonConfig Config { get; }

    /// <summary>For the control side that the host attaches (DaemonControl), so that its lines go where the daemon's go.</summary>
    internal ILoggerFactory Loggers { get; }

    /// <summary>Remote CLI sessions running and refused (the control side takes a slot per session).</summary>
    public ConcurrencyLimit ToolSessions { get; } = new(MaxToolSessions);

    public string Name => Config.Name;

    public bool IsProxy => Config.Role == DaemonRole.Proxy;

    public ControlLoop Loop { get; }

    public FramePool Pool { get; }

    public VirtualSwitch Switch { get; }

    public RuleBook Rules { get; }

    public LinkManager Links { get; }

    /// <summary>Who may be who on the links: admitted hosts, the pinned Proxy key, administrators.</summary>
    public KeyRing Keys { get; }

    /// <summary>The thread that runs every periodic job: the loop's (posted to it) and the link clock.</summary>
    public DaemonClock Clock { get; }

    public PeerChannel Peers { get; }

    public InterfaceService Interfaces { get; }

    public VmDirectory Vms { get; }

    public LinkService LinkCommands { get; }

    public RuleService RuleCommands { get; }

    public ChangeSetService ChangeSets { get; }

    public VttifService Vttif { get; }

    public OverlayService Overlay { get; }

    public AdaptationService Adaptation { get; }

    /// <summary>The IPv4 address each MAC was seen using (ARP, DHCPACK), filled by the switch.</summary>
    public AddressBook Addresses { get; }

    /// <summary>Proxy: the VMs users ordered (<c>vm.order|move|remove</c>); null on a host.</summary>
    public VmInventory? Inventory { get; }

    /// <summary>Host: the VMs its provider runs here (none without <c>vm_provider</c>); null on the Proxy.</summary>
    public VmHostService? VmHost { get; }

    /// <summary>
    /// <c>vm.list</c> (control loop): every VM the directory knows, with the address it was seen
    /// using and, when it was ordered, its name, size, kind and state; on the Proxy also the ordered
    /// VMs whose frames were not seen yet.
    /// </summary>
    public IReadOnlyList<VmStatus> VmList()
    {
        var named = new Dictionary<MacAddress, (string Name, string Size, string Kind, string State)>();
        if (Inventory is not null)
        {
            foreach (var o in Inventory.List())
                named[o.Mac] = (o.Name, VmNames.Text(o.Size), VmNames.Text(o.Kind), o.State.ToString().ToLowerInvariant());
        }
        else if (VmHost is not null)
        {
            foreach (var h in VmHost.List())
                named[h.Spec.Mac] = (h.Spec.Name, VmNames.Text(h.Spec.Size), VmNames.Text(VmHost.Kind), h.State.ToString().ToLowerInvariant());
        }
        var list = new List<VmStatus>();
        foreach (var row in Vms.List())
        {
            var address = Addresses.Find(row.Mac)?.ToString();
            list.Add(named.Remove(row.Mac, out var n)
                ? row with { Address = address, Name = n.Name, Size = n.Size, Kind = n.Kind, State = n.State }
                : row with { Address = address });
        }
        if (Inventory is not null)
        {
            foreach (var o in Inventory.List())
            {
                if (named.Remove(o.Mac, out var n))
                    list.Add(new VmStatus(o.Mac, o.Site, null, false, Addresses.Find(o.Mac)?.ToString(), n.Name, n.Size, n.Kind, n.State));
            }
        }
        list.Sort(static (a, b) => a.Mac.CompareTo(b.Mac));
        return list;
    }

    /// <summary>Time since the daemon was built.</summary>
    public TimeSpan Uptime => Stopwatch.GetElapsedTime(_started);

    /// <summary>
    /// The HTTP endpoint (<c>GET /metrics</c>) when the configuration asks for one
    /// (<see cref="DaemonConfig.Metrics"/>), from <see cref="StartAsync"/> on; else null.
    /// </summary>
    public HttpServer? Http { get; private set; }

    /// <summary>
    /// The Proxy's web front (<see cref="DaemonConfig.Web"/>), from <see cref="StartAsync"/> on; else
    /// null. It runs every command through <see cref="Commands"/>, the dispatcher the CLI uses.
    /// </summary>
    public HttpServer? Web { get; private set; }

    /// <summary>
    /// The command dispatcher whoever hosts the daemon attached (<c>DaemonControl.Attach</c>); the
    /// web front needs it, as it reads and changes nothing but through commands.
    /// </summary>
    public ICommandHandler? Commands { get; set; }

    public static string VersionText => typeof(VnetDaemon).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>
    /// Starts everything, on the control loop, so no event is handled before every service is
    /// wired; then the HTTP endpoint, when configured (a port in use throws, as the link port does).
    /// </summary>
    public async Task StartAsync()
    {
        await Run(StartServices).ConfigureAwait(false);
        if (Config.Metrics is { } endPoint)
        {
            Http = await HttpServer.StartAsync(endPoint, new DaemonMetrics(this).Map, Loggers).ConfigureAwait(false);
            Log.Serving(_logger, Http.LocalEndPoint, DaemonMetrics.Path);
        }
        if (Config.Web is { } webAt)
        {
            var commands = Commands ?? throw new InvalidOperationException("the web front needs the command dispatcher attached before the daemon starts");
            var front = new WebFront(Name, commands, Config.WebToken, Loggers.CreateLogger("vnet.web"));
            Web = await HttpServer.StartAsync(webAt, front.Map, Loggers, certificate: Config.WebTls?.Certificate).ConfigureAwait(false);
            // The address only: the token is never logged.
            Log.ServingWeb(_logger, Config.WebTls is null ? "http" : "https", Web.LocalEndPoint, Config.WebToken is null ? "loopback only, no authentication" : "token required");
            if (Config.WebTls is null && !System.Net.IPAddress.IsLoopback(webAt.Address))
                Log.WebInClear(_logger, Web.LocalEndPoint);
        }
    }

    private bool StartServices()
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
        Peers.PeerUp += LinkCommands.OnPeerUp;
        Keys.Start(Peers, Links, Loop, _directoryOptions.AntiEntropyInterval, _directoryOptions.DigestHeartbeat);
        Vms.Start();
        Interfaces.Start();
        LinkCommands.Start();
        Vttif.Start();
        Adaptation.Start();
        Inventory?.Start();
        VmHost?.Start();
        Rules.Republish();
        Log.Started(_logger, Name, Config.Role, Links.LocalEndPoint!);
        return true;
    }

    /// <summary>
    /// Reads the configuration file again (or, for a daemon started from options, its hosts file)
    /// and takes its keys: administrators, hosts, link keys, the hosts file (SIGHUP, <c>vnet
    /// reload</c>; control loop). Sessions of keys that went end. Other settings wait for a restart.
    /// A configuration that does not load, or that clashes with run-time admissions, is refused
    /// whole with a <see cref="ConfigException"/>, and nothing changes.
    /// </summary>
    public DaemonConfig Reload()
    {
        var fresh = Config.Source is { } file ? DaemonConfig.Load(file) : (Config with { RuntimeHosts = [] }).WithHostsFile();
        if (fresh.Name != Config.Name || fresh.Role != Config.Role)
            throw new ConfigException(Config.Source ?? "options", "a new name or role needs a restart; nothing was reloaded");
        // Without a hosts file, run-time admissions live only in memory: a reload keeps them.
        if (fresh.HostsFile is null)
            fresh = fresh.WithRuntimeHosts(Keys.RuntimeHosts);
        Keys.Reload(fresh);
        return fresh;
    }

    /// <summary>As <see cref="Reload"/>, for a signal: the outcome goes to the log.</summary>
    public async Task ReloadFromSignalAsync()
    {
        try
        {
            await Run(Reload).ConfigureAwait(false);
        }
        catch (ConfigException e)
        {
            Log.ReloadRefused(_logger, e.Message);
        }
    }

    /// <summary>Runs a command on the control loop; its exceptions reach the caller.</summary>
    public Task<T> Run<T>(Func<T> command) => Loop.Invoke(command);

    // ---------------------------------------------------------------- status and state (control loop)

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
        return new DaemonStatus(Name, Config.Role, Links.LocalEndPoint?.ToString() ?? "", VersionText,
            Uptime.TotalSeconds, Switch.ForwardedFrames, drops, Rules.Count, links.Count, up,
            Interfaces.Count, Vms.LocalCount, Vms.Locations.Count, Pool.Created, Pool.Available, Links.Udp?.Rejected ?? 0,
            GC.GetTotalAllocatedBytes(precise: true), GC.CollectionCount(0), Vms.Repairs, Peers.BadMessages, Vms.LearnRefused,
            Peers.Traffic.BytesSent, Peers.Traffic.BytesReceived, Loop.BusyTime.TotalSeconds,
            Peers.Floods, Peers.RequestsRefused, ToolSessions.Refused, OffloadFaults(), Loop.Pending, LinkSecurity(links));
    }

    private LinkSecurityStatus LinkSecurity(IReadOnlyCollection<LinkPort> links)
    {
        long refused = 0, rekeys = 0;
        foreach (var l in links)
        {
            if (l.Session is { } s)
            {
                refused += s.RefusedMessages;
                rekeys += s.Rekeys;
            }
        }
        return new LinkSecurityStatus(Links.HandshakesRefused, Links.HandshakesLimited, refused, rekeys, Links.Udp?.Faults ?? 0,
            Links.InitsRefused, Links.ConnectionsWithoutInit);
    }

    /// <summary>Frames from links refused for their offload header, by the check they failed (only those that happened).</summary>
    private Dictionary<string, long> OffloadFaults()
    {
        var faults = new Dictionary<string, long>();
        foreach (var fault in Enum.GetValues<OffloadFault>())
        {
            if (Switch.OffloadFaults(fault) is > 0 and var n)
                faults[fault.ToString()] = n;
        }
        return faults;
    }

    private void OnControlError(Exception e)
    {
        if (!_errorLog.TryAcquire("control-plane errors", out var suppressed))
            return;
        if (suppressed > 0)
            Log.ErrorsSuppressed(_logger, suppressed);
        Log.ControlError(_logger, e);
    }

    /// <summary>The daemon's interfaces, links and rules, for the Proxy's dumps, diffs and traces, with their version.</summary>
    public DaemonState State()
    {
        var interfaces = Interfaces.All.OrderBy(i => i.Name, StringComparer.Ordinal).Select(i =>
            new InterfaceState(i.Name, i.Config.Kind, i.Config.Mtu, i.Config.Bridge, i.Config.Lan, Vms.VmsOn(i.Name), VmHost?.VmOfDevice(i.Name))).ToList();
        var links = Links.Links.OrderBy(l => l.Peer, StringComparer.Ordinal).Select(l =>
            new LinkState(l.Peer, l.Session?.Transport ?? l.Transport, l.Star, l.DialAddress?.ToString(), l.IsUp, l.Session?.RemoteEndPoint, l.Origin, l.Streams)).ToList();
        var rules = RuleCommands.List();
        return new DaemonState(Name, Config.Role, Links.LocalEndPoint?.ToString(), interfaces, links, rules,
            StateVersion(Interfaces.All, Links.Links, rules));
    }

    /// <summary>
    /// A digest of what change sets change: interfaces, the links this daemon dials, user and
    /// adaptation rules; not VMs (they come and go by themselves), link state or counters.
    /// </summary>
    private static string StateVersion(IEnumerable<LocalInterface> interfaces, IEnumerable<LinkPort> links, IEnumerable<RuleStatus> rules)
    {
        var lines = new List<string>();
        foreach (var i in interfaces)
            lines.Add($"i {i.Name} {i.Config.Kind} {i.Config.Mtu} {i.Config.Bridge} {i.Config.Lan}");
        foreach (var l in links)
        {
            // A link the peer dials appears here when the peer connects: a change set planned
            // before that still applies (it takes the port over), so it is no change of state.
            if (l.DialAddress is not null)
                lines.Add($"l {l.Peer} {l.Transport} {l.Star} {l.DialAddress} {l.Origin}{(l.Streams > 1 ? $" streams {l.Streams}" : "")}");
        }
        foreach (var r in rules)
        {
            if (r.Origin != RuleOrigin.System)
                lines.Add($"r {r.Source} {r.Destination} {r.Ingress} {r.Action} {r.Origin}");
        }
        lines.Sort(StringComparer.Ordinal);
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(string.Join('\n', lines)));
        return Convert.ToHexStringLower(hash.AsSpan(0, 8));
    }

    // ---------------------------------------------------------------- lifecycle

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (Web is not null)
        {
            Log.Stopping(_logger, "web front");
            await Web.DisposeAsync().ConfigureAwait(false);
        }
        if (Http is not null)
        {
            // First: a scrape must not meet a daemon half stopped.
            Log.Stopping(_logger, "HTTP endpoint");
            await Http.DisposeAsync().ConfigureAwait(false);
        }
        if (VmHost is not null)
        {
            // VMs live as long as their daemon: each ends while the loop still runs to close its interface.
            Log.Stopping(_logger, "VMs");
            await VmHost.StopAllAsync().ConfigureAwait(false);
            await VmHost.DisposeAsync().ConfigureAwait(false);
        }
        Log.Stopping(_logger, "links");
        await Links.DisposeAsync().ConfigureAwait(false);
        Log.Stopping(_logger, "interfaces");
        await Run(() =>
        {
            Interfaces.StopAll();
            return true;
        }).ConfigureAwait(false);
        Log.Stopping(_logger, "control loop");
        await Loop.DisposeAsync().ConfigureAwait(false);
        Clock.Dispose();
        Vttif.Dispose();
        Log.Stopped(_logger, Name);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Daemon {Name} started as {Role} on {Listen}")]
        public static partial void Started(ILogger logger, string name, DaemonRole role, System.Net.IPEndPoint listen);

        [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Daemon {Name} stopped")]
        public static partial void Stopped(ILogger logger, string name);

        [LoggerMessage(EventId = 3, Level = LogLevel.Error, Message = "Control-plane error")]
        public static partial void ControlError(ILogger logger, Exception exception);

        [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "Stopping {Part}")]
        public static partial void Stopping(ILogger logger, string part);

        [LoggerMessage(EventId = 5, Level = LogLevel.Error, Message = "{Count} more control-plane errors in the last minute were not logged")]
        public static partial void ErrorsSuppressed(ILogger logger, long count);

        [LoggerMessage(EventId = 6, Level = LogLevel.Error, Message = "Reload refused, nothing changed: {Reason}")]
        public static partial void ReloadRefused(ILogger logger, string reason);

        [LoggerMessage(EventId = 7, Level = LogLevel.Information, Message = "Metrics at http://{EndPoint}{Path} (no authentication)")]
        public static partial void Serving(ILogger logger, System.Net.IPEndPoint endPoint, string path);

        [LoggerMessage(EventId = 8, Level = LogLevel.Information, Message = "Web front at {Scheme}://{EndPoint}/ ({Access})")]
        public static partial void ServingWeb(ILogger logger, string scheme, System.Net.IPEndPoint endPoint, string access);

        [LoggerMessage(EventId = 17, Level = LogLevel.Warning, Message = "Web front at {EndPoint} is plain HTTP on an address other machines reach: its token crosses the network in clear (give web_tls_cert_file and web_tls_key_file)")]
        public static partial void WebInClear(ILogger logger, System.Net.IPEndPoint endPoint);

        [LoggerMessage(EventId = 18, Level = LogLevel.Information, Message = "Forwarding threads run at nice {Nice} (forwarding_nice)")]
        public static partial void ForwardingNiceSet(ILogger logger, int nice);

        [LoggerMessage(EventId = 19, Level = LogLevel.Warning, Message = "Forwarding threads stay at normal priority: nice {Nice} needs root or CAP_SYS_NICE (forwarding_nice = 0 silences this)")]
        public static partial void ForwardingPriorityRefused(ILogger logger, int nice);
    }
}
