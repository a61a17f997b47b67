using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Vnet.Daemon;
using Vnet.Frames;
using Vnet.Links;
using Vnet.Peers;
using Vnet.Vms.Providers;

namespace Vnet.Vms;

/// <summary>Where an ordered VM is in its life, as the Proxy sees it.</summary>
public enum OrderedVmState
{
    Creating,
    Running,
    Moving,
    Removing,

    /// <summary>A move failed after the VM left its old host: it may be nowhere; remove it.</summary>
    Lost,
}

/// <summary>
/// A VM a user ordered: its name, MAC, the site that runs it, its size and kind. A VM lost in a move
/// has as its site the host where it is found running again if it runs anywhere (the target, once
/// the source let go of it; the source, when it went away during its release), and
/// <paramref name="OtherHost"/> the move's other host: either may hold what is left of it.
/// </summary>
public sealed record OrderedVm(string Name, MacAddress Mac, string Site, VmSize Size, VmProviderKind Kind, OrderedVmState State, string? OtherHost = null);

/// <summary>
/// The Proxy's ordered VMs (<c>vm.order</c>, <c>vm.move</c>, <c>vm.remove</c>, <c>vm.sites</c>), on
/// the Proxy's control loop. Each command checks and marks the VM on the loop first (a name is
/// taken once; a VM being created, moved or removed refuses other commands), then calls the hosts'
/// host-side verbs over their star links off the loop, and records the outcome on the loop. Not
/// persisted: the hosts are the authority on which VMs run, and the inventory is reconciled with
/// them (VmInventory.Reconcile.cs), so a restarted Proxy learns their VMs again.
/// </summary>
public sealed partial class VmInventory
{
    public static readonly TimeSpan CreateTimeout = TimeSpan.FromSeconds(60);
    public static readonly TimeSpan MoveTimeout = TimeSpan.FromSeconds(180);
    private static readonly TimeSpan AskTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Most VMs the Proxy keeps ordered (every one is a row of state and work on some host).</summary>
    public const int MaxVms = 1024;

    private readonly PeerChannel _peers;
    private readonly LinkManager _links;
    private readonly VmDirectory _directory;
    private readonly ControlLoop _loop;
    private readonly ILogger _logger;
    private readonly Dictionary<string, OrderedVm> _vms = new(StringComparer.Ordinal);

    public VmInventory(PeerChannel peers, LinkManager links, VmDirectory directory, ControlLoop loop, ILogger logger)
    {
        _peers = peers;
        _links = links;
        _directory = directory;
        _loop = loop;
        _logger = logger;
    }

    /// <summary>Control loop: every ordered VM, by name.</summary>
    public IReadOnlyList<OrderedVm> List() => [.. _vms.Values.OrderBy(v => v.Name, StringComparer.Ordinal)];

    /// <summary>Control loop: the ordered VM with this MAC, if any.</summary>
    public OrderedVm? FindByMac(MacAddress mac)
    {
        foreach (var v in _vms.Values)
        {
            if (v.Mac == mac)
                return v;
        }
        return null;
    }

    /// <summary>Hosts whose star link is up now.</summary>
    private List<string> HostsUp()
    {
        var list = new List<string>();
        foreach (var p in _links.Links)
        {
            if (p.Star && p.IsUp)
                list.Add(p.Peer);
        }
        list.Sort(StringComparer.Ordinal);
        return list;
    }

    private void RequireUp(string site)
    {
        if (!_links.Links.Any(p => p.Star && p.IsUp && p.Peer == site))
            throw new DaemonCommandException($"site {site} is not a host connected to the Proxy now");
    }

    /// <summary><c>vm.sites</c>: the hosts up now that offer a provider, with how many VMs they run.</summary>
    public async Task<JsonArray> SitesAsync()
    {
        var hosts = await _loop.Invoke(HostsUp).ConfigureAwait(false);
        var answers = await Task.WhenAll(hosts.Select(async h =>
        {
            try
            {
                return (Host: h, Info: await _peers.CallAsync(h, "vm.host", null, AskTimeout).ConfigureAwait(false));
            }
            catch (DaemonCommandException)
            {
                // Down meanwhile, or an older host without the verb: it offers nothing.
                return (Host: h, Info: (JsonNode?)null);
            }
        })).ConfigureAwait(false);
        var sites = new JsonArray();
        foreach (var (host, info) in answers)
        {
            var provider = info?["provider"]?.GetValue<string>();
            if (provider is null or "none")
                continue;
            sites.Add(new JsonObject
            {
                ["site"] = host,
                ["provider"] = provider,
                ["vms"] = info?["vms"]?.AsArray().Count ?? 0,
            });
        }
        return sites;
    }

