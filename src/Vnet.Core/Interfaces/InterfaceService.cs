using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Interfaces;

/// <summary>A local interface of the daemon: its configuration, its switch port, and its own address.</summary>
public sealed class LocalInterface(InterfaceConfig config, InterfacePort port, MacAddress? ownMac)
{
    public InterfaceConfig Config { get; } = config;

    public string Name => Config.Name;

    public InterfacePort Port { get; } = port;

    /// <summary>The device's own address (a TAP's host side), never learned as a VM.</summary>
    public MacAddress? OwnMac { get; } = ownMac;

    /// <summary>VMs are learned from the source of frames read here (a VM-facing interface, not the LAN).</summary>
    public bool Learns => Config.Learn && !Config.Lan;
}

/// <summary>
/// Owns the daemon's local interfaces: opens them through a factory (TAP, pcap, or in memory),
/// makes each a switch port, installs the LAN's default rule, and closes them on command or when
/// the device goes away. State lives on the control loop; the data path sees only ports.
/// <code>
/// open:  factory opens the device -> port joins the switch -> LAN rule -> Opened (learning is
///        set up by the VM directory) -> the port's reader starts
/// close: Closed (the directory forgets the interface's VMs) -> rules that name the port made by
///        the system go -> the port leaves the switch -> device closed -> table republished
/// wait:  a pcap interface whose device is missing (at start, unless it is the LAN) or went away
///        (a VM's TAP when its QEMU stops) waits for it: every second (on the daemon's grid) the
///        service looks for the name and opens it again as configured; user rules that name it
///        stay and come back to life with it. A TAP is the daemon's own and is not waited for.
/// </code>
/// </summary>
public sealed partial class InterfaceService
{
    private readonly DaemonConfig _config;
    private readonly VirtualSwitch _switch;
    private readonly RuleBook _rules;
    private readonly FramePool _pool;
    private readonly IInterfaceFactory _factory;
    private readonly ControlLoop _loop;
    private readonly ILogger _logger;
    private readonly Dictionary<string, LocalInterface> _interfaces = new(StringComparer.Ordinal);

    // Interfaces waiting for their device, with the last reason an open failed (logged once per reason).
    private readonly Dictionary<string, (InterfaceConfig Config, string? Failed)> _waiting = new(StringComparer.Ordinal);
    private IReadOnlyCollection<MacAddress>? _lanFilterPending;
    private int _lanFilterRunning;
    private bool _stopping;

    public InterfaceService(DaemonConfig config, VirtualSwitch sw, RuleBook rules, FramePool pool, IInterfaceFactory factory,
        ControlLoop loop, ILogger logger)
    {
        _config = config;
        _switch = sw;
        _rules = rules;
        _pool = pool;
        _factory = factory;
        _loop = loop;
        _logger = logger;
    }

    /// <summary>An interface is open and joined the switch; its reader starts right after (control loop).</summary>
    public event Action<LocalInterface>? Opened;

    /// <summary>An interface is closing: it has left the list, its port still exists (control loop).</summary>
    public event Action<LocalInterface>? Closed;

    public IReadOnlyCollection<LocalInterface> All => _interfaces.Values;

    public int Count => _interfaces.Count;

    public LocalInterface? Find(string name) => _interfaces.GetValueOrDefault(name);

    /// <summary>How often a waiting interface looks for its device.</summary>
    public static readonly TimeSpan WaitPeriod = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Opens the configured interfaces (control loop, at start). A missing device stops the daemon,
    /// except for a pcap interface that is not the LAN: that one waits (a VM's TAP exists only while
    /// its VM runs, and may start after the daemon).
    /// </summary>
    public void Start()
    {
        foreach (var i in _config.Interfaces)
        {
            if (i.Kind == InterfaceKind.Pcap && !i.Lan && !_factory.DeviceExists(i.Name))
            {
                Wait(i);
                continue;
            }
            Open(i);
        }
        _loop.Every(WaitPeriod, OpenWaiting);
    }

    /// <summary>The names of the interfaces waiting for their device.</summary>
    public IReadOnlyCollection<string> Waiting => _waiting.Keys;

    private void Wait(InterfaceConfig config)
    {
        _waiting[config.Name] = (config, null);
        Log.Waiting(_logger, config.Name);
    }

