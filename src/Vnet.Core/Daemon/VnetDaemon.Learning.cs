using System.Collections.Concurrent;
using System.Diagnostics;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Daemon;

public sealed partial class VnetDaemon
{
    /// <summary>After the Proxy says a VM moved away, its late frames here must not pull it back.</summary>
    private static readonly TimeSpan MoveHoldDown = TimeSpan.FromSeconds(3);

    private readonly ConcurrentDictionary<MacAddress, long> _movedAway = new();
    private readonly Lock _learnLock = new();
    private long _learnRefused;

    /// <summary>VM MACs refused because an interface reached its learning limit.</summary>
    public long LearnRefused => Interlocked.Read(ref _learnRefused);

    /// <summary>
    /// A frame came from a learning interface with a source MAC not known there: a VM has appeared.
    /// Install its rules now (so the lookup that follows forwards this very frame) and tell the
    /// Proxy. Runs on the data-path thread; allocates only for a new VM.
    /// </summary>
    private void OnNewSource(Frame frame, MacAddress source)
    {
        var index = Volatile.Read(ref _learningByPort);
        var id = frame.IngressPort;
        if ((uint)id >= (uint)index.Length || index[id] is not { } state)
            return;
        if (_movedAway.TryGetValue(source, out var until) && Stopwatch.GetTimestamp() < until)
            return;
        if (IsLocalDevice(source))
            return;
        lock (_learnLock)
        {
            if (state.Vms.ContainsKey(source))
                return;
            if (state.Vms.Count >= Config.MaxLearnedPerInterface)
            {
                Interlocked.Increment(ref _learnRefused);
                return;
            }
            LearnLocal(state, source, announce: true);
        }
    }

    private HashSet<MacAddress> _localDevices = [];
    private long _localDevicesRead;

    /// <summary>
    /// Whether a MAC belongs to a network device of this machine (a bridge, a veth, the TAP's own
    /// side): the host's own traffic (IGMP reports, ARP) is not a VM. The list is read from
    /// /sys/class/net at most once a second, only when an unknown source shows up.
    /// </summary>
    private bool IsLocalDevice(MacAddress mac)
    {
        if (_localDevices.Contains(mac))
            return true;
        if (Stopwatch.GetElapsedTime(Interlocked.Read(ref _localDevicesRead)) < TimeSpan.FromSeconds(1))
            return false;
        Interlocked.Exchange(ref _localDevicesRead, Stopwatch.GetTimestamp());
        var devices = new HashSet<MacAddress>();
        try
        {
            foreach (var dir in Directory.EnumerateDirectories("/sys/class/net"))
            {
                var text = File.ReadAllText(Path.Combine(dir, "address")).Trim();
                if (MacAddress.TryParse(text, out var m) && m != MacAddress.Zero)
                    devices.Add(m);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        _localDevices = devices;
        return devices.Contains(mac);
    }

    /// <summary>Tells the switch which ports learn and which sources it already knows.</summary>
    private void PublishSources()
    {
        var ports = new List<int>();
        var known = new List<MacAddress>();
        foreach (var s in _interfaces.Values)
        {
            known.AddRange(s.Vms.Keys);
            if (s.OwnMac is { } own)
                known.Add(own);
            if (s.Config.Learn && !s.Config.Lan && s.Port.Id >= 0)
                ports.Add(s.Port.Id);
        }
        Switch.PublishSources(ports, known);
    }

    /// <summary>Installs a local VM's rules: delivery to its interface and, on a host, its default rule to the Proxy.</summary>
    private void LearnLocal(LocalInterface state, MacAddress mac, bool announce)
    {
        foreach (var other in _interfaces.Values)
        {
            if (other != state)
                other.Vms.TryRemove(mac, out _);
        }
        var port = state.Port.Name;
        Rules.Edit(e =>
        {
            RemoveLocalVmRules(e, mac);
            e.Add(new Rule
            {
                Source = MacMatch.Any,
                Destination = MacMatch.Exact(mac),
                Action = RuleAction.To(port),
                Origin = RuleOrigin.System,
            });
            if (!IsProxy)
            {
                e.Add(new Rule
                {
                    Source = MacMatch.Exact(mac),
                    Destination = MacMatch.None,
                    Action = RuleAction.To(ProxyLink),
                    Origin = RuleOrigin.System,
                });
            }
        });
        state.Vms[mac] = true;
        _movedAway.TryRemove(mac, out _);
        PublishSources();
        var name = state.Config.Name;
        if (!IsProxy)
        {
            // Tell the Proxy before the frame that revealed the VM is forwarded: control messages
            // leave ahead of queued frames, so the Proxy knows the VM before it sees its traffic.
            _locations[mac] = Name;
            SendToProxy(new PeerMessage { Type = PeerMessage.Announce, Vms = [new VmEntry(mac.ToString(), name)] });
        }
        if (announce)
            _control.Post(() => OnLocalVmLearned(mac, name));
        else
            OnLocalVmLearned(mac, name);
    }

    /// <summary>Removes the system rules that make <paramref name="mac"/> a VM of this daemon.</summary>
    private static void RemoveLocalVmRules(RuleBook.Editor e, MacAddress mac)
    {
        var exact = MacMatch.Exact(mac);
        e.RemoveWhere(r => r.Origin == RuleOrigin.System && (
            (r.Destination == exact && !r.Action.IsFlood && r.Action.Port.Kind == PortKind.Interface) ||
            (r.Source == exact && r.Destination.Kind == MacMatchKind.None)));
    }

    /// <summary>Forgets a local VM that now lives elsewhere (control loop).</summary>
    private void UnlearnLocal(MacAddress mac, string newHome)
    {
        var found = false;
        foreach (var s in _interfaces.Values)
            found |= s.Vms.TryRemove(mac, out _);
        if (!found)
            return;
        _movedAway[mac] = Stopwatch.GetTimestamp() + (long)(MoveHoldDown.TotalSeconds * Stopwatch.Frequency);
        Rules.Edit(e => RemoveLocalVmRules(e, mac));
        PublishSources();
        Log.VmMovedAway(_logger, mac, newHome);
    }

    private void OnLocalVmLearned(MacAddress mac, string iface)
    {
        Log.VmLearned(_logger, mac, iface);
        if (IsProxy)
            SetLocations([(mac, Name)]);
    }

    private void OnLocalVmGone(MacAddress mac)
    {
        if (IsProxy)
        {
            RemoveLocations([mac], Name);
            return;
        }
        _locations.TryRemove(new KeyValuePair<MacAddress, string>(mac, Name));
        SendToProxy(new PeerMessage { Type = PeerMessage.Withdraw, Macs = [mac.ToString()] });
    }

    private List<VmEntry> LocalVmEntries()
    {
        var list = new List<VmEntry>();
        foreach (var s in _interfaces.Values)
        {
            foreach (var mac in s.Vms.Keys)
                list.Add(new VmEntry(mac.ToString(), s.Config.Name));
        }
        return list;
    }
}
