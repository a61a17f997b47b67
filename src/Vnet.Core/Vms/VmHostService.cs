using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Frames;
using Vnet.Interfaces;
using Vnet.Vms.Providers;

namespace Vnet.Vms;

/// <summary>Where a hosted VM is in its life; a VM in any state but Running refuses other operations.</summary>
public enum HostedVmState
{
    Creating,
    Running,
    Leaving,
    Arriving,
    Removing,
}

/// <summary>One VM this host runs (or is making, moving, removing).</summary>
public sealed record HostedVm(VmSpec Spec, HostedVmState State, bool Attached);

/// <summary>
/// A host's VMs: which exist, in which state, and their interfaces (one pcap interface per VM,
/// <see cref="VmSpec.Device"/>). The table lives on the control loop; the provider's work
/// (processes, namespaces) runs off it and its outcome is posted back, so the loop never waits on
/// a VM. Only the Proxy calls these (host-side verbs <c>vm.host</c>, <c>vm.create</c>,
/// <c>vm.destroy</c>, <c>vm.prepare</c>, <c>vm.release</c>, <c>vm.adopt</c>, <c>vm.abort</c>).
/// A VM lives as long as the daemon: a stopping daemon destroys its VMs.
/// </summary>
public sealed partial class VmHostService : IAsyncDisposable
{
    /// <summary>Most VMs a host runs at once (each is a process or a namespace and an interface).</summary>
    public const int MaxVms = 64;

    private readonly IVmProvider? _provider;
    private readonly InterfaceService _interfaces;
    private readonly VmDirectory _directory;
    private readonly ControlLoop _loop;
    private readonly ILogger _logger;
    private readonly Dictionary<string, HostedVm> _vms = new(StringComparer.Ordinal);

    public VmHostService(IVmProvider? provider, InterfaceService interfaces, VmDirectory directory, ControlLoop loop, ILogger logger)
    {
        _provider = provider;
        _interfaces = interfaces;
        _directory = directory;
        _loop = loop;
        _logger = logger;
    }

    public VmProviderKind Kind => _provider?.Kind ?? VmProviderKind.None;

    /// <summary>Control loop: the VMs, sorted by name.</summary>
    public IReadOnlyList<HostedVm> List() => [.. _vms.Values.OrderBy(v => v.Spec.Name, StringComparer.Ordinal)];

    /// <summary>
    /// The VM whose interface <paramref name="device"/> is (loop), or null: such an interface is the
    /// VM's, and closing it by hand would leave the VM cut off while the Proxy lists it running.
    /// </summary>
    public string? VmOfDevice(string device)
    {
        foreach (var vm in _vms.Values)
        {
            if (vm.Spec.Device == device)
                return vm.Spec.Name;
        }
        return null;
    }

    /// <summary>
    /// Why <paramref name="device"/> may not be closed by hand or by a change set (loop): it is an
    /// ordered VM's interface. Null for any other interface.
    /// </summary>
    public string? CloseRefusal(string device) =>
        VmOfDevice(device) is { } vm ? $"interface {device} is VM {vm}'s: remove or move the VM at the Proxy ('vnet vm remove {vm}')" : null;

    /// <summary><c>vm.host</c>: the provider and the VMs (control loop).</summary>
    public JsonObject Describe() => new()
    {
        ["provider"] = VmNames.Text(Kind),
        ["vms"] = new JsonArray([.. List().Select(v => (JsonNode)new JsonObject
        {
            ["name"] = v.Spec.Name,
            ["mac"] = v.Spec.Mac.ToString(),
            ["size"] = VmNames.Text(v.Spec.Size),
            ["state"] = v.State.ToString().ToLowerInvariant(),
            ["device"] = v.Spec.Device,
        })]),
    };

    private IVmProvider Provider => _provider ?? throw new DaemonCommandException("this host has no VM provider (vm_provider in its configuration)");

