using Vnet.Frames;

namespace Vnet.Forwarding;

/// <summary>How one side of a rule matches a MAC address; the order is the strength of the match.</summary>
public enum MacMatchKind : byte
{
    /// <summary>Destination only: the default rule, which matches every destination at the lowest priority.</summary>
    None = 0,

    /// <summary>Every address.</summary>
    Any = 1,

    /// <summary>Destination only: every group address (broadcast and multicast).</summary>
    Multicast = 2,

    /// <summary>One address.</summary>
    Exact = 3,
}

/// <summary>One side of a rule: <c>any</c>, <c>none</c>, <c>multicast</c> or an exact address.</summary>
public readonly record struct MacMatch(MacMatchKind Kind, MacAddress Address)
{
    public static MacMatch Any => new(MacMatchKind.Any, default);

    public static MacMatch None => new(MacMatchKind.None, default);

    public static MacMatch Multicast => new(MacMatchKind.Multicast, default);

    public static MacMatch Exact(MacAddress mac) => new(MacMatchKind.Exact, mac);

    /// <summary>Whether this side matches an address (the plain meaning, used by references and tools).</summary>
    public bool Matches(MacAddress mac) => Kind switch
    {
        MacMatchKind.Exact => mac == Address,
        MacMatchKind.Multicast => mac.IsGroup,
        _ => true,
    };

    public static bool TryParse(ReadOnlySpan<char> text, out MacMatch match)
    {
        match = default;
        if (text.Equals("any", StringComparison.OrdinalIgnoreCase))
            match = Any;
        else if (text.Equals("none", StringComparison.OrdinalIgnoreCase))
            match = None;
        else if (text.Equals("multicast", StringComparison.OrdinalIgnoreCase))
            match = Multicast;
        else if (MacAddress.TryParse(text, out var mac))
            match = Exact(mac);
        else
            return false;
        return true;
    }

    public override string ToString() => Kind switch
    {
        MacMatchKind.Exact => Address.ToString(),
        MacMatchKind.Any => "any",
        MacMatchKind.None => "none",
        _ => "multicast",
    };
}
