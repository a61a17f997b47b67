using Vnet.Daemon;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// A VM's interface that goes away and comes back, as a QEMU guest's TAP does when the guest stops
/// and starts again: here the VM's veth, whose host end h1 opens as kind pcap, is deleted and made
/// again under the same name. h1 must wait for it and open it again by itself, and the VM must
/// reach the LAN as before, with nobody running `vnet interface add`.
/// </summary>
[Collection("Netns")]
public sealed class WaitingInterfaceTests(ITestOutputHelper output)
{
    [Fact]
    public void VmInterfaceDeletedAndMadeAgain_HostReopensIt_VmReachesTheLanAgain()
    {
        using var o = new OverlayBed(output, hosts: 1);
        try
        {
            o.StartProxy();
            o.AddVm(1, 1, bridge: false);
            o.StartHost(1, pcapInterface: "vm1");
            o.WaitStar(1);
            var unreached = Convergence.WaitMeshPing(o, [1], lan: true, TimeSpan.FromSeconds(20));
            Assert.True(unreached.Count == 0, $"before: {string.Join("; ", unreached)}");

            // The VM stops: its NIC is gone.
            o.Bed.Run("h1", "ip link del vm1");
            Wait.Until(() => Interface(o).Waiting, TimeSpan.FromSeconds(10), "h1 to wait for vm1");

            // The VM starts again: the same NIC name, the same MAC and address.
            o.Bed.Veth("vm1", "eth0", "h1", "vm1");
            o.Bed.SetMac("vm1", "eth0", OverlayBed.VmMac(1));
            o.Bed.Address("vm1", "eth0", OverlayBed.VmIp(1) + "/24");
            Wait.Until(() => Interface(o) is { Waiting: false, Up: true }, TimeSpan.FromSeconds(10), "h1 to open vm1 again");
            unreached = Convergence.WaitMeshPing(o, [1], lan: true, TimeSpan.FromSeconds(20));
            Assert.True(unreached.Count == 0, $"after: {string.Join("; ", unreached)}");
        }
        catch
        {
            o.DumpAll();
            throw;
        }
    }

    private static InterfaceStatus Interface(OverlayBed o) =>
        DaemonJson.FromNode<List<InterfaceStatus>>(o.Control("h1", "interface.list"))!.Single(i => i.Name == "vm1");
}