    /// <summary>
    /// A provider's work, whose system errors (a file, a process, a program's output) become
    /// refusals with the reason: the Proxy's request always gets an answer.
    /// </summary>
    private static async Task<T> Guard<T>(string what, Func<Task<T>> work)
    {
        try
        {
            return await work().ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException or
            System.ComponentModel.Win32Exception or InvalidOperationException or FormatException)
        {
            throw new DaemonCommandException($"{what}: {e.Message}");
        }
    }

    private static Task<bool> Guard(string what, Func<Task> work) => Guard(what, async () =>
    {
        await work().ConfigureAwait(false);
        return true;
    });

    /// <summary>Control loop: takes the name for a VM about to exist here, or refuses.</summary>
    private void Reserve(VmSpec spec, HostedVmState state)
    {
        _ = Provider;
        if (_vms.ContainsKey(spec.Name))
            throw new DaemonCommandException($"a VM named {spec.Name} is already on this host");
        if (_vms.Count >= MaxVms)
            throw new DaemonCommandException($"this host runs {MaxVms} VMs already");
        if (_interfaces.Find(spec.Device) is not null)
            throw new DaemonCommandException($"interface {spec.Device} exists already");
        foreach (var v in _vms.Values)
        {
            if (v.Spec.Mac == spec.Mac)
                throw new DaemonCommandException($"VM {v.Spec.Name} here has MAC {spec.Mac} already");
        }
        _vms[spec.Name] = new HostedVm(spec, state, false);
    }

    /// <summary>Control loop: the VM in <paramref name="expected"/> state, now in <paramref name="next"/>; else a refusal.</summary>
    private HostedVm Take(string name, HostedVmState expected, HostedVmState next)
    {
        if (!_vms.TryGetValue(name, out var vm))
            throw new DaemonCommandException($"no VM named {name} on this host");
        if (vm.State != expected)
            throw new DaemonCommandException($"VM {name} is {vm.State.ToString().ToLowerInvariant()}, not {expected.ToString().ToLowerInvariant()}");
        _vms[name] = vm = vm with { State = next };
        return vm;
    }

    private void Set(string name, HostedVmState state, bool? attached = null)
    {
        if (_vms.TryGetValue(name, out var vm))
            _vms[name] = vm with { State = state, Attached = attached ?? vm.Attached };
    }

    /// <summary>Control loop: opens the VM's device as a pcap interface; with <paramref name="pin"/> its MAC is a VM here at once.</summary>
    private void Attach(VmSpec spec, bool pin)
    {
        _interfaces.Add(new InterfaceConfig
        {
            Name = spec.Device,
            Kind = InterfaceKind.Pcap,
            Learn = true,
            Macs = pin ? [spec.Mac] : [],
        });
        Set(spec.Name, _vms[spec.Name].State, attached: true);
    }

    /// <summary>Control loop: closes the VM's interface (its MAC leaves this host's map with it).</summary>
    private void Detach(VmSpec spec)
    {
        if (_vms.TryGetValue(spec.Name, out var vm) && vm.Attached)
        {
            _interfaces.RemoveForce(spec.Device, $"VM {spec.Name} left or was removed");
            Set(spec.Name, vm.State, attached: false);
        }
    }

    /// <summary>Done once the VMs left from before this daemon started are taken in (<see cref="Start"/>); never faults.</summary>
    public Task Recovery { get; private set; } = Task.CompletedTask;

