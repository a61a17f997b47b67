using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.ExceptionServices;
using Vnet.Frames;
using Vnet.Interfaces;
using Vnet.Tests.TestBed;

namespace Vnet.Tests.Interfaces;

/// <summary>
/// A veth pair in a fresh namespace, a <see cref="PacketSocketInterface"/> on each end: what one injects the
/// other captures. IPv6 is off in the namespace so that the kernel sends nothing of its own, and
/// every frame carries a random tag so that a stray one could not be mistaken for a test frame.
/// "Not captured" is asserted against a later frame that is: a veth keeps order, so once the later
/// frame is read the earlier one can no longer arrive.
/// </summary>
[Collection("Netns")]
public sealed class PacketSocketInterfaceTests : IDisposable
{
    private const int Mtu = 1500;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);
    private static int s_counter;

    private static readonly MacAddress Vm1 = MacAddress.Parse("02:56:4e:00:00:01");
    private static readonly MacAddress Vm2 = MacAddress.Parse("02:56:4e:00:00:02");
    private static readonly MacAddress LanHost = MacAddress.Parse("02:aa:00:00:00:01");
    private static readonly MacAddress LanRouter = MacAddress.Parse("02:aa:00:00:00:fe");

    private readonly string _ns;
    private readonly List<string> _otherNamespaces = [];
    private readonly List<PacketSocketInterface> _interfaces = [];
    private readonly List<Capture> _captures = [];
    private readonly List<Relay> _relays = [];
    private readonly Random _rng = new();

    public PacketSocketInterfaceTests()
    {
        TestBedGuard.ThrowIfUnavailable();
        _ns = $"vtpc{Environment.ProcessId % 10000}{Interlocked.Increment(ref s_counter)}";
        Sh.TryExec("ip", ["netns", "del", _ns], 10);
        Sh.Run($"ip netns add {_ns}");
        try
        {
            // Best effort: without IPv6 in the kernel there is nothing to turn off.
            Sh.TryRun($"ip netns exec {_ns} sh -c 'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6'");
            Sh.Run($"ip -n {_ns} link add pa type veth peer name pb");
            Sh.Run($"ip -n {_ns} link set pa up");
            Sh.Run($"ip -n {_ns} link set pb up");
        }
        catch
        {
            Sh.TryExec("ip", ["netns", "del", _ns], 10);
            throw;
        }
    }

    public void Dispose()
    {
        foreach (var pcap in _interfaces)
            pcap.Close();
        foreach (var capture in _captures)
            capture.Join();
        foreach (var relay in _relays)
            relay.Join();
        foreach (var pcap in _interfaces)
            pcap.Dispose();
        Sh.TryExec("ip", ["netns", "del", _ns], 10);
        foreach (var ns in _otherNamespaces)
            Sh.TryExec("ip", ["netns", "del", ns], 10);
    }

    [Fact]
    public void Read_FrameSentOnPeer_ReturnsExactBytes()
    {
        var a = OpenIn("pa");
        var b = OpenIn("pb");
        var atA = Start(a);
        var small = Ethernet(dst: LanHost, src: LanRouter, payload: 46);
        var full = Ethernet(dst: MacAddress.Broadcast, src: LanRouter, payload: Mtu);

        Assert.True(b.Write(ToFrame(small)));
        Assert.True(b.Write(ToFrame(full)));

        atA.WaitFor(small);
        atA.WaitFor(full);
        Assert.Equal(0, atA.Bad);
    }

    [Fact]
    public void Read_VlanTaggedFrame_KeepsItsTag()
    {
        // The receiving kernel moves the tag out of the frame into metadata; Read puts it back.
        var a = OpenIn("pa");
        var b = OpenIn("pb");
        var atA = Start(a);
        var plain = Ethernet(dst: LanHost, src: LanRouter, payload: 100);
        var tagged = new byte[plain.Length + 4];
        plain.AsSpan(0, 12).CopyTo(tagged);
        tagged[12] = 0x81;
        tagged[13] = 0x00;
        tagged[14] = 0x20;
        tagged[15] = 0x2a;
        plain.AsSpan(12).CopyTo(tagged.AsSpan(16));

        Assert.True(b.Write(ToFrame(tagged)));

        atA.WaitFor(tagged);
        Assert.Equal(0, atA.Bad);
    }

    [Fact]
    public void Write_Frame_ArrivesAtPeerExactly()
    {
        var a = OpenIn("pa");
        var b = OpenIn("pb");
        var atB = Start(b);
        var frame = Ethernet(dst: LanRouter, src: Vm1, payload: 200);

        Assert.True(a.Write(ToFrame(frame)));

        atB.WaitFor(frame);
    }

    [Fact]
    public void Read_OwnInjectedFrame_IsNotCapturedBack()
    {
        var a = OpenIn("pa");
        var b = OpenIn("pb");
        var atA = Start(a);
        var atB = Start(b);
        var injected = Ethernet(dst: MacAddress.Broadcast, src: Vm1, payload: 64);
        var later = Ethernet(dst: MacAddress.Broadcast, src: LanRouter, payload: 64);

        Assert.True(a.Write(ToFrame(injected)));
        atB.WaitFor(injected);
        Assert.True(b.Write(ToFrame(later)));

        atA.WaitFor(later);
        Assert.False(atA.Saw(injected), "pa captured the frame it injected itself");
        Assert.False(atB.Saw(later), "pb captured the frame it injected itself");
    }

    [Fact]
    public void Read_ProxyFilter_PassesToVmBroadcastMulticast_DropsFromVmAndOtherUnicast()
    {
        var a = OpenIn("pa", BpfFilters.ForProxyNic([Vm1, Vm2]));
        var b = OpenIn("pb");
        var atA = Start(a);
        byte[][] dropped =
        [
            Ethernet(dst: MacAddress.Broadcast, src: Vm1, payload: 64),
            Ethernet(dst: Vm1, src: Vm2, payload: 64),
            Ethernet(dst: LanHost, src: LanRouter, payload: 64),
        ];
        byte[][] passed =
        [
            Ethernet(dst: Vm1, src: LanRouter, payload: 64),
            Ethernet(dst: Vm2, src: LanHost, payload: 64),
            Ethernet(dst: MacAddress.Broadcast, src: LanRouter, payload: 64),
            Ethernet(dst: MacAddress.Parse("01:00:5e:00:00:fb"), src: LanHost, payload: 64),
        ];

        AssertFiltered(atA, b, dropped, passed);
    }

    [Fact]
    public void Read_HostFilter_PassesOnlyFramesFromVms()
    {
        var a = OpenIn("pa", BpfFilters.ForHostInterface([Vm1]));
        var b = OpenIn("pb");
        var atA = Start(a);
        var fromHost = Ethernet(dst: MacAddress.Broadcast, src: LanHost, payload: 64);
        var fromVm = Ethernet(dst: LanRouter, src: Vm1, payload: 64);

        AssertFiltered(atA, b, [fromHost], [fromVm]);
    }

    [Fact]
    public void SetFilter_AtRunTime_ChangesWhatIsRead()
    {
        var a = OpenIn("pa", "ether src " + Vm1);
        var b = OpenIn("pb");
        var atA = Start(a);
        AssertFiltered(atA, b, [Ethernet(dst: LanRouter, src: Vm2, payload: 64)], [Ethernet(dst: LanRouter, src: Vm1, payload: 64)]);

        a.SetFilter("ether src " + Vm2);

        Assert.Equal("ether src " + Vm2, a.Filter);
        AssertFiltered(atA, b, [Ethernet(dst: LanRouter, src: Vm1, payload: 64)], [Ethernet(dst: LanRouter, src: Vm2, payload: 64)]);
    }

    [Fact]
    public void SetFilter_InvalidFilter_ThrowsAndKeepsOldFilter()
    {
        var old = "ether src " + Vm1;
        var a = OpenIn("pa", old);
        var b = OpenIn("pb");
        var atA = Start(a);

        var e = Assert.Throws<ArgumentException>(() => a.SetFilter("ether src not-a-mac or ("));

        Assert.Contains("not-a-mac", e.Message, StringComparison.Ordinal);
        Assert.Equal(old, a.Filter);
        AssertFiltered(atA, b, [Ethernet(dst: LanRouter, src: Vm2, payload: 64)], [Ethernet(dst: LanRouter, src: Vm1, payload: 64)]);
    }

    [Fact]
    public void SetFilter_ProxyFilterFor1000Macs_AppliesOnTheLiveDevice()
    {
        var macs = new MacAddress[1000];
        for (var i = 0; i < macs.Length; i++)
            macs[i] = new MacAddress(0x02_56_4e_00_00_00UL + (ulong)(i * 3));
        var a = OpenIn("pa");
        var b = OpenIn("pb");
        var atA = Start(a);

        a.SetFilter(BpfFilters.ForProxyNic(macs));

        AssertFiltered(atA, b,
            [Ethernet(dst: MacAddress.Broadcast, src: macs[500], payload: 64), Ethernet(dst: new MacAddress(macs[999].Value + 1), src: LanRouter, payload: 64)],
            [Ethernet(dst: macs[999], src: LanRouter, payload: 64)]);
    }

    [Fact]
    public void SetFilter_ProgramTooLongForTheKernel_FilteredInUserSpace()
    {
        // Unrelated MACs defeat BpfFilters' grouping: about 9600 instructions, past the kernel's limit.
        var rng = new Random(7);
        var macs = new MacAddress[1000];
        for (var i = 0; i < macs.Length; i++)
            macs[i] = new MacAddress(((ulong)rng.NextInt64(1L << 48) & ~0x01_00_00_00_00_00UL) | 0x02_00_00_00_00_00UL);
        var a = OpenIn("pa");
        var b = OpenIn("pb");
        var atA = Start(a);

        a.SetFilter(BpfFilters.ForProxyNic(macs));

        Assert.True(a.FilterLength > PacketSocketInterface.KernelInstructionLimit, $"{a.FilterLength} instructions");
        Assert.False(a.FilterInKernel);
        AssertFiltered(atA, b,
            [Ethernet(dst: MacAddress.Broadcast, src: macs[500], payload: 64), Ethernet(dst: LanHost, src: LanRouter, payload: 64)],
            [Ethernet(dst: macs[999], src: LanRouter, payload: 64)]);
    }

    [Fact]
    public void Write_PlainFrameLongerThanMtu_IsRefused()
    {
        var a = OpenIn("pa");

        Assert.False(a.Write(ToFrame(Ethernet(dst: LanRouter, src: Vm1, payload: Mtu + 100))));
        Assert.True(a.Write(ToFrame(Ethernet(dst: LanRouter, src: Vm1, payload: Mtu))));
    }

    [Fact]
    public void Close_WhileReadBlocks_ReadReturnsClosedPromptly()
    {
        var a = OpenIn("pa");
        var atA = Start(a);
        // Long enough for the reader to be inside libpcap's poll, waiting for a frame.
        Thread.Sleep(300);
        Assert.Null(atA.Ended);

        var clock = Stopwatch.StartNew();
        a.Close();
        Wait.Until(() => atA.Ended is not null, Timeout, "Read to return after Close");
        clock.Stop();

        Assert.Equal(ReadStatus.Closed, atA.Ended);
        Assert.True(clock.Elapsed < TimeSpan.FromMilliseconds(500), $"Read took {clock.Elapsed.TotalMilliseconds:0} ms to return after Close");
        Assert.False(a.Write(ToFrame(Ethernet(dst: LanRouter, src: Vm1, payload: 64))));
    }

    [Fact]
    public void ReadAndWrite_SteadyState_AllocateNothing()
    {
        var a = OpenIn("pa");
        var b = OpenIn("pb");
        var atB = Start(b);
        var frame = ToFrame(Ethernet(dst: LanRouter, src: Vm1, payload: 1000));
        // Warm up: JIT, P/Invoke stubs, first-call paths in the kernel, and tiered
        // compilation's promotion of the write path (it waits for 100 ms without new tier-0 code;
        // a promotion in the middle of a measured batch was once seen as 32 bytes).
        for (var round = 0; round < 3; round++)
        {
            for (var i = 0; i < 50; i++)
                Assert.True(a.Write(frame));
            Wait.Until(() => atB.Count >= 50 * (round + 1), Timeout, $"warm-up round {round + 1} at pb");
            Thread.Sleep(150);
        }
        atB.ResetAllocations();

        long written = 0;
        // In batches the ring absorbs, so that every frame is read, not dropped.
        for (var batch = 1; batch <= 10; batch++)
        {
            var before = GC.GetAllocatedBytesForCurrentThread();
            for (var i = 0; i < 50; i++)
                Assert.True(a.Write(frame));
            written += GC.GetAllocatedBytesForCurrentThread() - before;
            Wait.Until(() => atB.Count >= 150 + (batch * 50), Timeout, $"batch {batch} of 50 frames at pb");
        }

        Assert.Equal(0, written);
        Assert.Equal(0, atB.AllocatedInRead);
    }

    [Fact]
    public void Read_TcpSuperFrameFromPeer_MarkedAsGsoSuperFrame()
    {
        // pb moves to a second namespace so that TCP between the two ends crosses the veth. The
        // sender's TSO hands the veth 64 KiB packets, which reach pa unsegmented, as GRO'd
        // packets reach a physical NIC's capture.
        var peerNs = _ns + "b";
        Sh.TryExec("ip", ["netns", "del", peerNs], 10);
        Sh.Run($"ip netns add {peerNs}");
        _otherNamespaces.Add(peerNs);
        Sh.Run($"ip -n {_ns} link set pb netns {peerNs}");
        Sh.Run($"ip -n {_ns} addr add 10.77.0.1/24 dev pa");
        Sh.Run($"ip -n {peerNs} addr add 10.77.0.2/24 dev pb");
        Sh.Run($"ip -n {peerNs} link set pb up");
        var a = OpenIn("pa", "tcp");
        var atA = Start(a);
        using var listener = InNamespace(_ns, () =>
        {
            var l = new TcpListener(IPAddress.Parse("10.77.0.1"), 5001);
            l.Start();
            return l;
        });
        using var client = InNamespace(peerNs, () => new TcpClient(AddressFamily.InterNetwork));

        client.Connect(IPAddress.Parse("10.77.0.1"), 5001);
        using var server = listener.AcceptTcpClient();
        var sink = new Thread(() => server.GetStream().CopyTo(Stream.Null)) { IsBackground = true };
        sink.Start();
        client.GetStream().Write(new byte[4 << 20]);
        client.Client.Shutdown(SocketShutdown.Send);
        Assert.True(sink.Join(Timeout), "the 4 MiB transfer did not finish");

        var super = Wait.For(() => atA.FirstSuperFrame, Timeout, "a frame longer than one MTU at pa");
        Assert.True(super.Data.Length > a.MaxFrameSize);
        Assert.Equal(VirtioNetHeader.GsoTcpV4, super.Offload.GsoType & ~VirtioNetHeader.GsoEcn);
        Assert.True(super.Offload.NeedsChecksum);
        Assert.InRange(super.Offload.GsoSize, 1, Mtu - 40);
        Assert.Equal(0, atA.Bad);
    }

    [Fact]
    public async Task Relay_TcpFromSendersWithOffloads_SuperFramesCarriedWholeAndEveryByteArrives()
    {
        // Two namespaces with checksum offload and TSO on (a veth's default), joined only by a
        // relay between two packet sockets that copies every frame as it was read, header included:
        // what a daemon does between a host's pcap interface and a TAP or a link.
        var (toRight, toLeft) = await RelayTransfer(sendersOffload: true, receiveOffload: true, port: 7201);

        Assert.True(toRight.SuperFrames > 0, $"no super-frame among the {toRight.Frames} frames relayed");
    }

    [Fact]
    public async Task Relay_TcpFromSendersWithoutOffloads_GroMakesSuperFramesAndEveryByteArrives()
    {
        // Senders that hand over MTU-sized frames with complete checksums, as a real NIC's wire
        // does (and the peer benchmark's pcap mode): the packet socket turned the device's GRO on,
        // so they are still read as super-frames, and written whole on the other side.
        var (toRight, _) = await RelayTransfer(sendersOffload: false, receiveOffload: true, port: 7202);

        Assert.True(toRight.SuperFrames > 0, $"no super-frame among the {toRight.Frames} frames relayed");
    }

    [Fact]
    public async Task Relay_TcpFromSendersWithoutOffloads_WithoutGro_EveryFrameIsMtuSized()
    {
        // The same with receive offload left alone (offloads = false): every frame is one MTU, the
        // case GRO is turned on for.
        var (toRight, _) = await RelayTransfer(sendersOffload: false, receiveOffload: false, port: 7203);

        Assert.Equal(0, toRight.SuperFrames);
    }

    [Fact]
    public void Open_DeviceWithGroOff_TurnsItOnWhileOpenAndOffAtDispose()
    {
        Assert.Equal("off", Gro(_ns, "pa"));

        var pa = OpenIn("pa");
        Assert.True(pa.GroTurnedOn);
        Assert.Equal("on", Gro(_ns, "pa"));
        // Disposed from this thread, outside the namespace: the socket still reaches its device.
        pa.Dispose();
        Assert.Equal("off", Gro(_ns, "pa"));

        var untouched = OpenIn("pa", receiveOffload: false);
        Assert.False(untouched.GroTurnedOn);
        Assert.Equal("off", Gro(_ns, "pa"));
        untouched.Dispose();

        // On already (the user's choice, or a physical NIC's default): left on at close.
        Sh.Run($"ip netns exec {_ns} ethtool -K pb gro on");
        var pb = OpenIn("pb");
        Assert.False(pb.GroTurnedOn);
        pb.Dispose();
        Assert.Equal("on", Gro(_ns, "pb"));
    }

    /// <summary><c>ethtool -k</c>'s generic-receive-offload of a device: "on" or "off".</summary>
    private static string Gro(string ns, string device)
    {
        foreach (var line in Sh.Run($"ip netns exec {ns} ethtool -k {device}").Split('\n'))
        {
            if (line.StartsWith("generic-receive-offload:", StringComparison.Ordinal))
                return line["generic-receive-offload:".Length..].Trim().Split(' ')[0];
        }
        throw new InvalidOperationException($"ethtool -k {device} shows no generic-receive-offload line");
    }

    /// <summary>
    /// 16 MiB of TCP from one namespace to another through two relayed packet sockets (lb, rb in
    /// the test's namespace); both directions' relays are returned, with nothing bad or refused.
    /// </summary>
    private async Task<(Relay ToRight, Relay ToLeft)> RelayTransfer(bool sendersOffload, bool receiveOffload, int port)
    {
        var left = _ns + "l";
        var right = _ns + "r";
        foreach (var (ns, inner, outer, ip) in new[] { (left, "la", "lb", "10.78.0.1"), (right, "ra", "rb", "10.78.0.2") })
        {
            Sh.TryExec("ip", ["netns", "del", ns], 10);
            Sh.Run($"ip netns add {ns}");
            _otherNamespaces.Add(ns);
            Sh.Run($"ip -n {_ns} link add {outer} type veth peer name {inner} netns {ns}");
            Sh.Run($"ip -n {_ns} link set {outer} up");
            Sh.Run($"ip -n {ns} addr add {ip}/24 dev {inner}");
            Sh.Run($"ip -n {ns} link set {inner} up");
            if (!sendersOffload)
                Sh.Run($"ip netns exec {ns} ethtool -K {inner} tx off tso off gso off");
            var features = Sh.Run($"ip netns exec {ns} ethtool -k {inner}");
            var expected = sendersOffload ? "on" : "off";
            Assert.Contains("tx-checksumming: " + expected, features, StringComparison.Ordinal);
            Assert.Contains("tcp-segmentation-offload: " + expected, features, StringComparison.Ordinal);
        }
        var lb = OpenIn("lb", receiveOffload: receiveOffload);
        var rb = OpenIn("rb", receiveOffload: receiveOffload);
        Assert.Equal(OffloadSet.All, lb.Offloads);
        Assert.Equal(receiveOffload, lb.GroTurnedOn);
        var toRight = StartRelay(lb, rb);
        var toLeft = StartRelay(rb, lb);

        const long Bytes = 16L << 20;
        var received = Functional.TcpTransfer.Receive(right, port, TimeSpan.FromSeconds(30));
        var sent = Functional.TcpTransfer.Send(left, new IPEndPoint(IPAddress.Parse("10.78.0.2"), port), Bytes, long.MaxValue / 2, TimeSpan.FromSeconds(30));
        var results = await Task.WhenAll(sent, received).WaitAsync(TimeSpan.FromSeconds(40));

        Assert.Equal(Bytes, results[0].Bytes);
        Assert.Equal(results[0], results[1]);
        Assert.Equal(0, toRight.Bad + toLeft.Bad);
        Assert.Equal(0, toRight.Refused + toLeft.Refused);
        return (toRight, toLeft);
    }

    [Fact]
    public void Open_UnknownDevice_ThrowsNamingIt()
    {
        var e = Assert.Throws<IOException>(() => OpenIn("nosuchdev0"));

        Assert.Contains("nosuchdev0", e.Message, StringComparison.Ordinal);
    }

    /// <summary>Opens a device from a thread inside the namespace; the handle stays there.</summary>
    private PacketSocketInterface OpenIn(string device, string? filter = null, bool receiveOffload = true)
    {
        var opened = InNamespace(_ns, () => PacketSocketInterface.Open(device, Mtu, filter, receiveOffload));
        _interfaces.Add(opened);
        return opened;
    }

    /// <summary>Runs <paramref name="create"/> on a thread inside <paramref name="ns"/>: what it opens lives there.</summary>
    private static T InNamespace<T>(string ns, Func<T> create)
        where T : class
    {
        T? created = null;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using (Netns.Enter(ns))
                    created = create();
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        thread.Start();
        if (!thread.Join(TimeSpan.FromSeconds(10)))
            throw new TimeoutException($"work in namespace {ns} did not finish within 10 s");
        if (error is not null)
            ExceptionDispatchInfo.Throw(error);
        return created!;
    }

    private Capture Start(PacketSocketInterface pcap)
    {
        var capture = new Capture(pcap);
        _captures.Add(capture);
        return capture;
    }

    /// <summary>
    /// Writes <paramref name="dropped"/> then <paramref name="passed"/> at the peer, waits until
    /// <paramref name="at"/> read every passed frame, then asserts it read none of the dropped ones
    /// (written first: a veth keeps order).
    /// </summary>
    private static void AssertFiltered(Capture at, PacketSocketInterface peer, byte[][] dropped, byte[][] passed)
    {
        foreach (var f in dropped)
            Assert.True(peer.Write(ToFrame(f)));
        foreach (var f in passed)
            Assert.True(peer.Write(ToFrame(f)));
        foreach (var f in passed)
            at.WaitFor(f);
        foreach (var f in dropped)
            Assert.False(at.Saw(f), $"the filter let through {Describe(f)}");
    }

    private Relay StartRelay(PacketSocketInterface from, PacketSocketInterface to)
    {
        var relay = new Relay(from, to);
        _relays.Add(relay);
        return relay;
    }

    /// <summary>An Ethernet frame with a test EtherType and a random payload (the tag).</summary>
    private byte[] Ethernet(MacAddress dst, MacAddress src, int payload)
    {
        var frame = new byte[14 + payload];
        dst.Write(frame);
        src.Write(frame.AsSpan(6));
        frame[12] = 0x88;
        frame[13] = 0xb5;
        _rng.NextBytes(frame.AsSpan(14));
        return frame;
    }

    private static Frame ToFrame(byte[] bytes)
    {
        var frame = Frame.CreateUnpooled();
        bytes.CopyTo(frame.Buffer.AsSpan(Frame.Headroom));
        frame.SetBounds(Frame.Headroom, bytes.Length);
        return frame;
    }

    private static string Describe(byte[] frame) =>
        $"dst {MacAddress.Read(frame)} src {MacAddress.Read(frame.AsSpan(6))}";

    /// <summary>Reads an interface on its own thread, as InterfacePort does, and keeps what it read.</summary>
    private sealed class Capture
    {
        private readonly PacketSocketInterface _pcap;
        private readonly Thread _thread;
        private readonly List<byte[]> _frames = [];
        private Captured? _firstSuperFrame;
        private long _allocatedInRead;
        private int _bad;
        private ReadStatus? _ended;

        public Capture(PacketSocketInterface pcap)
        {
            _pcap = pcap;
            _thread = new Thread(Run) { IsBackground = true, Name = $"capture-{pcap.Name}" };
            _thread.Start();
        }

        public int Bad => Volatile.Read(ref _bad);

        /// <summary>The first frame read that was longer than the interface's MTU allows, with its offload metadata.</summary>
        public Captured? FirstSuperFrame
        {
            get
            {
                lock (_frames)
                    return _firstSuperFrame;
            }
        }

        public long AllocatedInRead => Interlocked.Read(ref _allocatedInRead);

        public ReadStatus? Ended
        {
            get
            {
                lock (_frames)
                    return _ended;
            }
        }

        public int Count
        {
            get
            {
                lock (_frames)
                    return _frames.Count;
            }
        }

        public void ResetAllocations() => Interlocked.Exchange(ref _allocatedInRead, 0);

        public bool Saw(byte[] expected)
        {
            lock (_frames)
            {
                foreach (var f in _frames)
                {
                    if (f.AsSpan().SequenceEqual(expected))
                        return true;
                }
                return false;
            }
        }

        public void WaitFor(byte[] expected) =>
            Wait.Until(() => Saw(expected), Timeout, $"{_pcap.Name} to read the frame {Describe(expected)}, {expected.Length} bytes");

        public void Join()
        {
            if (!_thread.Join(Timeout))
                throw new TimeoutException($"the reader of {_pcap.Name} did not stop within {Timeout.TotalSeconds} s of Close");
        }

        private void Run()
        {
            var frame = Frame.CreateUnpooled();
            while (true)
            {
                var before = GC.GetAllocatedBytesForCurrentThread();
                var status = _pcap.Read(frame);
                Interlocked.Add(ref _allocatedInRead, GC.GetAllocatedBytesForCurrentThread() - before);
                if (status == ReadStatus.Frame)
                {
                    var copy = frame.Data.ToArray();
                    lock (_frames)
                    {
                        _frames.Add(copy);
                        if (_firstSuperFrame is null && copy.Length > _pcap.MaxFrameSize)
                            _firstSuperFrame = new Captured(copy, frame.Offload);
                    }
                }
                else if (status == ReadStatus.Bad)
                {
                    Interlocked.Increment(ref _bad);
                }
                else
                {
                    lock (_frames)
                        _ended = status;
                    return;
                }
            }
        }
    }

    private sealed record Captured(byte[] Data, VirtioNetHeader Offload);

    /// <summary>Writes every frame one interface reads to another, with its offload header, and counts them.</summary>
    private sealed class Relay
    {
        private readonly PacketSocketInterface _from;
        private readonly PacketSocketInterface _to;
        private readonly Thread _thread;
        private int _frames;
        private int _superFrames;
        private int _bad;
        private int _refused;

        public Relay(PacketSocketInterface from, PacketSocketInterface to)
        {
            _from = from;
            _to = to;
            _thread = new Thread(Run) { IsBackground = true, Name = $"relay-{from.Name}" };
            _thread.Start();
        }

        public int Frames => Volatile.Read(ref _frames);

        public int SuperFrames => Volatile.Read(ref _superFrames);

        public int Bad => Volatile.Read(ref _bad);

        public int Refused => Volatile.Read(ref _refused);

        public void Join()
        {
            if (!_thread.Join(Timeout))
                throw new TimeoutException($"the relay from {_from.Name} did not stop within {Timeout.TotalSeconds} s of Close");
        }

        private void Run()
        {
            var frame = Frame.CreateUnpooled();
            while (true)
            {
                var status = _from.Read(frame);
                if (status == ReadStatus.Closed)
                    return;
                if (status == ReadStatus.Bad)
                {
                    Interlocked.Increment(ref _bad);
                    continue;
                }
                Interlocked.Increment(ref _frames);
                if (frame.Offload.IsGso)
                    Interlocked.Increment(ref _superFrames);
                if (!_to.Write(frame))
                    Interlocked.Increment(ref _refused);
            }
        }
    }
}
