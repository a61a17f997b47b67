using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Vnet.Engine;
using Vnet.Frames;
using Vnet.Links.Security;
using Vnet.Native;

namespace Vnet.Links;

/// <summary>Where a UDP link's peer sends from: dialed, or the source of its latest authenticated datagram.</summary>
internal sealed class UdpPeer(SocketAddress address)
{
    public SocketAddress Address { get; } = address;

    /// <summary>The address as "ip:port" (for <c>vnet link list</c>).</summary>
    public override string ToString()
    {
        var any = Address.Family == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any;
        return new IPEndPoint(any, 0).Create(Address).ToString() ?? "?";
    }
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
/// </summary>
public sealed class UdpTransport : IDisposable
{
    private readonly Socket _socket;
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
    private long _rejected;

    public UdpTransport(IPEndPoint bind, FramePool pool)
    {
        _pool = pool;
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
        _fd = (int)_socket.SafeHandle.DangerousGetHandle();
        _gro = UdpBatch.EnableGro(_fd);
        _receiver = new Thread(ReceiveLoop) { IsBackground = true, Name = "udp-rx" };
    }

    public IPEndPoint LocalEndPoint { get; }

    /// <summary>Whether the kernel coalesces received datagrams (UDP GRO).</summary>
    public bool GroEnabled => _gro;

    /// <summary>Whether sends are segmented by the kernel (UDP GSO).</summary>
    public bool GsoEnabled => _gso;

    /// <summary>Datagrams refused: unknown session, unproven sender, malformed.</summary>
    public long Rejected => Interlocked.Read(ref _rejected);

    public void Start() => _receiver.Start();

    internal void Register(UdpLinkTransport link) => _links[link.Session.LocalSession] = link;

    internal void Unregister(UdpLinkTransport link) => _links.TryRemove(new KeyValuePair<uint, UdpLinkTransport>(link.Session.LocalSession, link));

    internal unsafe bool Send(ReadOnlySpan<byte> datagram, UdpPeer peer)
    {
        fixed (byte* data = datagram)
            return SendSegmented(data, datagram.Length, datagram.Length, peer) == datagram.Length;
    }

    /// <summary>
    /// Sends equal-sized datagrams (the last may be shorter) laid out back to back, in one system
    /// call where the kernel has UDP GSO. Returns bytes sent or -errno.
    /// </summary>
    internal unsafe nint SendSegmented(byte* data, int length, int segment, UdpPeer peer)
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

    internal static UdpPeer PeerFor(IPEndPoint endPoint) => new(endPoint.Serialize());

    /// <summary>
    /// One receive returns a single datagram or, with UDP GRO, a run of same-sized datagrams from one
    /// sender. Data frames of a run are coalesced back into TCP super-frames (user-space GRO) before
    /// they reach the switch, so the TAP gets one write per super-frame.
    /// </summary>
    private unsafe void ReceiveLoop()
    {
        TransmitBatch.Begin();
        InterfacePort.BeginHelping();
        var buffer = GC.AllocateUninitializedArray<byte>(65536 + 4096, pinned: true);
        var address = GC.AllocateUninitializedArray<byte>(128, pinned: true);
        var from = new SocketAddress(_socket.AddressFamily);
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
                    HandleSafely(buffer.AsSpan(off, (int)Math.Min(segment, n - off)), sender, from);
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
    public long Faults => Interlocked.Read(ref _faults);

    private long _faults;

    /// <summary>Whatever a datagram causes, the receive thread (every UDP link of the daemon) goes on.</summary>
    private void HandleSafely(Span<byte> datagram, ReadOnlySpan<byte> sender, SocketAddress scratch)
    {
        try
        {
            Handle(datagram, sender, scratch);
        }
#pragma warning disable CA1031 // One datagram must never stop the receiver of every link.
        catch (Exception)
#pragma warning restore CA1031
        {
            Interlocked.Increment(ref _faults);
            Interlocked.Increment(ref _rejected);
        }
    }

    private void Handle(Span<byte> datagram, ReadOnlySpan<byte> sender, SocketAddress scratch)
    {
        if (Wire.TryRead(datagram, out var header) != WireError.None ||
            header.PayloadLength != datagram.Length - Wire.HeaderSize ||
            header.PayloadLength < SealedRecord.Overhead ||
            !_links.TryGetValue(header.Session, out var link) || link.Session.IsClosed)
        {
            Interlocked.Increment(ref _rejected);
            return;
        }
        var session = link.Session;
        var sealedPayload = datagram[Wire.HeaderSize..];
        Frame? frame = null;
        Span<byte> plain = default;
        if (header.Type == MessageType.Data)
        {
            switch (link.OpenFrame(session.DatagramOpener, header, datagram, sealedPayload, out frame))
            {
                case UdpLinkTransport.DataOpening.Refused:
                case UdpLinkTransport.DataOpening.TooLong:
                    Interlocked.Increment(ref _rejected);
                    return;
                case UdpLinkTransport.DataOpening.TooShort:
                    Interlocked.Increment(ref _rejected);
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
                Interlocked.Increment(ref _rejected);
                return;
            }
        }
        // Authenticated: the peer is where this came from (roaming), whatever it was before.
        if (link.Peer is not { } known || !SameAddress(known, sender))
        {
            var copy = new SocketAddress(scratch.Family, sender.Length);
            sender.CopyTo(copy.Buffer.Span);
            link.MovePeer(new UdpPeer(copy));
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
                SendSealed(link.Peer!, session.DatagramSealer.Current, MessageType.UdpProbeAck, session.Peer.RemoteSession, ReadOnlySpan<byte>.Empty);
                break;
            case MessageType.UdpProbeAck:
                session.NoteDataReceived();
                link.ProbeAcknowledged = true;
                break;
            default:
                Interlocked.Increment(ref _rejected);
                break;
        }
    }

    private static bool SameAddress(UdpPeer peer, ReadOnlySpan<byte> sender) =>
        peer.Address.Size == sender.Length && peer.Address.Buffer.Span.Slice(0, sender.Length).SequenceEqual(sender);

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
