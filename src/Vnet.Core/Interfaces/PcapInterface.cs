using System.Runtime.InteropServices;
using SharpPcap;
using SharpPcap.LibPcap;
using Vnet.Frames;
using Vnet.Native;
using LibPcapDeviceInfo = SharpPcap.LibPcap.PcapInterface;

namespace Vnet.Interfaces;

/// <summary>
/// An existing NIC that VNET does not own, opened in promiscuous mode through libpcap: how the
/// Proxy puts VMs on the user's LAN, and how a host attaches to an interface another program owns
/// (a QEMU TAP, a host-only network). See docs/interfaces.md.
/// <code>
/// Read:  non-blocking pcap_next_ex hands over a view of libpcap's ring, copied to Frame.Headroom;
///        with nothing there, poll libpcap's descriptor and an eventfd, for at most ReadTimeoutMs.
///        Only frames arriving at the NIC are captured (direction IN): our own injections are not.
///        A frame longer than one MTU was merged by GRO below libpcap; it becomes a TSO super-frame.
/// Write: pcap_sendpacket, one writer at a time (a pcap_t is not thread-safe). The device takes
///        no offloads, so InterfacePort hands over finalised, MTU-sized frames.
/// Close: the eventfd wakes a blocked read at once.
/// </code>
/// <para>
/// Why not libpcap's own blocking read: on Linux (libpcap 1.10) a blocking pcap_next_ex never
/// returns on its read timeout, it polls again; only a frame or pcap_breakloop ends it, and a
/// breakloop that lands after a frame was taken from the ring loses that frame.
/// </para>
/// <para>
/// SharpPcap opens, configures and filters the device. The data path bypasses two of its calls:
/// <c>GetNextPacket</c> allocates a <c>Pollfd[]</c>, a <c>PcapHeader</c> and a <c>PosixTimeval</c>
/// per packet and polls for a fixed 500 ms that nothing can interrupt, and <c>SendPacket</c> throws
/// an exception for every refused frame. Reads use the allocation-free
/// <c>GetNextPacketPointers</c>; writes, capture direction and the descriptor to poll come straight
/// from libpcap (SharpPcap 6.3.1 has no direction setter and keeps the descriptor internal).
/// </para>
/// </summary>
public sealed unsafe class PcapInterface : ILocalInterface
{
    /// <summary>
    /// Longest classic BPF program the kernel attaches to a socket (BPF_MAXINSNS). Past it libpcap
    /// filters in user space: correct, but every frame on the wire is copied into the process.
    /// </summary>
    public const int KernelInstructionLimit = 4096;

    /// <summary>
    /// Longest a <see cref="Read"/> waits in poll before calling libpcap again: bounds how long a
    /// filter change waits for the reader, and lets libpcap notice a NIC that disappeared.
    /// </summary>
    private const int ReadTimeoutMs = 100;

    // libpcap caps its ring slots at max(MTU, 65535) + 18 when the NIC has receive offloads, so a
    // GRO-merged 64 KiB packet is captured whole. Frame.MaxLength is the most a frame can hold.
    private const int SnapLength = Frame.MaxLength;

    // Immediate mode uses fixed-size ring slots of a whole snap length each (~68 KiB on a NIC with
    // offloads): libpcap's default 2 MiB ring would hold ~30 frames; this holds ~480, whatever their size.
    private const int RingBytes = 32 << 20;

    private const int PcapDirectionIn = 1;

    private readonly LibPcapLiveDevice _device;
    private readonly nint _handle;
    private readonly int _fd;
    private readonly int _wakeFd;
    private readonly int _mtu;

    // The reader holds _readLock while in libpcap or polling its descriptor (at most ReadTimeoutMs),
    // SetFilter around pcap_setfilter (libpcap filters frames already in the ring with the program
    // the reader uses). Writers serialise on _writeLock without waiting for reads. Dispose takes
    // all three before it frees the handle and the eventfd.
    private readonly Lock _readLock = new();
    private readonly Lock _writeLock = new();
    private readonly Lock _lifetimeLock = new();
    private int _controlWaiting;
    private int _closed;
    private bool _disposed;
    private string? _filter;
    private int _filterLength;

