using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Vnet.Adaptation;
using Vnet.ChangeSets;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Json;
using Vnet.Language;
using Vnet.Links;
using Vnet.Overlay;
using Vnet.Peers;
using Vnet.Vms;
using Vnet.Vms.Providers;

namespace Vnet.Control;

/// <summary>
/// The one way commands reach a daemon: verb → handler. The control socket, CLI sessions over
/// TCP and the Proxy's requests to hosts all come through <see cref="HandleAsync"/>, which is also
/// the one place where refusals become error responses. Arguments are checked here and a command
/// with a wrong one is refused whole; handlers run the daemon's services on its control loop.
/// </summary>
public sealed class CommandDispatcher : ICommandHandler
{
    private delegate Task<JsonNode?> Handler(JsonObject args);

    private readonly VnetDaemon _daemon;
    private readonly Dictionary<string, Handler> _verbs;

    public CommandDispatcher(VnetDaemon daemon)
    {
        _daemon = daemon;
        var d = daemon;
        _verbs = new Dictionary<string, Handler>(StringComparer.Ordinal)
        {
            ["status"] = _ => Run(d.Status),
            ["state"] = _ => Run(d.State),
            ["link.list"] = _ => Run(d.LinkCommands.List),
            ["link.add"] = AddLink,
            ["link.del"] = a => Do(() => d.LinkCommands.Remove(ControlArgs.Required(a, "peer"))),
            ["link.emulate"] = a => d.Run(() => (JsonNode?)new JsonObject
            {
                ["peer"] = ControlArgs.Required(a, "peer"),
                ["emulation"] = d.LinkCommands.SetEmulation(ControlArgs.Required(a, "peer"), ControlArgs.Required(a, "link")),
            }),
            ["rule.list"] = _ => Run(d.RuleCommands.List),
            ["rule.add"] = a =>
            {
                var rule = ControlArgs.ParseRule(ControlArgs.Required(a, "src"), ControlArgs.Required(a, "dst"), ControlArgs.Optional(a, "in"), ControlArgs.Required(a, "to"));
                return Run(() => d.RuleCommands.Add(rule));
            },
            ["rule.del"] = a => Do(() => d.RuleCommands.Remove(ControlArgs.RequiredLong(a, "id"))),
            ["interface.list"] = _ => Run(() => d.Interfaces.List(d.Vms.CountOn)),
            ["interface.add"] = AddInterface,
            ["interface.del"] = a => Do(() =>
            {
                var name = ControlArgs.Required(a, "name");
                if (d.VmHost?.CloseRefusal(name) is { } why)
                    throw new DaemonCommandException(why);
                d.Interfaces.Remove(name);
            }),
            ["vm.list"] = _ => Run(d.VmList),
            ["vm.sites"] = async _ => await Proxy(d.Inventory).SitesAsync().ConfigureAwait(false),
            ["vm.order"] = a =>
            {
                var size = VmNames.ParseSize(ControlArgs.Optional(a, "size") ?? "small");
                var name = ControlArgs.Optional(a, "name");
                if (name is not null)
                    VmNames.Check(name);
                return Wrap(Proxy(d.Inventory).OrderAsync(ControlArgs.Required(a, "site"), size, name));
            },
            ["vm.move"] = a => Wrap(Proxy(d.Inventory).MoveAsync(VmNames.Check(ControlArgs.Required(a, "name")), ControlArgs.Required(a, "to"))),
            ["vm.remove"] = a => Wrap(Proxy(d.Inventory).RemoveAsync(VmNames.Check(ControlArgs.Required(a, "name")))),
            // Host side: the Proxy calls these over the star link.
            ["vm.host"] = async _ =>
            {
                // Not before the VMs left by a crash are taken in: the Proxy would forget them.
                await Host(d.VmHost).Recovery.ConfigureAwait(false);
                return await d.Run(() => (JsonNode?)Host(d.VmHost).Describe()).ConfigureAwait(false);
            },
            ["vm.create"] = a => Wrap(Host(d.VmHost).CreateAsync(VmArgs.Spec(a))),
            ["vm.destroy"] = async a =>
            {
                var name = VmNames.Check(ControlArgs.Required(a, "name"));
                // "lost": the Proxy lost track of it in a move; it names the whole VM (name, MAC, size).
                if (ControlArgs.OptionalBool(a, "lost") == true)
                    await Host(d.VmHost).DestroyLostAsync(VmArgs.Spec(a)).ConfigureAwait(false);
                else
                    await Host(d.VmHost).DestroyAsync(name).ConfigureAwait(false);
                return new JsonObject { ["name"] = name };
            },
            ["vm.prepare"] = async a => VmArgs.ToNode(await Host(d.VmHost).PrepareAsync(VmArgs.Spec(a)).ConfigureAwait(false)),
            ["vm.release"] = async a => VmArgs.ToNode(await Host(d.VmHost).ReleaseAsync(
                VmNames.Check(ControlArgs.Required(a, "name")), VmArgs.Incoming(a["incoming"] as JsonObject)).ConfigureAwait(false)),
            ["vm.adopt"] = a => Wrap(Host(d.VmHost).AdoptAsync(VmNames.Check(ControlArgs.Required(a, "name")),
                VmArgs.Handover(a["handover"] as JsonObject ?? throw new DaemonCommandException("missing argument 'handover'")))),
            ["vm.abort"] = async a =>
            {
                var name = VmNames.Check(ControlArgs.Required(a, "name"));
                await Host(d.VmHost).AbortAsync(name).ConfigureAwait(false);
                return new JsonObject { ["name"] = name };
            },
            ["host.list"] = _ => d.Run(() => (JsonNode?)new JsonArray([.. d.Keys.List().Select(k => (JsonNode)new JsonObject { ["name"] = k.Name, ["publicKey"] = k.Key.ToString() })])),
            ["host.admit"] = a => d.Run(() =>
            {
                var k = d.Keys.AdmitHost(ControlArgs.Required(a, "name"), ControlArgs.Required(a, "publicKey"));
                return (JsonNode?)new JsonObject { ["name"] = k.Name, ["publicKey"] = k.Key.ToString() };
            }),
            ["host.revoke"] = a => Do(() => d.Keys.RevokeHost(ControlArgs.Required(a, "name"))),
            ["reload"] = _ => d.Run(() =>
            {
                try
                {
                    var fresh = d.Reload();
                    return (JsonNode?)new JsonObject { ["keys"] = d.Keys.List().Count, ["administrators"] = fresh.AdminKeys.Count };
                }
                catch (ConfigException e)
                {
                    throw new DaemonCommandException($"reload refused, nothing changed: {e.Message}");
                }
            }),
            ["pubkey"] = _ => Task.FromResult((JsonNode?)JsonValue.Create(d.Config.Identity.Public.ToString())),
            ["directory"] = _ => Run(d.Vms.Status),
            ["apply"] = Apply,
            ["remote"] = a => d.Peers.CallAsync(ControlArgs.Required(a, "at"), ControlArgs.Required(a, "command"), a["args"] as JsonObject),
            ["overlay.state"] = async _ => DaemonJson.ToNode(await d.Overlay.GatherStates().ConfigureAwait(false)),
            ["overlay.trace"] = Trace,
            ["overlay.dump"] = _ => Dump(),
            ["overlay.apply"] = a => ApplyOverlay(a, dryRun: ControlArgs.OptionalBool(a, "dryRun") ?? false),
            ["overlay.diff"] = a => ApplyOverlay(a, dryRun: true),
            ["vttif.matrix"] = _ => Run(() => VttifCommands.Matrix(d)),
            ["vttif.topology"] = _ => VttifCommands.TopologyAsync(d),
            ["vttif.events"] = a => Run(() => VttifCommands.Events(d, ControlArgs.OptionalLong(a, "since") ?? 0)),
            ["adapt.status"] = _ => Run(d.Adaptation.Status),
            ["adapt.policy"] = a =>
            {
                var policy = ParsePolicy(ControlArgs.Required(a, "policy"));
                var budget = ControlArgs.OptionalLong(a, "budget") is { } b ? (int)b : (int?)null;
                return Run(() => d.Adaptation.SetPolicy(policy, budget));
            },
            ["adapt.plan"] = a =>
            {
                var capacity = ParseCapacity(ControlArgs.Optional(a, "capacity"));
                return Run(() => d.Adaptation.PlacementAdvice(capacity));
            },
        };
    }

