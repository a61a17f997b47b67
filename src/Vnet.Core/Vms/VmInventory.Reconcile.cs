using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Frames;
using Vnet.Vms.Providers;

namespace Vnet.Vms;

/// <summary>A VM as a host reports it (<c>vm.host</c>): checked like the arguments of <c>vm.create</c>.</summary>
public sealed record ReportedVm(VmSpec Spec, VmProviderKind Kind, HostedVmState State);

/// <summary>
/// What one host's report changes in the Proxy's inventory, the stale arrivals the host is asked to
/// abort (<see cref="Abort"/>, by name), and what it could not take.
/// </summary>
public sealed record ReconcilePlan(IReadOnlyList<OrderedVm> Add, IReadOnlyList<OrderedVm> Found, IReadOnlyList<OrderedVm> Forget, IReadOnlyList<string> Conflicts,
    IReadOnlyList<string> Abort)
{
    public bool IsEmpty => Add.Count == 0 && Found.Count == 0 && Forget.Count == 0 && Abort.Count == 0;
}

/// <summary>
/// Anti-entropy between the Proxy's inventory and the hosts, which run the VMs and so are the
/// authority on which exist: the inventory is not persisted, a host restart ends its VMs, and a
/// move can fail half-way. When a host's star link comes up, and every
/// <see cref="ReconcileInterval"/>, the Proxy asks it for its VMs (<c>vm.host</c>) and:
/// <code>
/// 1. adopts a running VM it does not know (a Proxy restart): name, MAC, size, the host's kind;
/// 2. finds a VM it marked lost on a failed move, where the host now runs it: running again there;
/// 3. forgets a VM it has as running on that host that the host no longer runs (a host restart);
/// 4. asks the host to abort a VM it is still waiting to take in (arriving) that runs on another
///    site: a move whose prepare was answered on a session that ended before the answer came,
///    which the Proxy took for a failure (the host would hold the name, and a QEMU host an
///    incoming QEMU and its TAP, for good, and refuse every later move of that VM to it);
/// 5. leaves alone what conflicts (a name or MAC the inventory has for another VM or site): logged.
/// </code>
/// A report is applied only if nothing happened to the inventory while it was asked (an epoch
/// counts every operation's start and end) and no operation is under way: a report sent before a
/// <c>vm.remove</c> finished must not bring the VM back, nor one sent before an order finished
/// forget it. It is then asked again two seconds later. Only the host's running VMs count; one
/// being made, moved or removed there is left to the operation that does it.
/// </summary>
public sealed partial class VmInventory
{
    /// <summary>How often every host's VMs are compared with the inventory, besides when its star link comes up.</summary>
    public static readonly TimeSpan ReconcileInterval = TimeSpan.FromSeconds(30);

    private static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(2);

    // Control loop: bumped at every operation's start and end (Mark), read around a report. Not by
    // a reconciliation: its plan is made against the inventory as it is when applied, so it cannot
    // make another host's report stale.
    private long _epoch;
    private readonly HashSet<string> _asking = new(StringComparer.Ordinal);

    /// <summary>Control loop, once at start: reconcile with each host when its star link comes up, and on a grid.</summary>
    public void Start()
    {
        _peers.PeerUp += (port, session) =>
        {
            if (port.Star)
            {
                _ = ReconcileAsync(port.Peer);
                _ = CleanLeftoversAsync(port.Peer);
            }
        };
        _loop.Every(ReconcileInterval, () =>
        {
            foreach (var host in HostsUp())
                _ = ReconcileAsync(host);
        });
    }

    /// <summary>Control loop: records that the inventory changed (an operation started or ended).</summary>
    private void Mark() => _epoch++;

