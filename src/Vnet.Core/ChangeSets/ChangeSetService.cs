using System.Net;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Interfaces;
using Vnet.Links;
using Vnet.Vms;

namespace Vnet.ChangeSets;

/// <summary>
/// Applies change sets whole or not at all (control loop).
/// <code>
/// 1. If the caller read the daemon's state first, its version must still be the daemon's.
/// 2. Plan: every change is checked against the state the set would leave (a rule may name a link
///    added earlier in the set, a link may go only once no rule uses it); each yields a do and an
///    undo. One refusal refuses the set, with the change's number and the reason.
/// 3. Do: the changes run in order; if one fails (a TAP that cannot be created), the ones already
///    done are undone in reverse, and the set is reported as not applied.
/// </code>
/// </summary>
public sealed partial class ChangeSetService
{
    private readonly DaemonConfig _config;
    private readonly LinkManager _links;
    private readonly LinkService _linkService;
    private readonly InterfaceService _interfaces;
    private readonly VmDirectory _vms;
    private readonly RuleBook _rules;
    private readonly Func<string> _version;
    private readonly Func<string, string?> _closeRefusal;
    private readonly ILogger _logger;

    public ChangeSetService(DaemonConfig config, LinkManager links, LinkService linkService, InterfaceService interfaces, VmDirectory vms,
        RuleBook rules, Func<string> version, Func<string, string?> closeRefusal, ILogger logger)
    {
        _config = config;
        _links = links;
        _linkService = linkService;
        _interfaces = interfaces;
        _vms = vms;
        _rules = rules;
        _version = version;
        _closeRefusal = closeRefusal;
        _logger = logger;
    }

    private string Name => _config.Name;

    private bool IsProxy => _config.Role == DaemonRole.Proxy;

