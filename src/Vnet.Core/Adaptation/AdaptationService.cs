using Microsoft.Extensions.Logging;
using Vnet.ChangeSets;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Inference;
using Vnet.Links;
using Vnet.Overlay;
using Vnet.Peers;
using Vnet.Vms;

namespace Vnet.Adaptation;

/// <summary>One thing adaptation did or would do, with why.</summary>
public sealed record AdaptationAction(DateTimeOffset At, string Daemon, string Change, string Reason, bool Applied);

/// <summary>Adaptation as <c>vnet adapt status</c> shows it.</summary>
public sealed record AdaptationStatus(AdaptationPolicy Policy, int Budget, IReadOnlyList<string> Plan, IReadOnlyList<string> Links,
    IReadOnlyList<AdaptationAction> Log);

/// <summary>
/// Adaptation: on the Proxy, from the inferred topology and the measured links, the links and rules
/// that would serve the traffic best, advised or applied through the same per-daemon change sets
/// as <c>vnet topo apply</c>; on a host, dropping adaptation's rules for a VM that moved away.
/// Its state lives on the control loop; planning and applying run on a task of their own (they
/// wait for hosts), and a trigger that arrives meanwhile is handled right after.
/// </summary>
public sealed partial class AdaptationService
{
    private const int LogSize = 200;

    private readonly DaemonConfig _config;
    private readonly VttifService _vttif;
    private readonly VmDirectory _vms;
    private readonly OverlayService _overlay;
    private readonly LinkManager _links;
    private readonly RuleBook _rules;
    private readonly ControlLoop _loop;
    private readonly ILogger _logger;
    private readonly List<AdaptationAction> _log = [];
    private long _applied;
    private long _advised;
    private long _failed;
    private AdaptState _adapted = AdaptState.Empty;
    private AdaptationPolicy? _policy;
    private int? _budget;
    private IReadOnlyList<string> _lastPlan = [];
    private bool _adapting;
    private bool _look;
    private string? _adaptAgain;

    public AdaptationService(DaemonConfig config, VttifService vttif, VmDirectory vms, OverlayService overlay, LinkManager links, RuleBook rules,
        ControlLoop loop, ILogger logger)
    {
        _config = config;
        _vttif = vttif;
        _vms = vms;
        _overlay = overlay;
        _links = links;
        _rules = rules;
        _loop = loop;
        _logger = logger;
    }

    private string Name => _config.Name;

    private bool IsProxy => _config.Role == DaemonRole.Proxy;

    public AdaptationPolicy Policy => _policy ?? _config.Adaptation;

    public int Budget => _budget ?? _config.AdaptationBudget;

    /// <summary>
    /// Actions since start (the log keeps only the last <see cref="LogSize"/>): changes applied,
    /// changes advised (policy advise), and failures (a refused change set, a refused rollback, a
    /// round that could not plan). Any thread.
    /// </summary>
    public (long Applied, long Advised, long Failed) ActionCounts
    {
        get
        {
            lock (_log)
                return (_applied, _advised, _failed);
        }
    }

