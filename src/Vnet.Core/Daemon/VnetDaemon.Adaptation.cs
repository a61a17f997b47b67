using Vnet.Adaptation;
using Vnet.Frames;
using Vnet.Inference;

namespace Vnet.Daemon;

/// <summary>One thing adaptation did or would do, with why.</summary>
public sealed record AdaptationAction(DateTimeOffset At, string Daemon, string Change, string Reason, bool Applied);

/// <summary>Adaptation as <c>vnet adapt status</c> shows it.</summary>
public sealed record AdaptationStatus(string Policy, int Budget, IReadOnlyList<string> Plan, IReadOnlyList<string> Links,
    IReadOnlyList<AdaptationAction> Log);

public sealed partial class VnetDaemon
{
    private const int AdaptationLogSize = 200;

    private readonly List<AdaptationAction> _adaptationLog = [];
    private AdaptState _adapted = AdaptState.Empty;
    private AdaptationPolicy? _policy;
    private int? _budget;
    private IReadOnlyList<string> _lastPlan = [];
    private bool _adapting;
    private string? _adaptAgain;

    public AdaptationPolicy Policy => _policy ?? Config.Adaptation;

    public int Budget => _budget ?? Config.AdaptationBudget;

    /// <summary>What adaptation installed: links (first dials second) and rules (destination VM, next daemon) per daemon.</summary>
    private sealed record AdaptState(IReadOnlySet<(string A, string B)> Links, IReadOnlyDictionary<string, IReadOnlySet<(MacAddress Dst, string Via)>> Rules)
    {
        public static AdaptState Empty { get; } = new(new HashSet<(string, string)>(), new Dictionary<string, IReadOnlySet<(MacAddress, string)>>());

        public IReadOnlySet<(MacAddress Dst, string Via)> RulesOf(string daemon) =>
            Rules.TryGetValue(daemon, out var r) ? r : new HashSet<(MacAddress, string)>();
    }

    partial void OnTopologyChanged(TopologyEvent change) => Adapt($"topology change {change.Id}");

    public AdaptationStatus AdaptationStatus()
    {
        lock (_adaptationLog)
        {
            return new AdaptationStatus(Policy.ToString().ToLowerInvariant(), Budget, _lastPlan,
                _adapted.Links.Select(l => $"{l.A} -> {l.B}").Order(StringComparer.Ordinal).ToList(), _adaptationLog.ToList());
        }
    }

    /// <summary>Sets the policy (and optionally the per-daemon budget of extra links) and adapts at once.</summary>
    public AdaptationStatus SetAdaptation(AdaptationPolicy policy, int? budget)
    {
        if (!IsProxy)
            throw new DaemonCommandException($"{Name} is a host; adaptation runs on the Proxy");
        if (budget is < 0 or > 64)
            throw new DaemonCommandException("the budget of extra links per daemon is 0 to 64");
        _policy = policy;
        _budget = budget ?? _budget;
        Adapt($"policy {policy.ToString().ToLowerInvariant()}");
        return AdaptationStatus();
    }

    /// <summary>
    /// Recomputes what the overlay should add for the current topology and, with policy auto,
    /// applies the difference through the same per-daemon change sets as <c>vnet topo apply</c>.
    /// Runs on the control loop; the apply itself runs on its own task (it waits for hosts), and a
    /// change that arrives meanwhile is handled right after.
    /// </summary>
    private void Adapt(string trigger)
    {
        if (!IsProxy || _inference is null)
            return;
        if (_adapting)
        {
            _adaptAgain = trigger;
            return;
        }
        _adapting = true;
        var topology = _inference.Current;
        var hostsOf = _locations.Where(kv => kv.Value != Name).ToDictionary(kv => kv.Key, kv => kv.Value);
        var policy = Policy;
        var current = _adapted;
        _ = Task.Run(async () =>
        {
            var next = current;
            try
            {
                next = await AdaptAsync(topology, hostsOf, policy, current, trigger);
            }
            catch (DaemonCommandException e)
            {
                Record(new AdaptationAction(DateTimeOffset.UtcNow, Name, "(nothing)", $"{trigger}: {e.Message}", false));
            }
            _control.Post(() =>
            {
                _adapted = next;
                _adapting = false;
                if (_adaptAgain is { } again)
                {
                    _adaptAgain = null;
                    Adapt(again);
                }
            });
        });
    }

