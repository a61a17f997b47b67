using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;
using Vnet.Peers;

namespace Vnet.Vms;

/// <summary>
/// The Proxy's side: a replica of every host's VM map, the claims they make, and the location map
/// it derives from them (the newest claim of a MAC wins) and pushes to every host.
/// </summary>
public sealed partial class VmDirectory
{
    /// <summary>Proxy: where each VM lives, the authority every host replicates.</summary>
    private readonly MapPublisher _locations;

    /// <summary>Proxy: each host's VMs as the host told them.</summary>
    private readonly Dictionary<string, HostView> _hosts = new(StringComparer.Ordinal);

    /// <summary>Proxy: for each MAC, the daemons that claim it and when they did (the claim clock).</summary>
    private readonly Dictionary<MacAddress, List<Claim>> _claims = [];

    /// <summary>Proxy: star sessions that had our snapshot, so deltas may follow on them.</summary>
    private readonly HashSet<LinkSession> _syncedHosts = [];

    private long _claimClock;

    /// <summary>Proxy: location messages made in this turn of the loop, in order (see SendLocations).</summary>
    private readonly List<(LinkSession[] To, PeerMessage Message)> _outbox = [];

    private readonly record struct Claim(string Daemon, long At);

    private sealed class HostView
    {
        public MapReplica Replica { get; } = new();

        public LinkSession? Session { get; set; }

        public long Asked;

        /// <summary>Ticks in a row the replica held deltas back for a missing predecessor.</summary>
        public int GapTicks;
    }

    /// <summary>A host's star is up: it gets every location, then the deltas.</summary>
    private void OnHostUp(LinkPort port, LinkSession session)
    {
        SendLocations([session], PeerMessage.ForSnapshot(PeerMessageType.Locations, _locations.Snapshot()));
        _syncedHosts.Add(session);
    }

    private void SendLocationDigests()
    {
        List<LinkSession>? due = null;
        foreach (var session in _syncedHosts)
        {
            if (_digests.Due(session, _locations.Version))
                (due ??= []).Add(session);
        }
        if (due is not null)
            SendLocations([.. due], PeerMessage.ForDigest(MapTopic.Locations, _locations.Digest()));
    }

    private void CheckHostGaps()
    {
        foreach (var (host, view) in _hosts)
        {
            if (view.Session is { IsClosed: false } session && GapStayedOpen(view.Replica, ref view.GapTicks))
                RequestSnapshot(session, host, MapTopic.Vms, view.Replica.HasBaseline ? RepairKind.Gap : RepairKind.NoSnapshot, ref view.Asked);
        }
    }

    private void BroadcastLocations(MapDelta delta)
    {
        if (_syncedHosts.Count > 0)
            SendLocations([.. _syncedHosts], PeerMessage.ForDelta(PeerMessageType.Locations, delta));
    }

    /// <summary>
    /// Location messages leave at the end of the loop's turn, after the turn's rules are live (the
    /// rule book publishes once per turn): a host never learns a VM's new place while the Proxy
    /// still forwards its frames to the old one. They leave in the order they were made, each to
    /// the hosts it was meant for when it was made, so a digest never overtakes the delta it
    /// counts and a host that synchronised later never gets a delta older than its snapshot.
    /// Off the loop (tests driving the directory directly), at once.
    /// </summary>
    private void SendLocations(LinkSession[] to, PeerMessage message)
    {
        if (!_loop.IsCurrent)
        {
            _peers.Send(to, message);
            return;
        }
        if (_outbox.Count == 0)
            _loop.AtEndOfTurn(FlushOutbox);
        _outbox.Add((to, message));
    }

    private void FlushOutbox()
    {
        // The rule book may have asked for its publication after us in this turn: publish first.
        _rules.Flush();
        foreach (var (to, message) in _outbox)
            _peers.Send(to, message);
        _outbox.Clear();
    }

    /// <summary>A host's snapshot or delta of its VMs.</summary>
    private void OnHostVms(PeerEnvelope m)
    {
        var view = ViewOf(m.Peer, m.Session, out _);
        var changed = new List<MapChange>();
        var outcome = m.Message.Full ? view.Replica.Apply(m.Message.ToSnapshot(), changed) : view.Replica.Apply(m.Message.ToDelta(), changed);
        if (outcome == ReplicaOutcome.NeedsSnapshot)
            RequestSnapshot(m.Session, m.Peer, MapTopic.Vms, RepairKind.Unplaceable, ref view.Asked);
        if (changed.Count > 0)
            ApplyClaims(m.Peer, changed);
    }

