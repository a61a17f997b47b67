using Vnet.Engine;
using Vnet.Frames;
using Vnet.Links.Security;
using Vnet.Native;

namespace Vnet.Links;

/// <summary>
/// A UDP link: frames and keep-alives travel as sealed datagrams (<see cref="SealedRecord"/>) on the
/// daemon's one <see cref="UdpTransport"/> socket, addressed to where the peer's latest authenticated
/// datagram came from; the session's TCP connection carries control messages only.
/// <code>
/// Sending a batch (whoever holds the session's send lock: its sender thread, or a reader inline):
///  1. A frame with no hop left, or any frame before the peer's address is known, is dropped and counted.
///  2. A plain frame is one datagram: header, counter, virtio header, frame, tag, sealed from the
///     frame into a pinned scratch (WriteDatagram says when a copy comes first).
///  3. A super-frame is cut into segments that fit the path MTU (user-space GSO, partial checksums
///     kept), laid out back to back and sent with as few sendmsg(UDP_SEGMENT) calls as the kernel
///     allows. A UDP send never blocks the caller: a full socket buffer drops (and counts).
/// Keep-alives and their answers are single sealed datagrams.
/// Receiving:
///  1. The session's receiver thread reads the connection: control messages go to the session;
///     DATA or a keep-alive there is a protocol error.
///  2. Datagrams arrive on UdpTransport's receive thread, which opens them (DATA straight into a
///     pooled frame, <see cref="OpenFrame"/>), follows the peer to a new address once a datagram
///     from there authenticates, batches runs and calls <see cref="LinkSession.ReceiveProbe"/> and
///     <see cref="LinkSession.DeliverFrame"/> of this link.
/// Stream k &gt;= 1 of a link (<see cref="Own"/> set) sends and receives on a socket of its own
/// (docs/links.md, "Streams"): the dialer probes the peer's daemon port from it, learns the port of
/// the peer's stream socket from the answer, probes that, and sends there from then on; the
/// responder follows where the datagrams come from and, once one came on its own socket, stays on it.
/// </code>
/// </summary>
internal sealed class UdpLinkTransport : ILinkTransport
{
    /// <summary>
    /// Path MTU assumed for UDP links (an Ethernet underlay). Segments of super-frames are cut so that
    /// header, virtio header and frame fit one IPv4 datagram of this size.
    /// </summary>
    public const int PathMtu = 1500;

    private const int MaxFrame = PathMtu - 20 - 8 - Wire.HeaderSize - SealedRecord.Overhead - VirtioNetHeader.Size;

    private readonly LinkSession _session;
    private readonly UdpTransport _udp;
    private readonly VirtualSwitch _switch;
    private readonly FramePool _pool;

    // Scratch of the send lock's holder (see LinkSession).
    private readonly List<Frame> _segments = new(128);
    /// <summary>Size of the buffer a batch's datagrams are laid out in.</summary>
    public const int DatagramBufferSize = Wire.HeaderSize + Wire.MaxDataPayload + 65536;

    // Taken from the shelf at the first send, given back when the session ends (send lock holders only).
    private byte[]? _datagram;

    /// <param name="udp">The daemon's socket.</param>
    /// <param name="own">A stream's own socket (stream k &gt;= 1), disposed with the session; null for the link's first stream.</param>
    /// <param name="dialed">Whether this end dialed the session (a stream's dialer chooses where to send; the responder follows).</param>
    public UdpLinkTransport(LinkSession session, UdpTransport udp, VirtualSwitch sw, FramePool pool, UdpTransport? own = null, bool dialed = false)
    {
        _session = session;
        _udp = udp;
        _switch = sw;
        _pool = pool;
        Own = own;
        _dialed = dialed;
        // Only a responder's stream hears on two sockets (the daemon's, for the dialer's first probes).
        ReceiveGate = own is not null && !dialed ? new Lock() : null;
    }

    public LinkSession Session => _session;

    /// <summary>A stream's own socket (stream k &gt;= 1), null for the link's first stream, which uses the daemon's.</summary>
    public UdpTransport? Own { get; }

    /// <summary>Taken per datagram by the receiving socket's thread when the session hears on two sockets (see <see cref="UdpTransport"/>).</summary>
    internal Lock? ReceiveGate { get; }

