namespace Vnet.Inference;

/// <summary>
/// Turns the smoothed matrix into the application topology and decides when it changed.
/// <code>
/// Update(smoothed, now)
///   1. undirected edges: rate(x, y) = rate(x -> y) + rate(y -> x), group addresses skipped;
///   2. normalise by the strongest edge; keep an edge when rate >= PruneThreshold * strongest
///      and rate >= MinRate: the candidate edge set;
///   3. candidate set == current set: the current topology takes the new rates, no event;
///      otherwise the candidate must stay the same set for HoldTime before it becomes current,
///      with one event listing the edges added and removed. Any other set in between restarts
///      the wait; a candidate that differs from the current set without a break for 3 x HoldTime
///      is taken as it stands then, so one edge flickering at the threshold cannot freeze the
///      topology for ever;
///   4. while an edge of the current topology that is still in the candidate is falling fast
///      (below DeclineFactor of its rate at the previous update), the wait restarts: the matrix
///      is still moving away from the current topology, so a switch from one pattern to another
///      becomes one event (old edges gone, new ones in) rather than an addition and, seconds
///      later when the old edges have faded below the threshold, a removal.
/// </code>
/// Events are at least HoldTime apart (less <see cref="TickSlack"/> of a report period): the wait for
/// the next change starts after the previous one. An update with nothing to weigh (an empty matrix,
/// no topology, nothing pending: an idle overlay) returns the current topology as it is.
/// Not thread-safe: the Proxy's control loop owns it.
/// </summary>
public sealed class TopologyInference
{
    private const int MaxHoldFactor = 3;

    /// <summary>
    /// A current edge whose rate fell below this fraction of its rate one update earlier is fading.
    /// A flow that stops decays by e^(-period/TimeConstant) per update (0.72 at the defaults);
    /// smoothed steady traffic moves far less.
    /// </summary>
    public const double DeclineFactor = 0.8;

    /// <summary>The part of a report period by which a hold may fall short and still count (tick jitter).</summary>
    public const double TickSlack = 0.05;

    private Dictionary<VmPair, double> _lastRates = [];

    private readonly LinkedList<TopologyEvent> _events = new();
    private HashSet<VmPair>? _pendingSet;
    private DateTimeOffset _pendingSince;
    private DateTimeOffset _divergedSince;
    private long _nextId = 1;

    public TopologyInference(VttifOptions? options = null) => Options = (options ?? VttifOptions.Default).Validated();

    public VttifOptions Options { get; }

    /// <summary>The topology in force: <see cref="InferredTopology.Empty"/> before the first update.</summary>
    public InferredTopology Current { get; private set; } = InferredTopology.Empty;

    /// <summary>A different edge set waiting out the hold time (its <c>Since</c> is when it first
    /// appeared), or null when the candidate equals the current set.</summary>
    public InferredTopology? Pending { get; private set; }

    /// <summary>The latest events, oldest first, at most <see cref="VttifOptions.MaxEvents"/>.</summary>
    public IReadOnlyList<TopologyEvent> Events => [.. _events];

    /// <summary>The id of the latest event, 0 before the first (no copy of the events, unlike <see cref="Events"/>).</summary>
    public long LastEventId => _nextId - 1;

    /// <summary>Events with an id above <paramref name="id"/> that are still kept, oldest first.</summary>
    public IReadOnlyList<TopologyEvent> EventsSince(long id) => [.. _events.Where(e => e.Id > id)];

    public InferredTopology Update(IReadOnlyList<PairRate> smoothed, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(smoothed);

        // At rest: an empty matrix over an empty topology with nothing pending. What the full update
        // would give is the same topology (no event, Since unchanged), so nothing is built.
        if (smoothed.Count == 0 && _lastRates.Count == 0 && _pendingSet is null && Current.Edges.Count == 0 &&
            !ReferenceEquals(Current, InferredTopology.Empty))
        {
            return Current;
        }

        var rates = new Dictionary<VmPair, double>();
        foreach (var p in smoothed)
        {
            // A broadcast or multicast destination is not a VM: it says nothing about who talks to whom.
            if (p.Source == p.Destination || p.Source.IsGroup || p.Destination.IsGroup || !(p.BytesPerSecond > 0))
                continue;
            var pair = VmPair.Of(p.Source, p.Destination);
            rates[pair] = rates.GetValueOrDefault(pair) + p.BytesPerSecond;
        }
        var strongest = rates.Count == 0 ? 0 : rates.Values.Max();
        var floor = Math.Max(Options.MinRate, Options.PruneThreshold * strongest);
        var candidate = rates.Where(r => r.Value >= floor && r.Value > 0).Select(r => r.Key).ToHashSet();

        if (ReferenceEquals(Current, InferredTopology.Empty))
            Current = new InferredTopology([], now);

        var currentSet = Current.Edges.Select(e => e.Pair).ToHashSet();
        if (candidate.SetEquals(currentSet))
        {
            _lastRates = rates;
            _pendingSet = null;
            Pending = null;
            Current = Current with { Edges = EdgesOf(currentSet, rates, strongest) };
            return Current;
        }

        if (_pendingSet is null)
        {
            _divergedSince = now;
            _pendingSince = now;
            _pendingSet = candidate;
        }
        else if (!candidate.SetEquals(_pendingSet))
        {
            _pendingSince = now;
            _pendingSet = candidate;
        }

        var fading = false;
        foreach (var pair in currentSet)
        {
            if (candidate.Contains(pair) && _lastRates.TryGetValue(pair, out var before) &&
                rates.GetValueOrDefault(pair) < DeclineFactor * before)
            {
                fading = true;
                break;
            }
        }
        _lastRates = rates;
        if (fading)
            _pendingSince = now;

        // Holds are judged at ticks, whose times jitter by milliseconds (timer, control loop): a set
        // first seen at a late tick would otherwise miss HoldTime by a hair at the tick HoldTime
        // later and wait one more period, about half the time.
        var slack = Options.ReportPeriod * TickSlack;
        var held = now - _pendingSince >= Options.HoldTime - slack;
        var overdue = now - _divergedSince >= Options.HoldTime * MaxHoldFactor - slack;
        if (held || overdue)
        {
            var edges = EdgesOf(candidate, rates, strongest);
            var added = candidate.Except(currentSet).Order().ToList();
            var removed = currentSet.Except(candidate).Order().ToList();
            Current = new InferredTopology(edges, now);
            _pendingSet = null;
            Pending = null;
            _events.AddLast(new TopologyEvent(_nextId++, now, added, removed, Current));
            while (_events.Count > Options.MaxEvents)
                _events.RemoveFirst();
            return Current;
        }

        Pending = new InferredTopology(EdgesOf(candidate, rates, strongest), _pendingSince);
        Current = Current with { Edges = EdgesOf(currentSet, rates, strongest) };
        return Current;
    }

    // Heaviest first (what adaptation reads first), then by pair for a stable order.
    private static List<Edge> EdgesOf(HashSet<VmPair> set, Dictionary<VmPair, double> rates, double strongest) =>
    [
        .. set
            .Select(pair =>
            {
                var rate = rates.GetValueOrDefault(pair);
                return new Edge(pair, rate, strongest > 0 ? rate / strongest : 0);
            })
            .OrderByDescending(e => e.BytesPerSecond)
            .ThenBy(e => e.Pair),
    ];
}
