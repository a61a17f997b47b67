using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Vnet.Daemon;
using Vnet.Frames;

namespace Vnet.Control;

/// <summary>
/// The local control protocol: one JSON request line, one JSON response line, per connection on the
/// daemon's owner-only Unix socket. The engine never parses user text; commands arrive as fields.
/// <code>
/// -> {"command":"rule.add","args":{"src":"any","dst":"02:00:00:00:00:02","to":"link:h2"}}
/// &lt;- {"ok":true,"data":{...}}      or      {"ok":false,"error":"no port link:h2 on h1"}
/// </code>
/// </summary>
public sealed record ControlRequest(string Command, JsonObject? Args);

public sealed record ControlResponse(bool Ok, JsonNode? Data, string? Error);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, Converters = [typeof(MacAddressJsonConverter)])]
[JsonSerializable(typeof(ControlRequest))]
[JsonSerializable(typeof(ControlResponse))]
[JsonSerializable(typeof(DaemonStatus))]
[JsonSerializable(typeof(LinkStatus))]
[JsonSerializable(typeof(IReadOnlyList<LinkStatus>))]
[JsonSerializable(typeof(List<LinkStatus>))]
[JsonSerializable(typeof(RuleStatus))]
[JsonSerializable(typeof(IReadOnlyList<RuleStatus>))]
[JsonSerializable(typeof(List<RuleStatus>))]
[JsonSerializable(typeof(InterfaceStatus))]
[JsonSerializable(typeof(IReadOnlyList<InterfaceStatus>))]
[JsonSerializable(typeof(List<InterfaceStatus>))]
[JsonSerializable(typeof(VmStatus))]
[JsonSerializable(typeof(IReadOnlyList<VmStatus>))]
[JsonSerializable(typeof(DaemonState))]
[JsonSerializable(typeof(List<DaemonState>))]
[JsonSerializable(typeof(DaemonChange))]
[JsonSerializable(typeof(List<DaemonChange>))]
[JsonSerializable(typeof(ApplyResult))]
[JsonSerializable(typeof(OverlayStates))]
[JsonSerializable(typeof(TraceResult))]
[JsonSerializable(typeof(OverlayApplyReport))]
[JsonSerializable(typeof(VttifMatrix))]
[JsonSerializable(typeof(AdaptationStatus))]
[JsonSerializable(typeof(Adaptation.PlacementPlan))]
[JsonSerializable(typeof(VttifTopology))]
[JsonSerializable(typeof(List<VttifEvent>))]
[JsonSerializable(typeof(List<VmStatus>))]
public sealed partial class ControlJson : JsonSerializerContext
{
    public static JsonNode? ToNode<T>(T value) =>
        JsonSerializer.SerializeToNode(value, typeof(T), Default);

    public static T? FromNode<T>(JsonNode? node) =>
        node is null ? default : (T?)node.Deserialize(typeof(T), Default);
}

/// <summary>
/// A MAC address as tools read and write it, <c>"02:00:00:00:00:01"</c>: as an object of its
/// properties it would not come back (they are read-only), so every client read 00:00:00:00:00:00.
/// </summary>
internal sealed class MacAddressJsonConverter : JsonConverter<MacAddress>
{
    public override MacAddress Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.GetString() is { } text && MacAddress.TryParse(text, out var mac) ? mac : throw new JsonException("expected a MAC address such as \"02:00:00:00:00:01\"");

    public override void Write(Utf8JsonWriter writer, MacAddress value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString());
}