    private readonly bool _dialed;

    // A responder's stream heard on its own socket: it stays there (late probes on the daemon's socket move nothing).
    private bool _onOwnSocket;

    /// <summary>Where the peer's datagrams come from (dialed, or its latest authenticated datagram's source).</summary>
    public UdpPeer? Peer
    {
        get => Volatile.Read(ref _peer);
        set => Volatile.Write(ref _peer, value);
    }

    private UdpPeer? _peer;

    /// <summary>
    /// The peer's datagrams come from <paramref name="peer"/> now (receive thread, after the
    /// datagram from there authenticated). A move from a known address counts as a roam, so that
    /// <c>vnet link list</c> shows a NAT rebinding or a new address (learning the first address
    /// on the responder is not one).
    /// </summary>
    public void MovePeer(UdpPeer peer)
    {
        if (Peer is not null)
            Interlocked.Increment(ref _roams);
        Peer = peer;
    }

    /// <summary>How many times the peer's address moved during the session (see <see cref="MovePeer"/>).</summary>
    public long Roams => Interlocked.Read(ref _roams);

    private long _roams;

    /// <summary>
    /// An authenticated datagram came from <paramref name="sender"/> on <paramref name="socket"/>
    /// (its receive thread, under <see cref="ReceiveGate"/> when there is one): where the peer is now.
    /// <list type="bullet">
    /// <item>The first stream: the source, whatever it was before (roaming), as it always was.</item>
    /// <item>A stream's dialer: nowhere; <see cref="LinkManager"/>'s probing chose the peer's stream
    /// socket (or, when that did not answer, its daemon port), and the peer answers from there.</item>
    /// <item>A stream's responder: the source and the socket it arrived on; once a datagram came on
    /// its own socket, datagrams on the daemon's (the dialer's late first probes) move nothing.</item>
    /// </list>
    /// </summary>
    public void Follow(ReadOnlySpan<byte> sender, UdpTransport socket, MessageType type)
    {
        var known = Peer;
        if (Own is null)
        {
            if (known is null || !known.Is(sender))
                MovePeer(socket.PeerFor(sender));
            return;
        }
        if (_dialed || (_onOwnSocket && socket != Own) || type == MessageType.UdpProbeAck)
            return;
        if (socket == Own)
            _onOwnSocket = true;
        if (known is not null && known.Via == socket && known.Is(sender))
            return;
        // Moving to the own socket is the stream settling, not a roam; another address on the same socket is one.
        if (known is not null && known.Via == socket)
            Interlocked.Increment(ref _roams);
        Peer = socket.PeerFor(sender);
    }

    /// <summary>For links started here: the peer confirmed our probe, so the UDP path works.</summary>
    public volatile bool ProbeAcknowledged;

    /// <summary>A stream's dialer: where the latest probe answer came from, and the port of the peer's stream socket it named (0: none).</summary>
    internal UdpPeer? AnsweredBy => Volatile.Read(ref _answeredBy);

    internal int PeerStreamPort => Volatile.Read(ref _peerStreamPort);

    private UdpPeer? _answeredBy;
    private int _peerStreamPort;

    /// <summary>A probe answer arrived (receive thread): the first stream's probe is acknowledged; a stream's dialer also learns the peer's stream port.</summary>
    internal void ProbeAnswered(ReadOnlySpan<byte> sender, UdpTransport socket, ReadOnlySpan<byte> payload)
    {
        if (Own is not null && _dialed)
        {
            if (payload.Length == 2)
                Volatile.Write(ref _peerStreamPort, System.Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(payload));
            Volatile.Write(ref _answeredBy, socket.PeerFor(sender));
        }
        ProbeAcknowledged = true;
    }

    /// <summary>Forgets the last probe answer (a stream's dialer, before probing the peer's stream socket).</summary>
    internal void ForgetAnswer() => Volatile.Write(ref _answeredBy, null);

    // ---------------------------------------------------------------- sending

