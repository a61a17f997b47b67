using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Json;
using Vnet.Vms;

namespace Vnet.Peers;

/// <summary>The kinds of control message between daemons.</summary>
public enum PeerMessageType
{
    /// <summary>Host → Proxy: the host's VMs (mac → interface), a snapshot (<c>Full</c>) or a delta, at a version.</summary>
    Vms,

    /// <summary>Proxy → hosts: where every VM lives (mac → daemon), a snapshot or a delta, at a version.</summary>
    Locations,

    /// <summary>Either way: what the sender believes of one of its maps (version, count, hash), for anti-entropy.</summary>
    Digest,

    /// <summary>Either way: "send me a snapshot of this map" (a replica that found itself diverged or behind).</summary>
    Sync,

    /// <summary>Host → Proxy, every report period: cumulative traffic per VM pair and link measurements (VTTIF).</summary>
    Traffic,

    /// <summary>Proxy → host: a control command to run there; answered by a <see cref="Response"/> with the same id.</summary>
    Request,

    Response,

    /// <summary>Proxy → hosts: every admitted daemon's name and public key (hosts link to each other with them).</summary>
    Keys,
}

/// <summary>The replicated maps daemons keep of each other.</summary>
public enum MapTopic
{
    /// <summary>A host's own VMs, as the Proxy replicates them.</summary>
    Vms,

    /// <summary>The Proxy's VM locations, as every host replicates them.</summary>
    Locations,

    /// <summary>The Proxy's list of admitted daemons' keys, as every host keeps it.</summary>
    Keys,
}

/// <summary>One entry of a map message: a VM and its interface (Vms) or daemon (Locations); null in a delta removes it.</summary>
public sealed record MapEntry(MacAddress Mac, string? Value);

/// <summary>A daemon's name and public key (base64) in the Proxy's list.</summary>
public sealed record KeyEntry(string Name, string Key);

/// <summary>A VM's MAC on a daemon's interface.</summary>
public sealed record VmEntry(MacAddress Mac, string Interface);

/// <summary>Cumulative counters of one (source, destination) pair at the daemon whose VM sends.</summary>
public sealed record TrafficEntry(MacAddress Src, MacAddress Dst, long Bytes, long Frames);

/// <summary>What a daemon measures on one of its links: smoothed RTT and throughput over the last period.</summary>
public sealed record LinkMeasurement(string Peer, bool Star, double? RttMs, double TxBytesPerSecond, double RxBytesPerSecond);

/// <summary>
/// A control message between daemons, carried as JSON in <c>CONTROL</c> messages over the
/// authenticated link; one record with a type tag keeps the protocol easy to read in a capture.
/// Replicated maps (<see cref="PeerMessageType.Vms"/>, <see cref="PeerMessageType.Locations"/>)
/// carry their version (<see cref="Epoch"/>, <see cref="Seq"/>): see <c>docs/convergence.md</c>.
/// </summary>
public sealed record PeerMessage
{
    public required PeerMessageType Type { get; init; }

    /// <summary>Digest and Sync: which map.</summary>
    public MapTopic? Topic { get; init; }

    /// <summary>Maps and digests: the source's incarnation.</summary>
    public ulong? Epoch { get; init; }

    /// <summary>Maps and digests: the source's change count (a delta goes from Seq - 1 to Seq).</summary>
    public long? Seq { get; init; }

    /// <summary>Maps: the whole map (a snapshot) rather than a delta.</summary>
    public bool Full { get; init; }

    public IReadOnlyList<MapEntry>? Entries { get; init; }

    /// <summary>Digest: entry count and order-independent hash.</summary>
    public int? Count { get; init; }

    public ulong? Hash { get; init; }

    /// <summary>Sync: why the replica asks (logged by the source).</summary>
    public string? Reason { get; init; }

    /// <summary>Keys: the admitted daemons (the version is in <see cref="Seq"/>).</summary>
    public IReadOnlyList<KeyEntry>? Keys { get; init; }

    /// <summary>Traffic: the sender's cumulative matrix (its VMs' rows) and its links' measurements.</summary>
    public IReadOnlyList<TrafficEntry>? Matrix { get; init; }

    public IReadOnlyList<LinkMeasurement>? Measurements { get; init; }

    /// <summary>Traffic: the host skipped reports before this one, as its counters had not moved (see <see cref="Inference.ReportGate"/>).</summary>
    public bool? Resumed { get; init; }

    /// <summary>Request and response: pairs them up.</summary>
    public long Id { get; init; }

    /// <summary>Request: a control command (the same commands as the local control socket).</summary>
    public string? Command { get; init; }

    public JsonObject? Args { get; init; }

    /// <summary>Response: success, and the data or the error.</summary>
    public bool Ok { get; init; }

