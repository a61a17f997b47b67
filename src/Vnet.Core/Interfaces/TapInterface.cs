using Vnet.Frames;
using Vnet.Native;

namespace Vnet.Interfaces;

/// <summary>
/// A Linux TAP device (<c>/dev/net/tun</c>, <c>IFF_TAP | IFF_NO_PI</c>), opened with
/// <c>IFF_VNET_HDR</c> and TSO/checksum offloads so the kernel hands over and accepts 64 KiB TCP
/// super-frames: one read instead of ~45. Reading, writing and closing are
/// <see cref="VirtioNetDevice"/>'s.
/// <para>
/// With more than one queue the TAP is opened with <c>IFF_MULTI_QUEUE</c>: one descriptor per
/// queue (<see cref="VirtioNetDevice.Queues"/>), each attached by its own <c>TUNSETIFF</c> on the
/// same name, and a steering program (<see cref="TapSteering"/>) that sends every flow to one
/// queue for good. Writes go to the first queue. One queue is today's TAP, without the flag.
/// </para>
/// </summary>
public sealed unsafe class TapInterface : VirtioNetDevice
{
    private const nuint TUNSETIFF = 0x400454ca;
    private const nuint TUNSETOFFLOAD = 0x400454d0;
    private const nuint TUNSETVNETHDRSZ = 0x400454d8;
    /// <summary>Most queues a TAP is opened with (the kernel allows 256; a reader thread each).</summary>
    public const int MaxQueues = 16;

    private const short IFF_TAP = 0x0002;
    private const short IFF_MULTI_QUEUE = 0x0100;
    private const short IFF_NO_PI = 0x1000;
    private const short IFF_VNET_HDR = 0x4000;
    private const uint TUN_F_CSUM = 0x01;
    private const uint TUN_F_TSO4 = 0x02;
    private const uint TUN_F_TSO6 = 0x04;
    private const uint TUN_F_TSO_ECN = 0x08;

    private TapInterface(string name, int[] fds, bool header, OffloadSet offloads, int mtu)
        : base(name, fds, header, offloads, mtu)
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
    public static TapInterface Open(string name, int mtu, OffloadSet offloads) => Open(name, mtu, offloads, 1);

    /// <summary>
    /// Opens the TAP with <paramref name="queues"/> receive queues (1 to <see cref="MaxQueues"/>).
    /// More than one: <c>IFF_MULTI_QUEUE</c>, one descriptor per queue, each set up as the first
    /// (virtio header size, offloads: every queue agrees to the same set), and the steering
    /// program; an existing persistent TAP must have been made with the same choice (with or
    /// without multi_queue), or the kernel refuses it. MTU and up once, at the end.
    /// </summary>
    public static TapInterface Open(string name, int mtu, OffloadSet offloads, int queues)
    {
        if (queues is < 1 or > MaxQueues)
            throw new ArgumentOutOfRangeException(nameof(queues), queues, $"a TAP has 1 to {MaxQueues} queues");
        var header = offloads != OffloadSet.None;
        var multi = queues > 1;
        var fds = new List<int>(queues);
        var actual = name;
        var agreed = OffloadSet.None;
        try
        {
            for (var q = 0; q < queues; q++)
            {
                var fd = LibC.Open("/dev/net/tun", LibC.O_RDWR | LibC.O_CLOEXEC);
                if (fd < 0)
                    throw new IOException($"cannot open /dev/net/tun: {LibC.ErrorText(LibC.LastError)}");
                fds.Add(fd);
                var req = default(NetDevice.IfReq);
                // Later queues attach to the name the first got (a name with %d is resolved then).
                req.SetName(actual);
                req.Flags = (short)(IFF_TAP | IFF_NO_PI | (header ? IFF_VNET_HDR : 0) | (multi ? IFF_MULTI_QUEUE : 0));
                if (LibC.Ioctl(fd, TUNSETIFF, &req) < 0)
                    throw AttachError(actual, q, queues, LibC.LastError);
                actual = req.GetName();
                if (header)
                {
                    var hdr = VirtioNetHeader.Size;
                    NetDevice.Check(LibC.Ioctl(fd, TUNSETVNETHDRSZ, &hdr), $"set the virtio header size of {actual}");
                    var set = Negotiate(fd, q == 0 ? offloads : agreed);
                    if (q == 0)
                        agreed = set;
                    else if (set != agreed)
                        throw new IOException($"queue {q} of {actual} agreed to offloads {set}, the first to {agreed}");
                }
                if (!LibC.SetNonBlocking(fd))
                    throw new IOException($"cannot make {actual} non-blocking: {LibC.ErrorText(LibC.LastError)}");
            }
            if (multi)
                TapSteering.Attach(fds[0], actual);
            NetDevice.SetMtu(actual, mtu);
            NetDevice.SetUp(actual);
        }
        catch
        {
            foreach (var fd in fds)
                LibC.Close(fd);
            throw;
        }
        return new TapInterface(actual, fds.ToArray(), header, agreed, mtu);
    }

    private static IOException AttachError(string name, int queue, int queues, int errno)
    {
        var what = queues == 1 ? $"cannot create TAP {name}" : $"cannot attach queue {queue + 1} of {queues} to TAP {name}";
        // The kernel's EINVAL here: the device exists and is a TUN, or a TAP made with the other
        // multi-queue choice.
        var hint = errno == LibC.EINVAL
            ? queues == 1
                ? " (a device of that name exists and is a TUN, or a TAP made with multi_queue: that one needs queues > 1)"
                : " (a device of that name exists and is a TUN, or a TAP made without multi_queue: that one takes 1 queue only)"
            : "";
        return new IOException($"{what}: {LibC.ErrorText(errno)}{hint}", errno);
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