    private PcapInterface(string name, LibPcapLiveDevice device, int fd, int wakeFd, int mtu)
    {
        Name = name;
        _device = device;
        _handle = device.Handle.DangerousGetHandle();
        _fd = fd;
        _wakeFd = wakeFd;
        _mtu = mtu;
        MaxFrameSize = mtu + 14 + 4;
    }

    public string Name { get; }

    /// <summary>False: libpcap injects frames as they are, so they must be complete and MTU-sized.</summary>
    public OffloadSet Offloads => OffloadSet.None;

    public int MaxFrameSize { get; }

    public Action? BeforeWait { get; set; }

    /// <summary>The filter in force, or null when every frame is captured.</summary>
    public string? Filter => Volatile.Read(ref _filter);

    /// <summary>
    /// Length of the filter in force in BPF instructions (0 without one). Above
    /// <see cref="KernelInstructionLimit"/> libpcap filters in user space (and says so on stderr).
    /// </summary>
    public int FilterLength => Volatile.Read(ref _filterLength);

    /// <summary>
    /// Opens <paramref name="device"/> (as seen from the calling thread's network namespace; the
    /// handle stays there) in promiscuous, immediate mode, capturing incoming frames only, and
    /// applies <paramref name="filter"/> (libpcap syntax; null captures everything).
    /// <paramref name="mtu"/> is the NIC's MTU: frames longer than it plus an Ethernet and a VLAN
    /// header are treated as GRO super-frames.
    /// </summary>
    /// <exception cref="IOException">The device does not exist or libpcap cannot open it.</exception>
    /// <exception cref="ArgumentException">The filter is invalid.</exception>
    public static PcapInterface Open(string device, int mtu = 1500, string? filter = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(mtu, 68);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(mtu, Frame.MaxLength - 18);

        var info = FindDevice(device);
        var pcap = new LibPcapLiveDevice(info);
        try
        {
            pcap.Open(new DeviceConfiguration
            {
                Mode = DeviceModes.Promiscuous,
                Snaplen = SnapLength,
                Immediate = true,
                BufferSize = RingBytes,
            });
        }
        catch (PcapException e)
        {
            pcap.Dispose();
            // SharpPcap's activation message names no cause; the error code does.
            var hint = e.Error switch
            {
                PcapError.PermissionDenied or PcapError.PromiscuousPermissionDenied => ": needs root or CAP_NET_RAW",
                PcapError.NoSuchDevice => ": no such device",
                PcapError.InterfaceNotUp => ": the interface is down",
                _ => "",
            };
            throw new IOException($"libpcap cannot open {device} ({e.Error}): {e.Message}{hint}", e);
        }
        var wake = -1;
        try
        {
            if (pcap.LinkType != PacketDotNet.LinkLayers.Ethernet)
                throw new IOException($"{device} is not an Ethernet device (link type {pcap.LinkType})");
            var handle = pcap.Handle.DangerousGetHandle();
            if (Native.SetDirection(handle, PcapDirectionIn) != 0)
                throw new IOException($"cannot restrict capture on {device} to incoming frames: {pcap.LastError}");
            pcap.NonBlockingMode = true;
            var fd = Native.GetSelectableFd(handle);
            if (fd < 0)
                throw new IOException($"libpcap offers no descriptor to wait on for {device}");
            wake = LibC.EventFd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
            if (wake < 0)
                throw new IOException($"eventfd: {LibC.ErrorText(LibC.LastError)}");
            var result = new PcapInterface(device, pcap, fd, wake, mtu);
            if (filter is not null)
                result.SetFilter(filter);
            return result;
        }
        catch (Exception e)
        {
            pcap.Dispose();
            if (wake >= 0)
                LibC.Close(wake);
            if (e is PcapException p)
                throw new IOException($"libpcap cannot set up {device}: {p.Message}", p);
            throw;
        }
    }

