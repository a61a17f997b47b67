using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Vnet.Engine;
using Vnet.Frames;
using Vnet.Links.Security;
using Vnet.Native;

namespace Vnet.Links;

/// <summary>
/// Where a UDP link's peer sends from (dialed, or the source of its latest authenticated datagram),
/// and the socket this end talks to it through (<see cref="Via"/>): the daemon's, or a stream's own.
/// One immutable object, swapped whole, so a sender never pairs an address with the wrong socket.
/// </summary>
internal sealed class UdpPeer(SocketAddress address, UdpTransport via)
{
    public SocketAddress Address { get; } = address;

    /// <summary>The socket datagrams to this peer leave from.</summary>
    public UdpTransport Via { get; } = via;

    /// <summary>Whether <paramref name="sender"/> (a raw socket address) is this peer's address.</summary>
    public bool Is(ReadOnlySpan<byte> sender) =>
        Address.Size == sender.Length && Address.Buffer.Span.Slice(0, sender.Length).SequenceEqual(sender);

    public IPEndPoint EndPoint
    {
        get
        {
            var any = Address.Family == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any;
            return (IPEndPoint)new IPEndPoint(any, 0).Create(Address);
        }
    }

    /// <summary>The address as "ip:port" (for <c>vnet link list</c>).</summary>
    public override string ToString() => EndPoint.ToString();
}

/// <summary>
/// The daemon's one UDP socket, shared by all UDP links (each a <see cref="UdpLinkTransport"/>,
/// registered under its session id). Every datagram is sealed with its session's key: one that does
/// not open (a stranger, a forgery, a replay) is dropped and counted, and the session's peer address
/// follows the source of the latest datagram that does (roaming, as WireGuard does), so nothing
/// unauthenticated can redirect a link.
/// <code>
/// Receive thread ("udp-rx"), per recvmsg (one datagram, or a UDP GRO run of same-sized ones):
///  1. Each datagram: parse the header, find the link by session id (a closed session counts as
///     unknown), check the length.
///  2. Open it (the replay window refuses a counter seen before): DATA straight into a pooled frame
///     (UdpLinkTransport.OpenFrame, no copy after the decryption), anything else in place.
///  3. From a new address: the link's peer moves there.
///  4. DATA's frame is added to the current run; keep-alives go to the session
///     (LinkSession.ReceiveProbe); UDP_PROBE is answered with UDP_PROBE_ACK; UDP_PROBE_ACK marks
///     the link's probe as answered.
///  5. At the end of the receive (or when the run's link or hop limit changes) the run's frames are
///     coalesced back into super-frames (user-space GRO) and delivered (LinkSession.DeliverFrame).
///  6. Nothing more to read: flush what the frames produced (TransmitBatch), then poll.
/// Sending (any link's send-lock holder): SendSegmented, one sendmsg(UDP_SEGMENT) per run of
/// equal-sized datagrams, falling back to one datagram per call where the kernel refuses GSO.
/// </code>
/// Stream k &gt;= 1 of a UDP link has a socket of its own (this class too, bound to an ephemeral
/// port, its own receive thread, counting into the daemon's socket): it serves that one session,
/// and is disposed when the session ends (docs/links.md, "Streams"). Its sends and every receive
/// thread hold a reference on the socket's handle, so its descriptor is closed only after the last
/// of them: a probe sent while the stream closes never writes to a reused descriptor.
/// </summary>
public sealed class UdpTransport : IDisposable
{
    private readonly Socket _socket;
    private readonly SafeSocketHandle _handle;
    private readonly FramePool _pool;
    private readonly ConcurrentDictionary<uint, UdpLinkTransport> _links = new();
    private readonly Thread _receiver;
    private readonly int _fd;
    private readonly bool _gro;
    private bool _gso = true;
    private readonly List<Frame> _batch = new(128);
    private readonly List<Frame> _merged = new(128);
    private UdpLinkTransport? _batchLink;
    private byte _batchHop;
    private volatile bool _stopped;
    private readonly DropCounters _drops;
    // A stream's own socket (disposed when its session ends), not the daemon's.
    private readonly bool _stream;

    /// <summary>Datagrams refused and faults, shared by the daemon's socket and its streams' sockets.</summary>
    private sealed class DropCounters
    {
        public long Rejected;
        public long Faults;
    }

