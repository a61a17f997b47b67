using System.Diagnostics.CodeAnalysis;

namespace Vnet.Forwarding;

public enum PortKind : byte
{
    /// <summary>A local interface: a TAP or a NIC opened through libpcap.</summary>
    Interface,

    /// <summary>A link to another daemon, named after that daemon.</summary>
    Link,
}

/// <summary>
/// Names a port as rules and tools see it: <c>if:tap0</c> or <c>link:proxy</c>. Interfaces and links
/// live in separate name spaces so a daemon called <c>tap0</c> never collides with an interface.
/// </summary>
public readonly record struct PortRef(PortKind Kind, string Name)
{
    public static PortRef Interface(string name) => new(PortKind.Interface, name);

    public static PortRef Link(string peer) => new(PortKind.Link, peer);

    public static bool TryParse(string text, [NotNullWhen(true)] out PortRef? port)
    {
        port = null;
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0 || colon == text.Length - 1)
            return false;
        var kind = text.AsSpan(0, colon);
        var name = text.Substring(colon + 1);
        if (!Names.IsValid(name))
            return false;
        if (kind is "if" or "interface")
            port = Interface(name);
        else if (kind is "link")
            port = Link(name);
        return port is not null;
    }

    public override string ToString() => (Kind == PortKind.Interface ? "if:" : "link:") + Name;
}

/// <summary>The one rule for names of daemons, links and interfaces.</summary>
public static class Names
{
    public const int MaxLength = 32;

    /// <summary>Letters, digits, '-', '_' and '.', starting with a letter or digit.</summary>
    public static bool IsValid(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > MaxLength || !char.IsAsciiLetterOrDigit(name[0]))
            return false;
        foreach (var c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('-' or '_' or '.'))
                return false;
        }
        return true;
    }
}
