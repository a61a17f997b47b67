using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Vnet.Frames;

namespace Vnet.Vms;

/// <summary>
/// The version of a replicated map: the incarnation of its source (a random number drawn at each
/// start) and how many changes the source has made since.
/// </summary>
public readonly record struct MapVersion(ulong Epoch, long Seq)
{
    public override string ToString() => $"{Epoch:x16}/{Seq}";
}

/// <summary>One entry's new value in a delta; a null value removes the entry.</summary>
public readonly record struct MapChange(MacAddress Key, string? Value);

/// <summary>A batch of changes that takes a map from <c>Seq - 1</c> to <see cref="MapVersion.Seq"/>.</summary>
public sealed record MapDelta(MapVersion Version, IReadOnlyList<MapChange> Changes);

/// <summary>The whole map at a version.</summary>
public sealed record MapSnapshot(MapVersion Version, IReadOnlyList<KeyValuePair<MacAddress, string>> Entries);

/// <summary>What a source believes, in a few bytes: its version, entry count and an order-independent hash of its entries.</summary>
public readonly record struct MapDigest(MapVersion Version, int Count, ulong Hash);

/// <summary>
/// Entries with a hash kept up to date per change: the sum (mod 2^64) of a 64-bit hash of each
/// (key, value), so a digest costs nothing however large the map is, and two maps with the same
/// entries have the same hash whatever order the changes came in.
/// </summary>
public sealed class HashedEntries
{
    private readonly Dictionary<MacAddress, string> _entries = [];

    public IReadOnlyDictionary<MacAddress, string> Entries => _entries;

    public int Count => _entries.Count;

    public ulong Hash { get; private set; }

    /// <summary>Sets or (with a null value) removes an entry; returns the previous value, or null when nothing changed.</summary>
    public bool Set(MacAddress key, string? value, out string? previous)
    {
        _entries.TryGetValue(key, out previous);
        if (previous == value)
            return false;
        if (previous is not null)
            Hash -= EntryHash(key, previous);
        if (value is null)
        {
            _entries.Remove(key);
        }
        else
        {
            _entries[key] = value;
            Hash += EntryHash(key, value);
        }
        return true;
    }

    public void Clear()
    {
        _entries.Clear();
        Hash = 0;
    }

    /// <summary>The entries sorted by key, as a snapshot carries them (deterministic on the wire and in tests).</summary>
    public List<KeyValuePair<MacAddress, string>> Sorted()
    {
        var list = new List<KeyValuePair<MacAddress, string>>(_entries);
        list.Sort(static (a, b) => a.Key.CompareTo(b.Key));
        return list;
    }

    /// <summary>First 8 bytes of SHA-256(mac | value): collisions between honest peers are out of reach.</summary>
    public static ulong EntryHash(MacAddress key, string value)
    {
        Span<byte> buffer = stackalloc byte[6 + 3 * 64];
        key.Write(buffer);
        var length = 6 + Encoding.UTF8.GetBytes(value.AsSpan(0, Math.Min(value.Length, 64)), buffer.Slice(6));
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(buffer.Slice(0, length), digest);
        return BinaryPrimitives.ReadUInt64LittleEndian(digest);
    }
}

/// <summary>
/// The source side of a replicated map (a host's VMs, the Proxy's VM locations). Every change gets
/// the next sequence number and comes out as a delta to send; a snapshot and a digest describe the
/// map at its current version. Owned by one thread (the daemon's control loop).
/// </summary>
public sealed class MapPublisher
{
    private readonly HashedEntries _map = new();

    public MapPublisher(ulong epoch) => Version = new MapVersion(epoch, 0);

    public MapVersion Version { get; private set; }

    public IReadOnlyDictionary<MacAddress, string> Entries => _map.Entries;

    public bool TryGet(MacAddress key, out string value) => _map.Entries.TryGetValue(key, out value!);

    /// <summary>Applies changes as one step; returns the delta to send, or null when nothing changed.</summary>
    public MapDelta? Change(IReadOnlyList<MapChange> changes)
    {
        List<MapChange>? applied = null;
        foreach (var c in changes)
        {
            if (_map.Set(c.Key, c.Value, out _))
                (applied ??= []).Add(c);
        }
        if (applied is null)
            return null;
        Version = Version with { Seq = Version.Seq + 1 };
        return new MapDelta(Version, applied);
    }

    public MapDelta? Set(MacAddress key, string value) => Change([new MapChange(key, value)]);

    public MapDelta? Remove(MacAddress key) => Change([new MapChange(key, null)]);

    public MapSnapshot Snapshot() => new(Version, _map.Sorted());

    public MapDigest Digest() => new(Version, _map.Count, _map.Hash);
}

/// <summary>What became of a snapshot or delta at a replica.</summary>
public enum ReplicaOutcome
{
    /// <summary>Applied (and any buffered deltas it made contiguous after it).</summary>
    Applied,

    /// <summary>Older than what the replica has: ignored (a late message).</summary>
    Stale,

    /// <summary>Ahead of the replica (a gap before it, or no snapshot yet): kept until what comes before it arrives.</summary>
    Buffered,

    /// <summary>Cannot be placed (another incarnation's delta, or too many held back): ask the source for a snapshot.</summary>
    NeedsSnapshot,
}

/// <summary>What a replica concludes from its source's digest.</summary>
public enum DigestOutcome
{
    /// <summary>Same version, count and hash: the replica equals the source.</summary>
    Match,

    /// <summary>The digest is older than the replica (a late message): nothing to conclude.</summary>
    Stale,

    /// <summary>The replica has not had its first snapshot on this session yet.</summary>
    NoBaseline,

