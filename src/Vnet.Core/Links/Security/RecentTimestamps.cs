namespace Vnet.Links.Security;

/// <summary>
/// Replay protection for INITs of one key that may run at once: an administrator's scripts start
/// several CLI sessions together, and their timestamps reach the daemon in any order, so "newer
/// than the last" (what a daemon's own link needs) would refuse some, and two may share a
/// millisecond. An INIT is fresh when the pair of its timestamp and ephemeral key (a replay repeats
/// both) is not one seen before, and its timestamp not older than <see cref="Window"/> before the newest.
/// Bounded: <see cref="PerKey"/> timestamps per key (an older one than all kept is refused once
/// that many are kept), <see cref="MaxKeys"/> keys (only admitted keys get here).
/// Not thread-safe: the caller holds its lock.
/// </summary>
internal sealed class RecentTimestamps
{
    public const int PerKey = 256;
    public const int MaxKeys = 1024;
    public static readonly ulong Window = 60UL * 1_000_000_000;

    private readonly Dictionary<PublicKeyId, SortedSet<UInt128>> _seen = [];

    /// <param name="ephemeral">A fingerprint of the INIT's ephemeral public key.</param>
    public bool IsFresh(PublicKeyId key, ulong timestamp, ulong ephemeral)
    {
        if (!_seen.TryGetValue(key, out var seen))
        {
            if (_seen.Count >= MaxKeys)
                _seen.Clear();
            _seen[key] = seen = [];
        }
        if (seen.Count > 0)
        {
            var newest = Time(seen.Max);
            if (newest > Window && timestamp < newest - Window)
                return false;
            if (seen.Count >= PerKey && timestamp <= Time(seen.Min))
                return false;
        }
        if (!seen.Add(new UInt128(timestamp, ephemeral)))
            return false;
        // Forget what fell out of the window, and the oldest beyond the bound.
        while (Time(seen.Max) > Window && Time(seen.Min) < Time(seen.Max) - Window)
            seen.Remove(seen.Min);
        while (seen.Count > PerKey)
            seen.Remove(seen.Min);
        return true;
    }

    private static ulong Time(UInt128 entry) => (ulong)(entry >> 64);
}