    /// <summary>
    /// Plans against the live overlay (links and rules users made are theirs: a pair already linked
    /// by the user needs no link, and a destination a user rule steers gets no adaptation rule),
    /// then advises or applies. Returns what adaptation has installed afterwards.
    /// </summary>
    private async Task<AdaptState> AdaptAsync(InferredTopology topology, Dictionary<MacAddress, string> hostsOf,
        AdaptationPolicy policy, AdaptState current, string trigger)
    {
        var states = await GatherStates();
        var userLinks = new HashSet<(string, string)>();
        var userSteered = new HashSet<(string, MacAddress)>();
        foreach (var state in states.Daemons)
        {
            foreach (var l in state.Links.Where(l => l.Origin != "adaptation"))
            {
                userLinks.Add((state.Name, l.Peer));
                userLinks.Add((l.Peer, state.Name));
            }
            foreach (var r in state.Rules.Where(r => r.Origin == "user"))
            {
                if (MacAddress.TryParse(r.Destination, out var dst))
                    userSteered.Add((state.Name, dst));
            }
        }
        List<string> plan = [];
        var desired = policy == AdaptationPolicy.Off ? AdaptState.Empty : Desired(topology, hostsOf, userLinks, userSteered, out plan);
        lock (_adaptationLog)
            _lastPlan = plan;
        var changes = Changes(current, desired);
        if (changes.Count == 0)
            return current;
        if (policy == AdaptationPolicy.Advise)
        {
            foreach (var (daemon, change, reason) in changes)
                Record(new AdaptationAction(DateTimeOffset.UtcNow, daemon, change.ToString(), $"{trigger}: {reason}", false));
            return current;
        }
        return await ApplyAdaptation(changes, trigger, states) ? desired : current;
    }

