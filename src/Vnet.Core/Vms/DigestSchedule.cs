namespace Vnet.Vms;

/// <summary>
/// When a source sends the digest of its map on a session. A digest is what lets a replica find a
/// lost delta or a divergence, but on an idle overlay it said the same thing every interval, and
/// each one woke both daemons (issue 9). So, on each anti-entropy tick, a session gets one when:
/// <list type="bullet">
/// <item>it has had none yet (a new session: right after the snapshot that opens it, a lost snapshot is found);</item>
/// <item>the version changed since the last digest on it (a delta just went: if it was lost, the replica is found <c>Behind</c>);</item>
/// <item>the tick crossed a multiple of the heartbeat on the monotonic clock (every session at once,
/// so a daemon's digests go out together): a divergence nothing else reveals heals within a heartbeat.</item>
/// </list>
/// Owned by the control loop. Sessions that <paramref name="isGone"/> says have ended are forgotten at the next tick.
/// </summary>
public sealed class DigestSchedule<TSession>(TimeSpan heartbeat, Func<TSession, bool> isGone)
    where TSession : class
{
    private readonly long _heartbeatTicks = Math.Max(1, (long)(heartbeat.TotalSeconds * System.Diagnostics.Stopwatch.Frequency));
    private readonly Dictionary<TSession, MapVersion> _sent = [];
    private long _lastTick = -1;
    private bool _beat;

    public TimeSpan Heartbeat { get; } = heartbeat;

    /// <summary>Starts a tick at <paramref name="now"/> (Stopwatch ticks): whether it is a heartbeat, and closed sessions forgotten.</summary>
    public void BeginTick(long now)
    {
        _beat = _lastTick < 0 || now / _heartbeatTicks != _lastTick / _heartbeatTicks;
        _lastTick = now;
        List<TSession>? closed = null;
        foreach (var session in _sent.Keys)
        {
            if (isGone(session))
                (closed ??= []).Add(session);
        }
        foreach (var session in closed ?? [])
            _sent.Remove(session);
    }

    /// <summary>Whether this tick is a heartbeat (every session gets a digest).</summary>
    public bool IsHeartbeat => _beat;

    /// <summary>Whether <paramref name="session"/> gets a digest of <paramref name="version"/> in this tick; if so, it is noted as sent.</summary>
    public bool Due(TSession session, MapVersion version)
    {
        if (!_beat && _sent.TryGetValue(session, out var last) && last == version)
            return false;
        _sent[session] = version;
        return true;
    }

    /// <summary>Sessions with a digest on record (for tests).</summary>
    public int Tracked => _sent.Count;
}