    /// <summary>Opens each waiting interface whose device has appeared (control loop, every <see cref="WaitPeriod"/>).</summary>
    private void OpenWaiting()
    {
        if (_waiting.Count == 0 || _stopping)
            return;
        List<string>? opened = null;
        List<(InterfaceConfig, string)>? failures = null;
        foreach (var (name, (config, failed)) in _waiting)
        {
            if (!_factory.DeviceExists(name))
                continue;
            try
            {
                Open(config);
                (opened ??= []).Add(name);
            }
            catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException or DllNotFoundException)
            {
                if (failed != e.Message)
                    Log.ReopenFailed(_logger, name, e.Message);
                (failures ??= []).Add((config, e.Message));
            }
        }
        foreach (var (config, reason) in failures ?? [])
            _waiting[config.Name] = (config, reason);
        if (opened is null)
            return;
        foreach (var name in opened)
        {
            _waiting.Remove(name);
            Log.Reopened(_logger, name);
        }
        _rules.Republish();
    }

    // ---------------------------------------------------------------- commands

    public IReadOnlyList<InterfaceStatus> List(Func<string, int> vmsOn)
    {
        var list = new List<InterfaceStatus>(_interfaces.Count);
        foreach (var i in _interfaces.Values)
        {
            var c = i.Port.Counters;
            var queues = new long[i.Port.QueueCount];
            for (var q = 0; q < queues.Length; q++)
                queues[q] = i.Port.QueueFrames(q);
            list.Add(new InterfaceStatus(i.Name, i.Config.Kind, i.Config.Mtu, i.Port.IsUp, i.Port.Device.Offloads, i.Config.Lan,
                i.Config.Learn, vmsOn(i.Name), c.TxFrames, c.TxBytes, c.RxFrames, c.RxBytes, c.TxDrops, c.RxErrors, queues.Length, queues));
        }
        foreach (var (config, _) in _waiting.Values)
            list.Add(new InterfaceStatus(config.Name, config.Kind, config.Mtu, false, OffloadSet.None, config.Lan, config.Learn, 0, 0, 0, 0, 0, 0, 0,
                Waiting: true));
        list.Sort(static (a, b) => string.CompareOrdinal(a.Name, b.Name));
        return list;
    }

    /// <summary>Opens an interface at run time; refused with the reason when the name is taken or the device cannot open.</summary>
    public void Add(InterfaceConfig config)
    {
        if (_interfaces.ContainsKey(config.Name))
            throw new DaemonCommandException($"interface {config.Name} already exists");
        if (_waiting.ContainsKey(config.Name))
            throw new DaemonCommandException($"interface {config.Name} already exists (waiting for its device)");
        try
        {
            (_config with { Interfaces = [config] }).Validated();
        }
        catch (ConfigException e)
        {
            throw new DaemonCommandException(e.Message);
        }
        try
        {
            Open(config);
        }
        catch (Exception e) when (e is IOException or ArgumentException or InvalidOperationException or DllNotFoundException)
        {
            throw new DaemonCommandException($"cannot open {config.Name}: {e.Message}");
        }
        _rules.Republish();
    }

    /// <summary>Closes an interface; refused while user or adaptation rules still name it.</summary>
    public void Remove(string name)
    {
        var waiting = _waiting.ContainsKey(name);
        if (!_interfaces.TryGetValue(name, out var state) && !waiting)
            throw new DaemonCommandException($"no interface {name}");
        var port = PortRef.Interface(name);
        if (_rules.UsersOf(port) is { Count: > 0 } users)
            throw new DaemonCommandException($"interface {name} is used by rule(s) {string.Join(", ", users)}; remove them first");
        if (waiting)
        {
            _waiting.Remove(name);
            Log.Closed(_logger, name, "removed by command (it was waiting for its device)");
            return;
        }
        Close(state!, "removed by command");
    }

    /// <summary>Closes an interface whatever names it (change sets checked that first).</summary>
    public void RemoveForce(string name, string reason)
    {
        _waiting.Remove(name);
        if (_interfaces.TryGetValue(name, out var state))
            Close(state, reason);
    }

    // ---------------------------------------------------------------- open and close

    private void Open(InterfaceConfig config)
    {
        var opened = _factory.Open(config, config.Lan ? BpfFilters.ForProxyNic([]) : config.Learn ? null : BpfFilters.ForHostInterface(config.Macs.ToList()));
        var port = new InterfacePort(opened.Device, _switch, _pool, _config.HopLimit);
        var state = new LocalInterface(config, port, opened.OwnMac);
        try
        {
            _switch.AddPort(port);
        }
        catch
        {
            port.Dispose();
            throw;
        }
        _interfaces[config.Name] = state;
        port.Closed += _ => _loop.Post(() =>
        {
            if (!_stopping && _interfaces.TryGetValue(config.Name, out var current) && current == state)
            {
                Close(state, "the device went away");
                // A NIC or a VM's TAP that someone else owns comes back under its name: wait for it.
                if (config.Kind == InterfaceKind.Pcap)
                    Wait(config);
            }
        });
        if (config.Lan)
        {
            PublishLanPorts();
            // The LAN takes every frame no other rule claims: the VMs' way to the user's network.
            _rules.Edit(e => e.Add(new Rule
            {
                Source = MacMatch.Any,
                Destination = MacMatch.None,
                Action = RuleAction.To(port.Name),
                Origin = RuleOrigin.System,
            }));
        }
        Opened?.Invoke(state);
        port.Start();
        Log.Opened(_logger, opened.Device.Name, config.Kind, config.Mtu, opened.Device.Offloads, opened.Device.Queues.Count);
        if (opened.Device is PacketSocketInterface { GroTurnedOn: true })
            Log.GroTurnedOn(_logger, opened.Device.Name);
    }

    private void Close(LocalInterface state, string reason)
    {
        if (!_interfaces.Remove(state.Name))
            return;
        Closed?.Invoke(state);
        var port = state.Port.Name;
        _rules.Edit(e => e.RemoveWhere(r => r.Origin == RuleOrigin.System && r.Uses(port)));
        _switch.RemovePort(state.Port);
        if (state.Config.Lan)
            PublishLanPorts();
        state.Port.Dispose();
        _rules.Republish();
        Log.Closed(_logger, state.Name, reason);
    }

    private void PublishLanPorts()
    {
        var ids = new List<int>();
        foreach (var i in _interfaces.Values)
        {
            if (i.Config.Lan)
                ids.Add(i.Port.Id);
        }
        _switch.PublishLanPorts(ids);
    }

    // ---------------------------------------------------------------- the Proxy's LAN filter

    /// <summary>
    /// The Proxy's LAN NIC captures frames to VMs (and never from them): its BPF filter follows the
    /// VMs the Proxy knows. Compiling and installing a filter takes a while with many VMs, so it
    /// runs on its own task; a burst of changes ends in one update with the last set.
    /// </summary>
    public void UpdateLanFilters(IReadOnlyCollection<MacAddress> vms)
    {
        var targets = new List<(string Name, PacketSocketInterface Pcap)>();
        foreach (var i in _interfaces.Values)
        {
            if (i.Config.Lan && i.Port.Device is PacketSocketInterface pcap)
                targets.Add((i.Name, pcap));
        }
        if (targets.Count == 0)
            return;
        Volatile.Write(ref _lanFilterPending, vms);
        if (Interlocked.Exchange(ref _lanFilterRunning, 1) != 0)
            return;
        _ = Task.Run(() =>
        {
            while (Interlocked.Exchange(ref _lanFilterPending, null) is { } latest)
            {
                var filter = BpfFilters.ForProxyNic(latest.ToList());
                foreach (var (name, pcap) in targets)
                {
                    try
                    {
                        pcap.SetFilter(filter);
                    }
                    catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException or ObjectDisposedException)
                    {
                        Log.FilterFailed(_logger, name, e.Message);
                    }
                }
            }
            Interlocked.Exchange(ref _lanFilterRunning, 0);
            // A set posted between the last take and the release above still gets its turn.
            if (Volatile.Read(ref _lanFilterPending) is { } missed)
                _loop.Post(() => UpdateLanFilters(missed));
        });
    }

    /// <summary>Closes every interface at daemon stop (after the links, so nothing forwards to them).</summary>
    public void StopAll()
    {
        _stopping = true;
        foreach (var i in _interfaces.Values)
            i.Port.Dispose();
        _interfaces.Clear();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 10, Level = LogLevel.Information, Message = "Interface {Name} open ({Kind}, MTU {Mtu}, offloads {Offloads}, queues {Queues})")]
        public static partial void Opened(ILogger logger, string name, InterfaceKind kind, int mtu, OffloadSet offloads, int queues);

        [LoggerMessage(EventId = 16, Level = LogLevel.Information, Message = "Interface {Name}: GRO turned on while VNET reads it, so TCP arrives in super-frames; it goes off again at close (offloads = false leaves it alone)")]
        public static partial void GroTurnedOn(ILogger logger, string name);

        [LoggerMessage(EventId = 11, Level = LogLevel.Warning, Message = "Interface {Name} closed: {Reason}")]
        public static partial void Closed(ILogger logger, string name, string reason);

        [LoggerMessage(EventId = 12, Level = LogLevel.Warning, Message = "Cannot update the filter of {Name}: {Reason}")]
        public static partial void FilterFailed(ILogger logger, string name, string reason);

        [LoggerMessage(EventId = 13, Level = LogLevel.Warning, Message = "Interface {Name}: no such device; waiting for it (checked every second)")]
        public static partial void Waiting(ILogger logger, string name);

        [LoggerMessage(EventId = 14, Level = LogLevel.Information, Message = "Interface {Name}: its device is back, open again")]
        public static partial void Reopened(ILogger logger, string name);

        [LoggerMessage(EventId = 15, Level = LogLevel.Warning, Message = "Interface {Name}: its device exists but does not open: {Reason}")]
        public static partial void ReopenFailed(ILogger logger, string name, string reason);
    }
}