    private AdaptState Desired(InferredTopology topology, Dictionary<MacAddress, string> hostsOf,
        HashSet<(string, string)> userLinks, HashSet<(string, MacAddress)> userSteered, out List<string> planText)
    {
        // Pairs the user already linked need no link of ours (and take none of the budget).
        var demands = LinkPlanner.DemandsOf(topology.Edges, hostsOf).Where(d => !userLinks.Contains((d.A, d.B))).ToList();
        var star = new Dictionary<string, StarPath>(StringComparer.Ordinal);
        var rtt = new Dictionary<(string, string), double>();
        foreach (var (daemon, measured) in _measurements)
        {
            foreach (var l in measured)
            {
                if (l.RttMs is not { } r)
                    continue;
                rtt[(daemon, l.Peer)] = r;
                // What the path achieved, whichever way the traffic went (one end may send only ACKs).
                var achieved = Math.Max(l.TxBytesPerSecond, l.RxBytesPerSecond);
                if (l.Star && daemon != Name)
                    star[daemon] = new StarPath(daemon, r, achieved > 0 ? achieved : null);
            }
        }
        var existing = _adapted.Links.ToHashSet();
        var planned = LinkPlanner.Choose(demands, star, Budget, existing, Name);
        planText = planned.Select(p => $"link {p.A} <-> {p.B}: {p.Reason}").ToList();

        var links = new HashSet<(string, string)>();
        var rules = new Dictionary<string, HashSet<(MacAddress, string)>>(StringComparer.Ordinal);
        void Rule(string at, MacAddress dst, string via)
        {
            // A user rule for this destination wins; two rules of one strength would both apply.
            if (userSteered.Contains((at, dst)))
                return;
            if (!rules.TryGetValue(at, out var set))
                rules[at] = set = [];
            set.Add((dst, via));
        }
        bool Linked(string a, string b) => links.Contains((a, b)) || links.Contains((b, a)) || userLinks.Contains((a, b));

        foreach (var p in planned)
        {
            // Keep the orientation of a link that exists: re-dialing it would cut its traffic.
            links.Add(existing.Contains((p.B, p.A)) ? (p.B, p.A) : (p.A, p.B));
        }
        foreach (var e in topology.Edges)
        {
            if (!hostsOf.TryGetValue(e.Pair.A, out var ha) || !hostsOf.TryGetValue(e.Pair.B, out var hb) || ha == hb)
                continue;
            if (Linked(ha, hb))
            {
                Rule(ha, e.Pair.B, hb);
                Rule(hb, e.Pair.A, ha);
                continue;
            }
            // No direct link within the budget: a two-hop path over links we have may still beat the star.
            var route = RouteChooser.Best(ha, hb, rtt, Name);
            if (route.Kind == RouteKind.TwoHop && route.Hops.Count == 3 && route.Hops[1] != Name &&
                Linked(ha, route.Hops[1]) && Linked(route.Hops[1], hb))
            {
                var via = route.Hops[1];
                Rule(ha, e.Pair.B, via);
                Rule(via, e.Pair.B, hb);
                Rule(hb, e.Pair.A, via);
                Rule(via, e.Pair.A, ha);
                planText.Add($"route {ha} <-> {hb} via {via}: {route.Reason}");
            }
        }
        return new AdaptState(links, rules.ToDictionary(kv => kv.Key, kv => (IReadOnlySet<(MacAddress, string)>)kv.Value, StringComparer.Ordinal));
    }

    /// <summary>Per daemon, in applying order: rule removals, link removals, link additions, rule additions.</summary>
    private static List<(string Daemon, DaemonChange Change, string Reason)> Changes(AdaptState current, AdaptState desired)
    {
        var list = new List<(string, DaemonChange, string)>();
        var daemons = current.Rules.Keys.Concat(desired.Rules.Keys)
            .Concat(current.Links.SelectMany(l => new[] { l.A, l.B })).Concat(desired.Links.SelectMany(l => new[] { l.A, l.B }))
            .Distinct().Order(StringComparer.Ordinal);
        foreach (var d in daemons)
        {
            foreach (var (dst, via) in current.RulesOf(d).Except(desired.RulesOf(d)).Order())
                list.Add((d, RuleChange(DaemonChange.RemoveRule, dst, via), $"traffic to {dst} no longer needs link:{via}"));
            foreach (var (a, b) in current.Links.Except(desired.Links).Where(l => l.A == d || l.B == d))
                list.Add((d, new DaemonChange { Op = DaemonChange.RemoveLink, Peer = a == d ? b : a, Origin = "adaptation" }, $"{a} and {b} no longer exchange much"));
            foreach (var (a, b) in desired.Links.Except(current.Links).Where(l => l.A == d || l.B == d))
            {
                list.Add((d, new DaemonChange
                {
                    Op = DaemonChange.AddLink,
                    Peer = a == d ? b : a,
                    Transport = "udp",
                    Dial = a == d ? $"@{b}" : null,
                    Origin = "adaptation",
                }, $"{a} and {b} exchange the most traffic"));
            }
            foreach (var (dst, via) in desired.RulesOf(d).Except(current.RulesOf(d)).Order())
                list.Add((d, RuleChange(DaemonChange.AddRule, dst, via), $"traffic to {dst} goes over link:{via}"));
        }
        return list;
    }

    private static DaemonChange RuleChange(string op, MacAddress dst, string via) => new()
    {
        Op = op,
        Src = "any",
        Dst = dst.ToString(),
        To = "link:" + via,
        Origin = "adaptation",
    };

