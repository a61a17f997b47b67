using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Overlay;

/// <summary>One daemon a traced frame reaches, the rules that match there and where it goes next.</summary>
public sealed record TraceHop(string Daemon, string? Ingress, IReadOnlyList<string> Rules, IReadOnlyList<string> Outputs);

/// <summary>The path of a frame through the overlay, as <c>vnet trace</c> prints it.</summary>
public sealed record TraceResult(MacAddress Source, MacAddress Destination, IReadOnlyList<TraceHop> Hops, IReadOnlyList<string> Endings);

/// <summary>
/// Follows a frame through the overlay without sending anything, the way <c>ofproto/trace</c>
/// does for Open vSwitch: at each daemon the daemon's own rules (system rules included) are
/// compiled into the same <see cref="ForwardingTable"/> the data path uses and looked up with the
/// frame's addresses and arrival port; links lead to the next daemon, interfaces end the path.
/// </summary>
public static class OverlayTrace
{
    private const int MaxHops = 32;

    public static TraceResult Trace(OverlayStates overlay, string at, MacAddress source, MacAddress destination)
    {
        var states = overlay.Daemons.ToDictionary(d => d.Name, StringComparer.Ordinal);
        if (!states.TryGetValue(at, out var first))
            throw new DaemonCommandException($"no daemon {at} in the overlay (known: {string.Join(", ", states.Keys)})");

        // A frame from a VM of this daemon arrives on that VM's interface.
        string? ingress = first.Interfaces.FirstOrDefault(i => i.Vms.Contains(source))?.Name is { } iface ? "if:" + iface : null;
        var hops = new List<TraceHop>();
        var endings = new List<string>();
        var queue = new Queue<(string Daemon, string? Ingress, int Depth)>();
        var seen = new HashSet<(string, string?)>();
        queue.Enqueue((at, ingress, 0));
        while (queue.TryDequeue(out var step))
        {
            if (!seen.Add((step.Daemon, step.Ingress)))
            {
                endings.Add($"loop: {step.Daemon} reached again from {step.Ingress}");
                continue;
            }
            if (step.Depth >= MaxHops)
            {
                endings.Add($"hop limit: stopped at {step.Daemon}");
                continue;
            }
            if (!states.TryGetValue(step.Daemon, out var state))
            {
                endings.Add($"{step.Daemon} is not reachable from the Proxy: cannot follow further");
                continue;
            }
            var hop = Step(state, step.Ingress, source, destination, out var next, endings);
            hops.Add(hop);
            foreach (var n in next)
                queue.Enqueue((n.Daemon, n.Ingress, step.Depth + 1));
        }
        return new TraceResult(source, destination, hops, endings);
    }

    private static TraceHop Step(DaemonState state, string? ingress, MacAddress source, MacAddress destination,
        out List<(string Daemon, string Ingress)> next, List<string> endings)
    {
        next = [];
        var ports = new List<string>();
        foreach (var i in state.Interfaces)
            ports.Add("if:" + i.Name);
        foreach (var l in state.Links)
            ports.Add("link:" + l.Peer);
        int Resolve(PortRef p) => ports.IndexOf(p.ToString());

        var rules = new List<Rule>();
        foreach (var r in state.Rules)
            rules.Add(r.ToRule());
        var table = new ForwardingTable(rules, Resolve, _ => new RuleStats());
        var ingressId = ingress is null ? -1 : ports.IndexOf(ingress);
        var result = table.Lookup(source, destination, ingressId);
        var matched = new List<string>();
        var outputs = new List<string>();
        if (result.IsEmpty)
        {
            endings.Add($"dropped at {state.Name}: no rule matches");
            return new TraceHop(state.Name, ingress, matched, outputs);
        }
        var targets = new List<string>();
        var inTree = ingress is null || ingress.StartsWith("if:", StringComparison.Ordinal) ||
            state.Links.Any(l => l.Star && "link:" + l.Peer == ingress);
        for (var k = 0; k < result.Count; k++)
        {
            var rule = result[k].Rule;
            matched.Add($"#{rule.Id} {rule} ({Json.EnumText.Of(rule.Origin)}, priority {rule.Priority})");
            if (rule.Action.IsFlood)
            {
                foreach (var i in state.Interfaces)
                    targets.Add("if:" + i.Name);
                if (inTree)
                {
                    foreach (var l in state.Links.Where(l => l.Star))
                        targets.Add("link:" + l.Peer);
                }
            }
            else
            {
                targets.Add(rule.Action.Port.ToString());
            }
        }
        var endedBefore = endings.Count;
        foreach (var t in targets.Distinct())
        {
            if (t == ingress)
            {
                outputs.Add($"{t}: not sent back where it came from");
                continue;
            }
            if (t.StartsWith("if:", StringComparison.Ordinal))
            {
                var name = t[3..];
                var iface = state.Interfaces.FirstOrDefault(i => i.Name == name);
                if (iface is null)
                {
                    outputs.Add($"{t}: no such interface (dropped)");
                    endings.Add($"dropped at {state.Name}: rule names missing {t}");
                    continue;
                }
                var who = iface.Lan ? "the LAN" : iface.Vms.Contains(destination) ? $"VM {destination}" : "the interface";
                outputs.Add($"{t}: delivered to {who}");
                endings.Add($"delivered at {state.Name} on {t} ({who})");
                continue;
            }
            var peer = t[5..];
            var link = state.Links.FirstOrDefault(l => l.Peer == peer);
            if (link is null)
            {
                outputs.Add($"{t}: no such link (dropped)");
                endings.Add($"dropped at {state.Name}: rule names missing {t}");
                continue;
            }
            if (!link.Up)
            {
                outputs.Add($"{t}: link down (dropped)");
                endings.Add($"dropped at {state.Name}: {t} is down");
                continue;
            }
            outputs.Add($"{t}: to {peer} over {Json.EnumText.Of(link.Transport)}");
            next.Add((peer, "link:" + state.Name));
        }
        // Every match pointed back where the frame came from: the switch drops it (NoRoute), and
        // the trace must say where the frame ended rather than end with no result.
        if (next.Count == 0 && endings.Count == endedBefore)
            endings.Add($"dropped at {state.Name}: the only way on is back to {ingress}, where the frame came from");
        return new TraceHop(state.Name, ingress, matched, outputs);
    }
}
