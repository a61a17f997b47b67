using System.Runtime.InteropServices;
using Vnet.Frames;
using Vnet.Native;

namespace Vnet.Interfaces;

/// <summary>
/// An existing NIC that VNET does not own (interface kind <c>pcap</c>), opened through a Linux
/// packet socket with <c>PACKET_VNET_HDR</c>: how the Proxy puts VMs on the user's LAN, and how a
/// host attaches to an interface another program owns (a QEMU TAP, a VM's veth). See
/// docs/interfaces.md.
/// <code>
/// Read:  one recv gives a virtio_net_hdr and the frame (VirtioNetDevice). The header tells a
///        partial checksum (a local sender with checksum offload) from a complete one, and carries
///        the GSO type and size of a GRO/TSO super-frame. Only frames arriving at the NIC are
///        read (PACKET_IGNORE_OUTGOING): the daemon's own injections are not.
/// Write: writev of a header and the frame: the kernel completes checksums and segments
///        super-frames, so the device takes every offload (Offloads = All).
/// Filter: libpcap compiles; SO_ATTACH_FILTER runs it in the kernel, or, for a program the kernel
///        refuses, the reader runs it in user space.
/// GRO:   turned on for the device while it is open, if it was off (a veth's default), so that a
///        sender without TSO (a real NIC's receive, a VM with offloads off) still arrives as
///        super-frames: one read per 64 KiB instead of per 1.5 KB. Set back at close.
/// </code>
/// </summary>
public sealed unsafe class PacketSocketInterface : VirtioNetDevice
{
    /// <inheritdoc cref="BpfProgram.KernelInstructionLimit"/>
    public const int KernelInstructionLimit = BpfProgram.KernelInstructionLimit;

    private const int AF_PACKET = 17;
    private const ushort ETH_P_ALL = 0x0003;
    private const int SOL_PACKET = 263;
    private const int PACKET_ADD_MEMBERSHIP = 1;
    private const int PACKET_MR_PROMISC = 1;
    private const int PACKET_VNET_HDR = 15;
    private const int PACKET_IGNORE_OUTGOING = 23;
    private const int PACKET_AUXDATA = 8;
    private const uint TP_STATUS_VLAN_VALID = 0x10;
    private const uint TP_STATUS_VLAN_TPID_VALID = 0x40;
    private const ushort EtherTypeVlan = 0x8100;
    private const int ControlBytes = 64;
    private const ushort ARPHRD_ETHER = 1;
    private const ushort ARPHRD_LOOPBACK = 772;

    /// <summary>Socket receive buffer: about 400 GRO super-frames, or thousands of small frames.</summary>
    private const int ReceiveBufferBytes = 32 << 20;

