namespace Vnet.Vms.Providers;

/// <summary>
/// What a VM's old host hands its new host in a move: the mode, and for a VM whose network state
/// does not travel with it (netns) the IPv4 addresses (CIDR) and default gateway to restore.
/// </summary>
public sealed record VmHandover(VmMoveMode Mode, IReadOnlyList<string> Addresses, string? Gateway);

/// <summary>What the target of a move prepared: where the source sends the VM (QEMU's incoming migration), and whether its device exists already.</summary>
public sealed record VmIncoming(string? Address, bool DeviceReady);

/// <summary>
/// Makes and unmakes VMs on a host. Every method runs off the control loop (processes, namespaces);
/// the host's <see cref="VmHostService"/> owns which VMs exist and calls them one VM at a time.
/// A VM's NIC appears on the host as <see cref="VmSpec.Device"/>, which the daemon opens as a pcap
/// interface: one interface per VM.
/// <code>
/// Move (the Proxy drives it):  target.PrepareIncoming → source.Send(incoming, detach) → target.Receive → target.Announce
///                              a failure before Receive: target.AbortIncoming, the VM stays at the source
/// </code>
/// </summary>
public interface IVmProvider : IAsyncDisposable
{
    VmProviderKind Kind { get; }

    /// <summary>Makes the VM; returns once its device exists and is up (not waiting for its boot or DHCP).</summary>
    Task CreateAsync(VmSpec spec);

    /// <summary>Ends the VM and removes everything it had (device, processes, namespace, files). Idempotent.</summary>
    Task DestroyAsync(VmSpec spec);

    /// <summary>Target of a move: gets ready to take the VM.</summary>
    Task<VmIncoming> PrepareIncomingAsync(VmSpec spec);

    /// <summary>
    /// Source of a move: sends the VM to <paramref name="incoming"/> (or lets go of it), calling
    /// <paramref name="detach"/> once the daemon must close the VM's device (before it goes). Throws
    /// when the VM could not leave; it then still runs here.
    /// </summary>
    Task<VmHandover> SendAsync(VmSpec spec, VmIncoming incoming, Func<Task> detach);

    /// <summary>Target of a move: takes the VM in; returns once its device exists and is up.</summary>
    Task ReceiveAsync(VmSpec spec, VmHandover handover);

    /// <summary>Makes the VM send a frame (gratuitous ARP), so the overlay learns its new place at once.</summary>
    Task AnnounceAsync(VmSpec spec);

    /// <summary>Target of a move that failed: undoes <see cref="PrepareIncomingAsync"/>.</summary>
    Task AbortIncomingAsync(VmSpec spec);

    /// <summary>
    /// At start: the VMs of this host that outlived a daemon that ended without ending them (killed,
    /// crashed), each still running with its device on this host, so the daemon takes them in again
    /// instead of leaving them orphaned. Empty when the provider keeps nothing across a restart.
    /// </summary>
    Task<IReadOnlyList<VmSpec>> RecoverAsync();
}
