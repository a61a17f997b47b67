using System.Globalization;
using System.Text.RegularExpressions;

namespace Vnet.Tests.Support;

/// <summary>
/// A Prometheus text exposition (format 0.0.4) read strictly: every line is a <c># HELP</c>, a
/// <c># TYPE</c> or a sample, every sample's family has both, and no series appears twice;
/// anything else throws <see cref="FormatException"/>. Shared by the in-process and the
/// end-to-end tests of <c>/metrics</c>.
/// </summary>
internal sealed partial class Exposition
{
    private readonly Dictionary<string, double> _series = new(StringComparer.Ordinal);

    private Exposition()
    {
    }

    /// <summary>Family name to its type (counter, gauge ...).</summary>
    public Dictionary<string, string> Types { get; } = new(StringComparer.Ordinal);

    /// <summary>Every sample: its family name, labels and value.</summary>
    public List<(string Name, IReadOnlyDictionary<string, string> Labels, double Value)> Samples { get; } = [];

    public static Exposition Parse(string text)
    {
        var e = new Exposition();
        var help = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0)
                continue;
            if (line.StartsWith("# HELP ", StringComparison.Ordinal))
            {
                help.Add(line[7..].Split(' ', 2)[0]);
                continue;
            }
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                var parts = line[7..].Split(' ');
                if (parts.Length != 2 || !e.Types.TryAdd(parts[0], parts[1]))
                    throw new FormatException($"bad or repeated TYPE line: {line}");
                continue;
            }
            var m = SampleLine().Match(line);
            if (!m.Success)
                throw new FormatException($"not a sample line: {line}");
            var name = m.Groups["name"].Value;
            var labels = new SortedDictionary<string, string>(StringComparer.Ordinal);
            foreach (Match l in Label().Matches(m.Groups["labels"].Value))
                labels[l.Groups["k"].Value] = l.Groups["v"].Value;
            var value = double.Parse(m.Groups["value"].Value, NumberStyles.Float, CultureInfo.InvariantCulture);
            if (!e.Types.ContainsKey(name) || !help.Contains(name))
                throw new FormatException($"sample without its family's HELP and TYPE: {line}");
            if (!e._series.TryAdd(Key(name, labels), value))
                throw new FormatException($"series twice: {line}");
            e.Samples.Add((name, labels, value));
        }
        return e;
    }

    /// <summary>The value of one series, or null when it is absent.</summary>
    public double? Value(string name, params (string Key, string Value)[] labels)
    {
        var sorted = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in labels)
            sorted[k] = v;
        return _series.TryGetValue(Key(name, sorted), out var value) ? value : null;
    }

    /// <summary>The samples of one family.</summary>
    public IEnumerable<(IReadOnlyDictionary<string, string> Labels, double Value)> Of(string name) =>
        Samples.Where(s => s.Name == name).Select(s => (s.Labels, s.Value));

    private static string Key(string name, SortedDictionary<string, string> labels) =>
        name + "{" + string.Join(",", labels.Select(kv => $"{kv.Key}={kv.Value}")) + "}";

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>[^}]*)\})? (?<value>\S+)$")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"(?<k>[a-zA-Z_][a-zA-Z0-9_]*)=""(?<v>(?:[^""\\]|\\.)*)""")]
    private static partial Regex Label();
}
