using System.Net;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Inference;
using Vnet.Language;
using Vnet.Links;

namespace Vnet.Overlay;

/// <summary>Two hosts whose VMs talk, with the VMs on each side.</summary>
public sealed record HostPairTraffic(string A, string B, double BytesPerSecond, IReadOnlyList<MacAddress> VmsAtA, IReadOnlyList<MacAddress> VmsAtB);

/// <summary>
/// Turns inferred communication into overlay structure: which host pairs carry VM traffic, and a
/// description of the overlay with a direct link and rules for chosen pairs. Shared by
/// <c>vnet vttif topology</c> (every pair) and adaptation (the pairs its planner picks).
/// </summary>
public static class TopologyOverlay
{
    /// <summary>Host pairs behind the inferred edges; VMs on the same host, or not on a host (the LAN), are left out.</summary>
    public static List<HostPairTraffic> HostPairs(InferredTopology topology, IReadOnlyDictionary<MacAddress, string> where, string proxy)
    {
        var pairs = new Dictionary<(string, string), (double Rate, HashSet<MacAddress> A, HashSet<MacAddress> B)>();
        foreach (var edge in topology.Edges)
        {
            if (!where.TryGetValue(edge.Pair.A, out var ha) || !where.TryGetValue(edge.Pair.B, out var hb) || ha == hb || ha == proxy || hb == proxy)
                continue;
            var (a, b, va, vb) = string.CompareOrdinal(ha, hb) < 0 ? (ha, hb, edge.Pair.A, edge.Pair.B) : (hb, ha, edge.Pair.B, edge.Pair.A);
            if (!pairs.TryGetValue((a, b), out var p))
                p = (0, [], []);
            p.A.Add(va);
            p.B.Add(vb);
            pairs[(a, b)] = (p.Rate + edge.BytesPerSecond, p.A, p.B);
        }
        return pairs.Select(kv => new HostPairTraffic(kv.Key.Item1, kv.Key.Item2, kv.Value.Rate,
                kv.Value.A.Order().ToList(), kv.Value.B.Order().ToList()))
            .OrderByDescending(p => p.BytesPerSecond).ToList();
    }

    /// <summary>
    /// The live overlay plus, for each pair, a link from A to B (unless one exists) and at each end a
    /// rule per VM of the other end sending to it. Hosts without an address to dial are skipped.
    /// </summary>
    public static OverlayDescription With(OverlayDescription live, IEnumerable<HostPairTraffic> pairs, LinkTransport transport)
    {
        var daemons = live.Daemons.ToDictionary(d => d.Name, d => d, StringComparer.Ordinal);
        var links = live.Links.ToList();
        foreach (var p in pairs)
        {
            if (!daemons.TryGetValue(p.A, out var a) || !daemons.TryGetValue(p.B, out var b) || b.Address is null)
                continue;
            if (!links.Any(l => l.Joins(p.A, p.B)))
                links.Add(new LinkDecl(p.A, p.B, transport, null));
            daemons[p.A] = WithRules(a, p.B, p.VmsAtB);
            daemons[p.B] = WithRules(daemons[p.B], p.A, p.VmsAtA);
        }
        return new OverlayDescription(live.Daemons.Select(d => daemons[d.Name]).ToList(), links);
    }

    private static DaemonDecl WithRules(DaemonDecl d, string peer, IReadOnlyList<MacAddress> vms)
    {
        var rules = d.Rules.ToList();
        foreach (var vm in vms)
        {
            var rule = new RuleDecl(MacMatch.Any, MacMatch.Exact(vm), null, RuleAction.To(PortRef.Link(peer)));
            if (!rules.Contains(rule))
                rules.Add(rule);
        }
        return d with { Rules = rules };
    }

    /// <summary>Human text for an endpoint list in reports.</summary>
    public static string Describe(IPEndPoint? ep) => ep?.ToString() ?? "-";
}