    /// <summary><c>vm.order</c>: makes a VM on a site; returns once it exists there with its interface attached.</summary>
    public async Task<JsonObject> OrderAsync(string site, VmSize size, string? name)
    {
        if (name is not null)
            VmNames.Check(name);
        var vm = await _loop.Invoke(() =>
        {
            RequireUp(site);
            if (_vms.Count >= MaxVms)
                throw new DaemonCommandException($"the Proxy keeps {MaxVms} ordered VMs at most");
            var chosen = name ?? NewName();
            if (_vms.ContainsKey(chosen))
                throw new DaemonCommandException($"a VM named {chosen} exists already");
            var mac = VmNames.NewMac(m => FindByMac(m) is not null || _directory.Locations.ContainsKey(m));
            var ordered = new OrderedVm(chosen, mac, site, size, VmProviderKind.None, OrderedVmState.Creating);
            _vms[chosen] = ordered;
            Mark();
            return ordered;
        }).ConfigureAwait(false);
        JsonNode? made;
        try
        {
            made = await _peers.CallAsync(site, "vm.create", SpecArgs(vm), CreateTimeout).ConfigureAwait(false);
        }
        catch
        {
            await _loop.Invoke(() => Forget(vm.Name)).ConfigureAwait(false);
            throw;
        }
        var kind = ParseKind(made?["kind"]?.GetValue<string>());
        vm = await _loop.Invoke(() => Record(vm.Name, vm with { Kind = kind, State = OrderedVmState.Running })).ConfigureAwait(false);
        Log.Ordered(_logger, vm.Name, vm.Mac, site, kind);
        return Describe(vm);
    }

    private static VmProviderKind ParseKind(string? text)
    {
        try
        {
            return VmNames.ParseProvider(text ?? "none");
        }
        catch (FormatException)
        {
            return VmProviderKind.None;
        }
    }

    /// <summary>A free name vm-XXXX (four hexadecimal digits).</summary>
    private string NewName()
    {
        for (var i = 0; i < 64; i++)
        {
            var name = $"vm-{Random.Shared.Next(0x10000):x4}";
            if (!_vms.ContainsKey(name))
                return name;
        }
        throw new DaemonCommandException("no free VM name: give one");
    }

    private static JsonObject SpecArgs(OrderedVm vm) => new()
    {
        ["name"] = vm.Name,
        ["mac"] = vm.Mac.ToString(),
        ["size"] = VmNames.Text(vm.Size),
    };

    public static JsonObject Describe(OrderedVm vm) => new()
    {
        ["name"] = vm.Name,
        ["mac"] = vm.Mac.ToString(),
        ["site"] = vm.Site,
        ["size"] = VmNames.Text(vm.Size),
        ["kind"] = VmNames.Text(vm.Kind),
        ["state"] = vm.State.ToString().ToLowerInvariant(),
    };

    /// <summary>Control loop: sets a VM's record after an operation step.</summary>
    private OrderedVm Record(string name, OrderedVm vm)
    {
        _vms[name] = vm;
        Mark();
        return vm;
    }

    /// <summary>Control loop: drops a VM's record (removed, or an order that failed).</summary>
    private bool Forget(string name)
    {
        Mark();
        return _vms.Remove(name);
    }

    /// <summary>Control loop: the VM, in <see cref="OrderedVmState.Running"/>, now in <paramref name="next"/>; else a refusal.</summary>
    private OrderedVm Take(string name, OrderedVmState next)
    {
        VmNames.Check(name);
        if (!_vms.TryGetValue(name, out var vm))
            throw new DaemonCommandException($"no VM named {name}");
        if (vm.State != OrderedVmState.Running && !(next == OrderedVmState.Removing && vm.State == OrderedVmState.Lost))
            throw new DaemonCommandException($"VM {name} is {vm.State.ToString().ToLowerInvariant()}; try again when it is running");
        _vms[name] = vm with { State = next };
        Mark();
        return vm;
    }