    /// <summary>The daemon's socket (<paramref name="countsInto"/> null), or a stream's own, counting into the daemon's.</summary>
    public UdpTransport(IPEndPoint bind, FramePool pool, UdpTransport? countsInto = null, string threadName = "udp-rx")
    {
        _pool = pool;
        _drops = countsInto?._drops ?? new DropCounters();
        _stream = countsInto is not null;
        _socket = new Socket(bind.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        if (bind.AddressFamily == AddressFamily.InterNetwork)
        {
            // Oversized frames are rare (MTU mismatches); let the kernel fragment them rather than drop.
            const int IP_MTU_DISCOVER = 10;
            const int IP_PMTUDISC_DONT = 0;
            _socket.SetRawSocketOption(0, IP_MTU_DISCOVER, BitConverter.GetBytes(IP_PMTUDISC_DONT));
        }
        _socket.ReceiveBufferSize = 4 << 20;
        _socket.SendBufferSize = 4 << 20;
        _socket.Bind(bind);
        LocalEndPoint = (IPEndPoint)_socket.LocalEndPoint!;
        _handle = _socket.SafeHandle;
        _fd = (int)_handle.DangerousGetHandle();
        _gro = UdpBatch.EnableGro(_fd);
        _receiver = new Thread(ReceiveLoop) { IsBackground = true, Name = threadName };
    }

    public IPEndPoint LocalEndPoint { get; }

    /// <summary>Whether the kernel coalesces received datagrams (UDP GRO).</summary>
    public bool GroEnabled => _gro;

    /// <summary>Whether sends are segmented by the kernel (UDP GSO).</summary>
    public bool GsoEnabled => _gso;

    /// <summary>Datagrams refused: unknown session, unproven sender, malformed (on this socket and its streams' sockets).</summary>
    public long Rejected => Interlocked.Read(ref _drops.Rejected);

    /// <summary>Whether the receive thread is still running (tests: a stream's socket is gone with its session).</summary>
    public bool Receiving => _receiver.IsAlive;

    public void Start() => _receiver.Start();

    internal void Register(UdpLinkTransport link) => _links[link.Session.LocalSession] = link;

    internal void Unregister(UdpLinkTransport link) => _links.TryRemove(new KeyValuePair<uint, UdpLinkTransport>(link.Session.LocalSession, link));

    internal unsafe bool Send(ReadOnlySpan<byte> datagram, UdpPeer peer)
    {
        fixed (byte* data = datagram)
            return SendSegmented(data, datagram.Length, datagram.Length, peer) == datagram.Length;
    }

    /// <summary>
    /// Sends as <see cref="SendTo"/>. On a stream's socket, holding a reference on the socket's handle
    /// meanwhile: it may be disposed by its session's end on another thread (then this returns -EBADF).
    /// The daemon's socket outlives every session, so its sends take no reference (the default path
    /// stays as it was).
    /// </summary>
    internal unsafe nint SendSegmented(byte* data, int length, int segment, UdpPeer peer)
    {
        if (!_stream)
            return SendTo(data, length, segment, peer);
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            return SendTo(data, length, segment, peer);
        }
        catch (ObjectDisposedException)
        {
            return -LibC.EBADF;
        }
        finally
        {
            if (added)
                _handle.DangerousRelease();
        }
    }

    /// <summary>
    /// Sends equal-sized datagrams (the last may be shorter) laid out back to back, in one system
    /// call where the kernel has UDP GSO. Returns bytes sent or -errno.
    /// </summary>
    private unsafe nint SendTo(byte* data, int length, int segment, UdpPeer peer)
    {
        var address = peer.Address.Buffer.Span;
        fixed (byte* a = address)
        {
            if (length <= segment)
                return UdpBatch.SendSegmented(_fd, data, length, segment, a, peer.Address.Size);
            if (_gso)
            {
                var sent = UdpBatch.SendSegmented(_fd, data, length, segment, a, peer.Address.Size);
                if (sent != -LibC.EIO && sent != -LibC.EINVAL && sent != -LibC.EMSGSIZE)
                    return sent;
                // Datagrams over the path MTU (plain frames from a VM with a larger MTU) cannot be
                // segmented; the kernel fragments them one by one instead.
                if (sent != -LibC.EMSGSIZE && sent != -LibC.EINVAL)
                    _gso = false;
            }
            // No GSO: one datagram per call.
            nint total = 0;
            for (var off = 0; off < length; off += segment)
            {
                var n = UdpBatch.SendSegmented(_fd, data + off, Math.Min(segment, length - off), segment, a, peer.Address.Size);
                if (n < 0)
                    return n;
                total += n;
            }
            return total;
        }
    }

    /// <summary>Longest payload of a sealed message sent by <see cref="SendSealed"/> (probes and keep-alives).</summary>
    internal const int MaxSmallPayload = 64;

