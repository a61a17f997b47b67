using System.Net;
using Vnet.Links;

namespace Vnet.Language;

/// <summary>
/// <c>proxy|host NAME [at ADDRESS:PORT] { interfaces and rules }</c>. <see cref="Address"/> is where the
/// daemon listens; a daemon without one can dial but cannot be dialed.
/// </summary>
public sealed record DaemonDecl(string Name, DaemonRole Role, IPEndPoint? Address, IReadOnlyList<InterfaceDecl> Interfaces, IReadOnlyList<RuleDecl> Rules)
{
    public IReadOnlyList<InterfaceDecl> Interfaces { get; init => field = ReadOnly.Copy(value); } = ReadOnly.Copy(Interfaces);

    public IReadOnlyList<RuleDecl> Rules { get; init => field = ReadOnly.Copy(value); } = ReadOnly.Copy(Rules);

    /// <summary>Where the declaration starts (its keyword); not part of equality.</summary>
    public SourceSpan Span { get; init; }

    /// <summary>Where the address after <c>at</c> is; not part of equality.</summary>
    public SourceSpan AddressAt { get; init; }

    public InterfaceDecl? Interface(string name) => Interfaces.FirstOrDefault(i => i.Name == name);

    public bool Equals(DaemonDecl? other) =>
        other is not null
        && Name == other.Name
        && Role == other.Role
        && Equals(Address, other.Address)
        && ReadOnly.SequenceEqual(Interfaces, other.Interfaces)
        && ReadOnly.SequenceEqual(Rules, other.Rules);

    public override int GetHashCode() => HashCode.Combine(Name, Role, Address, ReadOnly.Hash(Interfaces), ReadOnly.Hash(Rules));

    /// <summary>The declaration's first line, as the language writes it: <c>host h1 at 192.0.2.11:5500</c>.</summary>
    public override string ToString() => OverlayFormatter.Header(this);
}