    /// <summary>Sends each daemon its adaptation changes; on a refusal, undoes the daemons already changed.</summary>
    private async Task<bool> ApplyAdaptation(List<(string Daemon, DaemonChange Change, string Reason)> changes, string trigger,
        OverlayStates states)
    {
        var address = states.Daemons.Where(s => s.Listen is not null).ToDictionary(s => s.Name, s => s.Listen!, StringComparer.Ordinal);
        var done = new List<(string Daemon, List<DaemonChange> Set)>();
        foreach (var group in changes.GroupBy(c => c.Daemon))
        {
            var set = group.Select(c => c.Change.Dial is { } d && d.StartsWith('@')
                ? c.Change with { Dial = address.GetValueOrDefault(d[1..]) ?? throw new DaemonCommandException($"no address for {d[1..]}") }
                : c.Change).ToList();
            var error = await OverlayApplier.Send(this, group.Key, set);
            if (error is null)
            {
                done.Add((group.Key, set));
                var i = 0;
                foreach (var c in group)
                    Record(new AdaptationAction(DateTimeOffset.UtcNow, c.Daemon, set[i++].ToString(), $"{trigger}: {c.Reason}", true));
                continue;
            }
            Record(new AdaptationAction(DateTimeOffset.UtcNow, group.Key, "(refused)", $"{trigger}: {error}", false));
            for (var i = done.Count - 1; i >= 0; i--)
            {
                var inverse = done[i].Set.AsEnumerable().Reverse().Select(Inverse).ToList();
                if (await OverlayApplier.Send(this, done[i].Daemon, inverse) is { } undoError)
                    Record(new AdaptationAction(DateTimeOffset.UtcNow, done[i].Daemon, "(rollback refused)", $"{trigger}: {undoError}", false));
            }
            return false;
        }
        return true;
    }

    private static DaemonChange Inverse(DaemonChange c) => c.Op switch
    {
        DaemonChange.AddRule => c with { Op = DaemonChange.RemoveRule },
        DaemonChange.RemoveRule => c with { Op = DaemonChange.AddRule },
        DaemonChange.AddLink => new DaemonChange { Op = DaemonChange.RemoveLink, Peer = c.Peer, Origin = c.Origin },
        // Re-creating a removed link: adaptation's links are UDP and the first of a pair dials.
        _ => new DaemonChange { Op = DaemonChange.AddLink, Peer = c.Peer, Transport = "udp", Origin = c.Origin },
    };

    private void Record(AdaptationAction action)
    {
        lock (_adaptationLog)
        {
            _adaptationLog.Add(action);
            if (_adaptationLog.Count > AdaptationLogSize)
                _adaptationLog.RemoveAt(0);
        }
        Log.Adapted(_logger, action.Applied ? "applied" : "advised", action.Daemon, action.Change, action.Reason);
    }

    /// <summary>Placement advice: which VMs to move so that the heaviest traffic stays inside hosts.</summary>
    public PlacementPlan PlacementAdvice(IReadOnlyDictionary<string, int>? capacity)
    {
        if (!IsProxy || _inference is null)
            throw new DaemonCommandException($"{Name} is a host; placement advice comes from the Proxy");
        var vmHost = _locations.Where(kv => kv.Value != Name).ToDictionary(kv => kv.Key, kv => kv.Value);
        var counts = vmHost.Values.GroupBy(h => h).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        foreach (var port in Links.Links.Where(l => l.Star))
            counts.TryAdd(port.Peer, 0);
        // Without capacities every host may take one VM more than it has.
        var cap = capacity ?? counts.ToDictionary(kv => kv.Key, kv => kv.Value + 1, StringComparer.Ordinal);
        var traffic = _inference.Current.Edges.Select(e => (e.Pair, e.BytesPerSecond)).ToList();
        return PlacementPlanner.Plan(vmHost, traffic, cap);
    }
}
