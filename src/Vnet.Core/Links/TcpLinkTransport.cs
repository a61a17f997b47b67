using Vnet.Engine;
using Vnet.Frames;
using Vnet.Links.Security;
using Vnet.Native;

namespace Vnet.Links;

/// <summary>
/// A TCP link: frames, keep-alives and control messages all travel on the session's connection,
/// each sealed (<see cref="SealedRecord"/>).
/// <code>
/// Sending a batch (whoever holds the session's send lock: its sender thread, or a reader inline):
///  1. A frame with no hop left is dropped and counted.
///  2. Each frame is laid out in a pinned scratch area as header, counter, virtio header and frame,
///     and sealed there in place (the frame itself may be shared by a flood, so it is never
///     changed); a 64 KiB super-frame travels whole.
///  3. One write per scratch area's worth (a batch usually fits). The sender thread writes every
///     area and waits for the socket. A reader flushing inline writes one area at most and never
///     waits: the frames that did not fit go back to the queue (Partly); EAGAIN before anything
///     went out defers the batch to the sender thread (WouldBlock); the rest of a partial write is
///     carried by the connection for the sender thread (LinkConnection). Counters a deferred
///     batch used are simply skipped (the receiver only needs them to grow).
/// Keep-alives and their answers go in-band, through the session's control queue.
/// Receiving (the session's receiver thread):
///  1. The connection hands out every message; a DATA payload that is only partly buffered is
///     completed by reading straight into a pooled frame, where it is opened in place and goes to
///     VirtualSwitch.Forward on this thread. A payload that would not fit a frame is refused first.
///  2. Everything else is opened into a buffer of its own: keep-alives count as traffic on the data
///     channel and are answered (or give the RTT); the rest goes to the session (control, BYE).
///  3. A message that does not open ends the session (on TCP nothing can be lost or reordered, so
///     it is an attack or a bug).
/// </code>
/// </summary>
internal sealed unsafe class TcpLinkTransport : ILinkTransport
{
    /// <summary>Sealed frames are laid out here before a write; a larger batch goes out in several writes.</summary>
    private const int ScratchSize = LinkConnection.MaxInlineWrite;

    private readonly LinkSession _session;
    private readonly LinkConnection _connection;
    private readonly VirtualSwitch _switch;
    private readonly FramePool _pool;

    // The send lock holder's (see LinkSession); allocated with the first batch, freed with the session.
    private byte[]? _scratch;

    public TcpLinkTransport(LinkSession session, VirtualSwitch sw, FramePool pool)
    {
        _session = session;
        _connection = session.Connection;
        _switch = sw;
        _pool = pool;
    }

    public LinkSendOutcome SendBatch(Frame?[] batch, int count, bool inline, out int taken)
    {
        taken = count;
        var scratch = _scratch ??= BufferShelf.Scratch.Take();
        var counters = _session.Counters;
        var remote = _session.Peer.RemoteSession;
        var key = _session.Sealer.Current;
        var used = 0;
        var frames = 0;
        var bytes = 0;
        for (var i = 0; i < count; i++)
        {
            var frame = batch[i]!;
            if (frame.HopLimit == 0)
            {
                counters.CountTxDrop();
                continue;
            }
            var offload = !frame.Offload.IsPlain;
            var extra = offload ? VirtioNetHeader.Size : 0;
            var size = Wire.HeaderSize + SealedRecord.Overhead + extra + frame.Length;
            if (used + size > scratch.Length)
            {
                if (inline)
                {
                    // One write per inline flush: the rest waits in the queue, behind what this one may carry.
                    taken = i;
                    break;
                }
                var outcome = Write(scratch, used, inline: false);
                if (outcome != LinkSendOutcome.Sent)
                    return outcome;
                counters.CountTx(frames, bytes);
                used = frames = bytes = 0;
            }
            // The plaintext goes where the ciphertext will be, then is sealed in place.
            var plain = scratch.AsSpan(used + Wire.HeaderSize + Wire.CounterSize, extra + frame.Length);
            if (offload)
                frame.Offload.Write(plain);
            frame.Data.CopyTo(plain[extra..]);
            used += SealedRecord.Seal(scratch.AsSpan(used), key, MessageType.Data, offload ? MessageFlags.Offload : MessageFlags.None,
                (byte)(frame.HopLimit - 1), remote, plain);
            frames++;
            bytes += frame.Length;
        }
        if (used == 0)
            return taken == count ? LinkSendOutcome.Sent : LinkSendOutcome.Partly;
        var last = Write(scratch, used, inline);
        if (last == LinkSendOutcome.WouldBlock)
        {
            taken = 0;
            return last;
        }
        if (last == LinkSendOutcome.Sent)
            counters.CountTx(frames, bytes);
        return last == LinkSendOutcome.Sent && taken < count ? LinkSendOutcome.Partly : last;
    }

