using System.Net;
using Vnet.Configuration;
using Vnet.Control;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Daemon;

public sealed partial class VnetDaemon
{
    /// <summary>
    /// Applies a change set whole or not at all. Every change is first checked against the state
    /// the set would leave (so a rule may name a link added earlier in the same set, and a link
    /// may go only once no rule uses it); then the changes run in order, and if one fails (a TAP
    /// that cannot be created, say), the ones already done are undone in reverse. Runs on the
    /// control loop (call through <see cref="Run{T}"/>).
    /// </summary>
    public ApplyResult Apply(IReadOnlyList<DaemonChange> changes)
    {
        var view = new PlanView(this);
        var steps = new List<(DaemonChange Change, Action Do, Action Undo)>(changes.Count);
        for (var i = 0; i < changes.Count; i++)
        {
            var c = changes[i];
            try
            {
                steps.Add(Plan(c, view));
            }
            catch (DaemonCommandException e)
            {
                return new ApplyResult(false, 0, $"{Name} refused change {i + 1} ({c}): {e.Message}; nothing changed");
            }
        }
        if (view.OrphanedRule() is { } orphan)
            return new ApplyResult(false, 0, $"{Name} refused the change set: rule {orphan} would name a port that no longer exists; nothing changed");

        var done = new Stack<(DaemonChange Change, Action Undo)>();
        foreach (var (change, run, undo) in steps)
        {
            try
            {
                run();
                done.Push((change, undo));
            }
            catch (Exception e) when (e is DaemonCommandException or IOException or InvalidOperationException or ArgumentException)
            {
                var rollback = "";
                while (done.TryPop(out var d))
                {
                    try
                    {
                        d.Undo();
                    }
                    catch (Exception u) when (u is DaemonCommandException or IOException or InvalidOperationException or ArgumentException)
                    {
                        rollback += $"; undoing '{d.Change}' failed too: {u.Message}";
                    }
                }
                Log.ApplyFailed(_logger, change.ToString(), e.Message);
                return new ApplyResult(false, 0, $"{Name} could not {change}: {e.Message}; the changes before it were undone{rollback}");
            }
        }
        if (steps.Count > 0)
            Log.Applied(_logger, steps.Count);
        return new ApplyResult(true, steps.Count, null);
    }

