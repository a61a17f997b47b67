using System.Collections.Concurrent;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Interfaces;
using Vnet.Links;

namespace Vnet.Daemon;

public sealed partial class VnetDaemon
{
    /// <summary>
    /// Where every VM lives. On the Proxy this is the authority, built from the hosts' announcements;
    /// on a host it is the Proxy's view, pushed on every change.
    /// </summary>
    private readonly ConcurrentDictionary<MacAddress, string> _locations = new();

    void ILinkEvents.OnLinkUp(LinkPort port, LinkSession session) => _control.Post(() =>
    {
        port.Emulation = EmulationFor(port.Peer);
        Rules.Republish();
        if (!IsProxy && port.Peer == Config.ProxyName)
        {
            // The star is (back) up: the Proxy gets this host's complete VM set.
            Send(port, new PeerMessage { Type = PeerMessage.Announce, Full = true, Vms = LocalVmEntries() });
        }
        else if (IsProxy && port.Star)
        {
            Send(port, new PeerMessage { Type = PeerMessage.Locations, Full = true, Where = LocationEntries() });
        }
    });

    void ILinkEvents.OnLinkDown(LinkPort port, LinkSession session, string reason)
    {
        FailPending(port.Peer, reason);
        if (IsProxy && port.Star)
            _control.Post(() => ForgetTraffic(port.Peer));
    }

    void ILinkEvents.OnControl(LinkPort port, LinkSession session, byte[] payload)
    {
        var message = PeerMessage.TryParse(payload, out var error);
        if (message is null)
        {
            Log.BadControl(_logger, port.Peer, error!);
            port.Counters.CountRxError();
            return;
        }
        // Requests and responses stay off the control loop: a request may itself wait for it.
        if (message.Type == PeerMessage.Response && IsProxy)
        {
            OnResponse(port, message);
            return;
        }
        if (message.Type == PeerMessage.Request && !IsProxy)
        {
            if (port.Peer == Config.ProxyName)
                OnRequest(port, session, message);
            else
                Log.IgnoredControl(_logger, port.Peer, message.Type, "hosts take commands only from the Proxy");
            return;
        }
        _control.Post(() => OnPeerMessage(port, message));
    }

    private void OnPeerMessage(LinkPort port, PeerMessage message)
    {
        if (IsProxy)
        {
            if (!port.Star)
            {
                Log.IgnoredControl(_logger, port.Peer, message.Type, "only hosts on the star report VMs");
                return;
            }
            switch (message.Type)
            {
                case PeerMessage.Announce:
                    OnAnnounce(port.Peer, message);
                    return;
                case PeerMessage.Withdraw:
                    RemoveLocations(ParseMacs(port.Peer, message.Macs), port.Peer);
                    return;
                case PeerMessage.Traffic:
                    OnTraffic(port.Peer, message);
                    return;
            }
        }
        else
        {
            if (port.Peer != Config.ProxyName)
            {
                Log.IgnoredControl(_logger, port.Peer, message.Type, "hosts take control messages only from the Proxy");
                return;
            }
            if (message.Type == PeerMessage.Locations)
            {
                OnLocations(message);
                return;
            }
        }
        Log.IgnoredControl(_logger, port.Peer, message.Type, "unexpected message type");
    }

    private List<MacAddress> ParseMacs(string peer, IReadOnlyList<string>? texts)
    {
        var macs = new List<MacAddress>();
        foreach (var t in texts ?? [])
        {
            if (MacAddress.TryParse(t, out var mac) && !mac.IsGroup)
                macs.Add(mac);
            else
                Log.BadControl(_logger, peer, $"'{t}' is not a VM MAC address");
        }
        return macs;
    }

    // ---------------------------------------------------------------- Proxy side

    private void OnAnnounce(string host, PeerMessage message)
    {
        var macs = ParseMacs(host, message.Vms?.Select(v => v.Mac).ToList());
        var changes = new List<(MacAddress, string)>();
        foreach (var mac in macs)
            changes.Add((mac, host));
        SetLocations(changes);
        if (message.Full)
        {
            var listed = macs.ToHashSet();
            var stale = _locations.Where(kv => kv.Value == host && !listed.Contains(kv.Key)).Select(kv => kv.Key).ToList();
            RemoveLocations(stale, host);
        }
    }

    /// <summary>Proxy: records where VMs are, points its rules there, and tells every host.</summary>
    private void SetLocations(IReadOnlyList<(MacAddress Mac, string Daemon)> entries)
    {
        var changed = new List<LocationEntry>();
        Rules.Edit(e =>
        {
            foreach (var (mac, daemon) in entries)
            {
                if (_locations.TryGetValue(mac, out var current) && current == daemon)
                    continue;
                var exact = MacMatch.Exact(mac);
                e.RemoveWhere(r => r.Origin == RuleOrigin.System && r.Destination == exact &&
                    !r.Action.IsFlood && r.Action.Port.Kind == PortKind.Link);
                if (daemon != Name)
                {
                    e.Add(new Rule
                    {
                        Source = MacMatch.Any,
                        Destination = exact,
                        Action = RuleAction.To(PortRef.Link(daemon)),
                        Origin = RuleOrigin.System,
                    });
                }
                _locations[mac] = daemon;
                changed.Add(new LocationEntry(mac.ToString(), daemon));
                if (current is not null)
                    Log.VmMoved(_logger, mac, current, daemon);
                else
                    Log.VmLocated(_logger, mac, daemon);
            }
        });
        foreach (var (mac, daemon) in entries)
        {
            if (daemon != Name)
                UnlearnLocal(mac, daemon);
        }
        if (changed.Count > 0)
        {
            Broadcast(new PeerMessage { Type = PeerMessage.Locations, Where = changed });
            UpdateLanFilters();
            Adapt("a VM moved or appeared");
        }
    }

