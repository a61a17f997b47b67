using Vnet.Frames;
using Vnet.Interfaces;
using Vnet.Native;
using Vnet.Tests.TestBed;

namespace Vnet.Tests.Interfaces;

/// <summary>
/// The device ioctls against the kernel's own view (ip link), in a fresh namespace. A TAP's own
/// address was read two bytes off (ifr_hwaddr's address starts right after sa_family), so the
/// daemon never recognised its TAP's host side and learned it as a VM as soon as that side spoke
/// (IPv6 router solicitations when the TAP comes up).
/// </summary>
[Collection("Netns")]
public sealed class NetDeviceTests : IDisposable
{
    private readonly ScratchNetns _scratch = new("vtnd");

    public void Dispose() => _scratch.Dispose();

    [Theory]
    [InlineData("02:11:22:33:44:55")]
    [InlineData("aa:bb:cc:dd:ee:f0")]
    public void GetHardwareAddress_EqualsWhatTheKernelShows(string address)
    {
        Sh.Run($"ip netns exec {_scratch.Name} ip link add vnd0 type veth peer name vnd0p");
        Sh.Run($"ip netns exec {_scratch.Name} ip link set vnd0 address {address}");
        var read = InNamespace(() => MacAddress.Read(NetDevice.GetHardwareAddress("vnd0")));
        Assert.Equal(address, read.ToString());
    }

    [Fact]
    public void TapOwnAddress_AsTheFactoryReadsIt_IsTheTapsAddress()
    {
        var (own, shown) = InNamespace(() =>
        {
            var opened = SystemInterfaceFactory.Instance.Open(new Vnet.Configuration.InterfaceConfig { Name = "vnd1" }, null);
            using (opened.Device)
                return (opened.OwnMac, Sh.Run($"ip netns exec {_scratch.Name} cat /sys/class/net/vnd1/address").Trim());
        });
        Assert.Equal(shown, own.ToString());
    }

    private T InNamespace<T>(Func<T> work) => _scratch.Run(work, "the work in the namespace");
}
