using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Vnet.Daemon;

/// <summary>A VM's MAC on a daemon's interface.</summary>
public sealed record VmEntry(string Mac, string Interface);

/// <summary>Cumulative counters of one (source, destination) pair at the daemon whose VM sends.</summary>
public sealed record TrafficEntry(string Src, string Dst, long Bytes, long Frames);

/// <summary>What a daemon measures on one of its links: smoothed RTT and throughput over the last period.</summary>
public sealed record LinkMeasurement(string Peer, bool Star, double? RttMs, double TxBytesPerSecond, double RxBytesPerSecond);

/// <summary>Where a VM lives: the daemon (host) that has it.</summary>
public sealed record LocationEntry(string Mac, string Daemon);

/// <summary>
/// Control messages between daemons, carried as JSON in <c>Control</c> messages over the
/// authenticated link. One record with a type tag keeps the protocol easy to read in a capture.
/// <list type="bullet">
/// <item><c>announce</c> host → Proxy: VMs on this host (<c>Full</c>: the complete set, sent on every (re)connect).</item>
/// <item><c>withdraw</c> host → Proxy: VMs gone from this host.</item>
/// <item><c>locations</c> Proxy → hosts: where VMs live (<c>Full</c> on connect, then changes).</item>
/// <item><c>traffic</c> host → Proxy, every report period: cumulative bytes and frames per (source, destination) of the host's VMs, and its links' RTT and throughput.</item>
/// <item><c>request</c> Proxy → host: a control command to run there (remote control, change sets);
/// <c>response</c> host → Proxy with the same <c>Id</c>.</item>
/// </list>
/// </summary>
public sealed record PeerMessage
{
    public const string Announce = "announce";
    public const string Withdraw = "withdraw";
    public const string Locations = "locations";
    public const string Traffic = "traffic";
    public const string Request = "request";
    public const string Response = "response";

    public required string Type { get; init; }

    public bool Full { get; init; }

    public IReadOnlyList<VmEntry>? Vms { get; init; }

    public IReadOnlyList<string>? Macs { get; init; }

    public IReadOnlyList<LocationEntry>? Where { get; init; }

    /// <summary>Traffic: the sender's cumulative matrix (its VMs' rows) and its links' measurements.</summary>
    public IReadOnlyList<TrafficEntry>? Matrix { get; init; }

    public IReadOnlyList<LinkMeasurement>? Measurements { get; init; }

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

    /// <summary>Parses a message; null (with a reason) when it is not valid JSON of this shape.</summary>
    public static PeerMessage? TryParse(byte[] payload, out string? error)
    {
        error = null;
        try
        {
            var message = JsonSerializer.Deserialize(payload, PeerJsonContext.Default.PeerMessage);
            if (message is null)
                error = "empty control message";
            return message;
        }
        catch (JsonException e)
        {
            error = $"malformed control message: {e.Message}";
            return null;
        }
    }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(PeerMessage))]
internal sealed partial class PeerJsonContext : JsonSerializerContext;
