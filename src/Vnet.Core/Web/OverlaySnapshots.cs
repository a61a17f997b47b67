using System.Diagnostics;
using System.Text.Json.Nodes;
using Vnet.Peers;

namespace Vnet.Web;

/// <summary>
/// The web front's picture of the overlay (<c>GET /api/state</c>, and each server-sent event),
/// gathered with the commands the CLI runs, through the same dispatcher: <c>overlay.state</c>
/// (daemons, interfaces, links, rules with their counters), <c>link.list</c> at every daemon (at
/// hosts through <c>remote</c>: RTT and byte counters), <c>vm.list</c>, <c>vttif.matrix</c>,
/// <c>vttif.topology</c>, <c>vttif.events</c> and <c>adapt.status</c>. A part that fails is left
/// out and its error said under <c>errors</c>; the rest is still served. A snapshot younger than
/// <see cref="Fresh"/> is served again, and one is gathered at a time, so any number of pages
/// cost the daemons one gathering a second. Link rates are the byte counters' growth between two
/// gatherings.
/// </summary>
// A SemaphoreSlim holds no handle unless its AvailableWaitHandle is asked for (as DaemonMetrics' gate).
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001:Types that own disposable fields should be disposable", Justification = "see above")]
internal sealed class OverlaySnapshots(ICommandHandler commands, string self)
{
    /// <summary>How old a snapshot may be and still be served.</summary>
    public static readonly TimeSpan Fresh = TimeSpan.FromMilliseconds(900);

    /// <summary>How long one command of a gathering may take (a host that does not answer).</summary>
    public static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Topology changes shown, the newest.</summary>
    public const int RecentEvents = 20;

    private readonly SemaphoreSlim _oneAtATime = new(1, 1);

    // Byte counters of each link end at the last gathering, for its rate: one entry per link end
    // seen last time (ends that went are dropped), so it stays as small as the overlay.
    private Dictionary<string, (long Bytes, long At)> _counters = new(StringComparer.Ordinal);
    private string? _last;
    private long _lastAt;