    [StructLayout(LayoutKind.Sequential)]
    private struct SockAddrLl
    {
        public ushort Family;
        public ushort Protocol;
        public int IfIndex;
        public ushort HaType;
        public byte PktType;
        public byte HaLen;
        public ulong Address;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PacketMreq
    {
        public int IfIndex;
        public ushort Type;
        public ushort AddressLength;
        public ulong Address;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct SockFprog
    {
        public ushort Length;
        public void* Filter;
    }

    private readonly int _ifIndex;

    // Whether Open turned the device's GRO on (it was off): Dispose turns it off again.
    private bool _groTurnedOn;

    // The 802.1Q tag the kernel took out of the frame just read (PACKET_AUXDATA): TPID << 16 | TCI,
    // with bit 32 set when there is one. Reader thread only.
    private long _vlanTag;

    // SetFilter calls are serialised on _controlLock; _filterLock guards the user-space program,
    // which the reader runs under it. A new filter is also run in user space on the frames already
    // queued (the kernel filtered them with the old one), until the reader finds the queue empty.
    private readonly Lock _controlLock = new();
    private readonly Lock _filterLock = new();
    private BpfProgram? _userProgram;
    private bool _userAlways;
    private int _generation;
    private int _readGeneration;
    private string? _filter;
    private int _filterLength;
    private int _filterInKernel = 1;

    private PacketSocketInterface(string name, int fd, int ifIndex, int mtu)
        : base(name, fd, header: true, OffloadSet.All, mtu)
    {
        _ifIndex = ifIndex;
    }

    /// <summary>Whether opening turned the device's GRO on (it was off); closing turns it off again.</summary>
    public bool GroTurnedOn => _groTurnedOn;

    /// <summary>The filter in force, or null when every frame is read.</summary>
    public string? Filter => Volatile.Read(ref _filter);

    /// <summary>Length of the filter in force in BPF instructions (0 without one).</summary>
    public int FilterLength => Volatile.Read(ref _filterLength);

    /// <summary>
    /// Whether the kernel runs the filter (true without one). False when it refused the program
    /// (longer than <see cref="KernelInstructionLimit"/>, or over <c>net.core.optmem_max</c>): the
    /// reader then runs it, and every frame on the wire is copied into the process first.
    /// </summary>
    public bool FilterInKernel => Volatile.Read(ref _filterInKernel) != 0;

    /// <summary>
    /// Opens <paramref name="device"/> (as seen from the calling thread's network namespace; the
    /// socket stays there) in promiscuous mode, reading incoming frames only, with
    /// <paramref name="filter"/> (libpcap syntax; null reads everything) in force from the first frame.
    /// With <paramref name="receiveOffload"/>, the device's GRO is turned on while it is open if it
    /// was off (a device that refuses is read as it is).
    /// </summary>
    /// <exception cref="IOException">The device does not exist, is not Ethernet, or cannot be opened.</exception>
    /// <exception cref="ArgumentException">The filter is invalid.</exception>
    public static PacketSocketInterface Open(string device, int mtu = 1500, string? filter = null, bool receiveOffload = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(mtu, 68);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(mtu, Frame.MaxLength - 18);
        var program = filter is null ? null : BpfProgram.Compile(filter);
        try
        {
            var ifIndex = (int)LibC.IfNameToIndex(device);
            if (ifIndex == 0)
                throw new IOException($"no network device '{device}' in this thread's network namespace");
            var type = NetDevice.GetHardwareType(device);
            if (type is not (ARPHRD_ETHER or ARPHRD_LOOPBACK))
                throw new IOException($"{device} is not an Ethernet device (hardware type {type})");

            // Protocol 0: nothing is queued until bind, when every option and the filter are set.
            var fd = LibC.Socket(AF_PACKET, LibC.SOCK_RAW | LibC.SOCK_CLOEXEC | LibC.SOCK_NONBLOCK, 0);
            if (fd < 0)
            {
                var errno = LibC.LastError;
                throw new IOException($"cannot open a packet socket for {device}: {LibC.ErrorText(errno)}"
                    + (errno == 1 ? " (needs root or CAP_NET_RAW)" : ""));
            }
            PacketSocketInterface result;
            try
            {
                SetOption(fd, SOL_PACKET, PACKET_VNET_HDR, 1, device, "virtio-net headers");
                SetOption(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1, device, "ignoring outgoing frames");
                SetOption(fd, SOL_PACKET, PACKET_AUXDATA, 1, device, "auxiliary data (VLAN tags)");
                var size = ReceiveBufferBytes;
                if (LibC.SetSockOpt(fd, LibC.SOL_SOCKET, LibC.SO_RCVBUFFORCE, &size, sizeof(int)) != 0)
                    LibC.SetSockOpt(fd, LibC.SOL_SOCKET, LibC.SO_RCVBUF, &size, sizeof(int));
            }
            catch
            {
                LibC.Close(fd);
                throw;
            }
            result = new PacketSocketInterface(device, fd, ifIndex, mtu);
            try
            {
                if (program is not null)
                    result.Install(program);
                program = null;
                var address = new SockAddrLl { Family = AF_PACKET, Protocol = Htons(ETH_P_ALL), IfIndex = ifIndex };
                NetDevice.Check(LibC.Bind(fd, &address, (uint)sizeof(SockAddrLl)), $"bind a packet socket to {device}");
                var membership = new PacketMreq { IfIndex = ifIndex, Type = PACKET_MR_PROMISC };
                NetDevice.Check(LibC.SetSockOpt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &membership, (uint)sizeof(PacketMreq)),
                    $"put {device} in promiscuous mode");
                if (receiveOffload)
                    result._groTurnedOn = NetDevice.TryTurnGroOn(fd, device);
                return result;
            }
            catch
            {
                result.Dispose();
                throw;
            }
        }
        finally
        {
            program?.Dispose();
        }
    }