    private void CheckHostDigest(PeerEnvelope m)
    {
        var view = ViewOf(m.Peer, m.Session, out var fresh);
        if (fresh)
        {
            RequestSnapshot(m.Session, m.Peer, MapTopic.Vms, RepairKind.NoSnapshot, ref view.Asked);
            return;
        }
        var kind = view.Replica.Check(m.Message.ToDigest()) switch
        {
            DigestOutcome.Behind => RepairKind.Behind,
            DigestOutcome.Diverged => RepairKind.Diverged,
            DigestOutcome.NoBaseline => RepairKind.NoSnapshot,
            _ => (RepairKind?)null,
        };
        if (kind is { } k)
            RequestSnapshot(m.Session, m.Peer, MapTopic.Vms, k, ref view.Asked);
    }

    /// <summary>The replica of a host's map, following the session its messages come on.</summary>
    private HostView ViewOf(string host, LinkSession session, out bool fresh)
    {
        if (!_hosts.TryGetValue(host, out var view))
            _hosts[host] = view = new HostView();
        fresh = view.Session != session;
        if (fresh)
        {
            // A new session: the host's next snapshot is taken whatever its version (it may have
            // restarted); until then its VMs stay where they were, and their traffic flows.
            view.Session = session;
            view.Asked = 0;
            view.GapTicks = 0;
            view.Replica.ExpectSnapshot();
        }
        return view;
    }

    /// <summary>
    /// A daemon's map changed (a host's replica, or the Proxy's own VMs): record claims, then move
    /// every affected VM to its newest claim.
    /// </summary>
    private void ApplyClaims(string daemon, IReadOnlyList<MapChange> changes)
    {
        var affected = new List<MacAddress>(changes.Count);
        foreach (var c in changes)
        {
            if (!_claims.TryGetValue(c.Key, out var claims))
                _claims[c.Key] = claims = [];
            var index = claims.FindIndex(x => x.Daemon == daemon);
            if (c.Value is null)
            {
                if (index < 0)
                    continue;
                claims.RemoveAt(index);
                if (claims.Count == 0)
                    _claims.Remove(c.Key);
            }
            else
            {
                // A VM that moves between interfaces of one daemon is no new claim.
                if (index >= 0)
                    continue;
                claims.Add(new Claim(daemon, ++_claimClock));
            }
            affected.Add(c.Key);
        }
        Relocate(affected);
    }

    /// <summary>Points each VM at its newest claim: rules, the location map, every host, the LAN filter.</summary>
    private void Relocate(List<MacAddress> macs)
    {
        var moves = new List<MapChange>();
        foreach (var mac in macs)
        {
            string? winner = null;
            if (_claims.TryGetValue(mac, out var claims))
            {
                var best = claims[0];
                foreach (var c in claims)
                {
                    if (c.At > best.At)
                        best = c;
                }
                winner = best.Daemon;
            }
            _locations.TryGet(mac, out var current);
            if (winner != current)
                moves.Add(new MapChange(mac, winner));
        }
        if (moves.Count == 0)
            return;
        _rules.Edit(e =>
        {
            foreach (var (mac, daemon) in moves)
            {
                var exact = MacMatch.Exact(mac);
                e.RemoveWhere(mac, r => r.Origin == RuleOrigin.System && r.Destination == exact && !r.Action.IsFlood && r.Action.Port.Kind == PortKind.Link);
                if (daemon is not null && daemon != Name)
                {
                    e.Add(new Rule
                    {
                        Source = MacMatch.Any,
                        Destination = exact,
                        Action = RuleAction.To(PortRef.Link(daemon)),
                        Origin = RuleOrigin.System,
                    });
                }
            }
        });
        foreach (var (mac, daemon) in moves)
        {
            _locations.TryGet(mac, out var from);
            if (daemon is null)
                Log.VmGone(_logger, mac, from!);
            else if (from is null)
                Log.VmLocated(_logger, mac, daemon);
            else
                Log.VmMoved(_logger, mac, from, daemon);
        }
        BroadcastLocations(_locations.Change(moves)!);
        foreach (var (mac, daemon) in moves)
        {
            // The Proxy's own VM, claimed anew by a host: it moved there.
            if (daemon is not null && daemon != Name)
                MovedAway(mac, daemon);
        }
        LocationsChanged?.Invoke(moves);
        _interfaces.UpdateLanFilters([.. _locations.Entries.Keys]);
    }
}
