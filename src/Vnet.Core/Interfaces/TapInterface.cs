using Vnet.Frames;
using Vnet.Native;

namespace Vnet.Interfaces;

/// <summary>
/// A Linux TAP device (<c>/dev/net/tun</c>, <c>IFF_TAP | IFF_NO_PI</c>), opened with
/// <c>IFF_VNET_HDR</c> and TSO/checksum offloads so the kernel hands over and accepts 64 KiB TCP
/// super-frames: one read instead of ~45. Reads are non-blocking with a poll on the device and an
/// eventfd, so <see cref="Close"/> can wake the reader without racing the file descriptor.
/// </summary>
public sealed unsafe class TapInterface : ILocalInterface
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

    private readonly int _fd;
    private readonly int _wakeFd;
    private readonly int _headerSize;
    private int _closed;

    private TapInterface(string name, int fd, int wakeFd, bool header, OffloadSet offloads, int mtu)
    {
        Name = name;
        _fd = fd;
        _wakeFd = wakeFd;
        Offloads = offloads;
        _headerSize = header ? VirtioNetHeader.Size : 0;
        MaxFrameSize = mtu + 14 + 4;
    }

    public string Name { get; }

    public OffloadSet Offloads { get; }

    public int MaxFrameSize { get; }

    public Action? BeforeWait { get; set; }

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
        var wake = -1;
        try
        {
            var req = default(NetDevice.IfReq);
            req.SetName(name);
            var header = offloads != OffloadSet.None;
            req.Flags = (short)(IFF_TAP | IFF_NO_PI | (header ? IFF_VNET_HDR : 0));
            NetDevice.Check(LibC.Ioctl(fd, TUNSETIFF, &req), $"create TAP {name}");
            var actual = req.GetName();
            var agreed = OffloadSet.None;
            if (header)
            {
                var hdr = VirtioNetHeader.Size;
                NetDevice.Check(LibC.Ioctl(fd, TUNSETVNETHDRSZ, &hdr), $"set the virtio header size of {actual}");
                agreed = Negotiate(fd, offloads);
            }
            if (!LibC.SetNonBlocking(fd))
                throw new IOException($"cannot make {actual} non-blocking: {LibC.ErrorText(LibC.LastError)}");
            wake = LibC.EventFd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
            if (wake < 0)
                throw new IOException($"eventfd: {LibC.ErrorText(LibC.LastError)}");
            NetDevice.SetMtu(actual, mtu);
            NetDevice.SetUp(actual);
            return new TapInterface(actual, fd, wake, header, agreed, mtu);
        }
        catch
        {
            LibC.Close(fd);
            if (wake >= 0)
                LibC.Close(wake);
            throw;
        }
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

    public ReadStatus Read(Frame frame)
    {
        var buffer = frame.Buffer;
        var start = Frame.Headroom - _headerSize;
        while (Volatile.Read(ref _closed) == 0)
        {
            nint n;
            fixed (byte* p = &buffer[start])
                n = LibC.Read(_fd, p, (nuint)(Frame.MaxLength + _headerSize));
            if (n >= 0)
            {
                if (n < _headerSize + 14)
                    return ReadStatus.Bad;
                frame.Offload = _headerSize > 0 ? VirtioNetHeader.Read(buffer.AsSpan(start, _headerSize)) : default;
                frame.SetBounds(Frame.Headroom, (int)n - _headerSize);
                return ReadStatus.Frame;
            }
            var errno = LibC.LastError;
            if (errno == LibC.EINTR)
                continue;
            if (errno != LibC.EAGAIN)
                return ReadStatus.Closed;
            BeforeWait?.Invoke();
            WaitReadable();
        }
        return ReadStatus.Closed;
    }

    private void WaitReadable()
    {
        var fds = stackalloc LibC.PollFd[2];
        fds[0] = new LibC.PollFd { Fd = _fd, Events = LibC.POLLIN };
        fds[1] = new LibC.PollFd { Fd = _wakeFd, Events = LibC.POLLIN };
        LibC.Poll(fds, 2, -1);
    }

    public bool Write(Frame frame)
    {
        if (Volatile.Read(ref _closed) != 0 || !frame.FitsBuffer)
            return false;
        nint n;
        if (_headerSize > 0)
        {
            // The frame may be shared with other ports, so its header goes in a separate iovec.
            var hdr = stackalloc byte[VirtioNetHeader.Size];
            frame.Offload.Write(new Span<byte>(hdr, VirtioNetHeader.Size));
            fixed (byte* p = &frame.Buffer[frame.Offset])
            {
                var iov = stackalloc LibC.IoVec[2];
                iov[0] = new LibC.IoVec { Base = hdr, Length = VirtioNetHeader.Size };
                iov[1] = new LibC.IoVec { Base = p, Length = (nuint)frame.Length };
                n = LibC.Writev(_fd, iov, 2);
            }
        }
        else
        {
            fixed (byte* p = &frame.Buffer[frame.Offset])
                n = LibC.Write(_fd, p, (nuint)frame.Length);
        }
        return n >= 0;
    }

    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
            return;
        ulong one = 1;
        LibC.Write(_wakeFd, &one, sizeof(ulong));
    }

    public void Dispose()
    {
        Close();
        // The reader thread may still be inside poll(); closing the eventfd last keeps it valid
        // until then. Callers join the reader before disposing.
        LibC.Close(_fd);
        LibC.Close(_wakeFd);
    }
}