    /// <summary>Every command this daemon knows.</summary>
    public IReadOnlyCollection<string> Names => _verbs.Keys;

    /// <summary>Runs a command; a refusal or a malformed argument comes back as an error, never as an exception.</summary>
    public async Task<CommandResult> HandleAsync(string command, JsonObject? args)
    {
        if (!_verbs.TryGetValue(command, out var handler))
            return CommandResult.Failure($"unknown command '{command}' (known: {string.Join(", ", _verbs.Keys.Order(StringComparer.Ordinal))})");
        try
        {
            return CommandResult.Success(await handler(args ?? []).ConfigureAwait(false));
        }
        catch (JsonException e)
        {
            return CommandResult.Failure($"malformed arguments: {e.Message}");
        }
        catch (Exception e) when (e is DaemonCommandException or ArgumentException or FormatException or InvalidOperationException or ObjectDisposedException)
        {
            return CommandResult.Failure(e.Message);
        }
    }

    private Task<JsonNode?> Run<T>(Func<T> command) => Wrap(_daemon.Run(command));

    private static async Task<JsonNode?> Wrap(Task<JsonObject> result) => await result.ConfigureAwait(false);

    private VmInventory Proxy(VmInventory? inventory) =>
        inventory ?? throw new DaemonCommandException($"{_daemon.Name} is a host: VMs are ordered, moved and removed at the Proxy");

