using Vnet.Frames;

namespace Vnet.Forwarding;

/// <summary>Hit counters of one installed rule; they survive table rebuilds.</summary>
public sealed class RuleStats
{
    private long _frames;
    private long _bytes;

    public long Frames => Volatile.Read(ref _frames);

    public long Bytes => Volatile.Read(ref _bytes);

    public void Hit(int bytes)
    {
        Interlocked.Increment(ref _frames);
        Interlocked.Add(ref _bytes, bytes);
    }
}

/// <summary>A rule bound to the ports of one table version.</summary>
public sealed class CompiledRule
{
    internal CompiledRule(Rule rule, int ingressPort, int actionPort, RuleStats stats)
    {
        Rule = rule;
        IngressPort = ingressPort;
        ActionPort = actionPort;
        Stats = stats;
    }

    public Rule Rule { get; }

    /// <summary>Arrival port id the rule requires, or -1.</summary>
    public int IngressPort { get; }

    /// <summary>Port id the action sends to; -1 for flood or for a port that does not exist (yet).</summary>
    public int ActionPort { get; }

    public bool IsFlood => Rule.Action.IsFlood;

    public RuleStats Stats { get; }
}

/// <summary>
/// The rules that won a lookup: one group of tied rules from each of at most two subtables with the
/// same priority (exact/any and any/exact are the only shapes that tie across subtables).
/// </summary>
public readonly struct LookupResult
{
    internal LookupResult(CompiledRule[]? first, CompiledRule[]? second, int priority)
    {
        First = first;
        Second = second;
        Priority = priority;
    }

    public CompiledRule[]? First { get; }

    public CompiledRule[]? Second { get; }

    public int Priority { get; }

    public bool IsEmpty => First is null;

    public int Count => (First?.Length ?? 0) + (Second?.Length ?? 0);

    public CompiledRule this[int index] =>
        index < First!.Length ? First[index] : Second![index - First.Length];
}

/// <summary>
/// An immutable version of a daemon's forwarding rules, organised as Open vSwitch organises its
/// classifier. See <c>README.md</c> in this folder for the design.
/// </summary>
public sealed class ForwardingTable
{
    private readonly Subtable[] _subtables;
    private readonly CompiledRule[] _rules;

    public static ForwardingTable Empty { get; } = new([], static _ => -1, static _ => new RuleStats());

    /// <param name="rules">Valid rules (see <see cref="Rule.Validate"/>).</param>
    /// <param name="resolvePort">Port id of a port name, or -1 when no such port exists.</param>
    /// <param name="statsOf">Counters for a rule id, kept by the caller across versions.</param>
    public ForwardingTable(IEnumerable<Rule> rules, Func<PortRef, int> resolvePort, Func<long, RuleStats> statsOf)
    {
        ArgumentNullException.ThrowIfNull(rules);
        ArgumentNullException.ThrowIfNull(resolvePort);
        ArgumentNullException.ThrowIfNull(statsOf);

        var byShape = new Dictionary<int, Dictionary<FlowKey, List<CompiledRule>>>();
        var all = new List<CompiledRule>();
        foreach (var rule in rules)
        {
            // An invalid shape (a 'none' source, say) would match where no rule should.
            if (rule.Validate() is { } problem)
                throw new ArgumentException($"rule {rule.Id}: {problem}", nameof(rules));
            var ingress = rule.Ingress is { } i ? resolvePort(i) : -1;
            if (rule.Ingress is not null && ingress < 0)
            {
                // A rule for an arrival port that does not exist can never match; keep it listed.
                ingress = int.MaxValue;
            }
            var action = rule.Action.IsFlood ? -1 : resolvePort(rule.Action.Port);
            var compiled = new CompiledRule(rule, ingress, action, statsOf(rule.Id));
            all.Add(compiled);

            var shape = Shape(rule.Source.Kind, rule.Destination.Kind, rule.Ingress is not null);
            if (!byShape.TryGetValue(shape, out var table))
                byShape[shape] = table = [];
            var key = KeyOf(rule.Source, rule.Destination, ingress);
            if (!table.TryGetValue(key, out var list))
                table[key] = list = [];
            list.Add(compiled);
        }

        _rules = [.. all];
        var subtables = new List<Subtable>(byShape.Count);
        foreach (var (shape, table) in byShape)
        {
            var frozen = new Dictionary<FlowKey, CompiledRule[]>(table.Count);
            foreach (var (key, list) in table)
                frozen[key] = [.. list];
            subtables.Add(new Subtable(shape, frozen));
        }
        subtables.Sort(static (a, b) => b.Priority.CompareTo(a.Priority));
        _subtables = [.. subtables];
    }

