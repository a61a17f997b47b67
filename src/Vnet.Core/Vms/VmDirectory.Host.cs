using Vnet.Links;
using Vnet.Peers;

namespace Vnet.Vms;

/// <summary>A host's side: its own VMs go to the Proxy, the Proxy's locations come back.</summary>
public sealed partial class VmDirectory
{
    /// <summary>Host: the replica of the Proxy's location map.</summary>
    private readonly MapReplica _proxyView = new();

    /// <summary>Host: the session the replica follows (its messages came on it).</summary>
    private LinkSession? _viewSession;

    /// <summary>Host: the star session that had our snapshot, so deltas may follow on it.</summary>
    private LinkSession? _syncedStar;

    private long _viewAsked;

    /// <summary>Host: ticks in a row the replica held deltas back for a missing predecessor.</summary>
    private int _viewGapTicks;

    /// <summary>The star is (back) up: the Proxy gets our whole map first, deltas after.</summary>
    private void OnProxyUp(LinkSession session)
    {
        _peers.Send(session, PeerMessage.ForSnapshot(PeerMessageType.Vms, _local.Snapshot()));
        _syncedStar = session;
    }

    private void SendLocalDelta(MapDelta delta)
    {
        // The VM's rules go live now, not at the end of the turn: once the Proxy reads this, it
        // sends the VM's frames here.
        _rules.Flush();
        // Without a synced star the snapshot that opens the next session carries this change.
        if (_syncedStar is { } session)
            _peers.Send(session, PeerMessage.ForDelta(PeerMessageType.Vms, delta));
    }

    private void SendLocalDigest()
    {
        if (_syncedStar is { } session && _digests.Due(session, _local.Version))
            _peers.Send(session, PeerMessage.ForDigest(MapTopic.Vms, _local.Digest()));
    }

    private void CheckLocationGap()
    {
        if (_viewSession is { IsClosed: false } session && GapStayedOpen(_proxyView, ref _viewGapTicks))
            RequestSnapshot(session, _config.ProxyName, MapTopic.Locations, _proxyView.HasBaseline ? RepairKind.Gap : RepairKind.NoSnapshot, ref _viewAsked);
    }

    /// <summary>A snapshot or delta of the Proxy's locations.</summary>
    private void OnProxyLocations(PeerEnvelope m)
    {
        FollowSession(m.Session);
        var changed = new List<MapChange>();
        var outcome = m.Message.Full ? _proxyView.Apply(m.Message.ToSnapshot(), changed) : _proxyView.Apply(m.Message.ToDelta(), changed);
        if (outcome == ReplicaOutcome.NeedsSnapshot)
            RequestSnapshot(m.Session, m.Peer, MapTopic.Locations, RepairKind.Unplaceable, ref _viewAsked);
        OnViewChanged(changed);
    }

    private void CheckLocationDigest(PeerEnvelope m)
    {
        if (FollowSession(m.Session))
        {
            // A digest before any snapshot on this session: the snapshot went missing.
            RequestSnapshot(m.Session, m.Peer, MapTopic.Locations, RepairKind.NoSnapshot, ref _viewAsked);
            return;
        }
        var kind = _proxyView.Check(m.Message.ToDigest()) switch
        {
            DigestOutcome.Behind => RepairKind.Behind,
            DigestOutcome.Diverged => RepairKind.Diverged,
            DigestOutcome.NoBaseline => RepairKind.NoSnapshot,
            _ => (RepairKind?)null,
        };
        if (kind is { } k)
            RequestSnapshot(m.Session, m.Peer, MapTopic.Locations, k, ref _viewAsked);
    }

    /// <summary>Binds the replica to the session its messages come on; true when that is a new session.</summary>
    private bool FollowSession(LinkSession session)
    {
        if (_viewSession == session)
            return false;
        _viewSession = session;
        _viewAsked = 0;
        _viewGapTicks = 0;
        _proxyView.ExpectSnapshot();
        return true;
    }

    /// <summary>The Proxy placed VMs: a local VM it places elsewhere has moved away.</summary>
    private void OnViewChanged(List<MapChange> changed)
    {
        if (changed.Count == 0)
            return;
        foreach (var c in changed)
        {
            if (c.Value is { } home && home != Name)
                MovedAway(c.Key, home);
        }
        LocationsChanged?.Invoke(changed);
    }
}