    private static LibPcapDeviceInfo FindDevice(string device)
    {
        IReadOnlyList<LibPcapDeviceInfo> all;
        try
        {
            all = LibPcapDeviceInfo.GetAllPcapInterfaces();
        }
        catch (PcapException e)
        {
            throw new IOException($"libpcap cannot list network devices: {e.Message}", e);
        }
        foreach (var info in all)
        {
            if (string.Equals(info.Name, device, StringComparison.Ordinal))
                return info;
        }
        throw new IOException($"no network device '{device}' in this thread's network namespace");
    }

    /// <summary>
    /// Compiles <paramref name="filter"/> for Ethernet without a device and returns its length in
    /// BPF instructions; above <see cref="KernelInstructionLimit"/> it still works, in user space.
    /// </summary>
    /// <exception cref="ArgumentException">The filter does not compile; the message says why.</exception>
    public static int CompileFilter(string filter)
    {
        ArgumentNullException.ThrowIfNull(filter);
        try
        {
            using var program = BpfProgram.Create(PacketDotNet.LinkLayers.Ethernet, filter, 1, 0);
            // struct bpf_program starts with its instruction count.
            return (int)*(uint*)program.DangerousGetHandle();
        }
        catch (PcapException e)
        {
            throw new ArgumentException($"invalid BPF filter \"{Abbreviate(filter)}\": {e.Message}", nameof(filter), e);
        }
    }

    /// <summary>
    /// Replaces the filter while the interface runs. An invalid filter throws and leaves the old one
    /// in force. Waits for the reader to leave libpcap (at most <see cref="ReadTimeoutMs"/>), then
    /// holds it off for the compile (~0.5 s for 1000 unrelated MACs); frames wait in the ring.
    /// </summary>
    /// <exception cref="ArgumentException">The filter is invalid.</exception>
    public void SetFilter(string filter)
    {
        ArgumentNullException.ThrowIfNull(filter);
        // Compiled once without the device first, so a bad filter never reaches the live handle:
        // SharpPcap records the new text as "the" filter before it knows whether it compiles.
        var length = CompileFilter(filter);
        Interlocked.Increment(ref _controlWaiting);
        try
        {
            lock (_readLock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                try
                {
                    // Compiled again against the live handle: its accept statements return the
                    // device's snap length, which a program for a dead handle would not.
                    _device.Filter = filter;
                }
                catch (PcapException e)
                {
                    throw new ArgumentException($"{Name} refused BPF filter \"{Abbreviate(filter)}\": {e.Message}", nameof(filter), e);
                }
                Volatile.Write(ref _filter, filter);
                Volatile.Write(ref _filterLength, length);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _controlWaiting);
        }
    }

    public ReadStatus Read(Frame frame)
    {
        ArgumentNullException.ThrowIfNull(frame);
        var spin = default(SpinWait);
        while (Volatile.Read(ref _closed) == 0)
        {
            if (Volatile.Read(ref _controlWaiting) != 0)
            {
                // A filter change waits for _readLock; re-taking it at once could starve it.
                spin.SpinOnce();
                continue;
            }
            uint captured;
            lock (_readLock)
            {
                if (Volatile.Read(ref _closed) != 0)
                    break;
                nint header = 0;
                nint data = 0;
                var rc = _device.GetNextPacketPointers(ref header, ref data);
                if (rc == 0)
                {
                    BeforeWait?.Invoke();
                    WaitReadable();
                    continue;
                }
                // PCAP_ERROR: the NIC disappeared. (A NIC merely taken down makes libpcap wait.)
                if (rc != 1)
                    return ReadStatus.Closed;
                // The data stays valid only until the next call on the handle: copy under the lock.
                if (!TryCopy(frame, (byte*)header, (byte*)data, out captured))
                    return ReadStatus.Bad;
            }
            if (captured > MaxFrameSize && !Frames.Offloads.MarkAsSuperFrame(frame, _mtu))
                return ReadStatus.Bad;
            return ReadStatus.Frame;
        }
        return ReadStatus.Closed;
    }