    private (DaemonChange, Action, Action) Plan(DaemonChange c, PlanView view)
    {
        switch (c.Op)
        {
            case DaemonChange.AddInterface:
            {
                var config = new InterfaceConfig
                {
                    Name = Need(c.Name, "name"),
                    Kind = c.Kind switch
                    {
                        null or "tap" => InterfaceKind.Tap,
                        "pcap" => InterfaceKind.Pcap,
                        _ => throw new DaemonCommandException($"'{c.Kind}' is neither tap nor pcap"),
                    },
                    Mtu = c.Mtu ?? 1500,
                    Bridge = c.Bridge,
                    Lan = c.Lan ?? false,
                    Learn = !(c.Lan ?? false),
                };
                try
                {
                    (Config with { Interfaces = [config] }).Validated();
                }
                catch (ConfigException e)
                {
                    throw new DaemonCommandException(e.Message);
                }
                if (!view.Interfaces.Add(config.Name))
                    throw new DaemonCommandException($"interface {config.Name} already exists");
                return (c, () => AddInterface(config), () => RemoveInterfaceForce(config.Name));
            }
            case DaemonChange.RemoveInterface:
            {
                var name = Need(c.Name, "name");
                if (!view.Interfaces.Remove(name))
                    throw new DaemonCommandException($"no interface {name}");
                var config = _interfaces.TryGetValue(name, out var s) ? s.Config : null;
                var pinned = s?.Vms.Keys.ToList() ?? [];
                return (c, () => RemoveInterfaceForce(name), () =>
                {
                    if (config is null)
                        return;
                    AddInterface(config);
                    foreach (var mac in pinned)
                        PinVm(name, mac);
                });
            }
            case DaemonChange.AddVm:
            case DaemonChange.RemoveVm:
            {
                var name = Need(c.Name, "interface");
                if (!MacAddress.TryParse(Need(c.Mac, "mac"), out var mac) || mac.IsGroup)
                    throw new DaemonCommandException($"'{c.Mac}' is not a VM MAC address");
                if (!view.Interfaces.Contains(name))
                    throw new DaemonCommandException($"no interface {name}");
                return c.Op == DaemonChange.AddVm
                    ? (c, () => PinVm(name, mac), () => ForgetVm(name, mac))
                    : (c, () => ForgetVm(name, mac), () => PinVm(name, mac));
            }
            case DaemonChange.AddRule:
            {
                var origin = OriginOf(c);
                var rule = ControlCommands.ParseRule(Need(c.Src, "src"), Need(c.Dst, "dst"), c.In, Need(c.To, "to")) with { Origin = origin };
                view.CheckPorts(rule);
                if (view.Rules.Exists(r => r.Origin == origin && r.SameMatchAndAction(rule)))
                    throw new DaemonCommandException($"rule {rule} already exists");
                view.Rules.Add(rule);
                long id = 0;
                return (c, () => id = AddRuleUnchecked(rule), () => Rules.Edit(e => e.Remove(id)));
            }
            case DaemonChange.RemoveRule:
            {
                var origin = OriginOf(c);
                var rule = ControlCommands.ParseRule(Need(c.Src, "src"), Need(c.Dst, "dst"), c.In, Need(c.To, "to")) with { Origin = origin };
                var index = view.Rules.FindIndex(r => r.Origin == origin && r.SameMatchAndAction(rule));
                // A host drops adaptation's rules for a VM that moved on its own; removing one
                // again is no error.
                if (index < 0 && origin == RuleOrigin.Adaptation)
                    return (c, () => { }, () => { });
                if (index < 0)
                    throw new DaemonCommandException($"no {origin.ToString().ToLowerInvariant()} rule {rule}");
                view.Rules.RemoveAt(index);
                // Undone with its id and counters: a refused set leaves the rule as `vnet rule list` showed it.
                List<Engine.RuleEntry> removed = [];
                return (c, () => removed = RemoveRules(rule, origin), () => Rules.Edit(e =>
                {
                    foreach (var r in removed)
                        e.Restore(r.Rule, r.Stats);
                }));
            }
            case DaemonChange.AddLink:
            {
                var peer = Need(c.Peer, "peer");
                var transport = ControlCommands.ParseTransport(c.Transport ?? "tcp");
                IPEndPoint? dial = null;
                if (c.Dial is not null && (!IPEndPoint.TryParse(c.Dial, out dial) || dial.Port == 0))
                    throw new DaemonCommandException($"'{c.Dial}' is not an address:port");
                if (!Names.IsValid(peer) || peer == Name)
                    throw new DaemonCommandException($"'{peer}' cannot be a peer of {Name}");
                if (!IsProxy && peer == Config.ProxyName)
                    throw new DaemonCommandException(StarLinkRefusal(peer));
                var existing = Links.Find(peer);
                // A link the peer dials may already be here (its session created the port).
                var passiveAlready = dial is null && existing is not null && existing.DialAddress is null && !view.RemovedLinks.Contains(peer);
                if (!passiveAlready && !view.Links.Add(peer))
                    throw new DaemonCommandException($"link {peer} already exists");
                view.Links.Add(peer);
                var linkOrigin = OriginOf(c);
                if (passiveAlready)
                {
                    // The peer's half of the change came first and its session made the port (as a
                    // user link): the port is this change's, or adaptation could never remove it.
                    var was = existing!.Origin;
                    return (c, () => existing.Origin = linkOrigin, () => existing.Origin = was);
                }
                return (c, () =>
                {
                    if (dial is not null)
                        AddLink(peer, dial, transport);
                    else
                        ExpectLink(peer, transport);
                    if (Links.Find(peer) is { } made)
                        made.Origin = linkOrigin;
                }, () => RemoveLinkForce(peer));
            }
            case DaemonChange.RemoveLink:
            {
                var peer = Need(c.Peer, "peer");
                var port = Links.Find(peer);
                // Adaptation never takes away a link someone else made, nor minds one already gone.
                if (OriginOf(c) == RuleOrigin.Adaptation && (port is null || port.Origin != RuleOrigin.Adaptation))
                    return (c, () => { }, () => { });
                if (port is null || !view.Links.Remove(peer))
                    throw new DaemonCommandException($"no link {peer}");
                if (port.Star)
                    throw new DaemonCommandException(StarLinkRefusal(peer));
                view.RemovedLinks.Add(peer);
                var transport = port.Transport;
                var dial = port.DialAddress;
                return (c, () => RemoveLinkForce(peer), () =>
                {
                    if (dial is not null)
                        AddLink(peer, dial, transport);
                    else
                        ExpectLink(peer, transport);
                });
            }
            default:
                throw new DaemonCommandException($"unknown change '{c.Op}'");
        }
    }

