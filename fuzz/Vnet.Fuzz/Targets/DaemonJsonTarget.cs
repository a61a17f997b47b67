using System.Text.Json;
using System.Text.Json.Nodes;
using Vnet.ChangeSets;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Json;
using Vnet.Language;
using Vnet.Links;
using Vnet.Overlay;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// The daemon's records as JSON (<see cref="DaemonJson"/> and the converters of <c>Vnet.Json</c>):
/// a change set as a daemon receives it (<c>apply</c>: the whole list, and change by change as the
/// dispatcher reads it), and a host's <see cref="DaemonState"/> as the Proxy gathers it and turns
/// it into a description, a dump and a trace. Byte 0 chooses: even a change list, odd a state.
/// Bad JSON is refused with a <see cref="JsonException"/>; what the Proxy does with a state may
/// refuse with <see cref="DaemonCommandException"/> or <see cref="ArgumentException"/> (the
/// dispatcher's refusals). Anything else is a finding.
/// </summary>
public sealed class DaemonJsonTarget : FuzzTarget
{
    private static readonly DaemonState Proxy = new("proxy", DaemonRole.Proxy, "192.0.2.1:5500", [], [], []);

    public override string Name => "daemon-json";

    public override string Description => "Vnet.Json via DaemonJson: DaemonChange lists and DaemonState";

    protected override void Run(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
            return;
        var changes = (data[0] & 1) == 0;
        data = data[1..];
        try
        {
            if (changes)
                Changes(data);
            else
                State(data);
        }
        catch (JsonException)
        {
        }
    }

    public override IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        var vm1 = MacAddress.Parse("02:00:00:00:00:01");
        var vm2 = MacAddress.Parse("02:00:00:00:00:02");
        List<DaemonChange> changes =
        [
            new() { Op = ChangeOp.AddInterface, Name = "tap1", Kind = Configuration.InterfaceKind.Tap, Mtu = 9000, Bridge = "br0", Lan = false },
            new() { Op = ChangeOp.AddVm, Name = "tap1", Mac = vm1 },
            new() { Op = ChangeOp.AddRule, Src = MacMatch.Any, Dst = MacMatch.Exact(vm2), In = PortRef.Link("h2"), To = RuleAction.To(PortRef.Link("h3")) },
            new() { Op = ChangeOp.AddRule, Src = MacMatch.Any, Dst = MacMatch.Multicast, To = RuleAction.Flood, Origin = Forwarding.RuleOrigin.Adaptation },
            new() { Op = ChangeOp.AddLink, Peer = "h2", Transport = LinkTransport.Udp, Dial = "192.0.2.12:5500" },
            new() { Op = ChangeOp.AddLink, Peer = "h3", Transport = LinkTransport.Tcp, Dial = "@h3" },
            new() { Op = ChangeOp.RemoveRule, Src = MacMatch.Exact(vm1), Dst = MacMatch.None, To = RuleAction.To(PortRef.Interface("tap0")) },
            new() { Op = ChangeOp.RemoveVm, Name = "tap0", Mac = vm2 },
            new() { Op = ChangeOp.RemoveLink, Peer = "h4" },
            new() { Op = ChangeOp.RemoveInterface, Name = "tap9" },
        ];
        yield return ("changes.json", [(byte)'0', .. JsonSerializer.SerializeToUtf8Bytes(changes, DaemonJson.Default.ListDaemonChange)]);
        yield return ("changes-one.json", [(byte)'0', .. JsonSerializer.SerializeToUtf8Bytes(changes[2..3], DaemonJson.Default.ListDaemonChange)]);
        var state = new DaemonState("h1", DaemonRole.Host, "0.0.0.0:5500",
            [new InterfaceState("tap0", Configuration.InterfaceKind.Tap, 1500, "br0", false, [vm1]),
             new InterfaceState("lan0", Configuration.InterfaceKind.Pcap, 9000, null, false, [])],
            [new LinkState("proxy", LinkTransport.Tcp, true, "192.0.2.1:5500", true, "192.0.2.1:5500"),
             new LinkState("h2", LinkTransport.Udp, false, "192.0.2.12:5501", false, null, Forwarding.RuleOrigin.Adaptation)],
            [new RuleStatus(1, MacMatch.Any, MacMatch.Exact(vm1), null, RuleAction.To(PortRef.Interface("tap0")), Forwarding.RuleOrigin.System, 10, 5, 500),
             new RuleStatus(2, MacMatch.Exact(vm1), MacMatch.None, PortRef.Interface("tap0"), RuleAction.To(PortRef.Link("proxy")), Forwarding.RuleOrigin.User, 3, 0, 0),
             new RuleStatus(3, MacMatch.Any, MacMatch.Multicast, null, RuleAction.Flood, Forwarding.RuleOrigin.User, 2, 0, 0)],
            "v1-3f2a");
        yield return ("state.json", [(byte)'1', .. JsonSerializer.SerializeToUtf8Bytes(state, DaemonJson.Default.DaemonState)]);
    }

    private static void Changes(ReadOnlySpan<byte> data)
    {
        var list = JsonSerializer.Deserialize(data, DaemonJson.Default.ListDaemonChange);
        foreach (var change in list ?? [])
            _ = change?.ToString();

        // As CommandDispatcher.Apply reads them: a node per change.
        if (JsonNode.Parse(data) is JsonArray items)
        {
            foreach (var item in items)
                _ = DaemonJson.FromNode<DaemonChange>(item)?.ToString();
        }
    }

    private static void State(ReadOnlySpan<byte> data)
    {
        // As OverlayService.GatherStates takes a host's answer: a malformed state is left out.
        var state = JsonSerializer.Deserialize(data, DaemonJson.Default.DaemonState);
        if (state is null || state.Malformation() is not null)
            return;
        var states = new OverlayStates([Proxy, state], []);
        try
        {
            var overlay = OverlayModel.FromStates(states);
            _ = OverlayFormatter.Format(overlay);
            _ = DaemonJson.ToNode(states)?.ToJsonString();
            var vm = state.Interfaces is [{ Vms: [var first, ..] }, ..] ? first : MacAddress.Parse("02:00:00:00:00:01");
            _ = OverlayTrace.Trace(states, state.Name, vm, MacAddress.Parse("02:00:00:00:00:02"));
        }
        catch (Exception e) when (e is DaemonCommandException or ArgumentException)
        {
        }
    }
}
