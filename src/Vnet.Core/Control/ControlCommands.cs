using System.Net;
using System.Text.Json.Nodes;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Control;

/// <summary>
/// Maps control requests onto the daemon's command API. Arguments are checked here and the whole
/// command is refused with a reason when one is wrong; nothing is half-done.
/// </summary>
public static class ControlCommands
{
    public static IReadOnlyList<string> Names { get; } =
    [
        "status", "link.list", "link.add", "link.del", "link.emulate", "rule.list", "rule.add", "rule.del",
        "interface.list", "interface.add", "interface.del", "vm.list", "state", "apply", "remote", "overlay.state", "overlay.trace", "overlay.dump", "overlay.apply", "overlay.diff", "vttif.matrix", "vttif.topology", "vttif.events", "adapt.status", "adapt.policy", "adapt.plan",
    ];

    public static Task<JsonNode?> Handle(VnetDaemon daemon, ControlRequest request)
    {
        var a = request.Args ?? [];
        return request.Command switch
        {
            "status" => daemon.Run(() => ControlJson.ToNode(daemon.Status())),
            "link.list" => daemon.Run(() => ControlJson.ToNode(daemon.ListLinks())),
            "link.add" => AddLink(daemon, a),
            "link.del" => daemon.Run(() =>
            {
                daemon.RemoveLink(Required(a, "peer"));
                return (JsonNode?)null;
            }),
            "link.emulate" => daemon.Run(() => (JsonNode?)new JsonObject
            {
                ["peer"] = Required(a, "peer"),
                ["emulation"] = daemon.SetEmulation(Required(a, "peer"), Required(a, "link")),
            }),
            "rule.list" => daemon.Run(() => ControlJson.ToNode(daemon.ListRules())),
            "rule.add" => AddRule(daemon, a),
            "rule.del" => daemon.Run(() =>
            {
                daemon.RemoveRule(RequiredLong(a, "id"));
                return (JsonNode?)null;
            }),
            "interface.list" => daemon.Run(() => ControlJson.ToNode(daemon.ListInterfaces())),
            "interface.add" => AddInterface(daemon, a),
            "interface.del" => daemon.Run(() =>
            {
                daemon.RemoveInterface(Required(a, "name"));
                return (JsonNode?)null;
            }),
            "vm.list" => daemon.Run(() => ControlJson.ToNode(daemon.ListVms())),
            "state" => daemon.Run(() => ControlJson.ToNode(daemon.State())),
            "apply" => Apply(daemon, a),
            "remote" => daemon.CallAsync(Required(a, "at"), Required(a, "command"), a["args"]?.AsObject()),
            "overlay.state" => OverlayState(daemon),
            "overlay.trace" => Trace(daemon, a),
            "overlay.dump" => Dump(daemon),
            "adapt.status" => daemon.Run(() => ControlJson.ToNode(daemon.AdaptationStatus())),
            "adapt.policy" => daemon.Run(() => ControlJson.ToNode(daemon.SetAdaptation(ParsePolicy(Required(a, "policy")),
                OptionalLong(a, "budget") is { } b ? (int)b : null))),
            "adapt.plan" => daemon.Run(() => ControlJson.ToNode(daemon.PlacementAdvice(ParseCapacity(Optional(a, "capacity"))))),
            "vttif.matrix" => daemon.Run(() => ControlJson.ToNode(Vttif.Matrix(daemon))),
            "vttif.topology" => Vttif.TopologyAsync(daemon),
            "vttif.events" => daemon.Run(() => ControlJson.ToNode(Vttif.Events(daemon, OptionalLong(a, "since") ?? 0))),
            "overlay.apply" => ApplyOverlay(daemon, a, dryRun: OptionalBool(a, "dryRun") ?? false),
            "overlay.diff" => ApplyOverlay(daemon, a, dryRun: true),
            _ => throw new DaemonCommandException($"unknown command '{request.Command}' (known: {string.Join(", ", Names)})"),
        };
    }

    private static Task<JsonNode?> Apply(VnetDaemon daemon, JsonObject a)
    {
        var changes = ControlJson.FromNode<List<DaemonChange>>(a["changes"])
            ?? throw new DaemonCommandException("missing argument 'changes'");
        return daemon.Run(() => ControlJson.ToNode(daemon.Apply(changes)));
    }

    /// <summary>The Proxy gathers every connected daemon's state (its own included).</summary>
    private static async Task<JsonNode?> OverlayState(VnetDaemon daemon)
    {
        var states = await daemon.GatherStates();
        return ControlJson.ToNode(states);
    }

    private static async Task<JsonNode?> Trace(VnetDaemon daemon, JsonObject a)
    {
        if (!MacAddress.TryParse(Required(a, "src"), out var src))
            throw new DaemonCommandException($"'{a["src"]}' is not a MAC address");
        if (!MacAddress.TryParse(Required(a, "dst"), out var dst))
            throw new DaemonCommandException($"'{a["dst"]}' is not a MAC address");
        var states = await daemon.GatherStates();
        return ControlJson.ToNode(OverlayTrace.Trace(states, Required(a, "at"), src, dst));
    }

    private static async Task<JsonNode?> Dump(VnetDaemon daemon)
    {
        var states = await daemon.GatherStates();
        var text = Language.OverlayFormatter.Format(OverlayModel.FromStates(states));
        // What the dump cannot show is said where the reader looks, as comments the parser skips.
        var missing = string.Concat(states.Unreachable.Select(u => $"# not reachable, left out (with its links and the rules naming them): {u}\n"));
        return new JsonObject { ["text"] = missing + text };
    }