    /// <summary>
    /// <c>vm.move</c>: the target prepares, the source sends the VM (QEMU: live migration) or lets
    /// go of it (netns: its namespace stays), the target takes it in and has it announce itself.
    /// A failure before the VM left keeps it where it was; after, the VM is marked lost.
    /// </summary>
    public async Task<JsonObject> MoveAsync(string name, string to)
    {
        var vm = await _loop.Invoke(() =>
        {
            var v = Take(name, OrderedVmState.Moving);
            try
            {
                if (v.Site == to)
                    throw new DaemonCommandException($"VM {name} is on {to} already");
                RequireUp(to);
            }
            catch
            {
                Record(name, v);
                throw;
            }
            return v;
        }).ConfigureAwait(false);
        var from = vm.Site;
        JsonNode? incoming;
        try
        {
            incoming = await _peers.CallAsync(to, "vm.prepare", SpecArgs(vm), CreateTimeout).ConfigureAwait(false);
        }
        catch
        {
            await _loop.Invoke(() => Record(name, vm)).ConfigureAwait(false);
            throw;
        }
        Log.MoveStep(_logger, name, to, "prepared");
        JsonNode? handover;
        try
        {
            var args = new JsonObject { ["name"] = name, ["incoming"] = incoming?.DeepClone() };
            handover = await _peers.CallAsync(from, "vm.release", args, MoveTimeout).ConfigureAwait(false);
        }
        catch (DaemonCommandException e)
        {
            if (!e.OutcomeUnknown)
            {
                await Abort(to, name).ConfigureAwait(false);
                await _loop.Invoke(() => Record(name, vm)).ConfigureAwait(false);
                throw;
            }
            // The source went away (or did not answer) after it got the release: it may have let go
            // of the VM before its answer was lost. Recorded as running there, the next
            // reconciliation would forget it and leave its remains (a namespace, a QEMU) on the
            // machine for good. Lost at the source instead: found running again there if it never
            // left (and the target's wait for it is aborted by reconciliation then), else shown
            // lost until the user removes it from both hosts. The target is not aborted now: a
            // QEMU VM sent before the answer was lost is in the target's incoming QEMU, its only copy.
            await _loop.Invoke(() => Record(name, vm with { State = OrderedVmState.Lost, OtherHost = to })).ConfigureAwait(false);
            throw new DaemonCommandException(
                $"VM {name}: {from} did not answer its release ({e.Message}); it may have let go of the VM, which is marked lost: running again if {from} still runs it, else remove it");
        }
        Log.MoveStep(_logger, name, from, "released");
        try
        {
            var args = SpecArgs(vm);
            args["handover"] = handover?.DeepClone();
            await _peers.CallAsync(to, "vm.adopt", args, CreateTimeout).ConfigureAwait(false);
        }
        catch (DaemonCommandException e)
        {
            // Without an answer the target may still be taking the VM in, the only copy there is
            // now: an abort would end it. Left to finish, it is found running there by reconciliation.
            if (!e.OutcomeUnknown)
                await Abort(to, name).ConfigureAwait(false);
            await _loop.Invoke(() => Record(name, vm with { Site = to, State = OrderedVmState.Lost, OtherHost = from })).ConfigureAwait(false);
            throw new DaemonCommandException(e.OutcomeUnknown
                ? $"VM {name} left {from} but {to} did not answer taking it in ({e.Message}); it is marked lost: running again if {to} took it in, else remove it"
                : $"VM {name} left {from} but {to} could not take it in ({e.Message}); it is marked lost: remove it");
        }
        var mode = handover?["mode"]?.GetValue<string>() ?? "live";
        await _loop.Invoke(() => Record(name, vm with { Site = to, State = OrderedVmState.Running })).ConfigureAwait(false);
        Log.Moved(_logger, name, from, to, mode);
        return new JsonObject { ["name"] = name, ["from"] = from, ["to"] = to, ["mode"] = mode };
    }

    private async Task Abort(string site, string name)
    {
        try
        {
            await _peers.CallAsync(site, "vm.abort", new JsonObject { ["name"] = name }, CreateTimeout).ConfigureAwait(false);
        }
        catch (DaemonCommandException e)
        {
            Log.AbortFailed(_logger, name, site, e.Message);
        }
    }