    private void WaitReadable()
    {
        var fds = stackalloc LibC.PollFd[2];
        fds[0] = new LibC.PollFd { Fd = _fd, Events = LibC.POLLIN };
        fds[1] = new LibC.PollFd { Fd = _wakeFd, Events = LibC.POLLIN };
        // Errors and EINTR need no handling: the caller calls libpcap again, which reports them.
        LibC.Poll(fds, 2, ReadTimeoutMs);
    }

    private static bool TryCopy(Frame frame, byte* header, byte* data, out uint captured)
    {
        // struct pcap_pkthdr { struct timeval ts; bpf_u_int32 caplen; bpf_u_int32 len; }; a Linux
        // timeval is two longs.
        var offset = 2 * IntPtr.Size;
        captured = *(uint*)(header + offset);
        var onWire = *(uint*)(header + offset + 4);
        // Shorter than the wire means truncated by the snap length: not a frame to forward.
        if (captured != onWire || captured < 14 || captured > Frame.MaxLength)
            return false;
        new ReadOnlySpan<byte>(data, (int)captured).CopyTo(frame.Buffer.AsSpan(Frame.Headroom));
        frame.SetBounds(Frame.Headroom, (int)captured);
        frame.Offload = default;
        return true;
    }

    public bool Write(Frame frame)
    {
        ArgumentNullException.ThrowIfNull(frame);
        lock (_writeLock)
        {
            if (Volatile.Read(ref _closed) != 0 || !frame.FitsBuffer)
                return false;
            fixed (byte* p = &frame.Buffer[frame.Offset])
                return Native.SendPacket(_handle, p, frame.Length) == 0;
        }
    }

    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
            return;
        lock (_lifetimeLock)
        {
            // The eventfd stays readable from now on, so every later poll returns at once too.
            ulong one = 1;
            if (!_disposed)
                LibC.Write(_wakeFd, &one, sizeof(ulong));
        }
    }

    public void Dispose()
    {
        Close();
        // The reader leaves its poll at once (the eventfd is set); holding every lock, nothing is
        // inside libpcap or polling when the handle and the eventfd are freed.
        lock (_readLock)
        lock (_writeLock)
        lock (_lifetimeLock)
        {
            if (_disposed)
                return;
            _disposed = true;
            _device.Dispose();
            LibC.Close(_wakeFd);
        }
    }

    private static string Abbreviate(string filter) => filter.Length <= 120 ? filter : string.Concat(filter.AsSpan(0, 120), "...");

    /// <summary>
    /// The libpcap entry points used directly. The library is looked up by the same names, in the same
    /// order, as SharpPcap's resolver, so both use the same loaded copy and the same pcap_t layout.
    /// </summary>
    private static class Native
    {
        private static readonly nint Library = Load();

        public static readonly delegate* unmanaged<nint, int, int> SetDirection =
            (delegate* unmanaged<nint, int, int>)NativeLibrary.GetExport(Library, "pcap_setdirection");

        public static readonly delegate* unmanaged<nint, int> GetSelectableFd =
            (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(Library, "pcap_get_selectable_fd");

        public static readonly delegate* unmanaged<nint, byte*, int, int> SendPacket =
            (delegate* unmanaged<nint, byte*, int, int>)NativeLibrary.GetExport(Library, "pcap_sendpacket");

        private static nint Load()
        {
            foreach (var name in (ReadOnlySpan<string>)["libpcap.so", "libpcap.so.0", "libpcap.so.0.8", "libpcap.so.1"])
            {
                if (NativeLibrary.TryLoad(name, out var handle))
                    return handle;
            }
            throw new DllNotFoundException("libpcap is not installed (Debian/Ubuntu: apt-get install libpcap0.8)");
        }
    }
}