    /// <summary>
    /// Compiles <paramref name="filter"/> for Ethernet without a device and returns its length in
    /// BPF instructions; above <see cref="KernelInstructionLimit"/> it still works, in user space.
    /// </summary>
    /// <exception cref="ArgumentException">The filter does not compile; the message says why.</exception>
    public static int CompileFilter(string filter)
    {
        using var program = BpfProgram.Compile(filter);
        return program.Length;
    }

    /// <summary>
    /// Replaces the filter while the interface runs, at once and without waiting for the reader:
    /// frames already queued are run through the new filter too. An invalid filter throws and
    /// leaves the old one in force. Compiling takes ~0.4 s for 1000 unrelated MACs.
    /// </summary>
    /// <exception cref="ArgumentException">The filter is invalid.</exception>
    public void SetFilter(string filter)
    {
        ArgumentNullException.ThrowIfNull(filter);
        var program = BpfProgram.Compile(filter);
        try
        {
            lock (_controlLock)
            {
                ObjectDisposedException.ThrowIf(IsDisposed, this);
                Install(program);
            }
            program = null;
        }
        finally
        {
            program?.Dispose();
        }
    }

    /// <summary>Puts <paramref name="program"/> in force (taking it over): in the kernel if it takes it, else in user space.</summary>
    private void Install(BpfProgram program)
    {
        var fprog = new SockFprog { Length = (ushort)Math.Min(program.Length, ushort.MaxValue), Filter = program.Instructions };
        var inKernel = program.FitsKernel
            && LibC.SetSockOpt(Fd, LibC.SOL_SOCKET, LibC.SO_ATTACH_FILTER, &fprog, (uint)sizeof(SockFprog)) == 0;
        if (!inKernel)
        {
            // ENOENT when there was none: nothing to undo.
            LibC.SetSockOpt(Fd, LibC.SOL_SOCKET, LibC.SO_DETACH_FILTER, null, 0);
        }
        BpfProgram? old;
        lock (_filterLock)
        {
            old = _userProgram;
            _userProgram = program;
            _userAlways = !inKernel;
            _generation++;
        }
        old?.Dispose();
        Volatile.Write(ref _filter, program.Filter);
        Volatile.Write(ref _filterLength, program.Length);
        Volatile.Write(ref _filterInKernel, inKernel ? 1 : 0);
    }

    private protected override nint Receive(int fd, byte* buffer, nuint length)
    {
        Volatile.Write(ref _readGeneration, Volatile.Read(ref _generation));
        var iov = new LibC.IoVec { Base = buffer, Length = length };
        var control = stackalloc byte[ControlBytes];
        var msg = new UdpBatch.MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = ControlBytes };
        // MSG_TRUNC: the whole length even when it did not fit, so a truncated frame is seen.
        var n = UdpBatch.RecvMsg(fd, &msg, LibC.MSG_TRUNC);
        _vlanTag = n >= 0 ? VlanTag(&msg) : 0;
        return n;
    }

    /// <summary>The tag in a <c>struct tpacket_auxdata</c> control message, or 0.</summary>
    private static long VlanTag(UdpBatch.MsgHdr* msg)
    {
        // One control message: cmsghdr (16 bytes), then tp_status, tp_len, tp_snaplen (u32 each),
        // tp_mac, tp_net, tp_vlan_tci, tp_vlan_tpid (u16 each).
        if (msg->ControlLength < (nuint)(sizeof(UdpBatch.CmsgHdr) + 20))
            return 0;
        var header = (UdpBatch.CmsgHdr*)msg->Control;
        if (header->Level != SOL_PACKET || header->Type != PACKET_AUXDATA)
            return 0;
        var aux = (byte*)(header + 1);
        var status = *(uint*)aux;
        if ((status & TP_STATUS_VLAN_VALID) == 0)
            return 0;
        var tci = *(ushort*)(aux + 16);
        var tpid = (status & TP_STATUS_VLAN_TPID_VALID) != 0 ? *(ushort*)(aux + 18) : EtherTypeVlan;
        return (1L << 32) | ((long)tpid << 16) | tci;
    }

