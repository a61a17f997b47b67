using Vnet.Frames;
using Vnet.Inference;

namespace Vnet.Adaptation;

/// <summary>Traffic between the VMs of two hosts (either order; the planner merges both).</summary>
public sealed record HostDemand(string A, string B, double BytesPerSecond);

/// <summary>The measured path between a host and the Proxy (its star link).</summary>
/// <param name="ThroughputBytesPerSecond">Measured throughput of the star link, when known.</param>
public sealed record StarPath(string Host, double RttMs, double? ThroughputBytesPerSecond);

/// <summary>A direct link the planner wants, with why, in words for the operator.</summary>
public sealed record PlannedLink(string A, string B, double BytesPerSecond, string Reason)
{
    /// <summary>The link exists already (it was in the <c>existing</c> set) and stays.</summary>
    public bool Kept { get; init; }
}

/// <summary>
/// Chooses the direct links that take the heaviest host-to-host traffic off the star.
/// <code>
/// 1. merge demands per unordered host pair; drop pairs with the Proxy, a host with itself, or no traffic;
/// 2. repeat while some pair has both hosts under budget:
///      heaviest = the heaviest such pair; near ties = such pairs carrying >= 90 % of it;
///      take from the near ties: an existing link first (no churn for a 10 % difference), then the
///      slowest path through the Proxy (largest sum of the two star RTTs, then lowest star
///      throughput: a direct link helps that pair most), then the heavier, then by name;
///      charge one link to each host.
/// </code>
/// The result is the complete set of direct links wanted, in the order chosen. Existing links use
/// budget like new ones; an existing link missing from the result is one to remove. Greedy, as the
/// original's heuristics were: the exact problem is NP-hard and the greedy answer is the one an
/// operator can check by hand.
/// </summary>
public static class LinkPlanner
{
    /// <summary>Pairs carrying at least this fraction of the heaviest remaining pair are near ties.</summary>
    public const double NearTie = 0.9;

    public static IReadOnlyList<PlannedLink> Choose(
        IReadOnlyList<HostDemand> demands,
        IReadOnlyDictionary<string, StarPath> star,
        int budgetPerHost,
        IReadOnlySet<(string, string)>? existing = null,
        string? proxy = null)
    {
        ArgumentNullException.ThrowIfNull(demands);
        ArgumentNullException.ThrowIfNull(star);
        ArgumentOutOfRangeException.ThrowIfNegative(budgetPerHost);

        var merged = new Dictionary<(string A, string B), double>();
        foreach (var d in demands)
        {
            if (d.A == d.B || d.A == proxy || d.B == proxy || !(d.BytesPerSecond > 0) || double.IsInfinity(d.BytesPerSecond))
                continue;
            var key = Ordered(d.A, d.B);
            merged[key] = merged.GetValueOrDefault(key) + d.BytesPerSecond;
        }

        var open = merged
            .Select(m => new Candidate(
                m.Key.A,
                m.Key.B,
                m.Value,
                StarRtt(star, m.Key.A) + StarRtt(star, m.Key.B),
                Math.Min(StarThroughput(star, m.Key.A), StarThroughput(star, m.Key.B)),
                existing is not null && (existing.Contains((m.Key.A, m.Key.B)) || existing.Contains((m.Key.B, m.Key.A)))))
            .OrderByDescending(c => c.Rate)
            .ThenBy(c => c.A, StringComparer.Ordinal)
            .ThenBy(c => c.B, StringComparer.Ordinal)
            .ToList();
        var used = new Dictionary<string, int>(StringComparer.Ordinal);
        var chosen = new List<PlannedLink>();

        while (true)
        {
            open.RemoveAll(c => used.GetValueOrDefault(c.A) >= budgetPerHost || used.GetValueOrDefault(c.B) >= budgetPerHost);
            if (open.Count == 0)
                break;
            var heaviest = open[0];
            var pick = open
                .TakeWhile(c => c.Rate >= heaviest.Rate * NearTie)
                .OrderByDescending(c => c.Existing)
                .ThenByDescending(c => c.StarRttMs)
                .ThenBy(c => c.StarThroughput)
                .ThenByDescending(c => c.Rate)
                .ThenBy(c => c.A, StringComparer.Ordinal)
                .ThenBy(c => c.B, StringComparer.Ordinal)
                .First();
            open.Remove(pick);
            used[pick.A] = used.GetValueOrDefault(pick.A) + 1;
            used[pick.B] = used.GetValueOrDefault(pick.B) + 1;
            chosen.Add(new PlannedLink(pick.A, pick.B, pick.Rate, Reason(pick, heaviest, star)) { Kept = pick.Existing });
        }
        return chosen;
    }