    /// <summary>
    /// Adaptation's links (first dials second) and rules (destination VM, next daemon) per daemon:
    /// wanted, or found on the daemons. <paramref name="Ends"/> are the daemons that hold each link
    /// (daemon, peer), when that differs from both ends of <paramref name="Links"/> (a link found
    /// at one end only). <paramref name="Settled"/>: as far as this Proxy knows the daemons hold
    /// exactly this, so a round with policy off and nothing installed asks no host.
    /// </summary>
    private sealed record AdaptState(IReadOnlySet<(string A, string B)> Links, IReadOnlyDictionary<string, IReadOnlySet<(MacAddress Dst, string Via)>> Rules,
        IReadOnlySet<(string Daemon, string Peer)>? Ends = null, bool Settled = false)
    {
        /// <summary>
        /// Nothing installed, as at start: with policy off no host is asked (with 200 hosts, every VM
        /// that appears would cost 200 requests). A former run's leftovers go at the first round
        /// that looks: any with policy advise or auto, or 'vnet adapt policy off' set explicitly.
        /// </summary>
        public static AdaptState Empty { get; } = new(new HashSet<(string, string)>(), new Dictionary<string, IReadOnlySet<(MacAddress, string)>>(), null, true);

        public IReadOnlySet<(MacAddress Dst, string Via)> RulesOf(string daemon) =>
            Rules.TryGetValue(daemon, out var r) ? r : new HashSet<(MacAddress, string)>();

        public bool IsEmpty => Links.Count == 0 && Rules.Values.All(r => r.Count == 0) && (Ends is null || Ends.Count == 0);

        /// <summary>The peers <paramref name="daemon"/> holds (or should hold) a link of adaptation's to.</summary>
        public IEnumerable<string> LinkPeersOf(string daemon) => Ends is { } ends
            ? ends.Where(e => e.Daemon == daemon).Select(e => e.Peer)
            : Links.Where(l => l.A == daemon || l.B == daemon).Select(l => l.A == daemon ? l.B : l.A);

        /// <summary>
        /// What adaptation has installed, from the daemons' own states: every link and rule of origin
        /// adaptation on every daemon that answered. Its memory could be wrong (a set taken whose
        /// answer was lost, a rollback refused, a Proxy restarted); the daemons are not.
        /// </summary>
        public static AdaptState Live(OverlayStates states)
        {
            var links = new HashSet<(string, string)>();
            var ends = new HashSet<(string, string)>();
            var rules = new Dictionary<string, IReadOnlySet<(MacAddress, string)>>(StringComparer.Ordinal);
            foreach (var state in states.Daemons)
            {
                foreach (var l in state.Links)
                {
                    if (l.Origin != RuleOrigin.Adaptation || l.Star)
                        continue;
                    ends.Add((state.Name, l.Peer));
                    links.Add(l.Dial is null ? (l.Peer, state.Name) : (state.Name, l.Peer));
                }
                var set = new HashSet<(MacAddress, string)>();
                foreach (var r in state.Rules)
                {
                    // Adaptation makes only 'any -> VM to link PEER'.
                    if (r.Origin == RuleOrigin.Adaptation && r.Destination.Kind == MacMatchKind.Exact && !r.Action.IsFlood && r.Action.Port.Kind == PortKind.Link)
                        set.Add((r.Destination.Address, r.Action.Port.Name));
                }
                if (set.Count > 0)
                    rules[state.Name] = set;
            }
            // A link seen from both ends may be seen dialed from both (each end re-dialed): one orientation is enough.
            foreach (var (a, b) in links.ToList())
            {
                if (links.Contains((b, a)) && string.CompareOrdinal(a, b) > 0)
                    links.Remove((a, b));
            }
            return new AdaptState(links, rules, ends);
        }
    }

    public void Start()
    {
        if (IsProxy)
        {
            _vttif.TopologyChanged += e => Adapt($"topology change {e.Id}");
            _vms.LocationsChanged += _ => Adapt("a VM moved or appeared");
        }
        else
        {
            _vms.LocationsChanged += DropStaleRules;
        }
    }

    public AdaptationStatus Status()
    {
        lock (_log)
            return new AdaptationStatus(Policy, Budget, _lastPlan, _adapted.Links.Select(l => $"{l.A} -> {l.B}").Order(StringComparer.Ordinal).ToList(), [.. _log]);
    }

    /// <summary>Sets the policy (and optionally the per-daemon budget of extra links) and adapts at once.</summary>
    public AdaptationStatus SetPolicy(AdaptationPolicy policy, int? budget)
    {
        if (!IsProxy)
            throw new DaemonCommandException($"{Name} is a host; adaptation runs on the Proxy");
        if (budget is < 0 or > 64)
            throw new DaemonCommandException("the budget of extra links per daemon is 0 to 64");
        _policy = policy;
        _budget = budget ?? _budget;
        // Set by hand, off means "undo adaptation": that round looks at the daemons whatever the memory says.
        _look = true;
        Adapt($"policy {Json.EnumText.Of(policy)}");
        return Status();
    }