    /// <summary>Asks <paramref name="site"/> for its VMs and applies the plan, if nothing moved meanwhile. Never throws.</summary>
    public async Task<ReconcilePlan?> ReconcileAsync(string site)
    {
        long epoch;
        try
        {
            epoch = await _loop.Invoke(() => _asking.Add(site) ? _epoch : -1).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            return null;
        }
        if (epoch < 0)
            return null;
        try
        {
            JsonNode? answer;
            try
            {
                answer = await _peers.CallAsync(site, "vm.host", null, AskTimeout).ConfigureAwait(false);
            }
            catch (Exception e) when (e is DaemonCommandException or TimeoutException or OperationCanceledException)
            {
                // Down meanwhile, or an older host without the verb: asked again at the next tick.
                return null;
            }
            var (report, bad) = ParseReport(answer);
            if (bad > 0)
                Log.ReportEntriesRefused(_logger, site, bad);
            return await _loop.Invoke(() =>
            {
                if (epoch != _epoch || _vms.Values.Any(v => v.State is OrderedVmState.Creating or OrderedVmState.Moving or OrderedVmState.Removing))
                {
                    // Stale, or an operation under way: ask again soon rather than at the next tick.
                    _loop.PostAfter(RetryDelay, () => _ = ReconcileAsync(site));
                    return null;
                }
                var plan = PlanReconcile(_vms.Values, site, report);
                Apply(site, plan);
                return plan;
            }).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            return null;
        }
        finally
        {
            _loop.Post(() => _asking.Remove(site));
        }
    }

    /// <summary>Control loop; the aborts run off it (each logged if it fails).</summary>
    private void Apply(string site, ReconcilePlan plan)
    {
        foreach (var vm in plan.Add)
        {
            _vms[vm.Name] = vm;
            Log.Adopted(_logger, vm.Name, vm.Mac, vm.Site);
        }
        foreach (var vm in plan.Found)
        {
            // The move's other host may still wait for it: asked now rather than at the next tick.
            if (_vms.TryGetValue(vm.Name, out var was) && was.OtherHost is { } other && other != site)
                _loop.Post(() => _ = ReconcileAsync(other));
            _vms[vm.Name] = vm;
            Log.Found(_logger, vm.Name, vm.Site);
        }
        foreach (var vm in plan.Forget)
        {
            _vms.Remove(vm.Name);
            Log.Forgotten(_logger, vm.Name, vm.Site);
        }
        foreach (var conflict in plan.Conflicts)
            Log.ReconcileConflict(_logger, conflict);
        foreach (var name in plan.Abort)
        {
            Log.StaleArrival(_logger, name, site);
            _ = Abort(site, name);
        }
    }

    /// <summary>
    /// The VMs of a <c>vm.host</c> answer, each checked as <c>vm.create</c>'s arguments are (name,
    /// unicast MAC, size) and known states only; at most <see cref="VmHostService.MaxVms"/> are read.
    /// Returns them and how many entries were refused.
    /// </summary>
    public static (IReadOnlyList<ReportedVm> Vms, int Refused) ParseReport(JsonNode? answer)
    {
        var list = new List<ReportedVm>();
        var refused = 0;
        if (answer is not JsonObject o || o["vms"] is not JsonArray vms)
            return (list, answer is null ? 0 : 1);
        var kind = VmProviderKind.None;
        try
        {
            if (o["provider"] is JsonValue p && p.TryGetValue<string>(out var text))
                kind = VmNames.ParseProvider(text);
        }
        catch (FormatException)
        {
            refused++;
        }
        foreach (var entry in vms)
        {
            if (list.Count >= VmHostService.MaxVms)
            {
                refused++;
                continue;
            }
            try
            {
                if (entry is not JsonObject e || e["state"] is not JsonValue s || !s.TryGetValue<string>(out var state)
                    || !Enum.TryParse<HostedVmState>(state, ignoreCase: true, out var parsed) || !Enum.IsDefined(parsed)
                    || !state.All(char.IsAsciiLetterLower)
                    || e["size"] is not JsonValue size || !size.TryGetValue<string>(out _))
                {
                    refused++;
                    continue;
                }
                var spec = VmArgs.Spec(new JsonObject
                {
                    ["name"] = e["name"]?.DeepClone(),
                    ["mac"] = e["mac"]?.DeepClone(),
                    ["size"] = e["size"]?.DeepClone(),
                });
                list.Add(new ReportedVm(spec, kind, parsed));
            }
            catch (Exception x) when (x is DaemonCommandException or InvalidOperationException or FormatException)
            {
                refused++;
            }
        }
        return (list, refused);
    }

