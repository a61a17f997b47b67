using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Vnet.Engine;
using Vnet.Frames;
using Vnet.Native;

namespace Vnet.Links;

/// <summary>Where a UDP link's peer sends from; learned from its authenticated probe.</summary>
internal sealed class UdpPeer(SocketAddress address)
{
    public SocketAddress Address { get; } = address;
}

/// <summary>
/// The daemon's one UDP socket, shared by all UDP links (each a <see cref="UdpLinkTransport"/>,
/// registered under its session id). Datagrams carry the receiver's session id; a datagram is
/// accepted only for a live session and only from the address that session's peer proved with a
/// probe (HMAC under the session key), so a host without the key gets no frame in.
/// <code>
/// Receive thread ("udp-rx"), per recvmsg (one datagram, or a UDP GRO run of same-sized ones):
///  1. Each datagram: parse the header, find the link by session id (a closed session counts as unknown).
///  2. UDP_PROBE: check its HMAC, learn (or move) the peer's address, answer UDP_PROBE_ACK.
///  3. Anything else must come from that address: DATA is read into a pooled frame by the link
///     (UdpLinkTransport.ReadFrame) and added to the current run; keep-alives go to the session
///     (LinkSession.ReceiveProbe); UDP_PROBE_ACK marks the link's probe as answered.
///  4. At the end of the receive (or when the run's link or hop limit changes) the run's frames are
///     coalesced back into super-frames (user-space GRO) and delivered (LinkSession.DeliverFrame).
///  5. Nothing more to read: flush what the frames produced (TransmitBatch), then poll.
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

    internal void SendMessage(UdpPeer peer, MessageType type, uint session, ReadOnlySpan<byte> payload)
    {
        Span<byte> message = stackalloc byte[Wire.HeaderSize + 64];
        Wire.Write(message, new LinkHeader(type, MessageFlags.None, 0, session, payload.Length));
        payload.CopyTo(message.Slice(Wire.HeaderSize));
        Send(message.Slice(0, Wire.HeaderSize + payload.Length), peer);
    }

    internal static UdpPeer PeerFor(IPEndPoint endPoint) => new(endPoint.Serialize());

    /// <summary>The probe proves the sender holds this session's key: HMAC(session key, "probe" | ids).</summary>
    internal static byte[] ProbePayload(LinkSession session)
    {
        Span<byte> ids = stackalloc byte[13];
        "probe"u8.CopyTo(ids);
        BinaryPrimitives.WriteUInt32BigEndian(ids.Slice(5), session.LocalSession);
        BinaryPrimitives.WriteUInt32BigEndian(ids.Slice(9), session.Peer.RemoteSession);
        var payload = new byte[4 + 32];
        BinaryPrimitives.WriteUInt32BigEndian(payload, session.LocalSession);
        HMACSHA256.HashData(session.Peer.SessionKey, ids, payload.AsSpan(4));
        return payload;
    }

    private static bool ProbeValid(LinkSession session, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 36 || BinaryPrimitives.ReadUInt32BigEndian(payload) != session.Peer.RemoteSession)
            return false;
        Span<byte> ids = stackalloc byte[13];
        "probe"u8.CopyTo(ids);
        BinaryPrimitives.WriteUInt32BigEndian(ids.Slice(5), session.Peer.RemoteSession);
        BinaryPrimitives.WriteUInt32BigEndian(ids.Slice(9), session.LocalSession);
        Span<byte> mac = stackalloc byte[32];
        HMACSHA256.HashData(session.Peer.SessionKey, ids, mac);
        return CryptographicOperations.FixedTimeEquals(mac, payload.Slice(4));
    }

    /// <summary>
    /// One receive returns a single datagram or, with UDP GRO, a run of same-sized datagrams from one
    /// sender. Data frames of a run are coalesced back into TCP super-frames (user-space GRO) before
    /// they reach the switch, so the TAP gets one write per super-frame.
    /// </summary>
    private unsafe void ReceiveLoop()
    {
        TransmitBatch.Begin();
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
                        var pfd = new LibC.PollFd { Fd = _fd, Events = LibC.POLLIN };
                        LibC.Poll(&pfd, 1, 200);
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
                    Handle(buffer.AsSpan(off, (int)Math.Min(segment, n - off)), sender, from);
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

    private void Handle(ReadOnlySpan<byte> datagram, ReadOnlySpan<byte> sender, SocketAddress scratch)
    {
        if (Wire.TryRead(datagram, out var header) != WireError.None ||
            header.PayloadLength != datagram.Length - Wire.HeaderSize ||
            !_links.TryGetValue(header.Session, out var link) || link.Session.IsClosed)
        {
            Interlocked.Increment(ref _rejected);
            return;
        }
        var session = link.Session;
        var payload = datagram.Slice(Wire.HeaderSize);
        if (header.Type == MessageType.UdpProbe)
        {
            if (!ProbeValid(session, payload))
            {
                Interlocked.Increment(ref _rejected);
                return;
            }
            if (link.Peer is not { } known || !SameAddress(known, sender))
            {
                var copy = new SocketAddress(scratch.Family, sender.Length);
                sender.CopyTo(copy.Buffer.Span);
                link.Peer = new UdpPeer(copy);
            }
            session.NoteDataReceived();
            SendMessage(link.Peer!, MessageType.UdpProbeAck, session.Peer.RemoteSession, ReadOnlySpan<byte>.Empty);
            return;
        }
        if (link.Peer is not { } peer || !SameAddress(peer, sender))
        {
            Interlocked.Increment(ref _rejected);
            return;
        }
        switch (header.Type)
        {
            case MessageType.Data:
                session.NoteDataReceived();
                CollectData(link, header, payload);
                break;
            case MessageType.KeepAlive:
            case MessageType.KeepAliveAck:
                session.ReceiveProbe(header.Type, payload);
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

    /// <summary>Has the link read a data datagram into a frame and adds it to the current run.</summary>
    private void CollectData(UdpLinkTransport link, LinkHeader header, ReadOnlySpan<byte> payload)
    {
        var extra = (header.Flags & MessageFlags.Offload) != 0 ? VirtioNetHeader.Size : 0;
        if (payload.Length - extra < 14)
        {
            Interlocked.Increment(ref _rejected);
            return;
        }
        if (_batchLink != link || _batchHop != header.HopLimit)
            FlushBatch();
        var frame = link.ReadFrame(header, payload);
        if (frame is null)
            return;
        _batchLink = link;
        _batchHop = header.HopLimit;
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