    private static string Need(string? value, string field) =>
        value ?? throw new DaemonCommandException($"missing '{field}'");

    /// <summary>A port for a link the peer dials; rules may name it before the peer arrives.</summary>
    public void ExpectLink(string peer, LinkTransport transport)
    {
        if (Links.Find(peer) is not null)
            return;
        Links.AddLink(peer, transport, star: false, dial: null);
        Rules.Republish();
    }

    /// <summary>Removes the user rules equal to <paramref name="rule"/>; returns them with their counters.</summary>
    private List<Engine.RuleEntry> RemoveRules(Rule rule, RuleOrigin origin)
    {
        var found = Rules.List().Where(r => r.Rule.Origin == origin && r.Rule.SameMatchAndAction(rule)).ToList();
        Rules.Edit(e =>
        {
            foreach (var r in found)
                e.Remove(r.Rule.Id);
        });
        return found;
    }

    private long AddRuleUnchecked(Rule rule) => Rules.Edit(e => e.Add(rule with { Id = 0 })).Id;

    private static RuleOrigin OriginOf(DaemonChange c) => c.Origin switch
    {
        null or "user" => RuleOrigin.User,
        "adaptation" => RuleOrigin.Adaptation,
        _ => throw new DaemonCommandException($"'{c.Origin}' is not an origin a change set may use (user, adaptation)"),
    };

    /// <summary>Removes a link and every non-user rule that uses it (user rules were checked by the plan).</summary>
    private void RemoveLinkForce(string peer)
    {
        var port = PortRef.Link(peer);
        Rules.Edit(e => e.RemoveWhere(r => r.Origin != RuleOrigin.User && Uses(r, port)));
        Links.RemoveLink(peer);
        Rules.Republish();
        Log.LinkRemoved(_logger, peer);
    }

    private void RemoveInterfaceForce(string name)
    {
        if (_interfaces.TryGetValue(name, out var state))
            CloseInterface(state, "removed by a change set");
    }

    /// <summary>Declares a VM on an interface (as if learned), announcing it as usual.</summary>
    private void PinVm(string iface, MacAddress mac)
    {
        if (!_interfaces.TryGetValue(iface, out var state))
            throw new DaemonCommandException($"no interface {iface}");
        if (state.Vms.ContainsKey(mac))
            return;
        lock (_learnLock)
            LearnLocal(state, mac, announce: false);
    }

    /// <summary>Forgets a VM on an interface (it is learned again by its next frame).</summary>
    private void ForgetVm(string iface, MacAddress mac)
    {
        if (!_interfaces.TryGetValue(iface, out var state) || !state.Vms.TryRemove(mac, out _))
            return;
        Rules.Edit(e => RemoveLocalVmRules(e, mac));
        PublishSources();
        OnLocalVmGone(mac);
    }

    /// <summary>The daemon as the planner sees it while it checks a change set.</summary>
    private sealed class PlanView
    {
        public PlanView(VnetDaemon d)
        {
            foreach (var i in d._interfaces.Keys)
                Interfaces.Add(i);
            foreach (var l in d.Links.Links)
                Links.Add(l.Peer);
            foreach (var r in d.Rules.List())
            {
                if (r.Rule.Origin != RuleOrigin.System)
                    Rules.Add(r.Rule);
            }
        }

        public HashSet<string> Interfaces { get; } = new(StringComparer.Ordinal);

        public HashSet<string> Links { get; } = new(StringComparer.Ordinal);

        public HashSet<string> RemovedLinks { get; } = new(StringComparer.Ordinal);

        public List<Rule> Rules { get; } = [];

        public bool Exists(PortRef p) => p.Kind == PortKind.Link ? Links.Contains(p.Name) : Interfaces.Contains(p.Name);

        public void CheckPorts(Rule rule)
        {
            if (!rule.Action.IsFlood && !Exists(rule.Action.Port))
                throw new DaemonCommandException($"no port {rule.Action.Port}");
            if (rule.Ingress is { } i && !Exists(i))
                throw new DaemonCommandException($"no port {i}");
        }

        public Rule? OrphanedRule() => Rules.Find(r => (!r.Action.IsFlood && !Exists(r.Action.Port)) || (r.Ingress is { } i && !Exists(i)));
    }
}
