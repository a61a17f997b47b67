using Vnet.Forwarding;

namespace Vnet.Language;

/// <summary>
/// <c>rule SOURCE -> DESTINATION [from PORT] to PORT|flood</c>: a user rule of the daemon it is
/// declared in. The same four fields as a <see cref="Rule"/>, without the daemon's id and counters.
/// </summary>
public sealed record RuleDecl(MacMatch Source, MacMatch Destination, PortRef? Ingress, RuleAction Action)
{
    /// <summary>Where the rule starts; not part of equality (nor are the other positions).</summary>
    public SourceSpan Span { get; init; }

    public SourceSpan SourceAt { get; init; }

    public SourceSpan IngressAt { get; init; }

    public SourceSpan ActionAt { get; init; }

    public Rule ToRule(RuleOrigin origin = RuleOrigin.User) => new()
    {
        Source = Source,
        Destination = Destination,
        Ingress = Ingress,
        Action = Action,
        Origin = origin,
    };

    public static RuleDecl From(Rule rule)
    {
        ArgumentNullException.ThrowIfNull(rule);
        return new RuleDecl(rule.Source, rule.Destination, rule.Ingress, rule.Action);
    }

    /// <summary>Whether the rule names <paramref name="port"/>, as its arrival port or its action.</summary>
    public bool Uses(PortRef port) => Ingress == port || (!Action.IsFlood && Action.Port == port);

    public bool Equals(RuleDecl? other) =>
        other is not null && Source == other.Source && Destination == other.Destination && Ingress == other.Ingress && Action == other.Action;

    public override int GetHashCode() => HashCode.Combine(Source, Destination, Ingress, Action);

    /// <summary>The rule as the language writes it: <c>rule any -> 02:00:00:00:00:02 to link h2</c>.</summary>
    public override string ToString() => OverlayFormatter.Line(this);
}