    /// <summary>Parses a description (errors name file, line and column) and diffs or applies it.</summary>
    private static async Task<JsonNode?> ApplyOverlay(VnetDaemon daemon, JsonObject a, bool dryRun)
    {
        var parsed = Language.OverlayParser.Parse(Required(a, "text"), Optional(a, "file") ?? "description");
        if (!parsed.Success)
            throw new DaemonCommandException(string.Join("\n", parsed.Diagnostics));
        var report = await OverlayApplier.ApplyAsync(daemon, parsed.Overlay, dryRun);
        return ControlJson.ToNode(report);
    }

    private static Adaptation.AdaptationPolicy ParsePolicy(string text) => text switch
    {
        "off" => Adaptation.AdaptationPolicy.Off,
        "advise" => Adaptation.AdaptationPolicy.Advise,
        "auto" => Adaptation.AdaptationPolicy.Auto,
        _ => throw new DaemonCommandException($"'{text}' is not off, advise or auto"),
    };

    /// <summary><c>h1=4,h2=4</c>: how many VMs each host may have.</summary>
    private static Dictionary<string, int>? ParseCapacity(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
            return null;
        var map = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || !int.TryParse(part.AsSpan(eq + 1), System.Globalization.CultureInfo.InvariantCulture, out var n) || n < 0)
                throw new DaemonCommandException($"'{part}' is not HOST=COUNT");
            map[part[..eq]] = n;
        }
        return map;
    }

    private static Task<JsonNode?> AddLink(VnetDaemon daemon, JsonObject a)
    {
        var peer = Required(a, "peer");
        var text = Required(a, "address");
        if (!IPEndPoint.TryParse(text, out var address) || address.Port == 0)
            throw new DaemonCommandException($"'{text}' is not an address:port");
        var transport = ParseTransport(Optional(a, "transport") ?? "tcp");
        return daemon.Run(() => ControlJson.ToNode(daemon.AddLink(peer, address, transport)));
    }

    public static LinkTransport ParseTransport(string text) => text switch
    {
        "tcp" => LinkTransport.Tcp,
        "udp" => LinkTransport.Udp,
        _ => throw new DaemonCommandException($"'{text}' is neither tcp nor udp"),
    };

    private static Task<JsonNode?> AddRule(VnetDaemon daemon, JsonObject a)
    {
        var rule = ParseRule(Required(a, "src"), Required(a, "dst"), Optional(a, "in"), Required(a, "to"));
        return daemon.Run(() => ControlJson.ToNode(daemon.AddRule(rule)));
    }

    /// <summary>Builds a user rule from its four textual parts, or refuses with the reason.</summary>
    public static Rule ParseRule(string src, string dst, string? ingress, string to)
    {
        if (!MacMatch.TryParse(src, out var source))
            throw new DaemonCommandException($"source '{src}' is not a MAC address or 'any'");
        if (!MacMatch.TryParse(dst, out var destination))
            throw new DaemonCommandException($"destination '{dst}' is not a MAC address, 'any', 'multicast' or 'none'");
        PortRef? arrival = null;
        if (ingress is not null)
        {
            if (!PortRef.TryParse(ingress, out var p))
                throw new DaemonCommandException($"arrival port '{ingress}' is not link:NAME or if:NAME");
            arrival = p;
        }
        RuleAction action;
        if (to == "flood")
        {
            action = RuleAction.Flood;
        }
        else if (PortRef.TryParse(to, out var target))
        {
            action = RuleAction.To(target.Value);
        }
        else
        {
            throw new DaemonCommandException($"action '{to}' is not link:NAME, if:NAME or flood");
        }
        var rule = new Rule { Source = source, Destination = destination, Ingress = arrival, Action = action };
        if (rule.Validate() is { } problem)
            throw new DaemonCommandException(problem);
        return rule;
    }

    private static Task<JsonNode?> AddInterface(VnetDaemon daemon, JsonObject a)
    {
        var kind = (Optional(a, "kind") ?? "tap") switch
        {
            "tap" => InterfaceKind.Tap,
            "pcap" => InterfaceKind.Pcap,
            var k => throw new DaemonCommandException($"'{k}' is neither tap nor pcap"),
        };
        var config = new InterfaceConfig
        {
            Name = Required(a, "name"),
            Kind = kind,
            Mtu = (int)(OptionalLong(a, "mtu") ?? 1500),
            Bridge = Optional(a, "bridge"),
            Lan = OptionalBool(a, "lan") ?? false,
            Learn = OptionalBool(a, "learn") ?? !(OptionalBool(a, "lan") ?? false),
            Offloads = OptionalBool(a, "offloads") ?? true,
        };
        return daemon.Run(() => ControlJson.ToNode(daemon.AddInterface(config)));
    }

    private static string Required(JsonObject a, string name) =>
        Optional(a, name) ?? throw new DaemonCommandException($"missing argument '{name}'");

    private static string? Optional(JsonObject a, string name) =>
        a.TryGetPropertyValue(name, out var v) && v is JsonValue value && value.TryGetValue<string>(out var s) ? s : null;

    private static long RequiredLong(JsonObject a, string name) =>
        OptionalLong(a, name) ?? throw new DaemonCommandException($"missing or non-numeric argument '{name}'");

    private static long? OptionalLong(JsonObject a, string name)
    {
        if (!a.TryGetPropertyValue(name, out var v) || v is not JsonValue value)
            return null;
        if (value.TryGetValue<long>(out var l))
            return l;
        if (value.TryGetValue<string>(out var s) && long.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out l))
            return l;
        throw new DaemonCommandException($"argument '{name}' must be a number");
    }

    private static bool? OptionalBool(JsonObject a, string name) =>
        a.TryGetPropertyValue(name, out var v) && v is JsonValue value && value.TryGetValue<bool>(out var b) ? b : null;
}