    private LinkSendOutcome Write(byte[] scratch, int length, bool inline)
    {
        fixed (byte* p = scratch)
        {
            var iov = new LibC.IoVec { Base = p, Length = (nuint)length };
            return _connection.Write(&iov, 1, length, inline);
        }
    }

    public void ReleaseBuffers()
    {
        BufferShelf.Scratch.Return(_scratch);
        _scratch = null;
    }

    /// <summary>In-band: the connection is the data channel, so a keep-alive is one more (sealed) message on it.</summary>
    public void SendProbe(MessageType type, ReadOnlySpan<byte> payload) => _session.SendControl(type, payload);

    public void Receive()
    {
        Span<byte> headerBytes = stackalloc byte[Wire.HeaderSize];
        Span<byte> probe = stackalloc byte[LinkSession.MaxProbePayload + SealedRecord.Overhead];
        while (_connection.ReadMessage(out var header, out var payload))
        {
            // The header as received (TryRead checked every field Write sets) is the associated data.
            Wire.Write(headerBytes, header);
            switch (header.Type)
            {
                case MessageType.Data:
                    if (!ReceiveData(header, headerBytes, payload))
                        return;
                    break;
                case MessageType.KeepAlive:
                case MessageType.KeepAliveAck:
                {
                    var length = SealedRecord.PlaintextLength(payload.Length);
                    if (length < 0 || length > LinkSession.MaxProbePayload)
                    {
                        Refuse("a keep-alive of the wrong size");
                        return;
                    }
                    if (!SealedRecord.Open(_session.Opener, header, headerBytes, payload, stream: true, probe))
                    {
                        Refuse("a keep-alive that does not open");
                        return;
                    }
                    _session.ReceiveProbe(header.Type, probe[..length]);
                    break;
                }
                default:
                    if (!_session.ReceiveSealedControl(header, headerBytes, payload))
                        return;
                    break;
            }
        }
    }

    private void Refuse(string what)
    {
        _session.Counters.CountRxError();
        _session.Close($"protocol error from {_session.Peer.Name}: {what}");
    }

    /// <summary>
    /// Completes a sealed data message whose first bytes are in <paramref name="partial"/>: the rest
    /// is read from the socket straight into the frame, where it is opened in place. Layout in the
    /// frame: counter just before the virtio header (in the headroom), frame at its usual offset,
    /// tag after it (the tailroom), all inside the buffer by the bounds checked first.
    /// </summary>
    private bool ReceiveData(LinkHeader header, ReadOnlySpan<byte> headerBytes, ReadOnlySpan<byte> partial)
    {
        _session.NoteDataReceived();
        var extra = (header.Flags & MessageFlags.Offload) != 0 ? VirtioNetHeader.Size : 0;
        var frameLength = SealedRecord.PlaintextLength(header.PayloadLength) - extra;
        if (frameLength < 14 || frameLength > Frame.MaxLength - Wire.TagSize)
        {
            Refuse($"a frame of {frameLength} bytes");
            return false;
        }
        var frame = _pool.TryRent();
        if (frame is null)
        {
            _switch.CountDrop(DropReason.NoBuffer);
            return _connection.Discard(header.PayloadLength - partial.Length);
        }
        var at = Frame.Headroom - extra - Wire.CounterSize;
        var sealedPayload = frame.Buffer.AsSpan(at, header.PayloadLength);
        partial.CopyTo(sealedPayload);
        var filled = partial.Length;
        while (filled < header.PayloadLength)
        {
            var got = _connection.Read(sealedPayload[filled..]);
            if (got <= 0)
            {
                frame.Release();
                _session.Close("peer closed the connection");
                return false;
            }
            filled += got;
        }
        var plain = frame.Buffer.AsSpan(at + Wire.CounterSize, extra + frameLength);
        if (!SealedRecord.Open(_session.Opener, header, headerBytes, sealedPayload, stream: true, plain))
        {
            frame.Release();
            Refuse("a frame that does not open");
            return false;
        }
        if (extra > 0)
            frame.Offload = VirtioNetHeader.Read(plain);
        frame.SetBounds(Frame.Headroom, frameLength);
        _session.DeliverFrame(frame, header.HopLimit);
        return true;
    }
}
