using Vnet.Links;

namespace Vnet.Language;

/// <summary>
/// A whole overlay as the language describes it: daemons (with their interfaces, VMs and rules) and
/// the links between them. Immutable; two descriptions are equal when they say the same things in
/// the same order, wherever they were written.
/// </summary>
public sealed record OverlayDescription(IReadOnlyList<DaemonDecl> Daemons, IReadOnlyList<LinkDecl> Links)
{
    public static OverlayDescription Empty { get; } = new([], []);

    public IReadOnlyList<DaemonDecl> Daemons { get; init => field = ReadOnly.Copy(value); } = ReadOnly.Copy(Daemons);

    public IReadOnlyList<LinkDecl> Links { get; init => field = ReadOnly.Copy(value); } = ReadOnly.Copy(Links);

    /// <summary>The first daemon with the Proxy role (a checked description has exactly one).</summary>
    public DaemonDecl? Proxy
    {
        get
        {
            foreach (var d in Daemons)
            {
                if (d.Role == DaemonRole.Proxy)
                    return d;
            }
            return null;
        }
    }

    public DaemonDecl? Daemon(string name)
    {
        foreach (var d in Daemons)
        {
            if (d.Name == name)
                return d;
        }
        return null;
    }

    /// <summary>The links that have <paramref name="name"/> at either end, in model order.</summary>
    public IReadOnlyList<LinkDecl> LinksOf(string name) => [.. Links.Where(l => l.Involves(name))];

    /// <summary>The link joining two daemons, whichever of them dials.</summary>
    public LinkDecl? LinkBetween(string a, string b) => Links.FirstOrDefault(l => l.Joins(a, b));

    public bool Equals(OverlayDescription? other) =>
        other is not null && ReadOnly.SequenceEqual(Daemons, other.Daemons) && ReadOnly.SequenceEqual(Links, other.Links);

    public override int GetHashCode() => HashCode.Combine(ReadOnly.Hash(Daemons), ReadOnly.Hash(Links));

    /// <summary>The canonical text (<see cref="OverlayFormatter.Format"/>).</summary>
    public override string ToString() => OverlayFormatter.Format(this);
}
