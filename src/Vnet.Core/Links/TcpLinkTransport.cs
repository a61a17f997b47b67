using Vnet.Engine;
using Vnet.Frames;
using Vnet.Native;

namespace Vnet.Links;

/// <summary>
/// A TCP link: frames, keep-alives and control messages all travel on the session's connection.
/// <code>
/// Sending a batch (whoever holds the session's send lock: its sender thread, or a reader inline):
///  1. Every frame gets a 16-byte header (and its virtio header) in a scratch slot; a frame with no
///     hop left is dropped and counted.
///  2. One writev sends headers and frames of the whole batch; a 64 KiB super-frame travels whole.
///  3. Partial writes continue; EAGAIN before anything went out defers an inline batch to the
///     sender thread (WouldBlock), which waits for the socket instead.
/// Keep-alives and their answers go in-band, through the session's control queue.
/// Receiving (the session's receiver thread):
///  1. The connection hands out every message; a DATA payload that is only partly buffered is
///     completed by reading straight into a pooled frame, which goes to VirtualSwitch.Forward on
///     this thread.
///  2. Keep-alives count as traffic on the data channel and are answered (or give the RTT).
///  3. Everything else goes to the session (control messages, BYE, protocol errors).
/// </code>
/// </summary>
internal sealed unsafe class TcpLinkTransport : ILinkTransport
{
    private const int HeaderSlot = 32;

    private readonly LinkSession _session;
    private readonly LinkConnection _connection;
    private readonly VirtualSwitch _switch;
    private readonly FramePool _pool;

    // Scratch of the send lock's holder (see LinkSession): one header slot and two iovecs a frame.
    private readonly byte[] _headers = GC.AllocateUninitializedArray<byte>(LinkSession.BatchSize * HeaderSlot, pinned: true);
    private readonly LibC.IoVec[] _iov = new LibC.IoVec[LinkSession.BatchSize * 2];

    public TcpLinkTransport(LinkSession session, VirtualSwitch sw, FramePool pool)
    {
        _session = session;
        _connection = session.Connection;
        _switch = sw;
        _pool = pool;
    }

    public LinkSendOutcome SendBatch(Frame?[] batch, int count, bool inline)
    {
        var counters = _session.Counters;
        var remote = _session.Peer.RemoteSession;
        var total = 0;
        var vectors = 0;
        var frames = 0;
        var bytes = 0;
        fixed (byte* h = _headers)
        fixed (LibC.IoVec* v = _iov)
        {
            for (var i = 0; i < count; i++)
            {
                var frame = batch[i]!;
                if (frame.HopLimit == 0)
                {
                    counters.CountTxDrop();
                    continue;
                }
                // An AEAD layer would seal the frame here (this header as associated data, its tag in
                // a third iovec), and ReceiveData below would open it once the payload is complete.
                var offload = !frame.Offload.IsPlain;
                var extra = offload ? VirtioNetHeader.Size : 0;
                var hdr = new Span<byte>(h + (i * HeaderSlot), HeaderSlot);
                Wire.Write(hdr, new LinkHeader(MessageType.Data, offload ? MessageFlags.Offload : MessageFlags.None,
                    (byte)(frame.HopLimit - 1), remote, extra + frame.Length));
                if (offload)
                    frame.Offload.Write(hdr.Slice(Wire.HeaderSize));
                v[vectors++] = new LibC.IoVec { Base = h + (i * HeaderSlot), Length = (nuint)(Wire.HeaderSize + extra) };
                // Frame buffers live on the pinned object heap: their address is stable.
                fixed (byte* f = &frame.Buffer[frame.Offset])
                    v[vectors++] = new LibC.IoVec { Base = f, Length = (nuint)frame.Length };
                total += Wire.HeaderSize + extra + frame.Length;
                frames++;
                bytes += frame.Length;
            }
            if (vectors == 0)
                return LinkSendOutcome.Sent;
            var outcome = _connection.Write(v, vectors, total, mayDefer: inline);
            if (outcome == LinkSendOutcome.Sent)
                counters.CountTx(frames, bytes);
            return outcome;
        }
    }

    /// <summary>In-band: the connection is the data channel, so a keep-alive is one more message on it.</summary>
    public void SendProbe(MessageType type, ReadOnlySpan<byte> payload) => _session.SendControl(type, payload);

    public void Receive()
    {
        while (_connection.ReadMessage(out var header, out var payload))
        {
            switch (header.Type)
            {
                case MessageType.Data:
                    if (!ReceiveData(header, payload))
                        return;
                    break;
                case MessageType.KeepAlive:
                case MessageType.KeepAliveAck:
                    _session.ReceiveProbe(header.Type, payload);
                    break;
                default:
                    if (!_session.ReceiveControl(header, payload))
                        return;
                    break;
            }
        }
    }

    /// <summary>
    /// Completes a data message whose first bytes are in <paramref name="partial"/>: the rest is read
    /// from the socket straight into the frame.
    /// </summary>
    private bool ReceiveData(LinkHeader header, ReadOnlySpan<byte> partial)
    {
        _session.NoteDataReceived();
        var extra = (header.Flags & MessageFlags.Offload) != 0 ? VirtioNetHeader.Size : 0;
        var frameLength = header.PayloadLength - extra;
        var frame = frameLength >= 14 ? _pool.TryRent() : null;
        if (frame is null)
        {
            if (frameLength < 14)
                _session.Counters.CountRxError();
            else
                _switch.CountDrop(DropReason.NoBuffer);
            return _connection.Discard(header.PayloadLength - partial.Length);
        }
        var at = Frame.Headroom - extra;
        partial.CopyTo(frame.Buffer.AsSpan(at));
        var filled = partial.Length;
        while (filled < header.PayloadLength)
        {
            var got = _connection.Read(frame.Buffer.AsSpan(at + filled, header.PayloadLength - filled));
            if (got <= 0)
            {
                frame.Release();
                _session.Close("peer closed the connection");
                return false;
            }
            filled += got;
        }
        if (extra > 0)
            frame.Offload = VirtioNetHeader.Read(frame.Buffer.AsSpan(at, extra));
        frame.SetBounds(Frame.Headroom, frameLength);
        _session.DeliverFrame(frame, header.HopLimit);
        return true;
    }
}
