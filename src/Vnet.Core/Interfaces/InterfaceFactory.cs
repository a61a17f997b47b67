using Vnet.Configuration;
using Vnet.Frames;
using Vnet.Native;

namespace Vnet.Interfaces;

/// <summary>A device opened for a configured interface, and the address of its own side, which is never a VM.</summary>
public sealed record OpenedDevice(ILocalInterface Device, MacAddress? OwnMac);

/// <summary>
/// Opens the device behind a configured interface. The daemon gets real devices (TAP, packet socket);
/// tests and simulations get in-memory ones (<see cref="MemoryInterfaceFactory"/>), so everything
/// above the device runs unchanged without root.
/// </summary>
public interface IInterfaceFactory
{
    /// <summary>Opens the device; throws IOException, ArgumentException or InvalidOperationException with the reason.</summary>
    OpenedDevice Open(InterfaceConfig config, string? filter);

    /// <summary>Whether a device of that name exists now (a pcap interface waits for it otherwise).</summary>
    bool DeviceExists(string name);
}

/// <summary>The real devices: a TAP (joined to its bridge when configured) or a NIC through a packet socket.</summary>
public sealed class SystemInterfaceFactory : IInterfaceFactory
{
    public static SystemInterfaceFactory Instance { get; } = new();

    /// <summary>By index, in this thread's network namespace (sysfs may show another one).</summary>
    public bool DeviceExists(string name) => LibC.IfNameToIndex(name) != 0;

    public OpenedDevice Open(InterfaceConfig config, string? filter)
    {
        ILocalInterface device = config.Kind switch
        {
            InterfaceKind.Tap => TapInterface.Open(config.Name, config.Mtu, config.Offloads ? OffloadSet.All : OffloadSet.None, config.Queues),
            _ => PacketSocketInterface.Open(config.Name, config.Mtu, filter, receiveOffload: config.Offloads),
        };
        try
        {
            if (config.Bridge is not null)
                NetDevice.AddToBridge(config.Bridge, device.Name);
            // The host's own side of a TAP talks too (ARP, IPv6 ND); it is not a VM.
            MacAddress? own = config.Kind == InterfaceKind.Tap ? MacAddress.Read(NetDevice.GetHardwareAddress(device.Name)) : null;
            return new OpenedDevice(device, own);
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }
}