    private VmHostService Host(VmHostService? host) =>
        host ?? throw new DaemonCommandException($"{_daemon.Name} is the Proxy: it runs no VMs itself");

    private static async Task<JsonNode?> Wrap<T>(Task<T> result) => DaemonJson.ToNode(await result.ConfigureAwait(false));

    private Task<JsonNode?> Do(Action command) => _daemon.Run(() =>
    {
        command();
        return (JsonNode?)null;
    });

    private Task<JsonNode?> AddLink(JsonObject a)
    {
        var peer = ControlArgs.Required(a, "peer");
        var text = ControlArgs.Required(a, "address");
        if (!IPEndPoint.TryParse(text, out var address) || address.Port == 0)
            throw new DaemonCommandException($"'{text}' is not an address:port");
        var transport = ControlArgs.ParseTransport(ControlArgs.Optional(a, "transport") ?? "tcp");
        var streams = (int)Math.Clamp(ControlArgs.OptionalLong(a, "streams") ?? 1, int.MinValue, int.MaxValue);
        return Run(() =>
        {
            _daemon.LinkCommands.Add(peer, address, transport, streams: streams);
            return _daemon.LinkCommands.List().First(l => l.Peer == peer);
        });
    }

    private Task<JsonNode?> AddInterface(JsonObject a)
    {
        var kind = (ControlArgs.Optional(a, "kind") ?? "tap") switch
        {
            "tap" => InterfaceKind.Tap,
            "pcap" => InterfaceKind.Pcap,
            var k => throw new DaemonCommandException($"'{k}' is neither tap nor pcap"),
        };
        var lan = ControlArgs.OptionalBool(a, "lan") ?? false;
        var config = new InterfaceConfig
        {
            Name = ControlArgs.Required(a, "name"),
            Kind = kind,
            Mtu = (int)(ControlArgs.OptionalLong(a, "mtu") ?? 1500),
            Bridge = ControlArgs.Optional(a, "bridge"),
            Lan = lan,
            Learn = ControlArgs.OptionalBool(a, "learn") ?? !lan,
            Offloads = ControlArgs.OptionalBool(a, "offloads") ?? true,
            Queues = (int)Math.Clamp(ControlArgs.OptionalLong(a, "queues") ?? 1, int.MinValue, int.MaxValue),
        };
        return Run(() =>
        {
            _daemon.Interfaces.Add(config);
            return _daemon.Interfaces.List(_daemon.Vms.CountOn).First(i => i.Name == config.Name);
        });
    }

