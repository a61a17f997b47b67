namespace Vnet.Forwarding;

/// <summary>Who installed a rule; tools show it and migration only rewrites what the system made.</summary>
public enum RuleOrigin : byte
{
    /// <summary>Installed by a user (CLI, language apply).</summary>
    User,

    /// <summary>Installed by the daemon itself: VM defaults and deliveries, Proxy locations, flooding.</summary>
    System,

    /// <summary>Installed by topology adaptation.</summary>
    Adaptation,
}

/// <summary>What a matching rule does with the frame.</summary>
public readonly record struct RuleAction(bool IsFlood, PortRef Port)
{
    /// <summary>Send along the broadcast tree (the star): every tree port but the arrival one.</summary>
    public static RuleAction Flood => new(true, default);

    public static RuleAction To(PortRef port) => new(false, port);

    public override string ToString() => IsFlood ? "flood" : Port.ToString();
}

/// <summary>
/// A forwarding rule: match on source and destination MAC, optionally on the arrival port, and an action.
/// Rules are values; <see cref="Id"/> is the daemon's handle for one installed rule.
/// </summary>
public sealed record Rule
{
    public long Id { get; init; }

    public required MacMatch Source { get; init; }

    public required MacMatch Destination { get; init; }

    /// <summary>Only frames that arrived on this port match; null matches every arrival port.</summary>
    public PortRef? Ingress { get; init; }

    public required RuleAction Action { get; init; }

    public RuleOrigin Origin { get; init; } = RuleOrigin.User;

    /// <summary>
    /// Strength of the rule: exact beats multicast beats any on each side, a source-exact rule beats
    /// an any-source one, a rule that names its arrival port beats one that does not, and a rule
    /// whose destination is <c>none</c> (the default rule) is weaker than every other rule.
    /// Equal priorities are ties, and every tied rule gets a copy.
    /// </summary>
    public int Priority => ComputePriority(Source.Kind, Destination.Kind, Ingress is not null);

    public static int ComputePriority(MacMatchKind source, MacMatchKind destination, bool hasIngress)
    {
        var src = source == MacMatchKind.Exact ? 2 : 0;
        int level = destination switch
        {
            MacMatchKind.None => src / 2,
            MacMatchKind.Exact => 10 + src + 2,
            MacMatchKind.Multicast => 10 + src + 1,
            _ => 10 + src,
        };
        return (level * 2) + (hasIngress ? 1 : 0);
    }

    /// <summary>The match part, which identifies a rule for diffs whatever its id.</summary>
    public bool SameMatchAndAction(Rule other) =>
        Source == other.Source && Destination == other.Destination && Ingress == other.Ingress && Action == other.Action;

    /// <summary>Whether the rule sends to <paramref name="port"/> or matches only frames arriving on it.</summary>
    public bool Uses(PortRef port) => (!Action.IsFlood && Action.Port == port) || Ingress == port;

    /// <summary>Checks the rule's shape; returns null when valid, else the reason.</summary>
    public string? Validate()
    {
        if (Source.Kind is not (MacMatchKind.Exact or MacMatchKind.Any))
            return $"source must be a MAC address or 'any', not '{Source}'";
        if (Source.Kind == MacMatchKind.Exact && Source.Address.IsGroup)
            return $"source {Source.Address} is a group address; frames never come from one";
        if (!Action.IsFlood && !Names.IsValid(Action.Port.Name))
            return $"action port '{Action.Port.Name}' is not a valid name";
        if (Ingress is { } i && !Names.IsValid(i.Name))
            return $"arrival port '{i.Name}' is not a valid name";
        return null;
    }

    public override string ToString()
    {
        var from = Ingress is { } i ? $" from {i}" : "";
        return $"{Source} -> {Destination}{from} => {Action}";
    }
}