    /// <summary>
    /// Control loop, once at start: takes in the VMs the provider finds still running from before
    /// (this daemon was killed or crashed and could not end them), each attached and running as if
    /// made now, so that no VM is left orphaned; the Proxy learns them by reconciliation.
    /// </summary>
    public void Start()
    {
        if (_provider is not { } provider)
            return;
        Recovery = Task.Run(async () =>
        {
            IReadOnlyList<VmSpec> found;
            try
            {
                found = await provider.RecoverAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // Whatever went wrong, the host starts: what was not taken in is only logged.
                Log.RecoverFailed(_logger, e.Message);
                return;
            }
            if (found.Count == 0)
                return;
            try
            {
                await _loop.Invoke(() =>
                {
                    foreach (var spec in found)
                    {
                        try
                        {
                            Reserve(spec, HostedVmState.Running);
                            Attach(spec, pin: true);
                            Log.Recovered(_logger, spec.Name, spec.Mac);
                        }
                        catch (DaemonCommandException e)
                        {
                            _vms.Remove(spec.Name);
                            Log.RecoverFailed(_logger, e.Message);
                        }
                    }
                    return true;
                }).ConfigureAwait(false);
            }
            catch (ObjectDisposedException)
            {
                // Stopping already.
            }
        });
    }

    /// <summary><c>vm.create</c>: makes the VM and attaches its interface; returns once both are done.</summary>
    public async Task<JsonObject> CreateAsync(VmSpec spec)
    {
        await _loop.Invoke(() =>
        {
            Reserve(spec, HostedVmState.Creating);
            return true;
        }).ConfigureAwait(false);
        try
        {
            await Guard($"making VM {spec.Name}", () => Provider.CreateAsync(spec)).ConfigureAwait(false);
        }
        catch
        {
            await _loop.Invoke(() => _vms.Remove(spec.Name)).ConfigureAwait(false);
            throw;
        }
        try
        {
            await _loop.Invoke(() =>
            {
                Attach(spec, pin: true);
                Set(spec.Name, HostedVmState.Running);
                return true;
            }).ConfigureAwait(false);
        }
        catch
        {
            await Guard($"removing VM {spec.Name}", () => Provider.DestroyAsync(spec)).ConfigureAwait(false);
            await _loop.Invoke(() => _vms.Remove(spec.Name)).ConfigureAwait(false);
            throw;
        }
        Log.Created(_logger, spec.Name, spec.Mac, Kind);
        return Result(spec);
    }

    private JsonObject Result(VmSpec spec) => new()
    {
        ["name"] = spec.Name,
        ["mac"] = spec.Mac.ToString(),
        ["size"] = VmNames.Text(spec.Size),
        ["kind"] = VmNames.Text(Kind),
        ["device"] = spec.Device,
    };

    /// <summary><c>vm.destroy</c>: closes the interface, ends the VM, forgets it.</summary>
    public async Task DestroyAsync(string name)
    {
        await EndAsync(name, HostedVmState.Running, $"removing VM {name}", Provider.DestroyAsync).ConfigureAwait(false);
        Log.Destroyed(_logger, name);
    }

    /// <summary>A VM in <paramref name="expected"/> state ends here: interface closed, the provider's work, forgotten whatever it did.</summary>
    private async Task EndAsync(string name, HostedVmState expected, string what, Func<VmSpec, Task> work)
    {
        var vm = await _loop.Invoke(() =>
        {
            var v = Take(name, expected, HostedVmState.Removing);
            Detach(v.Spec);
            return v;
        }).ConfigureAwait(false);
        try
        {
            await Guard(what, () => work(vm.Spec)).ConfigureAwait(false);
        }
        finally
        {
            await _loop.Invoke(() => _vms.Remove(name)).ConfigureAwait(false);
        }
    }

    /// <summary><c>vm.prepare</c> (target of a move): reserves the name and readies the provider.</summary>
    public async Task<VmIncoming> PrepareAsync(VmSpec spec)
    {
        await _loop.Invoke(() =>
        {
            Reserve(spec, HostedVmState.Arriving);
            return true;
        }).ConfigureAwait(false);
        VmIncoming incoming;
        try
        {
            incoming = await Guard($"preparing for VM {spec.Name}", () => Provider.PrepareIncomingAsync(spec)).ConfigureAwait(false);
        }
        catch
        {
            // A prepare that failed undid its own work; an abort here would undo what is not its
            // (a device of that name that was there before, the reason it failed).
            await _loop.Invoke(() => _vms.Remove(spec.Name)).ConfigureAwait(false);
            throw;
        }
        try
        {
            // A device that exists before the VM arrives (QEMU's TAP) is attached without its MAC:
            // the VM is placed here only when its own frames come from here.
            if (incoming.DeviceReady)
                await _loop.Invoke(() =>
                {
                    Attach(spec, pin: false);
                    return true;
                }).ConfigureAwait(false);
        }
        catch
        {
            await AbortAsync(spec.Name).ConfigureAwait(false);
            throw;
        }
        Log.Prepared(_logger, spec.Name);
        return incoming;
    }

