using Prometheus;

namespace Vnet.Metrics;

/// <summary>
/// The labelled series of one metric family, mirroring values the daemon keeps elsewhere: at each
/// scrape every series that exists is set (<see cref="Set"/>) between <see cref="Begin"/> and
/// <see cref="End"/>, and the series not set in between are removed (a link or rule that went).
/// A series belongs to an owner (the port or session whose counter it mirrors): a new owner under
/// the same labels (a link removed and added again, a new session) restarts the series, so a
/// counter that starts again from zero is seen as the reset it is rather than never rising again.
/// Used by one scrape at a time.
/// </summary>
internal sealed class MirroredSeries<TChild>(Collector<TChild> family, Action<TChild, double> set)
    where TChild : ChildBase
{
    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private int _generation;

    public void Begin() => _generation++;

    public void Set(double value, object? owner, params string[] labels)
    {
        var key = string.Join('\u001f', labels);
        if (!_entries.TryGetValue(key, out var entry))
        {
            _entries[key] = entry = new Entry(labels) { Owner = owner };
        }
        else if (!ReferenceEquals(entry.Owner, owner))
        {
            family.RemoveLabelled(labels);
            entry.Owner = owner;
        }
        entry.Generation = _generation;
        set(family.WithLabels(labels), value);
    }

    public void End()
    {
        List<string>? gone = null;
        foreach (var (key, entry) in _entries)
        {
            if (entry.Generation != _generation)
                (gone ??= []).Add(key);
        }
        foreach (var key in gone ?? [])
        {
            family.RemoveLabelled(_entries[key].Labels);
            _entries.Remove(key);
        }
    }

    private sealed class Entry(string[] labels)
    {
        public string[] Labels { get; } = labels;

        public object? Owner { get; set; }

        public int Generation { get; set; }
    }
}

/// <summary>Shorthands for the two kinds of family the daemon exports.</summary>
internal static class MirroredSeries
{
    /// <summary>A counter: raised to the daemon's count (a count never falls while its owner lives).</summary>
    public static MirroredSeries<Counter.Child> Of(Counter counter) => new(counter, static (c, v) => c.IncTo(v));

    /// <summary>A gauge: set to the value.</summary>
    public static MirroredSeries<Gauge.Child> Of(Gauge gauge) => new(gauge, static (g, v) => g.Set(v));
}