    /// <summary>
    /// A change set, read change by change so that a malformed one is refused as a change set
    /// refuses anything: with its number and the reason, and nothing changed.
    /// </summary>
    private Task<JsonNode?> Apply(JsonObject a)
    {
        if (a["changes"] is not JsonArray items)
            throw new DaemonCommandException("missing argument 'changes'");
        var changes = new List<DaemonChange>(items.Count);
        for (var i = 0; i < items.Count; i++)
        {
            try
            {
                changes.Add(DaemonJson.FromNode<DaemonChange>(items[i]) ?? throw new JsonException("empty change"));
            }
            catch (JsonException e)
            {
                var refused = new ApplyResult(false, 0, $"{_daemon.Name} refused change {i + 1}: {e.Message}; nothing changed");
                return Task.FromResult(DaemonJson.ToNode(refused));
            }
        }
        var ifVersion = ControlArgs.Optional(a, "ifVersion");
        return Run(() => _daemon.ChangeSets.Apply(changes, ifVersion));
    }

    private async Task<JsonNode?> Trace(JsonObject a)
    {
        if (!MacAddress.TryParse(ControlArgs.Required(a, "src"), out var src))
            throw new DaemonCommandException($"'{a["src"]}' is not a MAC address");
        // Every switch drops such a frame as malformed before any rule (VirtualSwitch): no trace to show.
        if (src.IsGroup)
            throw new DaemonCommandException($"'{a["src"]}' is a group (multicast) address: no frame has it as its source, every daemon drops such a frame as malformed");
        if (!MacAddress.TryParse(ControlArgs.Required(a, "dst"), out var dst))
            throw new DaemonCommandException($"'{a["dst"]}' is not a MAC address");
        var states = await _daemon.Overlay.GatherStates().ConfigureAwait(false);
        return DaemonJson.ToNode(OverlayTrace.Trace(states, ControlArgs.Required(a, "at"), src, dst));
    }

    private async Task<JsonNode?> Dump()
    {
        var states = await _daemon.Overlay.GatherStates().ConfigureAwait(false);
        var text = OverlayFormatter.Format(OverlayModel.FromStates(states));
        // What the dump cannot show is said where the reader looks, as comments the parser skips.
        var missing = string.Concat(states.Unreachable.Select(u => $"# not reachable, left out (with its links and the rules naming them): {u}\n"));
        return new JsonObject { ["text"] = missing + text };
    }

    /// <summary>Parses a description (errors name file, line and column) and diffs or applies it.</summary>
    private async Task<JsonNode?> ApplyOverlay(JsonObject a, bool dryRun)
    {
        var parsed = OverlayParser.Parse(ControlArgs.Required(a, "text"), ControlArgs.Optional(a, "file") ?? "description");
        if (!parsed.Success)
            throw new DaemonCommandException(string.Join("\n", parsed.Diagnostics));
        var report = await OverlayApplier.ApplyAsync(_daemon.Overlay, parsed.Overlay, dryRun).ConfigureAwait(false);
        return DaemonJson.ToNode(report);
    }

