using System.Text.Json.Serialization;

namespace Vnet.Daemon;

/// <summary>
/// One change to a daemon, as the Proxy sends it in a change set (and as the local API takes it).
/// Flat on purpose: it travels as JSON and is checked field by field before anything changes.
/// <list type="bullet">
/// <item><c>addInterface</c>: <c>Name</c>, <c>Kind</c>, <c>Mtu</c>, <c>Bridge</c>, <c>Lan</c>.</item>
/// <item><c>removeInterface</c>: <c>Name</c>.</item>
/// <item><c>addVm</c> / <c>removeVm</c>: <c>Name</c> (the interface), <c>Mac</c>.</item>
/// <item><c>addRule</c> / <c>removeRule</c>: <c>Src</c>, <c>Dst</c>, <c>In</c>, <c>To</c> (user rules, by content).</item>
/// <item><c>addLink</c>: <c>Peer</c>, <c>Transport</c>, <c>Dial</c> (null: the peer dials in).</item>
/// <item><c>removeLink</c>: <c>Peer</c>.</item>
/// </list>
/// </summary>
public sealed record DaemonChange
{
    public const string AddInterface = "addInterface";
    public const string RemoveInterface = "removeInterface";
    public const string AddVm = "addVm";
    public const string RemoveVm = "removeVm";
    public const string AddRule = "addRule";
    public const string RemoveRule = "removeRule";
    public const string AddLink = "addLink";
    public const string RemoveLink = "removeLink";

    public required string Op { get; init; }

    public string? Name { get; init; }

    public string? Kind { get; init; }

    public int? Mtu { get; init; }

    public string? Bridge { get; init; }

    public bool? Lan { get; init; }

    public string? Mac { get; init; }

    public string? Src { get; init; }

    public string? Dst { get; init; }

    public string? In { get; init; }

    public string? To { get; init; }

    public string? Peer { get; init; }

    public string? Transport { get; init; }

    public string? Dial { get; init; }

    /// <summary>Rules and links: who asks for them (<c>user</c>, the default, or <c>adaptation</c>).</summary>
    public string? Origin { get; init; }

    public override string ToString() => Op switch
    {
        AddInterface => $"add interface {Name} {Kind}",
        RemoveInterface => $"remove interface {Name}",
        AddVm => $"add vm {Mac} on {Name}",
        RemoveVm => $"remove vm {Mac} from {Name}",
        AddRule => $"add rule {Src} -> {Dst}{(In is null ? "" : $" from {In}")} {(To == "flood" ? "flood" : $"to {To}")}",
        RemoveRule => $"remove rule {Src} -> {Dst}{(In is null ? "" : $" from {In}")} {(To == "flood" ? "flood" : $"to {To}")}",
        AddLink => Dial is null ? $"add link {Peer} ({Transport}, dialed by {Peer})" : $"add link {Peer} ({Transport}, dials {Dial})",
        RemoveLink => $"remove link {Peer}",
        _ => Op,
    };
}

/// <summary>What a daemon reports after a change set: applied whole, or refused whole.</summary>
public sealed record ApplyResult(bool Applied, int Changes, string? Error)
{
    [JsonIgnore]
    public bool Failed => !Applied;
}