    public ApplyResult Apply(IReadOnlyList<DaemonChange> changes, string? ifVersion = null)
    {
        if (ifVersion is not null && _version() is var now && now != ifVersion)
            return new ApplyResult(false, 0, $"{Name} changed since its state was read (version {ifVersion}, now {now}); nothing changed");
        var view = new PlanView(_interfaces, _links, _rules);
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
                // The change set may come from the Proxy, and the error may quote it.
                Log.ApplyFailed(_logger, LogText.Safe(change.ToString()), LogText.Safe(e.Message));
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
            case ChangeOp.AddInterface:
            {
                var lan = c.Lan ?? false;
                var config = new InterfaceConfig
                {
                    Name = Need(c.Name, "name"),
                    Kind = c.Kind ?? InterfaceKind.Tap,
                    Mtu = c.Mtu ?? 1500,
                    Bridge = c.Bridge,
                    Lan = lan,
                    Learn = !lan,
                };
                try
                {
                    (_config with { Interfaces = [config] }).Validated();
                }
                catch (ConfigException e)
                {
                    throw new DaemonCommandException(e.Message);
                }
                if (!view.Interfaces.Add(config.Name))
                    throw new DaemonCommandException($"interface {config.Name} already exists");
                return (c, () => _interfaces.Add(config), () => _interfaces.RemoveForce(config.Name, "undone"));
            }
            case ChangeOp.RemoveInterface:
            {
                var name = Need(c.Name, "name");
                // An ordered VM's interface is the VM's (VmHostService), as a host's star link is its configuration's.
                if (_closeRefusal(name) is { } why)
                    throw new DaemonCommandException(why);
                if (!view.Interfaces.Remove(name))
                    throw new DaemonCommandException($"no interface {name}");
                var config = _interfaces.Find(name)?.Config;
                var pinned = _vms.VmsOn(name);
                return (c, () => _interfaces.RemoveForce(name, "removed by a change set"), () =>
                {
                    if (config is null)
                        return;
                    _interfaces.Add(config);
                    foreach (var mac in pinned)
                        _vms.Pin(name, mac);
                });
            }
            case ChangeOp.AddVm:
            case ChangeOp.RemoveVm:
            {
                var name = Need(c.Name, "interface");
                var mac = c.Mac ?? throw new DaemonCommandException("missing 'mac'");
                if (mac.IsGroup)
                    throw new DaemonCommandException($"'{mac}' is not a VM MAC address (a group address)");
                if (!view.Interfaces.Contains(name))
                    throw new DaemonCommandException($"no interface {name}");
                return c.Op == ChangeOp.AddVm
                    ? (c, () => _vms.Pin(name, mac), () => _vms.Forget(name, mac))
                    : (c, () => _vms.Forget(name, mac), () => _vms.Pin(name, mac));
            }
            case ChangeOp.AddRule:
            {
                var origin = OriginOf(c);
                var rule = RuleOf(c) with { Origin = origin };
                view.CheckPorts(rule);
                if (view.Rules.Exists(r => r.Origin == origin && r.SameMatchAndAction(rule)))
                    throw new DaemonCommandException($"rule {rule} already exists");
                view.Rules.Add(rule);
                long id = 0;
                return (c, () => id = _rules.Edit(e => e.Add(rule with { Id = 0 })).Id, () => _rules.Edit(e => e.Remove(id)));
            }
            case ChangeOp.RemoveRule:
            {
                var origin = OriginOf(c);
                var rule = RuleOf(c) with { Origin = origin };
                var index = view.Rules.FindIndex(r => r.Origin == origin && r.SameMatchAndAction(rule));
                // A host drops adaptation's rules for a VM that moved on its own; removing one
                // again is no error.
                if (index < 0 && origin == RuleOrigin.Adaptation)
                    return (c, () => { }, () => { });
                if (index < 0)
                    throw new DaemonCommandException($"no {Json.EnumText.Of(origin)} rule {rule}");
                view.Rules.RemoveAt(index);
                // Undone with its id and counters: a refused set leaves the rule as `vnet rule list` showed it.
                List<RuleEntry> removed = [];
                return (c, () => removed = RemoveRules(rule, origin), () => _rules.Edit(e =>
                {
                    foreach (var r in removed)
                        e.Restore(r.Rule, r.Stats);
                }));
            }
            case ChangeOp.AddLink:
            {
                var peer = Need(c.Peer, "peer");
                var transport = c.Transport ?? LinkTransport.Tcp;
                var streams = c.Streams ?? 1;
                if (streams is < 1 or > LinkPort.MaxStreams)
                    throw new DaemonCommandException($"streams {streams} is out of range (1..{LinkPort.MaxStreams})");
                IPEndPoint? dial = null;
                if (c.Dial is not null && (!IPEndPoint.TryParse(c.Dial, out dial) || dial.Port == 0))
                    throw new DaemonCommandException($"'{c.Dial}' is not an address:port");
                if (!Names.IsValid(peer) || peer == Name)
                    throw new DaemonCommandException($"'{peer}' cannot be a peer of {Name}");
                if (!IsProxy && peer == _config.ProxyName)
                    throw new DaemonCommandException(_linkService.StarLinkRefusal(peer));
                if (dial is not null && _linkService.DialRefusal(peer) is { } why)
                    throw new DaemonCommandException(why);
                var existing = _links.Find(peer);
                // A link the peer dials may already be here (its session created the port).
                var passiveAlready = dial is null && existing is not null && existing.DialAddress is null && !view.RemovedLinks.Contains(peer);
                if (!passiveAlready && !view.Links.Add(peer))
                    throw new DaemonCommandException($"link {peer} already exists");
                view.Links.Add(peer);
                var origin = OriginOf(c);
                if (passiveAlready)
                {
                    // The peer's half of the change came first and its session made the port (as a
                    // user link): the port is this change's, or adaptation could never remove it.
                    var was = existing!.Origin;
                    return (c, () => existing.Origin = origin, () => existing.Origin = was);
                }
                return (c, () =>
                {
                    if (dial is not null)
                        _linkService.Add(peer, dial, transport, origin, streams);
                    else
                        _linkService.Expect(peer, transport, origin);
                }, () => _linkService.RemoveForce(peer));
            }
            case ChangeOp.RemoveLink:
            {
                var peer = Need(c.Peer, "peer");
                var port = _links.Find(peer);
                // Adaptation never takes away a link someone else made, nor minds one already gone.
                if (OriginOf(c) == RuleOrigin.Adaptation && (port is null || port.Origin != RuleOrigin.Adaptation))
                    return (c, () => { }, () => { });
                if (port is null || !view.Links.Remove(peer))
                    throw new DaemonCommandException($"no link {peer}");
                if (port.Star)
                    throw new DaemonCommandException(_linkService.StarLinkRefusal(peer));
                view.RemovedLinks.Add(peer);
                var transport = port.Transport;
                var dial = port.DialAddress;
                var origin = port.Origin;
                var streams = port.Streams;
                return (c, () => _linkService.RemoveForce(peer), () =>
                {
                    if (dial is not null)
                        _linkService.Restore(peer, dial, transport, origin, streams);
                    else
                        _linkService.Expect(peer, transport, origin);
                });
            }
            default:
                throw new DaemonCommandException($"unknown change '{c.Op}'");
        }
    }

    private static string Need(string? value, string field) =>
        value ?? throw new DaemonCommandException($"missing '{field}'");

    /// <summary>The rule a change names, checked.</summary>
    private static Rule RuleOf(DaemonChange c)
    {
        var rule = new Rule
        {
            Source = c.Src ?? throw new DaemonCommandException("missing 'src'"),
            Destination = c.Dst ?? throw new DaemonCommandException("missing 'dst'"),
            Ingress = c.In,
            Action = c.To ?? throw new DaemonCommandException("missing 'to'"),
        };
        return rule.Validate() is { } problem ? throw new DaemonCommandException(problem) : rule;
    }

    private static RuleOrigin OriginOf(DaemonChange c) => c.Origin switch
    {
        null or RuleOrigin.User => RuleOrigin.User,
        RuleOrigin.Adaptation => RuleOrigin.Adaptation,
        _ => throw new DaemonCommandException($"'{Json.EnumText.Of(c.Origin.Value)}' is not an origin a change set may use (user, adaptation)"),
    };

    /// <summary>Removes the rules of one origin equal to <paramref name="rule"/>; returns them with their counters.</summary>
    private List<RuleEntry> RemoveRules(Rule rule, RuleOrigin origin)
    {
        var found = _rules.List().Where(r => r.Rule.Origin == origin && r.Rule.SameMatchAndAction(rule)).ToList();
        _rules.Edit(e =>
        {
            foreach (var r in found)
                e.Remove(r.Rule.Id);
        });
        return found;
    }

    /// <summary>The daemon as the planner sees it while it checks a change set.</summary>
    private sealed class PlanView
    {
        public PlanView(InterfaceService interfaces, LinkManager links, RuleBook rules)
        {
            foreach (var i in interfaces.All)
                Interfaces.Add(i.Name);
            foreach (var l in links.Links)
                Links.Add(l.Peer);
            foreach (var r in rules.List())
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

    private static partial class Log
    {
        [LoggerMessage(EventId = 50, Level = LogLevel.Information, Message = "Applied a change set of {Count} changes")]
        public static partial void Applied(ILogger logger, int count);

        [LoggerMessage(EventId = 51, Level = LogLevel.Warning, Message = "Change set refused at '{Change}': {Reason}")]
        public static partial void ApplyFailed(ILogger logger, string change, string reason);
    }
}
