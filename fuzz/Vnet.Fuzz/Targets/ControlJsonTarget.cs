using System.Text.Json;
using System.Text.Json.Nodes;
using Vnet.ChangeSets;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Json;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// The control protocol's JSON (<see cref="ControlJson"/>): a request as the control socket and
/// CLI sessions over TCP read it, then its arguments as the dispatcher reads them before any
/// handler runs (<see cref="ControlArgs"/>, rules, change sets); and a response as the CLI reads
/// it. Refusals: <see cref="JsonException"/> for the JSON; for the arguments, what
/// <see cref="CommandDispatcher.HandleAsync"/> turns into an error response (a command argument
/// refused, or a lazily read member that is not valid UTF-8); anything else is a finding.
/// </summary>
public sealed class ControlJsonTarget : FuzzTarget
{
    public override string Name => "control-json";

    public override string Description => "Vnet.Control.ControlJson: requests, their arguments, responses";

    public override IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        static byte[] Request(string command, JsonObject? args) =>
            JsonSerializer.SerializeToUtf8Bytes(new ControlRequest(command, args), ControlJson.Default.ControlRequest);
        yield return ("status.json", Request("status", null));
        yield return ("rule-add.json", Request("rule.add", new JsonObject { ["src"] = "any", ["dst"] = "02:00:00:00:00:02", ["in"] = "if:tap0", ["to"] = "link:h2" }));
        yield return ("rule-del.json", Request("rule.del", new JsonObject { ["id"] = 12 }));
        yield return ("link-add.json", Request("link.add", new JsonObject { ["peer"] = "h2", ["address"] = "192.0.2.12:5500", ["transport"] = "udp" }));
        yield return ("interface-add.json", Request("interface.add", new JsonObject { ["name"] = "tap1", ["kind"] = "tap", ["mtu"] = "9000", ["lan"] = false }));
        yield return ("apply.json", Request("apply", new JsonObject
        {
            ["changes"] = new JsonArray(
                new JsonObject { ["op"] = "addLink", ["peer"] = "h2", ["transport"] = "udp", ["dial"] = "192.0.2.12:5500" },
                new JsonObject { ["op"] = "addRule", ["src"] = "any", ["dst"] = "multicast", ["to"] = "flood" }),
            ["ifVersion"] = "v1",
        }));
        yield return ("remote.json", Request("remote", new JsonObject { ["at"] = "h1", ["command"] = "status", ["args"] = new JsonObject() }));
        yield return ("response.json", JsonSerializer.SerializeToUtf8Bytes(new ControlResponse(true, new JsonObject { ["links"] = new JsonArray("h1", "h2") }, null), ControlJson.Default.ControlResponse));
        yield return ("refusal.json", JsonSerializer.SerializeToUtf8Bytes(new ControlResponse(false, null, "no port link:h9 on h1"), ControlJson.Default.ControlResponse));
    }

    protected override void Run(ReadOnlySpan<byte> data)
    {
        try
        {
            Request(data);
        }
        catch (JsonException)
        {
        }
        try
        {
            var response = JsonSerializer.Deserialize(data, ControlJson.Default.ControlResponse);
            _ = response?.Data?.ToJsonString();
        }
        catch (JsonException)
        {
        }
    }

    private static void Request(ReadOnlySpan<byte> data)
    {
        var request = JsonSerializer.Deserialize(data, ControlJson.Default.ControlRequest);
        if (request?.Args is not { } args)
            return;
        _ = request.Command?.Length;
        try
        {
            Arguments(args);
        }
        catch (Exception e) when (Refused(e))
        {
            // JsonObject reads its members lazily: invalid UTF-8 inside the arguments shows up here
            // as InvalidOperationException, which the dispatcher turns into a refusal too.
        }
    }

    /// <summary>As the dispatcher's handlers read arguments before they run anything.</summary>
    private static void Arguments(JsonObject args)
    {
        foreach (var (name, _) in args.ToList())
        {
            Try(() => ControlArgs.Optional(args, name));
            Try(() => ControlArgs.OptionalLong(args, name));
            Try(() => ControlArgs.OptionalBool(args, name));
        }
        Try(() => ControlArgs.ParseRule(ControlArgs.Required(args, "src"), ControlArgs.Required(args, "dst"),
            ControlArgs.Optional(args, "in"), ControlArgs.Required(args, "to")));
        Try(() => ControlArgs.ParseTransport(ControlArgs.Required(args, "transport")));
        if (args["changes"] is JsonArray items)
        {
            foreach (var item in items)
                Try(() => DaemonJson.FromNode<DaemonChange>(item));
        }
    }

    /// <summary>What <see cref="CommandDispatcher.HandleAsync"/> answers as a refusal rather than letting through.</summary>
    private static bool Refused(Exception e) =>
        e is DaemonCommandException or JsonException or ArgumentException or FormatException or InvalidOperationException or ObjectDisposedException;

    private static void Try<T>(Func<T> read)
    {
        try
        {
            _ = read();
        }
        catch (Exception e) when (Refused(e))
        {
        }
    }
}