    public JsonNode? Data { get; init; }

    public string? Error { get; init; }

    public byte[] Serialize() => JsonSerializer.SerializeToUtf8Bytes(this, PeerJsonContext.Default.PeerMessage);

    /// <summary>Parses and checks a message; null (with a reason) when it is malformed.</summary>
    public static PeerMessage? TryParse(ReadOnlySpan<byte> payload, out string? error)
    {
        PeerMessage? message;
        try
        {
            message = JsonSerializer.Deserialize(payload, PeerJsonContext.Default.PeerMessage);
        }
        catch (JsonException e)
        {
            error = $"malformed control message: {e.Message}";
            return null;
        }
        if (message is null)
        {
            error = "empty control message";
            return null;
        }
        error = message.Check();
        return error is null ? message : null;
    }

    /// <summary>Field checks the JSON shape cannot express; null when the message is well formed.</summary>
    private string? Check()
    {
        switch (Type)
        {
            case PeerMessageType.Vms:
            case PeerMessageType.Locations:
                if (Epoch is null || Seq is not >= 0 || Entries is null)
                    return $"{Type} without epoch, seq or entries";
                foreach (var e in Entries)
                {
                    if (e is null)
                        return $"{Type} with an empty entry";
                    if (e.Mac.IsGroup)
                        return $"{e.Mac} is a group address, not a VM";
                    if (e.Value is null ? Full : !Names.IsValid(e.Value))
                        return $"'{e.Value}' is not a name for {e.Mac}";
                }
                return null;
            case PeerMessageType.Digest:
                return Topic is null || Epoch is null || Seq is not >= 0 || Count is not >= 0 || Hash is null ? "digest without topic, version, count or hash" : null;
            case PeerMessageType.Sync:
                return Topic is null ? "sync without a topic" : null;
            case PeerMessageType.Traffic:
                // JSON null (or a missing field) gets past the shape: the Proxy's inference and
                // adaptation read every entry and key measurements by peer.
                if (Matrix is not null && Matrix.Any(t => t is null))
                    return "traffic with an empty matrix entry";
                if (Measurements is not null && Measurements.Any(l => l is null || !Names.IsValid(l.Peer)))
                    return "traffic with an empty measurement or one without a valid peer name";
                return null;
            case PeerMessageType.Keys:
                if (Seq is null || Keys is null || Keys.Count > 100_000)
                    return "keys without a version or list";
                foreach (var k in Keys)
                {
                    // JSON null where an entry or a field should be (found by fuzzing: the host then threw).
                    if (k is null || k.Name is null || k.Key is null)
                        return "keys with an empty entry";
                }
                return null;
            default:
                return null;
        }
    }

    // ---------------------------------------------------------------- maps on the wire

    public static PeerMessage ForSnapshot(PeerMessageType type, MapSnapshot snapshot) => new()
    {
        Type = type,
        Epoch = snapshot.Version.Epoch,
        Seq = snapshot.Version.Seq,
        Full = true,
        Entries = snapshot.Entries.Select(e => new MapEntry(e.Key, e.Value)).ToList(),
    };

    public static PeerMessage ForDelta(PeerMessageType type, MapDelta delta) => new()
    {
        Type = type,
        Epoch = delta.Version.Epoch,
        Seq = delta.Version.Seq,
        Entries = delta.Changes.Select(c => new MapEntry(c.Key, c.Value)).ToList(),
    };

    public static PeerMessage ForDigest(MapTopic topic, MapDigest digest) => new()
    {
        Type = PeerMessageType.Digest,
        Topic = topic,
        Epoch = digest.Version.Epoch,
        Seq = digest.Version.Seq,
        Count = digest.Count,
        Hash = digest.Hash,
    };

    /// <summary>A checked Vms or Locations message as what it carries (call after <see cref="TryParse"/>).</summary>
    public MapSnapshot ToSnapshot() => new(new MapVersion(Epoch!.Value, Seq!.Value),
        Entries!.Select(e => new KeyValuePair<MacAddress, string>(e.Mac, e.Value!)).ToList());

    public MapDelta ToDelta() => new(new MapVersion(Epoch!.Value, Seq!.Value), Entries!.Select(e => new MapChange(e.Mac, e.Value)).ToList());

    public MapDigest ToDigest() => new(new MapVersion(Epoch!.Value, Seq!.Value), Count!.Value, Hash!.Value);
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    Converters = [typeof(MacAddressJsonConverter), typeof(CamelCaseEnumConverter<PeerMessageType>), typeof(CamelCaseEnumConverter<MapTopic>)])]
[JsonSerializable(typeof(PeerMessage))]
internal sealed partial class PeerJsonContext : JsonSerializerContext;