    /// <summary>
    /// Sends a small sealed message (a probe, a keep-alive or its answer); a payload over
    /// <see cref="MaxSmallPayload"/> is refused rather than sent (it never comes from a peer: answers
    /// echo at most <see cref="LinkSession.MaxProbePayload"/> bytes).
    /// </summary>
    internal void SendSealed(UdpPeer peer, EpochKey key, MessageType type, uint session, ReadOnlySpan<byte> payload)
    {
        if (payload.Length > MaxSmallPayload)
            return;
        Span<byte> message = stackalloc byte[Wire.HeaderSize + SealedRecord.Overhead + MaxSmallPayload];
        var length = SealedRecord.Seal(message, key, type, MessageFlags.None, 0, session, payload);
        Send(message[..length], peer);
    }

    /// <summary>A peer reached through this socket.</summary>
    internal UdpPeer PeerFor(IPEndPoint endPoint) => new(endPoint.Serialize(), this);

    /// <summary>A peer at <paramref name="sender"/> (a raw socket address, copied), reached through this socket.</summary>
    internal UdpPeer PeerFor(ReadOnlySpan<byte> sender)
    {
        var copy = new SocketAddress(_socket.AddressFamily, sender.Length);
        sender.CopyTo(copy.Buffer.Span);
        return new UdpPeer(copy, this);
    }

