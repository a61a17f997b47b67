using System.Text.Json;
using System.Text.Json.Serialization;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Json;

/// <summary>
/// Domain values as tools and peers read and write them in JSON: the same text the CLI prints and
/// the language uses (<c>"02:00:00:00:00:01"</c>, <c>"any"</c>, <c>"link:h2"</c>, <c>"udp"</c>), while
/// the code holds typed values and never compares strings.
/// </summary>
public sealed class MacAddressJsonConverter : JsonConverter<MacAddress>
{
    public override MacAddress Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.String && reader.GetString() is { } text && MacAddress.TryParse(text, out var mac)
            ? mac
            : throw new JsonException("expected a MAC address such as \"02:00:00:00:00:01\"");

    public override void Write(Utf8JsonWriter writer, MacAddress value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString());
}

/// <summary>A rule side: an address, <c>any</c>, <c>multicast</c> or <c>none</c>.</summary>
public sealed class MacMatchJsonConverter : JsonConverter<MacMatch>
{
    public override MacMatch Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.String && reader.GetString() is { } text && MacMatch.TryParse(text, out var match)
            ? match
            : throw new JsonException("expected a MAC address, \"any\", \"multicast\" or \"none\"");

    public override void Write(Utf8JsonWriter writer, MacMatch value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString());
}

/// <summary>A port: <c>if:NAME</c> or <c>link:NAME</c>.</summary>
public sealed class PortRefJsonConverter : JsonConverter<PortRef>
{
    public override PortRef Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.String && reader.GetString() is { } text && PortRef.TryParse(text, out var port)
            ? port.Value
            : throw new JsonException("expected a port such as \"link:h2\" or \"if:tap0\"");

    public override void Write(Utf8JsonWriter writer, PortRef value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString());
}

/// <summary>A rule's action: <c>flood</c> or a port.</summary>
public sealed class RuleActionJsonConverter : JsonConverter<RuleAction>
{
    public override RuleAction Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        var text = reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
        if (text == "flood")
            return RuleAction.Flood;
        return text is not null && PortRef.TryParse(text, out var port)
            ? RuleAction.To(port.Value)
            : throw new JsonException("expected \"flood\" or a port such as \"link:h2\"");
    }

    public override void Write(Utf8JsonWriter writer, RuleAction value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString());
}

/// <summary>
/// An enum as its camel-case name (<c>"udp"</c>, <c>"adaptation"</c>, <c>"addRule"</c>); anything else,
/// numbers included, is refused with the names it could have been.
/// </summary>
public sealed class CamelCaseEnumConverter<TEnum> : JsonConverter<TEnum>
    where TEnum : struct, Enum
{
    private static readonly TEnum[] Values = Enum.GetValues<TEnum>();
    private static readonly string[] Texts = Array.ConvertAll(Values, EnumText.Of);

    public override TEnum Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        var text = reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
        for (var i = 0; i < Texts.Length; i++)
        {
            if (string.Equals(Texts[i], text, StringComparison.OrdinalIgnoreCase))
                return Values[i];
        }
        var shown = text ?? reader.TokenType.ToString().ToLowerInvariant();
        throw new JsonException($"'{shown}' is not one of {string.Join(", ", Texts)}");
    }

    public override void Write(Utf8JsonWriter writer, TEnum value, JsonSerializerOptions options) =>
        writer.WriteStringValue(EnumText.Of(value));
}

/// <summary>The text of an enum value as JSON and the CLI show it (camel case: <c>Udp</c> is <c>udp</c>).</summary>
public static class EnumText
{
    public static string Of<TEnum>(TEnum value)
        where TEnum : struct, Enum => JsonNamingPolicy.CamelCase.ConvertName(value.ToString());
}
