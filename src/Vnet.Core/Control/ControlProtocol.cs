using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Vnet.Peers;

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

public sealed record ControlResponse(bool Ok, JsonNode? Data, string? Error)
{
    public static ControlResponse From(CommandResult result) => new(result.Ok, result.Data, result.Error);
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(ControlRequest))]
[JsonSerializable(typeof(ControlResponse))]
public sealed partial class ControlJson : JsonSerializerContext;