    /// <summary>
    /// One receive returns a single datagram or, with UDP GRO, a run of same-sized datagrams from one
    /// sender. Data frames of a run are coalesced back into TCP super-frames (user-space GRO) before
    /// they reach the switch, so the TAP gets one write per super-frame.
    /// </summary>
    private void ReceiveLoop()
    {
        // Held while this thread uses the descriptor: disposing the socket closes it only after.
        var added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            Receive();
        }
        catch (ObjectDisposedException)
        {
            // Disposed before the thread ran.
        }
        finally
        {
            if (added)
                _handle.DangerousRelease();
        }
    }

    private unsafe void Receive()
    {
        ForwardingPriority.ApplyToCurrentThread();
        TransmitBatch.Begin();
        InterfacePort.BeginHelping();
        var buffer = GC.AllocateUninitializedArray<byte>(65536 + 4096, pinned: true);
        var address = GC.AllocateUninitializedArray<byte>(128, pinned: true);
        fixed (byte* b = buffer)
        fixed (byte* a = address)
        {
            while (!_stopped)
            {
                var addressLength = address.Length;
                var n = UdpBatch.Receive(_fd, b, buffer.Length, a, ref addressLength, out var segment, UdpBatch.MSG_DONTWAIT);
                if (n < 0)
                {
                    var errno = (int)-n;
                    if (errno == LibC.EAGAIN)
                    {
                        // Nothing more to read now: send what the datagrams read so far produced.
                        TransmitBatch.Flush();
                        InterfacePort.HelpWritten();
                        // Dispose's shutdown wakes this at once (even unconnected, a UDP socket's
                        // shutdown wakes its pollers); the bound is a safety net that an idle daemon
                        // barely feels (at 200 ms it was a seventh of its samples).
                        var pfd = new LibC.PollFd { Fd = _fd, Events = LibC.POLLIN };
                        LibC.Poll(&pfd, 1, 5000);
                        continue;
                    }
                    if (errno == LibC.EINTR)
                        continue;
                    if (_stopped || errno == LibC.EBADF)
                        break;
                    continue;
                }
                var sender = address.AsSpan(0, addressLength);
                if (segment <= 0)
                    segment = (int)n;
                for (var off = 0; off < n; off += segment)
                    HandleSafely(buffer.AsSpan(off, (int)Math.Min(segment, n - off)), sender);
                FlushBatch();
            }
        }
        TransmitBatch.End();
    }

    private void FlushBatch()
    {
        var session = _batchLink?.Session;
        _batchLink = null;
        if (_batch.Count == 0 || session is null)
            return;
        if (_batch.Count == 1)
        {
            var only = _batch[0];
            _batch.Clear();
            session.DeliverFrame(only, _batchHop);
            return;
        }
        _merged.Clear();
        Offloads.Coalesce(_batch, _pool, _merged);
        foreach (var frame in _merged)
            session.DeliverFrame(frame, _batchHop);
        _merged.Clear();
    }

    /// <summary>Datagrams that made the receive path throw (a bug; the datagram is dropped, the thread goes on).</summary>
    public long Faults => Interlocked.Read(ref _drops.Faults);

    /// <summary>Whatever a datagram causes, the receive thread (every UDP link of the daemon) goes on.</summary>
    private void HandleSafely(Span<byte> datagram, ReadOnlySpan<byte> sender)
    {
        try
        {
            Handle(datagram, sender);
        }
#pragma warning disable CA1031 // One datagram must never stop the receiver of every link.
        catch (Exception)
#pragma warning restore CA1031
        {
            Interlocked.Increment(ref _drops.Faults);
            Interlocked.Increment(ref _drops.Rejected);
        }
    }

    private void Reject() => Interlocked.Increment(ref _drops.Rejected);

    private void Handle(Span<byte> datagram, ReadOnlySpan<byte> sender)
    {
        if (Wire.TryRead(datagram, out var header) != WireError.None ||
            header.PayloadLength != datagram.Length - Wire.HeaderSize ||
            header.PayloadLength < SealedRecord.Overhead ||
            !_links.TryGetValue(header.Session, out var link) || link.Session.IsClosed)
        {
            Reject();
            return;
        }
        var session = link.Session;
        var sealedPayload = datagram[Wire.HeaderSize..];
        Frame? frame = null;
        Span<byte> plain = default;
        // A responder's stream session hears on two sockets (late probes on the daemon's): its replay
        // window and peer are then guarded per datagram. Null for every other session (one socket,
        // one thread): the default path takes no lock.
        var gate = link.ReceiveGate;
        gate?.Enter();
        try
        {
            if (header.Type == MessageType.Data)
            {
                switch (link.OpenFrame(session.DatagramOpener, header, datagram, sealedPayload, out frame))
                {
                    case UdpLinkTransport.DataOpening.Refused:
                    case UdpLinkTransport.DataOpening.TooLong:
                        Reject();
                        return;
                    case UdpLinkTransport.DataOpening.TooShort:
                        Reject();
                        break;
                    default:
                        break;
                }
            }
            else
            {
                plain = sealedPayload.Slice(Wire.CounterSize, sealedPayload.Length - SealedRecord.Overhead);
                if (!SealedRecord.Open(session.DatagramOpener, header, datagram, sealedPayload, stream: false, plain))
                {
                    Reject();
                    return;
                }
            }
            // Authenticated: the peer is where this came from (roaming), as the link's rules say.
            link.Follow(sender, this, header.Type);
        }
        finally
        {
            gate?.Exit();
        }
        switch (header.Type)
        {
            case MessageType.Data:
                session.NoteDataReceived();
                if (frame is not null)
                    Collect(link, header.HopLimit, frame);
                break;
            case MessageType.KeepAlive:
            case MessageType.KeepAliveAck:
                session.ReceiveProbe(header.Type, plain);
                break;
            case MessageType.UdpProbe:
                session.NoteDataReceived();
                AnswerProbe(link, sender);
                break;
            case MessageType.UdpProbeAck:
                session.NoteDataReceived();
                link.ProbeAnswered(sender, this, plain);
                break;
            default:
                Reject();
                break;
        }
    }

    /// <summary>
    /// A probe is answered from the socket it arrived on, to where it came from, so a NAT in front
    /// of the prober lets the answer in. A stream's answer carries the port of the stream's own
    /// socket (2 bytes), which the prober probes next; the first stream's is empty, as it always was.
    /// </summary>
    private void AnswerProbe(UdpLinkTransport link, ReadOnlySpan<byte> sender)
    {
        var session = link.Session;
        var to = link.Peer is { } peer && peer.Via == this && peer.Is(sender) ? peer : PeerFor(sender);
        Span<byte> port = stackalloc byte[2];
        var length = 0;
        if (link.Own is { } own)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(port, (ushort)own.LocalEndPoint.Port);
            length = 2;
        }
        SendSealed(to, session.DatagramSealer.Current, MessageType.UdpProbeAck, session.Peer.RemoteSession, port[..length]);
    }

    /// <summary>Adds an opened data frame to the current run (a run is one link and one hop limit).</summary>
    private void Collect(UdpLinkTransport link, byte hopLimit, Frame frame)
    {
        if (_batchLink != link || _batchHop != hopLimit)
            FlushBatch();
        _batchLink = link;
        _batchHop = hopLimit;
        _batch.Add(frame);
    }

    public void Dispose()
    {
        _stopped = true;
        try
        {
            // Wakes the receiver blocked in recvmsg; closing the descriptor would not.
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        if (_receiver.IsAlive)
            _receiver.Join(TimeSpan.FromSeconds(2));
        _socket.Dispose();
    }
}
