using System.Runtime.InteropServices;
using SharpPcap;
using SharpPcap.LibPcap;
using Vnet.Frames;
using LibPcapDeviceInfo = SharpPcap.LibPcap.PcapInterface;

namespace Vnet.Interfaces;

/// <summary>
/// An existing NIC that VNET does not own, opened in promiscuous mode through libpcap: how the
/// Proxy puts VMs on the user's LAN, and how a host attaches to an interface another program owns
/// (a QEMU TAP, a host-only network). See docs/interfaces.md.
/// <code>
/// Read:  pcap_next_ex hands over a view of libpcap's ring; the frame is copied to Frame.Headroom.
///        Only frames arriving at the NIC are captured (direction IN): our own injections are not.
///        A frame longer than one MTU was merged by GRO below libpcap; it becomes a TSO super-frame.
/// Write: pcap_sendpacket, one writer at a time (a pcap_t is not thread-safe). The device takes
///        no offloads, so InterfacePort hands over finalised, MTU-sized frames.
/// Close: pcap_breakloop wakes a blocked read at once; the short read timeout bounds it anyway.
/// </code>
/// <para>
/// SharpPcap opens, configures and filters the device. The data path bypasses two of its calls:
/// <c>GetNextPacket</c> allocates a <c>Pollfd[]</c>, a <c>PcapHeader</c> and a <c>PosixTimeval</c>
/// per packet and polls outside libpcap for a fixed 500 ms (so <c>pcap_breakloop</c> cannot wake
/// it), and <c>SendPacket</c> throws an exception for every refused frame. Reads use the
/// allocation-free <c>GetNextPacketPointers</c>; writes, capture direction and wake-up call libpcap
/// directly (SharpPcap 6.3.1 has no direction setter and keeps <c>pcap_breakloop</c> internal).
/// </para>
/// </summary>
public sealed unsafe class PcapInterface : ILocalInterface
{
    /// <summary>
    /// Longest classic BPF program the kernel attaches to a socket (BPF_MAXINSNS). Past it libpcap
    /// filters in user space: correct, but every frame on the wire is copied into the process.
    /// </summary>
    public const int KernelInstructionLimit = 4096;

    /// <summary>Upper bound on how long a blocked <see cref="Read"/> waits before rechecking its state.</summary>
    internal const int ReadTimeoutMs = 100;

    // libpcap caps its ring slots at max(MTU, 65535) + 18 when the NIC has receive offloads, so a
    // GRO-merged 64 KiB packet is captured whole. Frame.MaxLength is the most a frame can hold.
    private const int SnapLength = Frame.MaxLength;

    // Immediate mode uses fixed-size ring slots of a whole snap length each (~68 KiB with offloads):
    // libpcap's default 2 MiB ring would hold only ~30 frames, too few for a burst.
    private const int RingBytes = 16 << 20;

    private const int PcapDirectionIn = 1;
    private const int PcapErrorBreak = -2;

    private readonly LibPcapLiveDevice _device;
    private readonly nint _handle;
    private readonly int _mtu;

    // The reader holds _readLock around each pcap_next_ex, SetFilter around pcap_setfilter (libpcap
    // filters frames already in the ring with the program the reader uses). Writers serialise on
    // _writeLock without waiting for reads. Dispose takes all three to free the handle.
    private readonly Lock _readLock = new();
    private readonly Lock _writeLock = new();
    private readonly Lock _lifetimeLock = new();
    private int _controlWaiting;
    private int _closed;
    private bool _disposed;
    private string? _filter;

    private PcapInterface(string name, LibPcapLiveDevice device, int mtu)
    {
        Name = name;
        _device = device;
        _handle = device.Handle.DangerousGetHandle();
        _mtu = mtu;
        MaxFrameSize = mtu + 14 + 4;
    }

    public string Name { get; }

    /// <summary>False: libpcap injects frames as they are, so they must be complete and MTU-sized.</summary>
    public bool AcceptsOffloads => false;

    public int MaxFrameSize { get; }

    /// <summary>The filter in force, or null when every frame is captured.</summary>
    public string? Filter => Volatile.Read(ref _filter);

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
                ReadTimeout = ReadTimeoutMs,
                Immediate = true,
                BufferSize = RingBytes,
            });
        }
        catch (PcapException e)
        {
            pcap.Dispose();
            throw new IOException($"libpcap cannot open {device} ({e.Error}): {e.Message} (needs root or CAP_NET_RAW)", e);
        }
        try
        {
            if (pcap.LinkType != PacketDotNet.LinkLayers.Ethernet)
                throw new IOException($"{device} is not an Ethernet device (link type {pcap.LinkType})");
            if (Native.SetDirection(pcap.Handle.DangerousGetHandle(), PcapDirectionIn) != 0)
                throw new IOException($"cannot restrict capture on {device} to incoming frames: {pcap.LastError}");
            var result = new PcapInterface(device, pcap, mtu);
            if (filter is not null)
                result.SetFilter(filter);
            return result;
        }
        catch
        {
            pcap.Dispose();
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
    /// in force. The reader is held off for the compile (up to ~0.5 s for 1000 unrelated MACs);
    /// frames wait in the ring meanwhile.
    /// </summary>
    /// <exception cref="ArgumentException">The filter is invalid.</exception>
    public void SetFilter(string filter)
    {
        ArgumentNullException.ThrowIfNull(filter);
        // Compiled once without the device first, so a bad filter never reaches the live handle:
        // SharpPcap records the new text as "the" filter before it knows whether it compiles.
        CompileFilter(filter);
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
            int rc;
            uint captured = 0;
            lock (_readLock)
            {
                if (Volatile.Read(ref _closed) != 0)
                    break;
                nint header = 0;
                nint data = 0;
                rc = _device.GetNextPacketPointers(ref header, ref data);
                // The data stays valid only until the next call on the handle: copy under the lock.
                if (rc == 1 && !TryCopy(frame, (byte*)header, (byte*)data, out captured))
                    return ReadStatus.Bad;
            }
            if (rc == 1)
            {
                if (captured > MaxFrameSize && !Offloads.MarkAsSuperFrame(frame, _mtu))
                    return ReadStatus.Bad;
                return ReadStatus.Frame;
            }
            // 0: the read timeout passed; PCAP_ERROR_BREAK: Close (or a stale wake-up) broke the wait.
            if (rc == 0 || rc == PcapErrorBreak)
                continue;
            // PCAP_ERROR: the interface went down or away.
            return ReadStatus.Closed;
        }
        return ReadStatus.Closed;
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
            if (Volatile.Read(ref _closed) != 0)
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
            // Safe from any thread (it sets a flag and writes libpcap's eventfd), but not on a freed handle.
            if (!_disposed)
                Native.BreakLoop(_handle);
        }
    }

    public void Dispose()
    {
        Close();
        // The reader leaves pcap_next_ex within a read timeout at worst (at once after breakloop);
        // holding every lock, nothing else is inside libpcap when the handle is freed.
        lock (_readLock)
        lock (_writeLock)
        lock (_lifetimeLock)
        {
            if (_disposed)
                return;
            _disposed = true;
            _device.Dispose();
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

        public static readonly delegate* unmanaged<nint, void> BreakLoop =
            (delegate* unmanaged<nint, void>)NativeLibrary.GetExport(Library, "pcap_breakloop");

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