    /// <summary>The source is further than the replica: deltas were lost.</summary>
    Behind,

    /// <summary>Another incarnation, or the same version with other entries: the replica diverged.</summary>
    Diverged,
}

/// <summary>
/// The receiving side of a replicated map. It applies only what is newer than what it has: a
/// snapshot older than the replica's version is ignored (so a full set never removes what a newer
/// delta added), a delta applies only right after its predecessor, and deltas that overtook their
/// predecessors wait in a bounded buffer until those arrive. Owned by one thread.
/// <code>
/// session up:  ExpectSnapshot()            -> the next snapshot is taken whatever its version
/// snapshot:    older (same epoch) -> Stale; else replace, then drain buffered deltas
/// delta:       seq &lt;= have -> Stale; seq == have+1 -> apply, drain; seq > have+1 -> Buffered
/// digest:      Match | Stale | NoBaseline | Behind | Diverged  (the last two: ask for a snapshot)
/// </code>
/// </summary>
public sealed class MapReplica
{
    /// <summary>Deltas held back for a missing predecessor; beyond this the replica asks for a snapshot.</summary>
    public const int MaxBuffered = 256;

    private readonly HashedEntries _map = new();
    private readonly SortedDictionary<long, MapDelta> _ahead = [];
    private bool _awaitingSnapshot = true;

    public MapVersion? Version { get; private set; }

    /// <summary>Whether a snapshot arrived since the last <see cref="ExpectSnapshot"/>.</summary>
    public bool HasBaseline => !_awaitingSnapshot && Version is not null;

    public IReadOnlyDictionary<MacAddress, string> Entries => _map.Entries;

    public int Buffered => _ahead.Count;

    /// <summary>
    /// A new session with the source: its first snapshot is taken whatever its version (the source
    /// may have restarted). The entries stay until then, so traffic keeps flowing meanwhile.
    /// </summary>
    public void ExpectSnapshot()
    {
        _awaitingSnapshot = true;
        _ahead.Clear();
    }

    /// <summary>Replaces the replica with a snapshot unless it is older; <paramref name="changed"/> gets every entry that changed.</summary>
    public ReplicaOutcome Apply(MapSnapshot snapshot, List<MapChange> changed)
    {
        if (!_awaitingSnapshot && Version is { } have && have.Epoch == snapshot.Version.Epoch && snapshot.Version.Seq < have.Seq)
            return ReplicaOutcome.Stale;
        var listed = new HashSet<MacAddress>();
        foreach (var (key, value) in snapshot.Entries)
        {
            listed.Add(key);
            if (_map.Set(key, value, out _))
                changed.Add(new MapChange(key, value));
        }
        List<MacAddress>? gone = null;
        foreach (var key in _map.Entries.Keys)
        {
            if (!listed.Contains(key))
                (gone ??= []).Add(key);
        }
        foreach (var key in gone ?? [])
        {
            _map.Set(key, null, out _);
            changed.Add(new MapChange(key, null));
        }
        Version = snapshot.Version;
        _awaitingSnapshot = false;
        Drain(changed);
        return ReplicaOutcome.Applied;
    }

    /// <summary>Applies a delta if it is the next one; keeps it if it came early.</summary>
    public ReplicaOutcome Apply(MapDelta delta, List<MapChange> changed)
    {
        if (_awaitingSnapshot || Version is null)
            return Hold(delta);
        var have = Version.Value;
        if (delta.Version.Epoch != have.Epoch)
            return ReplicaOutcome.NeedsSnapshot;
        if (delta.Version.Seq <= have.Seq)
            return ReplicaOutcome.Stale;
        if (delta.Version.Seq > have.Seq + 1)
            return Hold(delta);
        ApplyNext(delta, changed);
        Drain(changed);
        return ReplicaOutcome.Applied;
    }

    public DigestOutcome Check(MapDigest digest)
    {
        if (_awaitingSnapshot || Version is not { } have)
            return DigestOutcome.NoBaseline;
        if (digest.Version.Epoch != have.Epoch)
            return DigestOutcome.Diverged;
        if (digest.Version.Seq < have.Seq)
            return DigestOutcome.Stale;
        if (digest.Version.Seq > have.Seq)
            return DigestOutcome.Behind;
        return digest.Count == _map.Count && digest.Hash == _map.Hash ? DigestOutcome.Match : DigestOutcome.Diverged;
    }

    /// <summary>The replica's own digest (for tests and status).</summary>
    public MapDigest? Digest() => Version is { } v ? new MapDigest(v, _map.Count, _map.Hash) : null;

    private ReplicaOutcome Hold(MapDelta delta)
    {
        if (_ahead.Count >= MaxBuffered)
        {
            _ahead.Clear();
            return ReplicaOutcome.NeedsSnapshot;
        }
        _ahead[delta.Version.Seq] = delta;
        return ReplicaOutcome.Buffered;
    }

    private void ApplyNext(MapDelta delta, List<MapChange> changed)
    {
        foreach (var c in delta.Changes)
        {
            if (_map.Set(c.Key, c.Value, out _))
                changed.Add(c);
        }
        Version = delta.Version;
    }

    /// <summary>Applies buffered deltas that now follow on; drops those the replica is past, or of another incarnation.</summary>
    private void Drain(List<MapChange> changed)
    {
        while (_ahead.Count > 0 && Version is { } have)
        {
            var first = _ahead.First();
            _ahead.Remove(first.Key);
            if (first.Value.Version.Epoch != have.Epoch || first.Key <= have.Seq)
                continue;
            if (first.Key != have.Seq + 1)
            {
                _ahead[first.Key] = first.Value;
                return;
            }
            ApplyNext(first.Value, changed);
        }
    }
}
