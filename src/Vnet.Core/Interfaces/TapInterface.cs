using Vnet.Frames;
using Vnet.Native;

namespace Vnet.Interfaces;

/// <summary>
/// A Linux TAP device (<c>/dev/net/tun</c>, <c>IFF_TAP | IFF_NO_PI</c>), opened with
/// <c>IFF_VNET_HDR</c> and TSO/checksum offloads so the kernel hands over and accepts 64 KiB TCP
/// super-frames: one read instead of ~45. Reading, writing and closing are
/// <see cref="VirtioNetDevice"/>'s.
/// </summary>
public sealed unsafe class TapInterface : VirtioNetDevice
{
    private const nuint TUNSETIFF = 0x400454ca;
    private const nuint TUNSETOFFLOAD = 0x400454d0;
    private const nuint TUNSETVNETHDRSZ = 0x400454d8;
    private const short IFF_TAP = 0x0002;
    private const short IFF_NO_PI = 0x1000;
    private const short IFF_VNET_HDR = 0x4000;
    private const uint TUN_F_CSUM = 0x01;
    private const uint TUN_F_TSO4 = 0x02;
    private const uint TUN_F_TSO6 = 0x04;
    private const uint TUN_F_TSO_ECN = 0x08;

    private TapInterface(string name, int fd, bool header, OffloadSet offloads, int mtu)
        : base(name, fd, header, offloads, mtu)
    {
    }

    /// <summary>
    /// Creates the TAP (or attaches to an existing persistent one of that name), sets its MTU and
    /// brings it up. With <paramref name="offloads"/> other than none the TAP carries a virtio-net
    /// header and the daemon asks the kernel for that set; a kernel that refuses it is asked for
    /// less (ECN, then IPv6 TSO, then all TSO, then checksums too) and <see cref="Offloads"/> says
    /// what was agreed.
    /// </summary>
    public static TapInterface Open(string name, int mtu = 1500, bool offloads = true) =>
        Open(name, mtu, offloads ? OffloadSet.All : OffloadSet.None);

    /// <inheritdoc cref="Open(string, int, bool)"/>
    public static TapInterface Open(string name, int mtu, OffloadSet offloads)
    {
        var fd = LibC.Open("/dev/net/tun", LibC.O_RDWR | LibC.O_CLOEXEC);
        if (fd < 0)
            throw new IOException($"cannot open /dev/net/tun: {LibC.ErrorText(LibC.LastError)}");
        var header = offloads != OffloadSet.None;
        string actual;
        var agreed = OffloadSet.None;
        try
        {
            var req = default(NetDevice.IfReq);
            req.SetName(name);
            req.Flags = (short)(IFF_TAP | IFF_NO_PI | (header ? IFF_VNET_HDR : 0));
            NetDevice.Check(LibC.Ioctl(fd, TUNSETIFF, &req), $"create TAP {name}");
            actual = req.GetName();
            if (header)
            {
                var hdr = VirtioNetHeader.Size;
                NetDevice.Check(LibC.Ioctl(fd, TUNSETVNETHDRSZ, &hdr), $"set the virtio header size of {actual}");
                agreed = Negotiate(fd, offloads);
            }
            if (!LibC.SetNonBlocking(fd))
                throw new IOException($"cannot make {actual} non-blocking: {LibC.ErrorText(LibC.LastError)}");
            NetDevice.SetMtu(actual, mtu);
            NetDevice.SetUp(actual);
        }
        catch
        {
            LibC.Close(fd);
            throw;
        }
        return new TapInterface(actual, fd, header, agreed, mtu);
    }

    /// <summary>
    /// Asks the kernel for <paramref name="wanted"/>, then for less until it agrees: the set it
    /// accepted is what this TAP's frames may carry in both directions. The kernel's own rules: TSO
    /// needs checksum offload, and ECN needs TSO.
    /// </summary>
    private static OffloadSet Negotiate(int fd, OffloadSet wanted)
    {
        ReadOnlySpan<OffloadSet> fallbacks =
        [
            wanted,
            wanted & ~OffloadSet.TsoEcn,
            wanted & ~(OffloadSet.TsoEcn | OffloadSet.Tso6),
            wanted & OffloadSet.Checksum,
        ];
        foreach (var set in fallbacks)
        {
            if ((set & OffloadSet.Checksum) == 0 && set != OffloadSet.None)
                continue;
            // The ioctl takes the flags by value, not by pointer.
            if (LibC.Ioctl(fd, TUNSETOFFLOAD, (void*)(nuint)TunFlags(set)) == 0)
                return set;
        }
        return LibC.Ioctl(fd, TUNSETOFFLOAD, (void*)0) == 0 ? OffloadSet.None
            : throw new IOException($"cannot set the offloads of a TAP: {LibC.ErrorText(LibC.LastError)}");
    }

    private static uint TunFlags(OffloadSet set) =>
        ((set & OffloadSet.Checksum) != 0 ? TUN_F_CSUM : 0) |
        ((set & OffloadSet.Tso4) != 0 ? TUN_F_TSO4 : 0) |
        ((set & OffloadSet.Tso6) != 0 ? TUN_F_TSO6 : 0) |
        ((set & OffloadSet.TsoEcn) != 0 ? TUN_F_TSO_ECN : 0);
}