    private static AdaptationPolicy ParsePolicy(string text) => text switch
    {
        "off" => AdaptationPolicy.Off,
        "advise" => AdaptationPolicy.Advise,
        "auto" => AdaptationPolicy.Auto,
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
}

/// <summary>The arguments of the host-side VM verbs, as the Proxy's <see cref="VmInventory"/> writes them.</summary>
public static class VmArgs
{
    /// <summary><c>{ "name", "mac", "size" }</c> → a spec, each part checked.</summary>
    public static VmSpec Spec(JsonObject a)
    {
        var name = VmNames.Check(ControlArgs.Required(a, "name"));
        var text = ControlArgs.Required(a, "mac");
        if (!MacAddress.TryParse(text, out var mac) || mac.IsGroup || mac == MacAddress.Zero)
            throw new DaemonCommandException($"'{text}' is not a unicast MAC address");
        return new VmSpec(name, mac, VmNames.ParseSize(ControlArgs.Optional(a, "size") ?? "small"));
    }

    public static JsonObject ToNode(VmIncoming incoming) => new() { ["address"] = incoming.Address, ["deviceReady"] = incoming.DeviceReady };

    public static VmIncoming Incoming(JsonObject? a) =>
        a is null ? new VmIncoming(null, false) : new VmIncoming(ControlArgs.Optional(a, "address"), ControlArgs.OptionalBool(a, "deviceReady") ?? false);

    public static JsonObject ToNode(VmHandover h) => new()
    {
        ["mode"] = VmNames.Text(h.Mode),
        ["addresses"] = new JsonArray([.. h.Addresses.Select(x => (JsonNode)JsonValue.Create(x))]),
        ["gateway"] = h.Gateway,
    };

    /// <summary>A handover from the VM's old host: a bounded list of address/prefix texts, each checked.</summary>
    public static VmHandover Handover(JsonObject a)
    {
        var mode = VmNames.ParseMode(ControlArgs.Required(a, "mode"));
        var addresses = new List<string>();
        if (a["addresses"] is JsonArray list)
        {
            if (list.Count > 16)
                throw new DaemonCommandException("a handover carries at most 16 addresses");
            foreach (var item in list)
            {
                var text = item is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
                if (text is null || !VmNames.IsIpv4WithPrefix(text))
                    throw new DaemonCommandException($"'{item}' is not an address/prefix");
                addresses.Add(text);
            }
        }
        var gateway = ControlArgs.Optional(a, "gateway");
        if (gateway is not null && !IPAddress.TryParse(gateway, out _))
            throw new DaemonCommandException($"gateway '{gateway}' is not an address");
        return new VmHandover(mode, addresses, gateway);
    }
}

/// <summary>Reading command arguments: each missing or malformed one is refused with its name.</summary>
public static class ControlArgs
{
    public static string Required(JsonObject a, string name) =>
        Optional(a, name) ?? throw new DaemonCommandException($"missing argument '{name}'");

    public static string? Optional(JsonObject a, string name) =>
        a.TryGetPropertyValue(name, out var v) && v is JsonValue value && value.TryGetValue<string>(out var s) ? s : null;

    public static long RequiredLong(JsonObject a, string name) =>
        OptionalLong(a, name) ?? throw new DaemonCommandException($"missing or non-numeric argument '{name}'");

    public static long? OptionalLong(JsonObject a, string name)
    {
        if (!a.TryGetPropertyValue(name, out var v) || v is not JsonValue value)
            return null;
        if (value.TryGetValue<long>(out var l))
            return l;
        if (value.TryGetValue<string>(out var s) && long.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out l))
            return l;
        throw new DaemonCommandException($"argument '{name}' must be a number");
    }

    public static bool? OptionalBool(JsonObject a, string name) =>
        a.TryGetPropertyValue(name, out var v) && v is JsonValue value && value.TryGetValue<bool>(out var b) ? b : null;

    public static LinkTransport ParseTransport(string text) => text switch
    {
        "tcp" => LinkTransport.Tcp,
        "udp" => LinkTransport.Udp,
        _ => throw new DaemonCommandException($"'{text}' is neither tcp nor udp"),
    };

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
}