    /// <summary>
    /// Host-to-host demand from an inferred topology and where each VM lives: every edge between
    /// VMs on two different hosts adds its rate to that host pair. Edges with a VM of unknown
    /// location, or inside one host, add nothing. Heaviest first.
    /// </summary>
    public static IReadOnlyList<HostDemand> DemandsOf(IEnumerable<Edge> edges, IReadOnlyDictionary<MacAddress, string> vmHost)
    {
        ArgumentNullException.ThrowIfNull(edges);
        ArgumentNullException.ThrowIfNull(vmHost);
        var sums = new Dictionary<(string A, string B), double>();
        foreach (var e in edges)
        {
            if (!vmHost.TryGetValue(e.Pair.A, out var ha) || !vmHost.TryGetValue(e.Pair.B, out var hb) || ha == hb)
                continue;
            var key = Ordered(ha, hb);
            sums[key] = sums.GetValueOrDefault(key) + e.BytesPerSecond;
        }
        return
        [
            .. sums
                .OrderByDescending(s => s.Value)
                .ThenBy(s => s.Key.A, StringComparer.Ordinal)
                .ThenBy(s => s.Key.B, StringComparer.Ordinal)
                .Select(s => new HostDemand(s.Key.A, s.Key.B, s.Value)),
        ];
    }

    private static (string A, string B) Ordered(string a, string b) => string.CompareOrdinal(a, b) <= 0 ? (a, b) : (b, a);

    // An unmeasured star path ranks as the fastest: only a measurement can win a tie.
    private static double StarRtt(IReadOnlyDictionary<string, StarPath> star, string host) =>
        star.TryGetValue(host, out var p) && p.RttMs > 0 && double.IsFinite(p.RttMs) ? p.RttMs : 0;

    private static double StarThroughput(IReadOnlyDictionary<string, StarPath> star, string host) =>
        star.TryGetValue(host, out var p) && p.ThroughputBytesPerSecond is > 0 and var t ? t : double.PositiveInfinity;

    private static string Reason(Candidate pick, Candidate heaviest, IReadOnlyDictionary<string, StarPath> star)
    {
        var measured = star.ContainsKey(pick.A) || star.ContainsKey(pick.B);
        var text = $"{pick.A}-{pick.B} carry {RateFormat.BytesPerSecond(pick.Rate)}, star path "
            + (measured ? RateFormat.Milliseconds(pick.StarRttMs) : "not measured");
        if (!double.IsPositiveInfinity(pick.StarThroughput))
            text += $" at {RateFormat.BytesPerSecond(pick.StarThroughput)}";
        if (pick != heaviest)
        {
            var why = pick.Existing && !heaviest.Existing ? "the link exists"
                : pick.StarRttMs > heaviest.StarRttMs ? "its star path is slower"
                : "its star path has less throughput";
            text += $"; taken before {heaviest.A}-{heaviest.B} ({RateFormat.BytesPerSecond(heaviest.Rate)}, within 10 %): {why}";
        }
        if (pick.Existing)
            text += "; existing link kept";
        return text;
    }

    private sealed record Candidate(string A, string B, double Rate, double StarRttMs, double StarThroughput, bool Existing);
}