    private void RemoveLocations(IReadOnlyList<MacAddress> macs, string daemon)
    {
        var changed = new List<LocationEntry>();
        Rules.Edit(e =>
        {
            foreach (var mac in macs)
            {
                if (!_locations.TryGetValue(mac, out var current) || current != daemon)
                    continue;
                var exact = MacMatch.Exact(mac);
                e.RemoveWhere(r => r.Origin == RuleOrigin.System && r.Destination == exact &&
                    !r.Action.IsFlood && r.Action.Port.Kind == PortKind.Link);
                _locations.TryRemove(mac, out _);
                changed.Add(new LocationEntry(mac.ToString(), ""));
                Log.VmGone(_logger, mac, daemon);
            }
        });
        if (changed.Count > 0)
        {
            Broadcast(new PeerMessage { Type = PeerMessage.Locations, Where = changed });
            UpdateLanFilters();
        }
    }

    private List<LocationEntry> LocationEntries() =>
        _locations.Select(kv => new LocationEntry(kv.Key.ToString(), kv.Value)).ToList();

    private List<MacAddress> KnownVmMacs()
    {
        var macs = new List<MacAddress>(_locations.Keys);
        foreach (var s in _interfaces.Values)
        {
            foreach (var mac in s.Vms.Keys)
            {
                if (!_locations.ContainsKey(mac))
                    macs.Add(mac);
            }
        }
        return macs;
    }

    /// <summary>
    /// The Proxy's LAN NIC captures frames to VMs (and never from them): keep its filter current.
    /// Compiling and installing a BPF program takes a while with many VMs, so it happens on its own
    /// task; a burst of changes results in one update with the final set.
    /// </summary>
    private void UpdateLanFilters()
    {
        if (Interlocked.Exchange(ref _filterUpdatePending, 1) != 0)
            return;
        _ = Task.Run(() =>
        {
            Interlocked.Exchange(ref _filterUpdatePending, 0);
            var filter = BpfFilters.ForProxyNic(KnownVmMacs());
            foreach (var s in _interfaces.Values)
            {
                if (!s.Config.Lan || s.Port.Device is not PcapInterface pcap)
                    continue;
                try
                {
                    pcap.SetFilter(filter);
                }
                catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException or ObjectDisposedException)
                {
                    Log.FilterFailed(_logger, s.Config.Name, e.Message);
                }
            }
        });
    }

    private int _filterUpdatePending;

    private void Broadcast(PeerMessage message)
    {
        var bytes = message.Serialize();
        foreach (var port in Links.Links)
        {
            if (port.Star && port.Session is { IsClosed: false } s)
                s.SendControl(MessageType.Control, bytes);
        }
    }

    // ---------------------------------------------------------------- host side

    private void OnLocations(PeerMessage message)
    {
        var listed = new HashSet<MacAddress>();
        foreach (var entry in message.Where ?? [])
        {
            if (!MacAddress.TryParse(entry.Mac, out var mac))
            {
                Log.BadControl(_logger, Config.ProxyName, $"'{entry.Mac}' is not a MAC address");
                continue;
            }
            listed.Add(mac);
            if (entry.Daemon.Length == 0)
            {
                if (_locations.TryGetValue(mac, out var d) && d != Name)
                    _locations.TryRemove(mac, out _);
                continue;
            }
            if (entry.Daemon != Name)
                UnlearnLocal(mac, entry.Daemon);
            if (!_locations.TryGetValue(mac, out var was) || was != entry.Daemon)
                DropStaleAdaptation(mac, entry.Daemon);
            _locations[mac] = entry.Daemon;
        }
        if (message.Full)
        {
            foreach (var mac in _locations.Keys)
            {
                if (!listed.Contains(mac) && _locations.TryGetValue(mac, out var d) && d != Name)
                    _locations.TryRemove(mac, out _);
            }
        }
    }

    /// <summary>
    /// A VM now lives elsewhere: adaptation's rules that send it over a link to another daemon lead
    /// nowhere now, so its traffic falls back to the star at once; the Proxy re-adapts later.
    /// </summary>
    private void DropStaleAdaptation(MacAddress mac, string home)
    {
        var exact = MacMatch.Exact(mac);
        Rules.Edit(e => e.RemoveWhere(r => r.Origin == RuleOrigin.Adaptation && r.Destination == exact &&
            !r.Action.IsFlood && r.Action.Port.Kind == PortKind.Link && r.Action.Port.Name != home));
    }

    private void SendToProxy(PeerMessage message)
    {
        if (Links.Find(Config.ProxyName) is { } port)
            Send(port, message);
    }

    private static void Send(LinkPort port, PeerMessage message)
    {
        if (port.Session is { IsClosed: false } s)
            s.SendControl(MessageType.Control, message.Serialize());
    }
}
