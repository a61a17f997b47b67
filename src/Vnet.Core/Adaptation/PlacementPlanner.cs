using Vnet.Frames;
using Vnet.Inference;

namespace Vnet.Adaptation;

/// <summary>Advice to migrate one VM, with the inter-host traffic it would save (bytes/s).</summary>
public sealed record Move(MacAddress Vm, string From, string To, double Saved, string Reason);

/// <summary>The moves in the order to make them, and the inter-host traffic (bytes/s) before and after all of them.</summary>
public sealed record PlacementPlan(IReadOnlyList<Move> Moves, double InterHostBefore, double InterHostAfter);

/// <summary>
/// Advises which VMs to migrate so that the heaviest traffic stays inside a host. Advice only:
/// VNET follows a migration (the VM's MAC shows up elsewhere) but never starts one.
/// <code>
/// repeat up to maxMoves times:
///   for every movable VM v on host f and every host h != f with a free slot:
///     saved = traffic(v, VMs on h) - traffic(v, other VMs on f)
///   take the largest saving; ties: the destination with more free slots (spreads load), then
///   the lower MAC, then the host name; stop when no move saves anything.
/// </code>
/// Only hosts listed in <c>capacity</c> (maximum number of VMs) take part: their VMs may move and
/// they may receive. VMs elsewhere (machines on the Proxy's LAN, hosts with no capacity given) and
/// <c>pinned</c> VMs stay put but their traffic still counts. A VM moves at most once per plan, so
/// the advice never bounces a VM around. Each move strictly lowers inter-host traffic, so the plan
/// ends. Single moves only: two full hosts cannot trade VMs, and the greedy answer is not always the
/// optimum (the problem is NP-hard), but each step is one an operator can check.
/// </summary>
public static class PlacementPlanner
{
    // Savings below this (bytes/s) are rounding, not traffic.
    private const double Epsilon = 1e-6;

    public static PlacementPlan Plan(
        IReadOnlyDictionary<MacAddress, string> vmHost,
        IReadOnlyList<(VmPair Pair, double BytesPerSecond)> traffic,
        IReadOnlyDictionary<string, int> capacity,
        int maxMoves = 10,
        IReadOnlySet<MacAddress>? pinned = null)
    {
        ArgumentNullException.ThrowIfNull(vmHost);
        ArgumentNullException.ThrowIfNull(traffic);
        ArgumentNullException.ThrowIfNull(capacity);
        ArgumentOutOfRangeException.ThrowIfNegative(maxMoves);

        var location = vmHost.ToDictionary(p => p.Key, p => p.Value);
        var load = location.Values.GroupBy(h => h, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        var peers = new Dictionary<MacAddress, Dictionary<MacAddress, double>>();
        foreach (var (pair, rate) in traffic)
        {
            if (pair.A == pair.B || !(rate > 0) || double.IsInfinity(rate) || !location.ContainsKey(pair.A) || !location.ContainsKey(pair.B))
                continue;
            Add(pair.A, pair.B, rate);
            Add(pair.B, pair.A, rate);
        }

        void Add(MacAddress x, MacAddress y, double rate)
        {
            if (!peers.TryGetValue(x, out var map))
                peers[x] = map = [];
            map[y] = map.GetValueOrDefault(y) + rate;
        }

        double InterHost() => peers.Sum(p => p.Value.Where(q => p.Key < q.Key && location[p.Key] != location[q.Key]).Sum(q => q.Value));
        int Free(string host) => capacity.TryGetValue(host, out var c) ? c - load.GetValueOrDefault(host) : 0;

        var before = InterHost();
        var moved = new HashSet<MacAddress>();
        var moves = new List<Move>();
        while (moves.Count < maxMoves)
        {
            (MacAddress Vm, string From, string To, double Saved, double Local, double There)? best = null;
            foreach (var (vm, map) in peers)
            {
                var from = location[vm];
                if (moved.Contains(vm) || pinned?.Contains(vm) == true || !capacity.ContainsKey(from))
                    continue;
                var byHost = map.GroupBy(p => location[p.Key], StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Sum(p => p.Value), StringComparer.Ordinal);
                var local = byHost.GetValueOrDefault(from);
                foreach (var (to, there) in byHost)
                {
                    if (to == from || Free(to) <= 0)
                        continue;
                    var saved = there - local;
                    if (saved <= Epsilon)
                        continue;
                    if (best is not { } b || Better(saved, to, vm, b.Saved, b.To, b.Vm))
                        best = (vm, from, to, saved, local, there);
                }
            }
            if (best is not { } m)
                break;

            location[m.Vm] = m.To;
            load[m.From]--;
            load[m.To] = load.GetValueOrDefault(m.To) + 1;
            moved.Add(m.Vm);
            var reason = $"{m.Vm} exchanges {RateFormat.BytesPerSecond(m.There)} with VMs on {m.To} and "
                + $"{RateFormat.BytesPerSecond(m.Local)} with the others on {m.From}: moving it saves {RateFormat.BytesPerSecond(m.Saved)} between hosts";
            moves.Add(new Move(m.Vm, m.From, m.To, m.Saved, reason));
        }
        return new PlacementPlan(moves, before, InterHost());

        bool Better(double saved, string to, MacAddress vm, double bestSaved, string bestTo, MacAddress bestVm)
        {
            // Savings summed in a different order can differ in the last bits: those are ties.
            if (Math.Abs(saved - bestSaved) > 1e-9 * Math.Max(saved, bestSaved))
                return saved > bestSaved;
            if (Free(to) != Free(bestTo))
                return Free(to) > Free(bestTo);
            if (vm != bestVm)
                return vm < bestVm;
            return string.CompareOrdinal(to, bestTo) < 0;
        }
    }
}
