using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Tests.Overlay;

/// <summary>
/// Daemon states written as tools print them (<c>"udp"</c>, <c>"link:h2"</c>, <c>"02:00:00:00:00:01"</c>),
/// so fixtures read like a dump; every text is parsed as the JSON on the wire parses it.
/// </summary>
internal static class StateText
{
    public static DaemonState Daemon(string name, string role, string? listen, IReadOnlyList<InterfaceState> interfaces,
        IReadOnlyList<LinkState> links, IReadOnlyList<RuleStatus> rules) =>
        new(name, Enum<DaemonRole>(role), listen, interfaces, links, rules);

    public static InterfaceState Interface(string name, string kind, int mtu, string? bridge, bool lan, IReadOnlyList<string> vms) =>
        new(name, Enum<InterfaceKind>(kind), mtu, bridge, lan, vms.Select(MacAddress.Parse).ToList());

    public static LinkState Link(string peer, string transport, bool star, string? dial, bool up, string? remote, string origin = "user") =>
        new(peer, Enum<LinkTransport>(transport), star, dial, up, remote, Enum<RuleOrigin>(origin));

    public static RuleStatus Rule(long id, string src, string dst, string? ingress, string action, string origin, int priority = 0,
        long frames = 0, long bytes = 0) =>
        new(id, Match(src), Match(dst), ingress is null ? null : Port(ingress), Action(action), Enum<RuleOrigin>(origin), priority, frames, bytes);

    public static MacMatch Match(string text) => MacMatch.TryParse(text, out var m) ? m : throw new ArgumentException(text);

    public static PortRef Port(string text) => PortRef.TryParse(text, out var p) ? p.Value : throw new ArgumentException(text);

    public static RuleAction Action(string text) => text == "flood" ? RuleAction.Flood : RuleAction.To(Port(text));

    public static T Enum<T>(string text)
        where T : struct, System.Enum =>
        System.Enum.GetValues<T>().First(v => Json.EnumText.Of(v) == text);
}