    /// <summary><c>vm.release</c> (source of a move): sends the VM away; the VM is no longer here once this returns.</summary>
    public async Task<VmHandover> ReleaseAsync(string name, VmIncoming incoming)
    {
        var vm = await _loop.Invoke(() => Take(name, HostedVmState.Running, HostedVmState.Leaving)).ConfigureAwait(false);
        VmHandover handover;
        try
        {
            handover = await Guard($"sending VM {name} away", () => Provider.SendAsync(vm.Spec, incoming, () => _loop.Invoke(() =>
            {
                Detach(vm.Spec);
                return true;
            }))).ConfigureAwait(false);
        }
        catch
        {
            // Still here: back to running, with its interface if the provider had it detached.
            await _loop.Invoke(() =>
            {
                Set(name, HostedVmState.Running);
                if (!_vms[name].Attached)
                    Attach(vm.Spec, pin: true);
                return true;
            }).ConfigureAwait(false);
            throw;
        }
        await _loop.Invoke(() => _vms.Remove(name)).ConfigureAwait(false);
        Log.Released(_logger, name, handover.Mode);
        return handover;
    }

    /// <summary><c>vm.adopt</c> (target of a move): takes the VM in, attaches it and has it announce itself.</summary>
    public async Task<JsonObject> AdoptAsync(string name, VmHandover handover)
    {
        var vm = await _loop.Invoke(() =>
        {
            var v = Take(name, HostedVmState.Arriving, HostedVmState.Arriving);
            // A restart makes the VM's device anew (QEMU boots afresh): the interface opened on the
            // old one at the prepare would read a device that is gone.
            if (handover.Mode == VmMoveMode.Restart)
                Detach(v.Spec);
            return v;
        }).ConfigureAwait(false);
        await Guard($"taking VM {name} in", () => Provider.ReceiveAsync(vm.Spec, handover)).ConfigureAwait(false);
        await _loop.Invoke(() =>
        {
            if (!_vms[name].Attached)
                Attach(vm.Spec, pin: true);
            else
                _directory.Pin(vm.Spec.Device, vm.Spec.Mac);
            Set(name, HostedVmState.Running);
            return true;
        }).ConfigureAwait(false);
        await Guard($"announcing VM {name}", () => Provider.AnnounceAsync(vm.Spec)).ConfigureAwait(false);
        Log.Adopted(_logger, name, handover.Mode);
        return Result(vm.Spec);
    }

