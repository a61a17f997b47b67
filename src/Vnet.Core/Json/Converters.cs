using System.Text.Json;
using System.Text.Json.Serialization;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Json;

/// <summary>
/// Domain values as tools and peers read and write them in JSON: the same text the CLI prints and
/// the language uses (<c>"02:00:00:00:00:01"</c>, <c>"any"</c>, <c>"link:h2"</c>, <c>"udp"</c>), while
/// the code holds typed values and never compares strings. Text that does not parse is refused
/// with what was expected.
/// </summary>
public abstract class TextJsonConverter<T> : JsonConverter<T>
{
    /// <summary>What a valid text looks like, for the error.</summary>
    protected abstract string Expected { get; }

    protected abstract bool TryParse(string text, out T value);

    public sealed override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.String && reader.GetString() is { } text && TryParse(text, out var value)
            ? value
            : throw new JsonException($"expected {Expected}");

    public sealed override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value?.ToString());
}

public sealed class MacAddressJsonConverter : TextJsonConverter<MacAddress>
{
    protected override string Expected => "a MAC address such as \"02:00:00:00:00:01\"";

    protected override bool TryParse(string text, out MacAddress value) => MacAddress.TryParse(text, out value);
}

/// <summary>A rule side: an address, <c>any</c>, <c>multicast</c> or <c>none</c>.</summary>
public sealed class MacMatchJsonConverter : TextJsonConverter<MacMatch>
{
    protected override string Expected => "a MAC address, \"any\", \"multicast\" or \"none\"";

    protected override bool TryParse(string text, out MacMatch value) => MacMatch.TryParse(text, out value);
}

/// <summary>A port: <c>if:NAME</c> or <c>link:NAME</c>.</summary>
public sealed class PortRefJsonConverter : TextJsonConverter<PortRef>
{
    protected override string Expected => "a port such as \"link:h2\" or \"if:tap0\"";

    protected override bool TryParse(string text, out PortRef value)
    {
        var ok = PortRef.TryParse(text, out var port);
        value = port ?? default;
        return ok;
    }
}

/// <summary>A rule's action: <c>flood</c> or a port.</summary>
public sealed class RuleActionJsonConverter : TextJsonConverter<RuleAction>
{
    protected override string Expected => "\"flood\" or a port such as \"link:h2\"";

    protected override bool TryParse(string text, out RuleAction value)
    {
        value = text == "flood" ? RuleAction.Flood : default;
        if (text == "flood")
            return true;
        if (!PortRef.TryParse(text, out var port))
            return false;
        value = RuleAction.To(port.Value);
        return true;
    }
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
