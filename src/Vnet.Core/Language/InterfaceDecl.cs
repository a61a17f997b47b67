using Vnet.Configuration;
using Vnet.Frames;

namespace Vnet.Language;

/// <summary>
/// <c>interface NAME tap|pcap [mtu N] [bridge NAME] [lan] { vm MAC ... }</c>. A null
/// <see cref="Mtu"/> leaves the daemon's default; <see cref="Vms"/> are the VMs known up front.
/// </summary>
public sealed record InterfaceDecl(string Name, InterfaceKind Kind, int? Mtu, string? Bridge, bool Lan, IReadOnlyList<MacAddress> Vms)
{
    public IReadOnlyList<MacAddress> Vms { get; init => field = ReadOnly.Copy(value); } = ReadOnly.Copy(Vms);

    /// <summary>Where the declaration starts; not part of equality (nor are the other positions).</summary>
    public SourceSpan Span { get; init; }

    public SourceSpan MtuAt { get; init; }

    public SourceSpan BridgeAt { get; init; }

    public SourceSpan LanAt { get; init; }

    /// <summary>The position of each <c>vm</c> line, parallel to <see cref="Vms"/> (empty when built in code).</summary>
    public IReadOnlyList<SourceSpan> VmsAt { get; init => field = ReadOnly.Copy(value); } = [];

    /// <summary>Same device settings (kind, MTU, bridge, LAN), whatever the VMs: what a diff can keep.</summary>
    public bool SameSettings(InterfaceDecl other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return Name == other.Name && Kind == other.Kind && Mtu == other.Mtu && Bridge == other.Bridge && Lan == other.Lan;
    }

    public bool Equals(InterfaceDecl? other) => other is not null && SameSettings(other) && ReadOnly.SequenceEqual(Vms, other.Vms);

    public override int GetHashCode() => HashCode.Combine(Name, Kind, Mtu, Bridge, Lan, ReadOnly.Hash(Vms));

    /// <summary>The declaration's first line, without its block: <c>interface tap0 tap mtu 1500 bridge br0</c>.</summary>
    public override string ToString() => OverlayFormatter.Header(this);
}
