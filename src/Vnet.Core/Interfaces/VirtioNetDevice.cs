using Vnet.Frames;
using Vnet.Native;

namespace Vnet.Interfaces;

/// <summary>
/// What a TAP and a packet socket share: a non-blocking descriptor that hands over, and takes,
/// each frame behind a 10-byte <c>virtio_net_hdr</c> (or behind nothing, for a TAP without
/// offloads), and an eventfd that wakes a reader blocked in poll when <see cref="Close"/> is called.
/// <code>
/// Read:  one read fills the header and the frame: the header lands in Frame.Headroom right before
///        the Ethernet header, so the frame is never moved.
/// Write: writev with the header in its own iovec: the frame may be shared with other ports (a
///        flood), so the header is never written into it.
/// Close: the eventfd stays readable from then on, so the reader is never left blocked on a
///        descriptor another thread closes, and Close does not race it for the fd.
/// Queues: a multi-queue TAP has one descriptor per queue (Queues); each is read like the first,
///        one eventfd wakes them all, and writes go to the first.
/// </code>
/// </summary>
public abstract unsafe class VirtioNetDevice : ILocalInterface
{
    private readonly int _wakeFd;
    private readonly int _headerSize;
    private readonly int[] _fds;
    private readonly IReceiveQueue[] _queues;
    private int _closed;
    private int _disposed;

    /// <summary>Takes over <paramref name="fd"/> (non-blocking) and makes the eventfd; closes the fd if that fails.</summary>
    private protected VirtioNetDevice(string name, int fd, bool header, OffloadSet offloads, int mtu)
        : this(name, [fd], header, offloads, mtu)
    {
    }

    /// <summary>
    /// Takes over <paramref name="fds"/>, one non-blocking descriptor per receive queue (the first
    /// also writes), and makes the eventfd; closes them all if that fails.
    /// </summary>
    private protected VirtioNetDevice(string name, int[] fds, bool header, OffloadSet offloads, int mtu)
    {
        _wakeFd = LibC.EventFd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        if (_wakeFd < 0)
        {
            var errno = LibC.LastError;
            foreach (var fd in fds)
                LibC.Close(fd);
            throw new IOException($"eventfd: {LibC.ErrorText(errno)}");
        }
        Name = name;
        _fds = fds;
        Offloads = offloads;
        _headerSize = header ? VirtioNetHeader.Size : 0;
        MaxFrameSize = mtu + 14 + 4;
        _queues = new IReceiveQueue[fds.Length];
        for (var i = 0; i < fds.Length; i++)
            _queues[i] = new Queue(this, fds[i]);
    }

    public string Name { get; }

    public OffloadSet Offloads { get; }

    public int MaxFrameSize { get; }

    public IReadOnlyList<IReceiveQueue> Queues => _queues;

    /// <summary>The first queue's descriptor, which writes too.</summary>
    private protected int Fd => _fds[0];

    private protected bool IsClosed => Volatile.Read(ref _closed) != 0;

    private protected bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Blocks until a frame arrives on the first queue or the device closes (for tools and tests: the switch port reads with TryRead).</summary>
    public ReadStatus Read(Frame frame)
    {
        while (!IsClosed)
        {
            var status = TryRead(frame);
            if (status != ReadStatus.Empty)
                return status;
            WaitReadable();
        }
        return ReadStatus.Closed;
    }

    public ReadStatus TryRead(Frame frame) => TryRead(Fd, frame);

    private ReadStatus TryRead(int fd, Frame frame)
    {
        ArgumentNullException.ThrowIfNull(frame);
        var buffer = frame.Buffer;
        var start = Frame.Headroom - _headerSize;
        var room = Frame.MaxLength + _headerSize;
        while (!IsClosed)
        {
            nint n;
            fixed (byte* p = &buffer[start])
                n = Receive(fd, p, (nuint)room);
            if (n >= 0)
            {
                // Longer than the room: truncated (a packet socket says so with MSG_TRUNC).
                if (n < _headerSize + 14 || n > room)
                    return ReadStatus.Bad;
                frame.Offload = _headerSize > 0 ? VirtioNetHeader.Read(buffer.AsSpan(start, _headerSize)) : default;
                frame.SetBounds(Frame.Headroom, (int)n - _headerSize);
                return Accept(frame) ? ReadStatus.Frame : ReadStatus.Bad;
            }
            var errno = LibC.LastError;
            if (errno == LibC.EINTR)
                continue;
            if (errno != LibC.EAGAIN)
            {
                var status = OnReadError(errno);
                if (status is { } s)
                    return s;
                continue;
            }
            OnEmpty();
            return Gone ? ReadStatus.Closed : ReadStatus.Empty;
        }
        return ReadStatus.Closed;
    }

    /// <summary>Asked when nothing is waiting: whether the device has gone for good (a packet socket's NIC unregistered).</summary>
    private protected virtual bool Gone => false;

    /// <summary>One read of <paramref name="fd"/> into <paramref name="buffer"/>: its length, or -1 with errno set.</summary>
    private protected virtual nint Receive(int fd, byte* buffer, nuint length) => LibC.Read(fd, buffer, length);

    /// <summary>Checks a frame just read (its header is in <see cref="Frame.Offload"/>); false drops it as bad.</summary>
    private protected virtual bool Accept(Frame frame) => true;

    /// <summary>What a failed read (not EINTR, not EAGAIN) means: a status to return, or null to read again.</summary>
    private protected virtual ReadStatus? OnReadError(int errno) => ReadStatus.Closed;

    /// <summary>Called on the reading thread when nothing is waiting, before it blocks.</summary>
    private protected virtual void OnEmpty()
    {
    }

    /// <summary>Longest a wait in poll lasts (-1: until a frame or Close).</summary>
    private protected virtual int WaitTimeoutMs => -1;

    public void WaitReadable() => WaitReadable(Fd);

    private void WaitReadable(int fd)
    {
        var fds = stackalloc LibC.PollFd[2];
        fds[0] = new LibC.PollFd { Fd = fd, Events = LibC.POLLIN };
        fds[1] = new LibC.PollFd { Fd = _wakeFd, Events = LibC.POLLIN };
        LibC.Poll(fds, 2, WaitTimeoutMs);
    }

    public bool Write(Frame frame)
    {
        ArgumentNullException.ThrowIfNull(frame);
        if (IsClosed || !frame.FitsBuffer)
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
                n = LibC.Writev(Fd, iov, 2);
            }
        }
        else
        {
            fixed (byte* p = &frame.Buffer[frame.Offset])
                n = LibC.Write(Fd, p, (nuint)frame.Length);
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
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        Close();
        BeforeCloseDescriptors();
        // The reader thread may still be inside poll(); closing the eventfd last keeps it valid
        // until then. Callers join the reader before disposing.
        foreach (var fd in _fds)
            LibC.Close(fd);
        LibC.Close(_wakeFd);
        DisposeCore();
        GC.SuppressFinalize(this);
    }

    /// <summary>Undoes what a subclass set on the device through its descriptor, while that is still open.</summary>
    private protected virtual void BeforeCloseDescriptors()
    {
    }

    /// <summary>Frees what a subclass holds besides the descriptors, after they are all closed.</summary>
    private protected virtual void DisposeCore()
    {
    }

    /// <summary>One receive queue: its own descriptor, read and waited on as the device's first.</summary>
    private sealed class Queue(VirtioNetDevice device, int fd) : IReceiveQueue
    {
        public ReadStatus TryRead(Frame frame) => device.TryRead(fd, frame);

        public void WaitReadable() => device.WaitReadable(fd);
    }
}