    /// <summary>Puts the tag the kernel took out back between the MAC addresses and the EtherType, as it was on the wire.</summary>
    private void RestoreVlanTag(Frame frame)
    {
        var buffer = frame.Buffer.AsSpan();
        var offset = frame.Offset - 4;
        // The header before the frame was already read: its bytes may be overwritten.
        buffer.Slice(frame.Offset, 12).CopyTo(buffer.Slice(offset));
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(buffer.Slice(offset + 12), (ushort)(_vlanTag >> 16));
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(buffer.Slice(offset + 14), (ushort)_vlanTag);
        frame.SetBounds(offset, frame.Length + 4);
        // The header's offsets count from the frame the kernel had, without the tag.
        var offload = frame.Offload;
        if (offload.NeedsChecksum)
            offload.CsumStart += 4;
        if (offload.HdrLen > 0)
            offload.HdrLen += 4;
        frame.Offload = offload;
    }

    private protected override bool Accept(Frame frame)
    {
        // Frames again: the device is up (a read only, on the data path, unless it was down).
        if (_sawDown)
            Volatile.Write(ref _sawDown, false);
        if (_vlanTag != 0)
            RestoreVlanTag(frame);
        if (Volatile.Read(ref _userProgram) is not null)
        {
            lock (_filterLock)
            {
                if (_userProgram is { } program && !program.Matches(frame.Data))
                    return false;
            }
        }
        // A GRO'd frame from a wire comes with GSO metadata and a verified checksum; the rest of
        // VNET passes super-frames on with a partial one. Then the header must be one VNET handles.
        return Frames.Offloads.RequestChecksum(frame)
            && OffloadCheck.Check(frame.Offload, frame.Data) == OffloadFault.None;
    }

    private protected override void OnEmpty()
    {
        if (Volatile.Read(ref _userProgram) is null)
            return;
        lock (_filterLock)
        {
            // Everything queued before the last filter change has been read: the kernel filters the rest.
            if (!_userAlways && _generation == Volatile.Read(ref _readGeneration))
            {
                _userProgram?.Dispose();
                _userProgram = null;
            }
        }
    }

    private protected override ReadStatus? OnReadError(int errno)
    {
        switch (errno)
        {
            case LibC.ENETDOWN:
                // The device went down (it comes back with its frames) or away (the socket lost it).
                // A deleted device reports ENETDOWN when it goes down, while the socket is still
                // bound to it, and says nothing when it is unregistered right after: so, once down,
                // the reader looks again (Gone) each time it finds nothing, and sleeps at most a
                // second at a time until frames come again.
                if (!StillBound())
                    return ReadStatus.Closed;
                Volatile.Write(ref _sawDown, true);
                return null;
            case LibC.EINVAL:
                // The kernel could not describe the frame in a virtio_net_hdr (an unsupported GSO
                // type): it dropped it.
                return ReadStatus.Bad;
            default:
                return ReadStatus.Closed;
        }
    }

    // Set when the device was seen going down, cleared by the next frame (see OnReadError).
    private bool _sawDown;

    private protected override int WaitTimeoutMs => Volatile.Read(ref _sawDown) ? 1000 : -1;

    private protected override bool Gone => Volatile.Read(ref _sawDown) && !StillBound();

    /// <summary>Whether the socket is still bound to its device (the kernel unbinds it when the device is unregistered).</summary>
    private bool StillBound()
    {
        var address = default(SockAddrLl);
        var length = (uint)sizeof(SockAddrLl);
        return LibC.GetSockName(Fd, &address, &length) == 0 && address.IfIndex == _ifIndex;
    }

    private protected override void DisposeCore()
    {
        lock (_controlLock)
        lock (_filterLock)
        {
            _userProgram?.Dispose();
            _userProgram = null;
        }
    }

    private protected override void BeforeCloseDescriptors()
    {
        // Through this socket, which lives in the device's namespace whatever thread disposes it.
        // A device that went away or was renamed keeps nothing to restore.
        if (_groTurnedOn)
            NetDevice.TrySetGro(Fd, Name, false);
    }

    private static void SetOption(int fd, int level, int name, int value, string device, string what)
    {
        if (LibC.SetSockOpt(fd, level, name, &value, sizeof(int)) != 0)
            throw new IOException($"the packet socket for {device} refuses {what}: {LibC.ErrorText(LibC.LastError)}");
    }

    private static ushort Htons(ushort value) => (ushort)((value << 8) | (value >> 8));
}
