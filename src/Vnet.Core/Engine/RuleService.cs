using Microsoft.Extensions.Logging;
using Vnet.Daemon;
using Vnet.Forwarding;

namespace Vnet.Engine;

/// <summary>
/// The rule commands of a daemon (control loop): list with counters, add a user rule after
/// checking it and the ports it names, remove one. The rules themselves are the
/// <see cref="RuleBook"/>'s, which the other services edit for their own system rules.
/// </summary>
public sealed partial class RuleService
{
    private readonly string _daemon;
    private readonly RuleBook _rules;
    private readonly VirtualSwitch _switch;
    private readonly ILogger _logger;

    public RuleService(string daemon, RuleBook rules, VirtualSwitch sw, ILogger logger)
    {
        _daemon = daemon;
        _rules = rules;
        _switch = sw;
        _logger = logger;
    }

    public IReadOnlyList<RuleStatus> List()
    {
        var entries = _rules.List();
        var list = new List<RuleStatus>(entries.Count);
        foreach (var e in entries)
            list.Add(RuleStatus.Of(e.Rule, e.Stats));
        return list;
    }

    /// <summary>
    /// Adds a rule after checking it, that the ports it names exist and that no user rule already
    /// says the same: a description holds a rule once (<c>vnet topo check</c> refuses a repeat), so
    /// a repeat here would make <c>vnet topo dump</c> print what <c>vnet topo apply</c> refuses.
    /// </summary>
    public RuleStatus Add(Rule rule)
    {
        if (rule.Validate() is { } problem)
            throw new DaemonCommandException(problem);
        if (!rule.Action.IsFlood && _switch.ResolvePort(rule.Action.Port) < 0)
            throw new DaemonCommandException($"no port {rule.Action.Port} on {_daemon}");
        if (rule.Ingress is { } i && _switch.ResolvePort(i) < 0)
            throw new DaemonCommandException($"no port {i} on {_daemon}");
        foreach (var e in _rules.List())
        {
            if (e.Rule.Origin == RuleOrigin.User && e.Rule.SameMatchAndAction(rule))
                throw new DaemonCommandException($"rule {e.Rule.Id} is already that rule ({e.Rule}) on {_daemon}");
        }
        var added = _rules.Edit(e => e.Add(rule with { Id = 0 }));
        Log.RuleAdded(_logger, added.Id, added);
        return List().First(r => r.Id == added.Id);
    }

    public void Remove(long id)
    {
        var rule = _rules.Find(id) ?? throw new DaemonCommandException($"no rule {id}");
        if (rule.Origin == RuleOrigin.System)
            throw new DaemonCommandException($"rule {id} belongs to the daemon (it follows its VMs and interfaces)");
        _rules.Edit(e => e.Remove(id));
        Log.RuleRemoved(_logger, id);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 42, Level = LogLevel.Information, Message = "Rule {Id} added: {Rule}")]
        public static partial void RuleAdded(ILogger logger, long id, Rule rule);

        [LoggerMessage(EventId = 43, Level = LogLevel.Information, Message = "Rule {Id} removed")]
        public static partial void RuleRemoved(ILogger logger, long id);
    }
}