    /// <summary>The newest snapshot as JSON text, gathered now unless one is fresh.</summary>
    public async Task<string> GetAsync(CancellationToken cancellationToken)
    {
        await _oneAtATime.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_last is not null && Stopwatch.GetElapsedTime(_lastAt) < Fresh)
                return _last;
            var snapshot = (await GatherAsync().ConfigureAwait(false)).ToJsonString();
            _last = snapshot;
            _lastAt = Stopwatch.GetTimestamp();
            return snapshot;
        }
        finally
        {
            _oneAtATime.Release();
        }
    }

    private async Task<JsonObject> GatherAsync()
    {
        var errors = new JsonObject();
        async Task<JsonNode?> Call(string part, string command, JsonObject? args = null)
        {
            var result = await Run(command, args).ConfigureAwait(false);
            if (result.Ok)
                return result.Data;
            errors[part] = result.Error;
            return null;
        }
        var stateTask = Call("overlay.state", "overlay.state");
        var vmsTask = Call("vm.list", "vm.list");
        var matrixTask = Call("vttif.matrix", "vttif.matrix");
        var topologyTask = Call("vttif.topology", "vttif.topology");
        var eventsTask = Call("vttif.events", "vttif.events");
        var adaptTask = Call("adapt.status", "adapt.status");
        var state = await stateTask.ConfigureAwait(false) as JsonObject;

        var daemons = new JsonArray();
        var names = new List<string>();
        if (state?["daemons"] is JsonArray states)
        {
            foreach (var d in states.OfType<JsonObject>())
            {
                if (d["name"]?.GetValue<string>() is not { } name)
                    continue;
                names.Add(name);
                var vms = new JsonArray();
                if (d["interfaces"] is JsonArray interfaces)
                {
                    foreach (var i in interfaces.OfType<JsonObject>())
                    {
                        if (i["vms"] is JsonArray macs)
                        {
                            foreach (var mac in macs)
                                vms.Add(mac?.DeepClone());
                        }
                    }
                }
                daemons.Add(new JsonObject
                {
                    ["name"] = name,
                    ["role"] = d["role"]?.DeepClone(),
                    ["listen"] = d["listen"]?.DeepClone(),
                    ["interfaces"] = d["interfaces"]?.DeepClone(),
                    ["vms"] = vms,
                    ["rules"] = d["rules"]?.DeepClone(),
                });
            }
        }

        // Every daemon's own view of its links: the RTT and counters overlay.state does not carry.
        var linkLists = await Task.WhenAll(names.Select(n => n == self
            ? Call($"link.list@{n}", "link.list")
            : Call($"link.list@{n}", "remote", new JsonObject { ["at"] = n, ["command"] = "link.list" }))).ConfigureAwait(false);
        var links = Links(names, linkLists, state);

        var events = await eventsTask.ConfigureAwait(false) as JsonArray;
        var recent = new JsonArray();
        if (events is not null)
        {
            for (var i = Math.Max(0, events.Count - RecentEvents); i < events.Count; i++)
                recent.Add(events[i]?.DeepClone());
        }
        return new JsonObject
        {
            ["at"] = DateTimeOffset.UtcNow.ToString("O", System.Globalization.CultureInfo.InvariantCulture),
            ["self"] = self,
            ["daemons"] = daemons,
            ["unreachable"] = state?["unreachable"]?.DeepClone() ?? new JsonArray(),
            ["links"] = links,
            ["vms"] = await vmsTask.ConfigureAwait(false) ?? new JsonArray(),
            ["matrix"] = await matrixTask.ConfigureAwait(false),
            ["topology"] = await topologyTask.ConfigureAwait(false),
            ["topologyEvents"] = recent,
            ["adaptation"] = await adaptTask.ConfigureAwait(false),
            ["errors"] = errors,
        };
    }

    private async Task<CommandResult> Run(string command, JsonObject? args)
    {
        try
        {
            return await commands.HandleAsync(command, args).WaitAsync(CommandTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return CommandResult.Failure($"no answer within {CommandTimeout.TotalSeconds:0} s");
        }
    }

    /// <summary>
    /// One entry per link (both ends report it; named by its two daemons in order, <c>h1-proxy</c>):
    /// transport, star or added and by whom, up, RTT, and its rate from the first end that has counters.
    /// </summary>
    private JsonArray Links(List<string> names, JsonNode?[] linkLists, JsonObject? state)
    {
        var now = Stopwatch.GetTimestamp();
        var counters = new Dictionary<string, (long Bytes, long At)>(StringComparer.Ordinal);
        var byId = new Dictionary<string, JsonObject>(StringComparer.Ordinal);
        var order = new List<string>();
        for (var n = 0; n < names.Count; n++)
        {
            var daemon = names[n];
            // Without the daemon's link.list (a host that did not answer), its links as overlay.state has them.
            var rows = linkLists[n] as JsonArray ?? StateLinks(state, daemon);
            foreach (var row in rows.OfType<JsonObject>())
            {
                if (row["peer"]?.GetValue<string>() is not { } peer)
                    continue;
                var (a, b) = string.CompareOrdinal(daemon, peer) <= 0 ? (daemon, peer) : (peer, daemon);
                var id = $"{a}-{b}";
                var star = row["star"]?.GetValue<bool>() ?? false;
                var origin = row["origin"]?.GetValue<string>() ?? "user";
                var up = row["up"]?.GetValue<bool>() ?? false;
                double? rate = null;
                if (row["txBytes"] is JsonValue tx && row["rxBytes"] is JsonValue rx)
                {
                    var bytes = tx.GetValue<long>() + rx.GetValue<long>();
                    var end = $"{daemon}|{peer}";
                    counters[end] = (bytes, now);
                    if (_counters.TryGetValue(end, out var before) && bytes >= before.Bytes && now > before.At)
                        rate = (bytes - before.Bytes) / Stopwatch.GetElapsedTime(before.At, now).TotalSeconds;
                }
                if (!byId.TryGetValue(id, out var link))
                {
                    byId[id] = link = new JsonObject
                    {
                        ["id"] = id,
                        ["a"] = a,
                        ["b"] = b,
                        ["transport"] = row["transport"]?.DeepClone(),
                        ["star"] = star,
                        ["origin"] = origin,
                        ["addedBy"] = star ? null : origin,
                        ["up"] = up,
                        ["rttMs"] = row["rttMs"]?.DeepClone(),
                        ["bytesPerSecond"] = rate,
                    };
                    order.Add(id);
                    continue;
                }
                // The other end: fills in what the first lacked.
                if (up)
                    link["up"] = true;
                link["rttMs"] ??= row["rttMs"]?.DeepClone();
                if (link["bytesPerSecond"] is null && rate is not null)
                    link["bytesPerSecond"] = rate;
                if (origin == "adaptation")
                {
                    link["origin"] = origin;
                    link["addedBy"] = star ? null : origin;
                }
            }
        }
        _counters = counters;
        return new JsonArray([.. order.Select(id => (JsonNode)byId[id])]);
    }

    private static JsonArray StateLinks(JsonObject? state, string daemon)
    {
        if (state?["daemons"] is JsonArray daemons)
        {
            foreach (var d in daemons.OfType<JsonObject>())
            {
                if (d["name"]?.GetValue<string>() == daemon && d["links"] is JsonArray links)
                    return links;
            }
        }
        return [];
    }
}
