using Vnet.Engine;
using Vnet.Frames;
using Vnet.Native;

namespace Vnet.Links;

/// <summary>
/// A UDP link: frames and keep-alives travel as datagrams on the daemon's one <see cref="UdpTransport"/>
/// socket, addressed to the peer proven by its probe; the session's TCP connection carries control
/// messages only.
/// <code>
/// Sending a batch (whoever holds the session's send lock: its sender thread, or a reader inline):
///  1. A frame with no hop left, or any frame before the peer's address is known, is dropped and counted.
///  2. A plain frame is one datagram: header, virtio header, frame, copied into a pinned scratch.
///  3. A super-frame is cut into segments that fit the path MTU (user-space GSO, partial checksums
///     kept), laid out back to back and sent with as few sendmsg(UDP_SEGMENT) calls as the kernel
///     allows. A UDP send never blocks the caller: a full socket buffer drops (and counts).
/// Keep-alives and their answers are single datagrams.
/// Receiving:
///  1. The session's receiver thread reads the connection: control messages go to the session;
///     DATA there is a protocol error, keep-alives there are ignored.
///  2. Datagrams arrive on UdpTransport's receive thread, which checks the sender, batches runs and
///     calls <see cref="ReadFrame"/>, <see cref="LinkSession.ReceiveProbe"/> and
///     <see cref="LinkSession.DeliverFrame"/> of this link.
/// </code>
/// </summary>
internal sealed class UdpLinkTransport : ILinkTransport
{
    /// <summary>
    /// Path MTU assumed for UDP links (an Ethernet underlay). Segments of super-frames are cut so that
    /// header, virtio header and frame fit one IPv4 datagram of this size.
    /// </summary>
    public const int PathMtu = 1500;

    private const int MaxFrame = PathMtu - 20 - 8 - Wire.HeaderSize - VirtioNetHeader.Size;

    private readonly LinkSession _session;
    private readonly UdpTransport _udp;
    private readonly VirtualSwitch _switch;
    private readonly FramePool _pool;

    // Scratch of the send lock's holder (see LinkSession).
    private readonly List<Frame> _segments = new(128);
    private readonly byte[] _datagram = GC.AllocateUninitializedArray<byte>(Wire.HeaderSize + Wire.MaxDataPayload + 65536, pinned: true);

    public UdpLinkTransport(LinkSession session, UdpTransport udp, VirtualSwitch sw, FramePool pool)
    {
        _session = session;
        _udp = udp;
        _switch = sw;
        _pool = pool;
    }

    public LinkSession Session => _session;

    /// <summary>Where the peer's datagrams come from (learned from its probe, or dialed).</summary>
    public UdpPeer? Peer { get; set; }

    /// <summary>For links started here: the peer confirmed our probe, so the UDP path works.</summary>
    public volatile bool ProbeAcknowledged;

    // ---------------------------------------------------------------- sending

    public LinkSendOutcome SendBatch(Frame?[] batch, int count, bool inline)
    {
        var segments = _segments;
        var datagram = _datagram;
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

    public void SendProbe(MessageType type, ReadOnlySpan<byte> payload)
    {
        if (Peer is { } peer)
            _udp.SendMessage(peer, type, _session.Peer.RemoteSession, payload);
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
                WriteDatagram(s, buffer.AsSpan(length));
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
        var size = WriteDatagram(frame, buffer);
        SendBuffer(buffer, size, size, 1, frame.Length, peer);
    }

    private unsafe void SendBuffer(byte[] buffer, int length, int segment, int count, int frameBytes, UdpPeer peer)
    {
        nint sent;
        fixed (byte* p = buffer)
            sent = _udp.SendSegmented(p, length, segment, peer);
        if (sent == length)
        {
            _session.Counters.CountTx(count, frameBytes);
            return;
        }
        for (var i = 0; i < count; i++)
            _session.Counters.CountTxDrop();
    }

    private static int DatagramSize(Frame frame) =>
        Wire.HeaderSize + (frame.Offload.IsPlain ? 0 : VirtioNetHeader.Size) + frame.Length;

    /// <summary>
    /// One data datagram. An AEAD layer would seal here (header as associated data, nonce after it,
    /// tag at the end; <see cref="DatagramSize"/> and <see cref="MaxFrame"/> grow by that much) and
    /// open in <see cref="ReadFrame"/>, its inverse.
    /// </summary>
    private int WriteDatagram(Frame frame, Span<byte> span)
    {
        var offload = !frame.Offload.IsPlain;
        var extra = offload ? VirtioNetHeader.Size : 0;
        Wire.Write(span, new LinkHeader(MessageType.Data, offload ? MessageFlags.Offload : MessageFlags.None,
            (byte)(frame.HopLimit - 1), _session.Peer.RemoteSession, extra + frame.Length));
        if (offload)
            frame.Offload.Write(span.Slice(Wire.HeaderSize));
        frame.Data.CopyTo(span.Slice(Wire.HeaderSize + extra));
        return Wire.HeaderSize + extra + frame.Length;
    }

    // ---------------------------------------------------------------- receiving

    /// <summary>The connection of a UDP link carries control messages only (frames come as datagrams).</summary>
    public void Receive()
    {
        while (_session.Connection.ReadMessage(out var header, out var payload))
        {
            switch (header.Type)
            {
                case MessageType.Data:
                    _session.Close($"protocol error from {_session.Peer.Name}: data on the control channel of a UDP link");
                    return;
                case MessageType.KeepAlive:
                case MessageType.KeepAliveAck:
                    // This link's keep-alives travel in datagrams; one on the connection proves nothing about them.
                    break;
                default:
                    if (!_session.ReceiveControl(header, payload))
                        return;
                    break;
            }
        }
    }

    /// <summary>
    /// Copies the payload of a data datagram (at least a minimal frame, checked by the caller) into a
    /// pooled frame; null when the pool is empty (counted as a drop). On UdpTransport's receive thread.
    /// </summary>
    public Frame? ReadFrame(in LinkHeader header, ReadOnlySpan<byte> payload)
    {
        var frame = _pool.TryRent();
        if (frame is null)
        {
            _switch.CountDrop(DropReason.NoBuffer);
            return null;
        }
        var extra = (header.Flags & MessageFlags.Offload) != 0 ? VirtioNetHeader.Size : 0;
        if (extra > 0)
            frame.Offload = VirtioNetHeader.Read(payload);
        payload.Slice(extra).CopyTo(frame.Buffer.AsSpan(Frame.Headroom));
        frame.SetBounds(Frame.Headroom, payload.Length - extra);
        return frame;
    }
}