    /// <summary>
    /// <c>vm.destroy</c> of a VM the Proxy marked lost (a move failed after it left its source): it
    /// asks both hosts of the move. Whatever of the VM is here goes: the VM if it arrived after all
    /// (running, or still arriving), else what the provider left of it (a netns VM's namespace
    /// without its device, a QEMU that outlived a crashed daemon). A VM of that name with another
    /// MAC is not this one and is refused.
    /// </summary>
    public async Task DestroyLostAsync(VmSpec spec)
    {
        var here = await _loop.Invoke(() =>
        {
            if (_vms.TryGetValue(spec.Name, out var vm))
            {
                if (vm.Spec.Mac != spec.Mac)
                    throw new DaemonCommandException($"VM {spec.Name} here has MAC {vm.Spec.Mac}, not {spec.Mac}");
                return (HostedVmState?)vm.State;
            }
            Reserve(spec, HostedVmState.Removing);
            return null;
        }).ConfigureAwait(false);
        switch (here)
        {
            case HostedVmState.Running:
                await DestroyAsync(spec.Name).ConfigureAwait(false);
                return;
            case HostedVmState.Arriving:
                await AbortAsync(spec.Name).ConfigureAwait(false);
                return;
            case { } state:
                throw new DaemonCommandException($"VM {spec.Name} is {state.ToString().ToLowerInvariant()} here; try again");
        }
        try
        {
            await Guard($"removing what is left of VM {spec.Name}", () => Provider.DestroyAsync(spec)).ConfigureAwait(false);
        }
        finally
        {
            await _loop.Invoke(() => _vms.Remove(spec.Name)).ConfigureAwait(false);
        }
        Log.LeftoversRemoved(_logger, spec.Name);
    }

    /// <summary><c>vm.abort</c> (target of a move that failed): forgets the VM that was to arrive.</summary>
    public Task AbortAsync(string name) =>
        EndAsync(name, HostedVmState.Arriving, $"aborting the move of VM {name}", Provider.AbortIncomingAsync);

    /// <summary>Daemon stopping: every VM here ends (interfaces first, while the loop runs).</summary>
    public async Task StopAllAsync()
    {
        if (_provider is null)
            return;
        var all = await _loop.Invoke(() =>
        {
            var list = _vms.Values.ToList();
            foreach (var v in list)
                Detach(v.Spec);
            _vms.Clear();
            return list;
        }).ConfigureAwait(false);
        foreach (var v in all)
        {
            try
            {
                await Guard($"removing VM {v.Spec.Name}", () => _provider.DestroyAsync(v.Spec)).ConfigureAwait(false);
            }
            catch (DaemonCommandException e)
            {
                Log.DestroyFailed(_logger, v.Spec.Name, e.Message);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_provider is not null)
            await _provider.DisposeAsync().ConfigureAwait(false);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 401, Level = LogLevel.Information, Message = "VM {Name} ({Mac}) created by the {Kind} provider")]
        public static partial void Created(ILogger logger, string name, MacAddress mac, VmProviderKind kind);

        [LoggerMessage(EventId = 402, Level = LogLevel.Information, Message = "VM {Name} destroyed")]
        public static partial void Destroyed(ILogger logger, string name);

        [LoggerMessage(EventId = 403, Level = LogLevel.Information, Message = "VM {Name} left this host ({Mode})")]
        public static partial void Released(ILogger logger, string name, VmMoveMode mode);

        [LoggerMessage(EventId = 404, Level = LogLevel.Information, Message = "VM {Name} arrived on this host ({Mode})")]
        public static partial void Adopted(ILogger logger, string name, VmMoveMode mode);

        [LoggerMessage(EventId = 405, Level = LogLevel.Warning, Message = "VM {Name} could not be destroyed: {Reason}")]
        public static partial void DestroyFailed(ILogger logger, string name, string reason);

        [LoggerMessage(EventId = 427, Level = LogLevel.Information, Message = "VM {Name}: ready to take it in")]
        public static partial void Prepared(ILogger logger, string name);

        [LoggerMessage(EventId = 428, Level = LogLevel.Information, Message = "VM {Name}, lost in a move: what was left of it here is removed")]
        public static partial void LeftoversRemoved(ILogger logger, string name);

        [LoggerMessage(EventId = 408, Level = LogLevel.Warning, Message = "VM {Name} ({Mac}) still runs from before this daemon started (it ended without ending its VMs): taken in again")]
        public static partial void Recovered(ILogger logger, string name, MacAddress mac);

        [LoggerMessage(EventId = 409, Level = LogLevel.Warning, Message = "VMs left from before this daemon started could not be taken in: {Reason}")]
        public static partial void RecoverFailed(ILogger logger, string reason);
    }
}
