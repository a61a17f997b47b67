using Vnet.Links;

namespace Vnet.Language;

/// <summary>
/// <c>link FROM -> TO [tcp|udp] [port N] [streams N]</c>: <see cref="From"/> dials <see cref="To"/> at its
/// address, on <see cref="Port"/> instead of the address's own port when one is given, with
/// <see cref="Streams"/> parallel sessions (TCP or UDP; 1, the default, is one session).
/// </summary>
public sealed record LinkDecl(string From, string To, LinkTransport Transport, int? Port, int Streams = 1)
{
    /// <summary>Where the link starts; not part of equality (nor are the other positions).</summary>
    public SourceSpan Span { get; init; }

    public SourceSpan FromAt { get; init; }

    public SourceSpan ToAt { get; init; }

    public SourceSpan PortAt { get; init; }

    public SourceSpan StreamsAt { get; init; }

    public bool Involves(string daemon) => From == daemon || To == daemon;

    /// <summary>Whether this link joins <paramref name="a"/> and <paramref name="b"/>, in either direction.</summary>
    public bool Joins(string a, string b) => (From == a && To == b) || (From == b && To == a);

    /// <summary>The other end, seen from <paramref name="daemon"/> (which must be one of the ends).</summary>
    public string PeerOf(string daemon) => From == daemon ? To : To == daemon ? From
        : throw new ArgumentException($"{daemon} is not an end of {this}", nameof(daemon));

    public bool Equals(LinkDecl? other) =>
        other is not null && From == other.From && To == other.To && Transport == other.Transport && Port == other.Port
        && Streams == other.Streams;

    public override int GetHashCode() => HashCode.Combine(From, To, Transport, Port, Streams);

    /// <summary>The link as the language writes it: <c>link h1 -> h2 udp port 5501</c>.</summary>
    public override string ToString() => OverlayFormatter.Line(this);
}