    public LinkSendOutcome SendBatch(Frame?[] batch, int count, bool inline, out int taken)
    {
        // A datagram socket never takes part of one: whatever it refuses is dropped and counted.
        taken = count;
        var segments = _segments;
        var datagram = _datagram ??= BufferShelf.Datagram.Take();
        var peer = Peer;
        for (var i = 0; i < count; i++)
        {
            var frame = batch[i]!;
            if (peer is null || frame.HopLimit == 0)
            {
                _session.Counters.CountTxDrop();
                continue;
            }
            if (!frame.Offload.IsGso)
            {
                SendDatagram(frame, peer, datagram);
                continue;
            }
            // Segment takes over a reference; the batch keeps its own for the release by the caller.
            frame.AddReference();
            segments.Clear();
            if (!Offloads.Segment(frame, _pool, segments, completeChecksums: false, MaxFrame))
            {
                _session.Counters.CountTxDrop();
                continue;
            }
            SendSegments(segments, frame.HopLimit, peer, datagram);
            foreach (var segment in segments)
                segment.Release();
            segments.Clear();
        }
        return LinkSendOutcome.Sent;
    }

    public void ReleaseBuffers()
    {
        BufferShelf.Datagram.Return(_datagram);
        _datagram = null;
    }

    public void SendProbe(MessageType type, ReadOnlySpan<byte> payload)
    {
        if (Peer is { } peer)
            peer.Via.SendSealed(peer, _session.DatagramSealer.Current, type, _session.Peer.RemoteSession, payload);
    }

    /// <summary>
    /// Lays the segments of one super-frame out back to back as datagrams (header, virtio header,
    /// frame) and sends them with as few segmented sends as the kernel allows: every datagram but
    /// the last of a send has the same size, which is what UDP GSO needs.
    /// </summary>
    private void SendSegments(List<Frame> segments, byte hopLimit, UdpPeer peer, byte[] buffer)
    {
        var index = 0;
        while (index < segments.Count)
        {
            var first = segments[index];
            var size = DatagramSize(first);
            var room = Math.Min(UdpBatch.MaxSegments, Math.Max(1, 65000 / size));
            var length = 0;
            var count = 0;
            var frameBytes = 0;
            while (index < segments.Count && count < room)
            {
                var s = segments[index];
                var d = DatagramSize(s);
                if (d > size)
                    break;
                s.HopLimit = hopLimit;
                WriteDatagram(s, buffer.AsSpan(length), owned: true);
                length += d;
                frameBytes += s.Length;
                count++;
                index++;
                // A shorter datagram can only end a segmented send.
                if (d < size)
                    break;
            }
            SendBuffer(buffer, length, size, count, frameBytes, peer);
        }
    }

    private void SendDatagram(Frame frame, UdpPeer peer, byte[] buffer)
    {
        var size = WriteDatagram(frame, buffer, owned: false);
        SendBuffer(buffer, size, size, 1, frame.Length, peer);
    }

    private unsafe void SendBuffer(byte[] buffer, int length, int segment, int count, int frameBytes, UdpPeer peer)
    {
        nint sent;
        fixed (byte* p = buffer)
            sent = peer.Via.SendSegmented(p, length, segment, peer);
        if (sent == length)
        {
            _session.Counters.CountTx(count, frameBytes);
            return;
        }
        for (var i = 0; i < count; i++)
            _session.Counters.CountTxDrop();
    }

    private static int DatagramSize(Frame frame) =>
        Wire.HeaderSize + SealedRecord.Overhead + (frame.Offload.IsPlain ? 0 : VirtioNetHeader.Size) + frame.Length;

    /// <summary>
    /// One sealed data datagram. The sealing reads the plaintext where it lies: a frame without a
    /// virtio header straight from the frame, a segment (this link's own) with its virtio header
    /// written into the segment's headroom; only a shared frame with an offload header is first
    /// copied next to its header in the datagram (and sealed there in place).
    /// </summary>
    private int WriteDatagram(Frame frame, Span<byte> span, bool owned)
    {
        var offload = !frame.Offload.IsPlain;
        var extra = offload ? VirtioNetHeader.Size : 0;
        ReadOnlySpan<byte> plain;
        if (!offload)
        {
            plain = frame.Data;
        }
        else if (owned && frame.Offset >= extra)
        {
            var withHeader = frame.Buffer.AsSpan(frame.Offset - extra, extra + frame.Length);
            frame.Offload.Write(withHeader);
            plain = withHeader;
        }
        else
        {
            var inPlace = span.Slice(Wire.HeaderSize + Wire.CounterSize, extra + frame.Length);
            frame.Offload.Write(inPlace);
            frame.Data.CopyTo(inPlace[extra..]);
            plain = inPlace;
        }
        return SealedRecord.Seal(span, _session.DatagramSealer.Current, MessageType.Data, offload ? MessageFlags.Offload : MessageFlags.None,
            (byte)(frame.HopLimit - 1), _session.Peer.RemoteSession, plain);
    }

