using System.Text.Json.Serialization;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.ChangeSets;

/// <summary>What one change of a change set does.</summary>
public enum ChangeOp
{
    AddInterface,
    RemoveInterface,
    AddVm,
    RemoveVm,
    AddRule,
    RemoveRule,
    AddLink,
    RemoveLink,
}

/// <summary>
/// One change to a daemon, as the Proxy sends it in a change set (and as the local API takes it).
/// Flat on purpose: it travels as JSON (each field as the CLI writes it: <c>"udp"</c>,
/// <c>"02:00:00:00:00:05"</c>, <c>"link:h2"</c>) and is checked field by field before anything
/// changes.
/// <list type="bullet">
/// <item><c>addInterface</c>: <c>Name</c>, <c>Kind</c>, <c>Mtu</c>, <c>Bridge</c>, <c>Lan</c>.</item>
/// <item><c>removeInterface</c>: <c>Name</c>.</item>
/// <item><c>addVm</c> / <c>removeVm</c>: <c>Name</c> (the interface), <c>Mac</c>.</item>
/// <item><c>addRule</c> / <c>removeRule</c>: <c>Src</c>, <c>Dst</c>, <c>In</c>, <c>To</c> (user or adaptation rules, by content).</item>
/// <item><c>addLink</c>: <c>Peer</c>, <c>Transport</c>, <c>Dial</c> (null: the peer dials in).</item>
/// <item><c>removeLink</c>: <c>Peer</c>.</item>
/// </list>
/// </summary>
public sealed record DaemonChange
{
    public required ChangeOp Op { get; init; }

    public string? Name { get; init; }

    public InterfaceKind? Kind { get; init; }

    public int? Mtu { get; init; }

    public string? Bridge { get; init; }

    public bool? Lan { get; init; }

    public MacAddress? Mac { get; init; }

    public MacMatch? Src { get; init; }

    public MacMatch? Dst { get; init; }

    public PortRef? In { get; init; }

    public RuleAction? To { get; init; }

    public string? Peer { get; init; }

    public LinkTransport? Transport { get; init; }

    /// <summary>A link this daemon dials: its parallel connections (TCP, 1 to 8; null: 1).</summary>
    public int? Streams { get; init; }

    /// <summary>Where to dial the peer (address:port); adaptation writes <c>@name</c> until it knows the address.</summary>
    public string? Dial { get; init; }

    /// <summary>Rules and links: who asks for them (<c>user</c>, the default, or <c>adaptation</c>).</summary>
    public RuleOrigin? Origin { get; init; }

    public override string ToString() => Op switch
    {
        ChangeOp.AddInterface => $"add interface {Name} {Text(Kind ?? InterfaceKind.Tap)}",
        ChangeOp.RemoveInterface => $"remove interface {Name}",
        ChangeOp.AddVm => $"add vm {Mac} on {Name}",
        ChangeOp.RemoveVm => $"remove vm {Mac} from {Name}",
        ChangeOp.AddRule => $"add rule {RuleText}",
        ChangeOp.RemoveRule => $"remove rule {RuleText}",
        ChangeOp.AddLink => Dial is null
            ? $"add link {Peer} ({Text(Transport ?? LinkTransport.Tcp)}, dialed by {Peer})"
            : $"add link {Peer} ({Text(Transport ?? LinkTransport.Tcp)}, dials {Dial}{(Streams > 1 ? $", {Streams} streams" : "")})",
        ChangeOp.RemoveLink => $"remove link {Peer}",
        _ => Op.ToString(),
    };

    private string RuleText => $"{Src} -> {Dst}{(In is null ? "" : $" from {In}")} {(To is { IsFlood: true } ? "flood" : $"to {To}")}";

    private static string Text<TEnum>(TEnum value)
        where TEnum : struct, Enum => Json.EnumText.Of(value);
}

/// <summary>What a daemon reports after a change set: applied whole, or refused whole.</summary>
public sealed record ApplyResult(bool Applied, int Changes, string? Error)
{
    [JsonIgnore]
    public bool Failed => !Applied;
}
