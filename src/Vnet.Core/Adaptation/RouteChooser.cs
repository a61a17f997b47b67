using Vnet.Inference;

namespace Vnet.Adaptation;

public enum RouteKind
{
    /// <summary>The two hosts' own link.</summary>
    Direct,

    /// <summary>Through the Proxy, as every frame goes by default (or the star link itself when one end is the Proxy).</summary>
    Star,

    /// <summary>Through one intermediate daemon other than the Proxy.</summary>
    TwoHop,
}

/// <summary>A path between two daemons: every daemon on it, ends included.</summary>
/// <param name="RttMs">Sum of the measured RTTs along the path; null when nothing was measured
/// and the star is returned as the default.</param>
public sealed record Route(IReadOnlyList<string> Hops, double? RttMs, RouteKind Kind, string Reason)
{
    /// <summary>The daemon the traffic should be sent to first.</summary>
    public string NextHop => Hops[1];
}

/// <summary>
/// Picks the lowest-latency path between two daemons among the direct link, the star and every
/// two-hop path through a third daemon, from measured RTTs. Internet paths break the triangle
/// inequality often enough that a relay can beat both the direct path and the star.
/// <para>
/// Latency only: throughput is not weighed here, because a bulk flow wants the widest path and a
/// chatty one the shortest, and the link planner already uses throughput to decide which pairs get
/// direct links. A measurement (a, b) serves for (b, a); when both are given their mean is used.
/// Missing, negative or non-finite measurements are left out, so a path with an unmeasured hop is
/// never chosen; with nothing measured the answer is the star with an unknown RTT. Equal RTTs
/// prefer fewer daemons in the way: direct, then the star, then relays by name.
/// </para>
/// </summary>
public static class RouteChooser
{
    public static Route Best(string from, string to, IReadOnlyDictionary<(string, string), double> rttMs, string proxy)
    {
        ArgumentException.ThrowIfNullOrEmpty(from);
        ArgumentException.ThrowIfNullOrEmpty(to);
        ArgumentException.ThrowIfNullOrEmpty(proxy);
        ArgumentNullException.ThrowIfNull(rttMs);
        if (from == to)
            throw new ArgumentException($"a route needs two different daemons, got '{from}' twice", nameof(to));

        var rtt = Symmetric(rttMs);
        double? Rtt(string a, string b) => rtt.TryGetValue(Key(a, b), out var v) ? v : null;

        var endIsProxy = from == proxy || to == proxy;
        string[] starHops = endIsProxy ? [from, to] : [from, proxy, to];
        var direct = endIsProxy ? null : Rtt(from, to);
        var starRtt = endIsProxy ? Rtt(from, to) : Rtt(from, proxy) + Rtt(proxy, to);

        var candidates = new List<Route>();
        if (direct is { } d)
            candidates.Add(new Route([from, to], d, RouteKind.Direct, ""));
        if (starRtt is { } s)
            candidates.Add(new Route(starHops, s, RouteKind.Star, ""));
        var relays = rtt.Keys
            .SelectMany(k => new[] { k.A, k.B })
            .Distinct(StringComparer.Ordinal)
            .Where(c => c != from && c != to && c != proxy)
            .Order(StringComparer.Ordinal);
        foreach (var c in relays)
        {
            if (Rtt(from, c) + Rtt(c, to) is { } via)
                candidates.Add(new Route([from, c, to], via, RouteKind.TwoHop, ""));
        }

        if (candidates.Count == 0)
            return new Route(starHops, null, RouteKind.Star, $"no measured path from {from} to {to}: the star is the default");

        // OrderBy is stable and candidates were added direct, star, relays by name: that is the tie order.
        var best = candidates.OrderBy(r => r.RttMs).First();
        var bestRelay = candidates.Where(r => r.Kind == RouteKind.TwoHop).OrderBy(r => r.RttMs).FirstOrDefault();

        var reason = best.Kind switch
        {
            RouteKind.Direct => $"direct {Ms(best.RttMs)}",
            RouteKind.Star when endIsProxy => $"star link {Ms(best.RttMs)}",
            RouteKind.Star => $"star {Ms(best.RttMs)} ({from}-{proxy} {Ms(Rtt(from, proxy))} + {proxy}-{to} {Ms(Rtt(proxy, to))})",
            _ => $"via {best.Hops[1]} {Ms(best.RttMs)} ({from}-{best.Hops[1]} {Ms(Rtt(from, best.Hops[1]))} + {best.Hops[1]}-{to} {Ms(Rtt(best.Hops[1], to))})",
        };
        var others = new List<string>();
        if (best.Kind != RouteKind.Direct && !endIsProxy)
            others.Add("direct " + (direct is { } dd ? Ms(dd) : "not measured"));
        if (best.Kind != RouteKind.Star)
            others.Add((endIsProxy ? "star link " : "star ") + (starRtt is { } ss ? Ms(ss) : "not measured"));
        if (bestRelay is not null && !ReferenceEquals(bestRelay, best))
            others.Add($"best relay via {bestRelay.Hops[1]} {Ms(bestRelay.RttMs)}");
        reason += " is the lowest RTT" + (others.Count > 0 ? "; " + string.Join(", ", others) : "");
        return best with { Reason = reason };
    }

    private static string Ms(double? ms) => ms is { } v ? RateFormat.Milliseconds(v) : "?";

    private static (string A, string B) Key(string a, string b) => string.CompareOrdinal(a, b) <= 0 ? (a, b) : (b, a);

    private static Dictionary<(string A, string B), double> Symmetric(IReadOnlyDictionary<(string, string), double> rttMs)
    {
        var sums = new Dictionary<(string A, string B), (double Sum, int Count)>();
        foreach (var ((a, b), v) in rttMs)
        {
            if (a is null || b is null || a == b || !(v >= 0) || !double.IsFinite(v))
                continue;
            var key = Key(a, b);
            var (sum, count) = sums.GetValueOrDefault(key);
            sums[key] = (sum + v, count + 1);
        }
        return sums.ToDictionary(p => p.Key, p => p.Value.Sum / p.Value.Count);
    }
}