    /// <summary>Host: a VM now lives elsewhere, so adaptation's rules that send it to another daemon lead nowhere; its traffic falls back to the star.</summary>
    private void DropStaleRules(IReadOnlyList<MapChange> changes)
    {
        foreach (var (mac, home) in changes)
        {
            if (home is null)
                continue;
            var exact = MacMatch.Exact(mac);
            _rules.Edit(e => e.RemoveWhere(mac, r => r.Origin == RuleOrigin.Adaptation && r.Destination == exact &&
                !r.Action.IsFlood && r.Action.Port.Kind == PortKind.Link && r.Action.Port.Name != home));
        }
    }

    /// <summary>
    /// Recomputes what the overlay should add for the current topology and, with policy auto,
    /// applies the difference (control loop; the work runs on its own task).
    /// </summary>
    private void Adapt(string trigger)
    {
        if (!IsProxy)
            return;
        if (_adapting)
        {
            _adaptAgain = trigger;
            return;
        }
        _adapting = true;
        var input = new PlanInput(
            _vttif.Topology,
            _vms.Locations.Where(kv => kv.Value != Name).ToDictionary(kv => kv.Key, kv => kv.Value),
            _vttif.LinkMeasurements.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal),
            Policy,
            Budget,
            _look ? _adapted with { Settled = false } : _adapted);
        _look = false;
        _ = Task.Run(async () =>
        {
            // A round that fails midway knows nothing for sure: the next one looks again, even with policy off.
            var next = input.Current with { Settled = false };
            try
            {
                next = await AdaptAsync(input, trigger).ConfigureAwait(false);
            }
            catch (DaemonCommandException e)
            {
                Record(new AdaptationAction(DateTimeOffset.UtcNow, Name, "(nothing)", $"{trigger}: {e.Message}", false));
            }
            _loop.Post(() =>
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

    /// <summary>What one round of planning works from, taken on the loop.</summary>
    private sealed record PlanInput(InferredTopology Topology, Dictionary<MacAddress, string> HostsOf,
        Dictionary<string, IReadOnlyList<LinkMeasurement>> Measurements, AdaptationPolicy Policy, int Budget, AdaptState Current);

    /// <summary>
    /// Plans against the live overlay (links and rules users made are theirs: a pair already linked
    /// by the user needs no link, and a destination a user rule steers gets no adaptation rule),
    /// then advises or applies. Returns what adaptation has installed afterwards.
    /// </summary>
    private async Task<AdaptState> AdaptAsync(PlanInput input, string trigger)
    {
        // Off with nothing of ours installed: nothing to plan or undo, so no host is asked for its
        // state (every VM that appears or moves triggers this; with 200 hosts, a round is 200 requests).
        if (input.Policy == AdaptationPolicy.Off && input.Current.Settled && input.Current.IsEmpty)
        {
            lock (_log)
                _lastPlan = [];
            return input.Current;
        }
        var states = await _overlay.GatherStates().ConfigureAwait(false);
        // Planned from what the daemons hold, not from what adaptation remembers sending them:
        // each round removes what is no longer wanted wherever it came from, and keeps what is.
        var live = AdaptState.Live(states);
        var reachable = states.Daemons.Select(d => d.Name).ToHashSet(StringComparer.Ordinal);
        var userLinks = new HashSet<(string, string)>();
        var userSteered = new HashSet<(string, MacAddress)>();
        foreach (var state in states.Daemons)
        {
            foreach (var l in state.Links.Where(l => l.Origin != RuleOrigin.Adaptation))
            {
                userLinks.Add((state.Name, l.Peer));
                userLinks.Add((l.Peer, state.Name));
            }
            foreach (var r in state.Rules.Where(r => r.Origin == RuleOrigin.User && r.Destination.Kind == MacMatchKind.Exact))
                userSteered.Add((state.Name, r.Destination.Address));
        }
        List<string> plan = [];
        var desired = input.Policy == AdaptationPolicy.Off ? AdaptState.Empty : Desired(input, live, reachable, userLinks, userSteered, out plan);
        lock (_log)
            _lastPlan = plan;
        // A daemon that did not answer keeps what it has until a round reaches it.
        var changes = Changes(live, desired, reachable);
        var settled = states.Unreachable.Count == 0;
        if (changes.Count == 0)
            return live with { Settled = settled };
        if (input.Policy == AdaptationPolicy.Advise)
        {
            foreach (var (daemon, change, reason) in changes)
                Record(new AdaptationAction(DateTimeOffset.UtcNow, daemon, change.ToString(), $"{trigger}: {reason}", false));
            return live;
        }
        return await Apply(changes, trigger, states).ConfigureAwait(false) ? desired with { Settled = settled } : live;
    }

    private AdaptState Desired(PlanInput input, AdaptState live, HashSet<string> reachable, HashSet<(string, string)> userLinks,
        HashSet<(string, MacAddress)> userSteered, out List<string> planText)
    {
        var topology = input.Topology;
        var hostsOf = input.HostsOf;
        // Pairs the user already linked need no link of ours (and take none of the budget).
        var demands = LinkPlanner.DemandsOf(topology.Edges, hostsOf).Where(d => !userLinks.Contains((d.A, d.B))).ToList();
        var star = new Dictionary<string, StarPath>(StringComparer.Ordinal);
        var rtt = new Dictionary<(string, string), double>();
        foreach (var (daemon, measured) in input.Measurements)
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
        var existing = live.Links.ToHashSet();
        var planned = LinkPlanner.Choose(demands, star, input.Budget, existing, Name);
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
            // A new link needs both ends to answer; one that exists stays while an end is away.
            if (!existing.Contains((p.A, p.B)) && !existing.Contains((p.B, p.A)) && !(reachable.Contains(p.A) && reachable.Contains(p.B)))
                continue;
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

    /// <summary>
    /// Per daemon that answered, in applying order: rule removals, link removals, link additions,
    /// rule additions. Links are compared per end, whichever end dials: a link one end lost is
    /// added back there only, and a link kept is never re-dialed.
    /// </summary>
    private static List<(string Daemon, DaemonChange Change, string Reason)> Changes(AdaptState current, AdaptState desired, IReadOnlySet<string> reachable)
    {
        var list = new List<(string, DaemonChange, string)>();
        var daemons = current.Rules.Keys.Concat(desired.Rules.Keys)
            .Concat(current.Links.SelectMany(l => new[] { l.A, l.B })).Concat(desired.Links.SelectMany(l => new[] { l.A, l.B }))
            .Concat(current.Ends?.Select(e => e.Daemon) ?? [])
            .Distinct().Where(reachable.Contains).Order(StringComparer.Ordinal);
        foreach (var d in daemons)
        {
            var has = current.LinkPeersOf(d).ToHashSet(StringComparer.Ordinal);
            var wants = desired.LinkPeersOf(d).ToHashSet(StringComparer.Ordinal);
            foreach (var (dst, via) in current.RulesOf(d).Except(desired.RulesOf(d)).Order())
                list.Add((d, RuleChange(ChangeOp.RemoveRule, dst, via), $"traffic to {dst} no longer needs link:{via}"));
            foreach (var peer in has.Except(wants).Order(StringComparer.Ordinal))
                list.Add((d, new DaemonChange { Op = ChangeOp.RemoveLink, Peer = peer, Origin = RuleOrigin.Adaptation }, $"{d} and {peer} no longer exchange much"));
            foreach (var (a, b) in desired.Links.Where(l => (l.A == d && !has.Contains(l.B)) || (l.B == d && !has.Contains(l.A))))
            {
                list.Add((d, new DaemonChange
                {
                    Op = ChangeOp.AddLink,
                    Peer = a == d ? b : a,
                    Transport = LinkTransport.Udp,
                    Dial = a == d ? $"@{b}" : null,
                    Origin = RuleOrigin.Adaptation,
                }, $"{a} and {b} exchange the most traffic"));
            }
            foreach (var (dst, via) in desired.RulesOf(d).Except(current.RulesOf(d)).Order())
                list.Add((d, RuleChange(ChangeOp.AddRule, dst, via), $"traffic to {dst} goes over link:{via}"));
        }
        return list;
    }

    private static DaemonChange RuleChange(ChangeOp op, MacAddress dst, string via) => new()
    {
        Op = op,
        Src = MacMatch.Any,
        Dst = MacMatch.Exact(dst),
        To = RuleAction.To(PortRef.Link(via)),
        Origin = RuleOrigin.Adaptation,
    };

    /// <summary>Sends each daemon its adaptation changes; on a refusal, undoes the daemons already changed.</summary>
    private async Task<bool> Apply(List<(string Daemon, DaemonChange Change, string Reason)> changes, string trigger, OverlayStates states)
    {
        var address = states.Daemons.Where(s => s.Listen is not null).ToDictionary(s => s.Name, s => s.Listen!, StringComparer.Ordinal);
        var versions = states.Daemons.ToDictionary(s => s.Name, s => s.Version, StringComparer.Ordinal);
        var done = new List<(string Daemon, List<DaemonChange> Set)>();
        foreach (var group in changes.GroupBy(c => c.Daemon))
        {
            var set = group.Select(c => c.Change.Dial is { } d && d.StartsWith('@')
                ? c.Change with { Dial = address.GetValueOrDefault(d[1..]) ?? throw new DaemonCommandException($"no address for {d[1..]}") }
                : c.Change).ToList();
            var error = await _overlay.SendChangeSet(group.Key, set, versions.GetValueOrDefault(group.Key)).ConfigureAwait(false);
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
                if (await _overlay.SendChangeSet(done[i].Daemon, inverse).ConfigureAwait(false) is { } undoError)
                    Record(new AdaptationAction(DateTimeOffset.UtcNow, done[i].Daemon, "(rollback refused)", $"{trigger}: {undoError}", false));
            }
            return false;
        }
        return true;
    }

    private static DaemonChange Inverse(DaemonChange c) => c.Op switch
    {
        ChangeOp.AddRule => c with { Op = ChangeOp.RemoveRule },
        ChangeOp.RemoveRule => c with { Op = ChangeOp.AddRule },
        ChangeOp.AddLink => new DaemonChange { Op = ChangeOp.RemoveLink, Peer = c.Peer, Origin = c.Origin },
        // Re-creating a removed link: adaptation's links are UDP and the first of a pair dials.
        _ => new DaemonChange { Op = ChangeOp.AddLink, Peer = c.Peer, Transport = LinkTransport.Udp, Origin = c.Origin },
    };

    private void Record(AdaptationAction action)
    {
        lock (_log)
        {
            // A failure's "change" is a note in parentheses: "(refused)", "(rollback refused)", "(nothing)".
            if (action.Applied)
                _applied++;
            else if (action.Change.StartsWith('('))
                _failed++;
            else
                _advised++;
            _log.Add(action);
            if (_log.Count > LogSize)
                _log.RemoveAt(0);
        }
        if (!_logger.IsEnabled(LogLevel.Information))
            return;
        // Names and errors in an action come from other daemons' states and answers.
        var daemon = LogText.Safe(action.Daemon);
        var change = LogText.Safe(action.Change);
        var reason = LogText.Safe(action.Reason);
        Log.Adapted(_logger, action.Applied ? "applied" : "advised", daemon, change, reason);
    }

    /// <summary>Placement advice: which VMs to move so that the heaviest traffic stays inside hosts (control loop).</summary>
    public PlacementPlan PlacementAdvice(IReadOnlyDictionary<string, int>? capacity)
    {
        if (!IsProxy)
            throw new DaemonCommandException($"{Name} is a host; placement advice comes from the Proxy");
        var vmHost = _vms.Locations.Where(kv => kv.Value != Name).ToDictionary(kv => kv.Key, kv => kv.Value);
        var counts = vmHost.Values.GroupBy(h => h).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        foreach (var port in _links.Links.Where(l => l.Star))
            counts.TryAdd(port.Peer, 0);
        // Without capacities every host may take one VM more than it has.
        var cap = capacity ?? counts.ToDictionary(kv => kv.Key, kv => kv.Value + 1, StringComparer.Ordinal);
        var traffic = _vttif.Topology.Edges.Select(e => (e.Pair, e.BytesPerSecond)).ToList();
        return PlacementPlanner.Plan(vmHost, traffic, cap);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 61, Level = LogLevel.Information, Message = "Adaptation {How} at {Daemon}: {Change} ({Reason})")]
        public static partial void Adapted(ILogger logger, string how, string daemon, string change, string reason);
    }
}