    /// <summary>The changes one host's report makes (pure: the caller applies them on the loop).</summary>
    public static ReconcilePlan PlanReconcile(IEnumerable<OrderedVm> inventory, string site, IReadOnlyList<ReportedVm> report)
    {
        var byName = new Dictionary<string, OrderedVm>(StringComparer.Ordinal);
        var byMac = new Dictionary<MacAddress, OrderedVm>();
        foreach (var vm in inventory)
        {
            byName[vm.Name] = vm;
            byMac[vm.Mac] = vm;
        }
        var add = new List<OrderedVm>();
        var found = new List<OrderedVm>();
        var forget = new List<OrderedVm>();
        var conflicts = new List<string>();
        var abort = new List<string>();
        var running = new HashSet<string>(StringComparer.Ordinal);
        var total = byName.Count;
        foreach (var r in report)
        {
            if (r.State != HostedVmState.Running)
            {
                // Being made, moved or removed there: whatever does it records the outcome. Except
                // an arrival of a VM that runs elsewhere: a report is applied only while no
                // operation is under way, so no move is bringing it here.
                running.Add(r.Spec.Name);
                if (r.State == HostedVmState.Arriving && byName.TryGetValue(r.Spec.Name, out var there) && there.Mac == r.Spec.Mac
                    && there.State == OrderedVmState.Running && there.Site != site)
                    abort.Add(r.Spec.Name);
                continue;
            }
            running.Add(r.Spec.Name);
            if (byName.TryGetValue(r.Spec.Name, out var known))
            {
                if (known.Mac != r.Spec.Mac)
                    conflicts.Add($"{site} runs a VM named {r.Spec.Name} with MAC {r.Spec.Mac}, but {known.Name} has {known.Mac} on {known.Site}");
                else if (known.State == OrderedVmState.Lost && known.Site == site)
                    found.Add(known with { State = OrderedVmState.Running, Kind = r.Kind, OtherHost = null });
                else if (known.Site != site)
                    conflicts.Add($"{site} runs {r.Spec.Name}, which the Proxy has {known.State.ToString().ToLowerInvariant()} on {known.Site}");
                continue;
            }
            if (byMac.TryGetValue(r.Spec.Mac, out var holder))
            {
                conflicts.Add($"{site} runs {r.Spec.Name} with MAC {r.Spec.Mac}, which is {holder.Name}'s on {holder.Site}");
                continue;
            }
            if (total >= MaxVms)
            {
                conflicts.Add($"{site} runs {r.Spec.Name}, but the Proxy keeps {MaxVms} VMs at most");
                continue;
            }
            var adopted = new OrderedVm(r.Spec.Name, r.Spec.Mac, site, r.Spec.Size, r.Kind, OrderedVmState.Running);
            add.Add(adopted);
            byName[adopted.Name] = adopted;
            byMac[adopted.Mac] = adopted;
            total++;
        }
        foreach (var vm in byName.Values)
        {
            if (vm.Site == site && vm.State == OrderedVmState.Running && !running.Contains(vm.Name) && !add.Contains(vm))
                forget.Add(vm);
        }
        return new ReconcilePlan(add, found, forget, conflicts, abort);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 414, Level = LogLevel.Information, Message = "VM {Name} ({Mac}) runs on {Site}: taken into the inventory (the Proxy had no record of it)")]
        public static partial void Adopted(ILogger logger, string name, MacAddress mac, string site);

        [LoggerMessage(EventId = 415, Level = LogLevel.Information, Message = "VM {Name}, marked lost, runs on {Site}: running again")]
        public static partial void Found(ILogger logger, string name, string site);

        [LoggerMessage(EventId = 416, Level = LogLevel.Warning, Message = "VM {Name} no longer runs on {Site} (did its host restart?): forgotten")]
        public static partial void Forgotten(ILogger logger, string name, string site);

        [LoggerMessage(EventId = 417, Level = LogLevel.Warning, Message = "VM inventory: {Conflict}; left as it is")]
        public static partial void ReconcileConflict(ILogger logger, string conflict);

        [LoggerMessage(EventId = 430, Level = LogLevel.Warning, Message = "VM {Name} runs elsewhere but {Site} still waits to take it in (a move's answer was lost): asked to abort")]
        public static partial void StaleArrival(ILogger logger, string name, string site);

        [LoggerMessage(EventId = 418, Level = LogLevel.Warning, Message = "VM inventory: {Count} entries of {Site}'s report refused (malformed)")]
        public static partial void ReportEntriesRefused(ILogger logger, string site, int count);
    }
}