    /// <summary>
    /// <c>vm.remove</c>: the site destroys the VM; the Proxy forgets it. A VM lost in a move may have
    /// left something on either host of the move (QEMU on the target, a netns VM's namespace on the
    /// machine): both are asked to remove whatever of it they have; one that cannot be asked now
    /// (its star link down, or no answer) is logged and asked again when its star link comes up
    /// (<see cref="CleanLeftoversAsync"/>), and the VM is forgotten anyway. What it left there (a
    /// namespace without its device) runs no VM, so reconciliation would never find it.
    /// </summary>
    public async Task<JsonObject> RemoveAsync(string name)
    {
        var vm = await _loop.Invoke(() => Take(name, OrderedVmState.Removing)).ConfigureAwait(false);
        if (vm.State == OrderedVmState.Lost)
        {
            var args = SpecArgs(vm);
            args["lost"] = true;
            foreach (var site in new[] { vm.OtherHost, vm.Site }.OfType<string>().Distinct(StringComparer.Ordinal))
            {
                try
                {
                    await _peers.CallAsync(site, "vm.destroy", args, CreateTimeout).ConfigureAwait(false);
                }
                catch (DaemonCommandException e)
                {
                    Log.LostCleanFailed(_logger, name, site, e.Message);
                    await RememberLeftovers(site, e, args).ConfigureAwait(false);
                }
            }
        }
        else
        {
            try
            {
                await _peers.CallAsync(vm.Site, "vm.destroy", new JsonObject { ["name"] = name }, CreateTimeout).ConfigureAwait(false);
            }
            catch
            {
                await _loop.Invoke(() => Record(name, vm)).ConfigureAwait(false);
                throw;
            }
        }
        await _loop.Invoke(() => Forget(name)).ConfigureAwait(false);
        Log.Removed(_logger, name, vm.Site);
        return new JsonObject { ["name"] = name };
    }

    // Control loop: per host, the lost VMs removed while that host could not be asked (by name: the
    // vm.destroy arguments, with "lost"), asked again when its star link comes up.
    private readonly Dictionary<string, Dictionary<string, JsonObject>> _leftovers = new(StringComparer.Ordinal);

    /// <summary>Keeps a lost VM's clean-up for a host that could not be asked (down, or no answer); not one that refused.</summary>
    private Task<bool> RememberLeftovers(string site, DaemonCommandException e, JsonObject args) => _loop.Invoke(() =>
    {
        if (!e.OutcomeUnknown && HostsUp().Contains(site))
            return false;
        if (!_leftovers.TryGetValue(site, out var names))
            _leftovers[site] = names = new(StringComparer.Ordinal);
        // Bounded: one entry per name, and no more names than the Proxy keeps VMs.
        if (names.Count < MaxVms || names.ContainsKey(args["name"]!.GetValue<string>()))
            names[args["name"]!.GetValue<string>()] = args;
        return true;
    });

    /// <summary>
    /// A host's star link is up: it is asked again to remove what it may have of the lost VMs
    /// removed while it could not be asked. A host still unreachable keeps them for the next time.
    /// A VM of that name made since has another MAC, which the host checks (it refuses).
    /// </summary>
    private async Task CleanLeftoversAsync(string site)
    {
        List<JsonObject> pending;
        try
        {
            pending = await _loop.Invoke(() => _leftovers.Remove(site, out var names) ? names.Values.ToList() : []).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            return;
        }
        foreach (var args in pending)
        {
            var name = args["name"]!.GetValue<string>();
            try
            {
                await _peers.CallAsync(site, "vm.destroy", args, CreateTimeout).ConfigureAwait(false);
                Log.LeftoversCleaned(_logger, name, site);
            }
            catch (DaemonCommandException e)
            {
                Log.LostCleanFailed(_logger, name, site, e.Message);
                try
                {
                    await RememberLeftovers(site, e, args).ConfigureAwait(false);
                }
                catch (ObjectDisposedException)
                {
                    return;
                }
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 431, Level = LogLevel.Information, Message = "VM {Name} (lost, removed): {Site}, back, removed what it had of it")]
        public static partial void LeftoversCleaned(ILogger logger, string name, string site);

        [LoggerMessage(EventId = 410, Level = LogLevel.Information, Message = "VM {Name} ({Mac}) ordered on {Site} ({Kind})")]
        public static partial void Ordered(ILogger logger, string name, MacAddress mac, string site, VmProviderKind kind);

        [LoggerMessage(EventId = 411, Level = LogLevel.Information, Message = "VM {Name} moved from {From} to {To} ({Mode})")]
        public static partial void Moved(ILogger logger, string name, string from, string to, string mode);

        [LoggerMessage(EventId = 412, Level = LogLevel.Information, Message = "VM {Name} removed from {Site}")]
        public static partial void Removed(ILogger logger, string name, string site);

        [LoggerMessage(EventId = 429, Level = LogLevel.Debug, Message = "VM {Name} moving: {Site} {Step}")]
        public static partial void MoveStep(ILogger logger, string name, string site, string step);

        [LoggerMessage(EventId = 419, Level = LogLevel.Warning, Message = "VM {Name} (lost): {Site} could not remove what it may have of it: {Reason}")]
        public static partial void LostCleanFailed(ILogger logger, string name, string site, string reason);

        [LoggerMessage(EventId = 413, Level = LogLevel.Warning, Message = "VM {Name}: {Site} could not abort its incoming move: {Reason}")]
        public static partial void AbortFailed(ILogger logger, string name, string site, string reason);
    }
}
