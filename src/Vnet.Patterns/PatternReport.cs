using System.Text.Json;
using System.Text.Json.Serialization;

namespace Vnet.Patterns;

/// <summary>
/// What one rank measured. Round times run from the round's start at this rank to the barrier's
/// release, so every rank's round includes the slowest rank's work; rank 0's report is the
/// authoritative one (it releases the barrier). Byte counts are message payload only: framing,
/// handshakes and barrier traffic are not counted, so they equal Rounds x Bytes x the number of
/// targets (sent) or sources (received) exactly.
/// </summary>
public sealed record PatternReport(
    int Rank,
    [property: JsonConverter(typeof(PatternKindJsonConverter))] PatternKind Kind,
    int N,
    int Bytes,
    int Rounds,
    [property: JsonPropertyName("roundSeconds"), JsonConverter(typeof(SecondsListJsonConverter))] IReadOnlyList<TimeSpan> RoundTimes,
    [property: JsonPropertyName("totalSeconds"), JsonConverter(typeof(SecondsJsonConverter))] TimeSpan Total,
    long BytesSent,
    long BytesReceived)
{
    /// <summary>Indented JSON: pattern names as on the command line, times in seconds.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, PatternJson.Default.PatternReport);

    public static PatternReport? FromJson(string json) => JsonSerializer.Deserialize(json, PatternJson.Default.PatternReport);
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(PatternReport))]
internal sealed partial class PatternJson : JsonSerializerContext;

/// <summary>"all-to-all", not 0 or "AllToAll": the report reads like the command that made it.</summary>
internal sealed class PatternKindJsonConverter : JsonConverter<PatternKind>
{
    public override PatternKind Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        PatternGraph.TryParse(reader.GetString(), out var kind) ? kind : throw new JsonException($"'{reader.GetString()}' is not a pattern");

    public override void Write(Utf8JsonWriter writer, PatternKind value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.WriteStringValue(value.Name());
    }
}

/// <summary>Seconds as a number (microsecond precision): what plotting scripts want, unlike "00:00:00.41".</summary>
internal sealed class SecondsJsonConverter : JsonConverter<TimeSpan>
{
    public override TimeSpan Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        TimeSpan.FromSeconds(reader.GetDouble());

    public override void Write(Utf8JsonWriter writer, TimeSpan value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.WriteNumberValue(Math.Round(value.TotalSeconds, 6));
    }
}

internal sealed class SecondsListJsonConverter : JsonConverter<IReadOnlyList<TimeSpan>>
{
    public override IReadOnlyList<TimeSpan> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new JsonException("expected an array of seconds");
        var list = new List<TimeSpan>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            list.Add(TimeSpan.FromSeconds(reader.GetDouble()));
        return list;
    }

    public override void Write(Utf8JsonWriter writer, IReadOnlyList<TimeSpan> value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(value);
        writer.WriteStartArray();
        foreach (var t in value)
            writer.WriteNumberValue(Math.Round(t.TotalSeconds, 6));
        writer.WriteEndArray();
    }
}