    public IReadOnlyList<CompiledRule> Rules => _rules;

    public int Count => _rules.Length;

    /// <summary>Number of distinct rule shapes: the most hash probes a lookup can make.</summary>
    public int SubtableCount => _subtables.Length;

    /// <summary>
    /// Finds the strongest matching rules for a frame. Allocation-free; at most one hash probe per
    /// subtable, stopping as soon as no remaining subtable can beat the best match.
    /// </summary>
    public LookupResult Lookup(MacAddress source, MacAddress destination, int ingressPort)
    {
        CompiledRule[]? first = null;
        CompiledRule[]? second = null;
        var best = int.MinValue;
        var isGroup = destination.IsGroup;
        foreach (var sub in _subtables)
        {
            if (sub.Priority < best)
                break;
            if (sub.Destination == MacMatchKind.Multicast && !isGroup)
                continue;
            var key = new FlowKey(
                sub.Source == MacMatchKind.Exact ? source.Value : 0,
                sub.Destination == MacMatchKind.Exact ? destination.Value : 0,
                sub.HasIngress ? ingressPort : -1);
            if (sub.Rules.TryGetValue(key, out var group))
            {
                if (first is null)
                {
                    first = group;
                    best = sub.Priority;
                }
                else
                {
                    second = group;
                }
            }
        }
        return new LookupResult(first, second, best);
    }

    private static int Shape(MacMatchKind src, MacMatchKind dst, bool ingress) =>
        ((int)src << 3) | ((int)dst << 1) | (ingress ? 1 : 0);

    private static FlowKey KeyOf(MacMatch src, MacMatch dst, int ingress) => new(
        src.Kind == MacMatchKind.Exact ? src.Address.Value : 0,
        dst.Kind == MacMatchKind.Exact ? dst.Address.Value : 0,
        ingress);

    private sealed class Subtable
    {
        public Subtable(int shape, Dictionary<FlowKey, CompiledRule[]> rules)
        {
            Source = (MacMatchKind)(shape >> 3);
            Destination = (MacMatchKind)((shape >> 1) & 3);
            HasIngress = (shape & 1) != 0;
            Priority = Rule.ComputePriority(Source, Destination, HasIngress);
            Rules = rules;
        }

        public MacMatchKind Source { get; }

        public MacMatchKind Destination { get; }

        public bool HasIngress { get; }

        public int Priority { get; }

        public Dictionary<FlowKey, CompiledRule[]> Rules { get; }
    }

    private readonly struct FlowKey(ulong source, ulong destination, int ingress) : IEquatable<FlowKey>
    {
        private readonly ulong _source = source;
        private readonly ulong _destination = destination;
        private readonly int _ingress = ingress;

        public bool Equals(FlowKey other) =>
            _source == other._source && _destination == other._destination && _ingress == other._ingress;

        public override bool Equals(object? obj) => obj is FlowKey k && Equals(k);

        public override int GetHashCode()
        {
            // A multiplicative mix: MACs of one vendor share their upper bytes, so fold them in well.
            var h = (_source * 0x9E3779B97F4A7C15UL) ^ (_destination * 0xC2B2AE3D27D4EB4FUL) ^ (ulong)(uint)_ingress;
            return (int)(h ^ (h >> 32));
        }
    }
}