    // ---------------------------------------------------------------- receiving

    /// <summary>The connection of a UDP link carries control messages only (frames come as datagrams).</summary>
    public void Receive()
    {
        Span<byte> headerBytes = stackalloc byte[Wire.HeaderSize];
        while (_session.Connection.ReadMessage(out var header, out var payload))
        {
            switch (header.Type)
            {
                case MessageType.Data:
                case MessageType.KeepAlive:
                case MessageType.KeepAliveAck:
                    // This link's frames and keep-alives travel in datagrams; the peer never sends them here.
                    _session.Counters.CountRxError();
                    _session.Close($"protocol error from {_session.Peer.Name}: {header.Type} on the connection of a UDP link");
                    return;
                default:
                    // The header as received (TryRead checked every field Write sets) is the associated data.
                    Wire.Write(headerBytes, header);
                    if (!_session.ReceiveSealedControl(header, headerBytes, payload))
                        return;
                    break;
            }
        }
    }

    /// <summary>What became of a data datagram given to <see cref="OpenFrame"/>.</summary>
    public enum DataOpening
    {
        /// <summary>Authentic, and now a pooled frame.</summary>
        Opened,

        /// <summary>Did not open (forged, replayed, an unknown epoch): nothing changed.</summary>
        Refused,

        /// <summary>Longer than any frame: refused unopened (the peer never sends it).</summary>
        TooLong,

        /// <summary>Authentic, but shorter than an Ethernet header: dropped.</summary>
        TooShort,

        /// <summary>Authentic, but the pool had no buffer: dropped (and counted).</summary>
        NoBuffer,
    }

    /// <summary>
    /// Opens a sealed DATA datagram straight into a pooled frame: the decryption writes the virtio
    /// header into the frame's headroom and the frame where it belongs, so no copy follows it.
    /// Authentic outcomes (Opened, TooShort, NoBuffer) took the counter; with no buffer the
    /// datagram is still opened (in place) so that the session hears its peer. On UdpTransport's
    /// receive thread (and the fuzzer's), with the session's datagram opener.
    /// </summary>
    public DataOpening OpenFrame(ReceiveCipher opener, in LinkHeader header, ReadOnlySpan<byte> headerBytes, Span<byte> sealedPayload,
        out Frame? frame)
    {
        frame = null;
        var extra = (header.Flags & MessageFlags.Offload) != 0 ? VirtioNetHeader.Size : 0;
        var plainLength = SealedRecord.PlaintextLength(sealedPayload.Length);
        if (plainLength < 0)
            return DataOpening.Refused;
        if (plainLength - extra > Frame.MaxLength)
            return DataOpening.TooLong;
        var rented = _pool.TryRent();
        if (rented is null)
        {
            _switch.CountDrop(DropReason.NoBuffer);
            var inPlace = sealedPayload.Slice(Wire.CounterSize, plainLength);
            return SealedRecord.Open(opener, header, headerBytes, sealedPayload, stream: false, inPlace) ? DataOpening.NoBuffer : DataOpening.Refused;
        }
        var plain = rented.Buffer.AsSpan(Frame.Headroom - extra, plainLength);
        if (!SealedRecord.Open(opener, header, headerBytes, sealedPayload, stream: false, plain))
        {
            rented.Release();
            return DataOpening.Refused;
        }
        if (plainLength - extra < 14)
        {
            rented.Release();
            return DataOpening.TooShort;
        }
        if (extra > 0)
            rented.Offload = VirtioNetHeader.Read(plain);
        rented.SetBounds(Frame.Headroom, plainLength - extra);
        frame = rented;
        return DataOpening.Opened;
    }
}
