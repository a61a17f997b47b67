using System.Net.Sockets;
using Vnet.Engine;
using Vnet.Native;

namespace Vnet.Links;

/// <summary>
/// The TCP connection under a link session, whatever the link's transport: control messages (and
/// BYE) travel here on every link, and on a TCP link the frames and keep-alives too. Reads and
/// writes go to the raw descriptor, non-blocking, with poll: .NET's Send and Receive would allocate
/// per call, and its async calls would register the socket with the runtime's epoll thread, woken
/// by every segment from then on (the handshake avoids them for that reason: HandshakePoller).
/// <code>
/// Writing (whoever holds the session's send lock: its sender thread, or a reader flushing inline):
///  1. Bytes carried over from an inline write go first: an inline caller finding any gets
///     WouldBlock (its frames are requeued, after them); the sender thread writes them out.
///  2. writev the iovecs; a partial write continues with the rest, skipping what went out.
///  3. EAGAIN before anything was written: an inline caller gets WouldBlock (its frames are
///     requeued). EAGAIN after part of a message went out: an inline caller copies the rest into
///     the carry buffer, wakes the sender thread and returns, so that a slow peer never holds up
///     a reader, which serves every other port too; the sender thread waits for POLLOUT.
///  4. Any other error closes the session with the reason.
/// Reading (the session's receiver thread, through its transport's Receive):
///  1. ReadMessage parses the next message out of a buffer filled by large recvs; nothing more to
///     read right now means flush what this thread's frames produced (TransmitBatch), take what
///     the interfaces it wrote to already answered (InterfacePort.HelpWritten), then poll.
///  2. A control message or keep-alive is returned whole, in place in the buffer.
///  3. A DATA message is returned with the part that is already buffered; the transport reads the
///     rest with <see cref="Read"/> straight into its frame, so a super-frame is copied at most once.
/// </code>
/// </summary>
internal sealed unsafe class LinkConnection : IDisposable
{
    /// <summary>
    /// The receive buffer's first size: headers, keep-alives, most control messages and many small
    /// frames per recv. It grows (on the control path) to what a larger control message needs, up
    /// to <see cref="MaxReceiveBuffer"/>; a 2 MiB buffer per session from the start was mostly
    /// untouched memory, and a churn of pinned garbage across reconnections.
    /// </summary>
    private const int InitialReceiveBuffer = 64 * 1024;

    private const int MaxReceiveBuffer = Wire.HeaderSize + Wire.MaxControlPayload;

    /// <summary>Most bytes one inline write may hand over (and so the carry buffer's size).</summary>
    public const int MaxInlineWrite = 512 * 1024;

    /// <summary>
    /// Longest a reader sleeps in poll with nothing to read. Closing a session shuts the socket down,
    /// which wakes it at once; the bound is only a safety net, long enough not to wake an idle
    /// daemon (a reader that woke five times a second was a fifth of an idle daemon's samples).
    /// </summary>
    private const int IdleWaitMs = 5000;

    private readonly Socket _socket;
    private readonly int _fd;
    private readonly LinkSession _session;
    private byte[]? _buffer;
    private int _start;
    private int _end;

    // The unsent rest of an inline write (under the send lock); allocated at the first one.
    private byte[]? _carry;
    private int _carryLength;

    public LinkConnection(Socket socket, LinkSession session)
    {
        _socket = socket;
        _session = session;
        _fd = (int)socket.SafeHandle.DangerousGetHandle();
        RemoteEndPoint = socket.RemoteEndPoint?.ToString() ?? "?";
    }

    public string RemoteEndPoint { get; }

    /// <summary>The socket's descriptor (for tests that look at it in /proc).</summary>
    internal int Descriptor => _fd;

    // ---------------------------------------------------------------- writing

    /// <summary>Writes one whole message (a control message), waiting for the socket if it must.</summary>
    public LinkSendOutcome Write(ReadOnlySpan<byte> message)
    {
        fixed (byte* p = message)
        {
            var iov = new LibC.IoVec { Base = p, Length = (nuint)message.Length };
            return Write(&iov, 1, message.Length, inline: false);
        }
    }

    /// <summary>Gives the carry buffer back to its shelf: the session ended and the caller holds its send lock.</summary>
    public void ReleaseBuffers()
    {
        _carryLength = 0;
        BufferShelf.Scratch.Return(_carry);
        _carry = null;
    }

    /// <summary>Whether bytes of an inline write still wait for the sender thread (read without the lock: a hint).</summary>
    public bool HasCarry => Volatile.Read(ref _carryLength) > 0;

    /// <summary>
    /// writev until everything is out, across partial writes and EAGAIN. With
    /// <paramref name="inline"/> (a reader thread; at most <see cref="MaxInlineWrite"/> bytes) it
    /// never waits: a socket that takes nothing right now, or carried bytes not yet written, give
    /// <see cref="LinkSendOutcome.WouldBlock"/> (the frames go back to the queue); once part of the
    /// message is out, the rest is carried for the sender thread. Otherwise it waits for the
    /// socket, carried bytes first. The iovecs are consumed.
    /// </summary>
    public LinkSendOutcome Write(LibC.IoVec* iov, int count, int total, bool inline)
    {
        if (_carryLength > 0)
        {
            if (inline)
                return LinkSendOutcome.WouldBlock;
            if (!DrainCarry())
                return LinkSendOutcome.Failed;
        }
        return WriteOut(iov, count, total, inline);
    }

    /// <summary>The writev loop of <see cref="Write(LibC.IoVec*, int, int, bool)"/>, carried bytes aside.</summary>
    private LinkSendOutcome WriteOut(LibC.IoVec* iov, int count, int total, bool inline)
    {
        var done = 0;
        while (done < total)
        {
            var n = LibC.Writev(_fd, iov, count);
            if (n < 0)
            {
                var errno = LibC.LastError;
                if (errno == LibC.EINTR)
                    continue;
                if (errno == LibC.EAGAIN)
                {
                    if (inline && done == 0)
                        return LinkSendOutcome.WouldBlock;
                    if (inline && total - done <= MaxInlineWrite)
                    {
                        Carry(iov, count, total - done);
                        _session.WakeSender();
                        return LinkSendOutcome.Sent;
                    }
                    var pfd = new LibC.PollFd { Fd = _fd, Events = LibC.POLLOUT };
                    LibC.Poll(&pfd, 1, 200);
                    if (_session.IsClosed)
                        return LinkSendOutcome.Failed;
                    continue;
                }
                _session.Close($"send failed: {LibC.ErrorText(errno)}");
                return LinkSendOutcome.Failed;
            }
            done += (int)n;
            if (done >= total)
                break;
            // Skip the iovecs written completely and trim the one written in part.
            var skip = (nuint)n;
            while (count > 0 && skip >= iov->Length)
            {
                skip -= iov->Length;
                iov++;
                count--;
            }
            iov->Base = (byte*)iov->Base + skip;
            iov->Length -= skip;
        }
        return LinkSendOutcome.Sent;
    }

    /// <summary>Copies what the iovecs still hold into the carry buffer (empty before: an inline write finding carried bytes writes nothing).</summary>
    private void Carry(LibC.IoVec* iov, int count, int length)
    {
        var carry = _carry ??= BufferShelf.Scratch.Take();
        var at = 0;
        for (var i = 0; i < count && at < length; i++)
        {
            var n = (int)Math.Min((nuint)(length - at), iov[i].Length);
            new ReadOnlySpan<byte>(iov[i].Base, n).CopyTo(carry.AsSpan(at));
            at += n;
        }
        Volatile.Write(ref _carryLength, at);
    }

    /// <summary>
    /// Writes the carried bytes out, waiting for the socket (the sender thread, under the send
    /// lock); false when the session ended meanwhile.
    /// </summary>
    public bool DrainCarry()
    {
        var length = _carryLength;
        if (length == 0)
            return true;
        // Marked empty first: the write below waits until every byte is out, or the session ended.
        Volatile.Write(ref _carryLength, 0);
        fixed (byte* p = _carry)
        {
            var iov = new LibC.IoVec { Base = p, Length = (nuint)length };
            return WriteOut(&iov, 1, length, inline: false) == LinkSendOutcome.Sent;
        }
    }

    // ---------------------------------------------------------------- reading

    /// <summary>
    /// The next message from the connection (receiver thread only). For DATA,
    /// <paramref name="payload"/> is the part already read (possibly empty) and the caller reads the
    /// remaining <c>PayloadLength - payload.Length</c> bytes with <see cref="Read"/> before calling
    /// again; for any other type it is the whole payload. The span is valid until the next call.
    /// False when the session ended: a protocol error, the peer closing, or a receive error (the
    /// session is closed with the reason).
    /// </summary>
    public bool ReadMessage(out LinkHeader header, out ReadOnlySpan<byte> payload)
    {
        // Allocated by the receiver thread that uses it, dropped when the session is disposed.
        var buffer = _buffer ??= new byte[InitialReceiveBuffer];
        payload = default;
        while (!_session.IsClosed)
        {
            if (_end - _start >= Wire.HeaderSize)
            {
                var error = Wire.TryRead(buffer.AsSpan(_start, _end - _start), out header);
                if (error != WireError.None)
                {
                    _session.Counters.CountRxError();
                    _session.Close($"protocol error from {_session.Peer.Name}: {Wire.Describe(error)}");
                    return false;
                }
                if (header.Session != _session.LocalSession)
                {
                    _session.Close($"protocol error from {_session.Peer.Name}: message for session {header.Session:x8}, not {_session.LocalSession:x8}");
                    return false;
                }
                var payloadStart = _start + Wire.HeaderSize;
                var have = _end - payloadStart;
                if (header.Type == MessageType.Data)
                {
                    var inBuffer = Math.Min(have, header.PayloadLength);
                    payload = buffer.AsSpan(payloadStart, inBuffer);
                    Consume(payloadStart + inBuffer);
                    return true;
                }
                if (have >= header.PayloadLength)
                {
                    payload = buffer.AsSpan(payloadStart, header.PayloadLength);
                    Consume(payloadStart + header.PayloadLength);
                    return true;
                }
                // A control message larger than the buffer cannot be completed in place.
                if (Wire.HeaderSize + header.PayloadLength > MaxReceiveBuffer)
                {
                    _session.Close($"protocol error from {_session.Peer.Name}: control message of {header.PayloadLength} bytes is too large");
                    return false;
                }
                if (Wire.HeaderSize + header.PayloadLength > buffer.Length)
                    buffer = Grow(buffer, Wire.HeaderSize + header.PayloadLength);
                else if (_start > 0)
                    Compact(buffer);
            }
            else if (_start > 0 && buffer.Length - _end < Wire.HeaderSize)
            {
                Compact(buffer);
            }
            var got = Read(buffer.AsSpan(_end));
            if (got <= 0)
                break;
            _end += got;
        }
        header = default;
        _session.Close("peer closed the connection");
        return false;
    }

    /// <summary>Marks buffer[.._start) as handled; an empty buffer starts over at its beginning.</summary>
    private void Consume(int start)
    {
        // Only the next read overwrites the bytes just handed out, so resetting here is safe.
        if (start >= _end)
            _start = _end = 0;
        else
            _start = start;
    }

    /// <summary>A larger receive buffer (control path) with the pending bytes moved to its start.</summary>
    private byte[] Grow(byte[] buffer, int needed)
    {
        var grown = new byte[Math.Min(MaxReceiveBuffer, Math.Max(needed, buffer.Length * 2))];
        buffer.AsSpan(_start, _end - _start).CopyTo(grown);
        _end -= _start;
        _start = 0;
        _buffer = grown;
        return grown;
    }

    private void Compact(byte[] buffer)
    {
        buffer.AsSpan(_start, _end - _start).CopyTo(buffer);
        _end -= _start;
        _start = 0;
    }

    /// <summary>
    /// One recv into <paramref name="into"/> (receiver thread only). Returns bytes read, 0 when the
    /// peer closed or the session ended, -1 on an error (the session is closed with it).
    /// </summary>
    public int Read(Span<byte> into)
    {
        fixed (byte* p = into)
        {
            while (!_session.IsClosed)
            {
                var n = LibC.Recv(_fd, p, (nuint)into.Length, 0);
                if (n >= 0)
                    return (int)n;
                var errno = LibC.LastError;
                if (errno == LibC.EINTR)
                    continue;
                if (errno != LibC.EAGAIN)
                {
                    _session.Close($"receive failed: {LibC.ErrorText(errno)}");
                    return -1;
                }
                // Nothing more to read now: what the frames read so far produced goes out first.
                TransmitBatch.Flush();
                InterfacePort.HelpWritten();
                var pfd = new LibC.PollFd { Fd = _fd, Events = LibC.POLLIN };
                LibC.Poll(&pfd, 1, IdleWaitMs);
            }
            return 0;
        }
    }

    /// <summary>Reads and drops <paramref name="bytes"/> bytes (a payload there is no frame for).</summary>
    public bool Discard(int bytes)
    {
        Span<byte> sink = stackalloc byte[4096];
        while (bytes > 0)
        {
            var got = Read(sink.Slice(0, Math.Min(bytes, sink.Length)));
            if (got <= 0)
            {
                _session.Close("peer closed the connection");
                return false;
            }
            bytes -= got;
        }
        return true;
    }

    // ---------------------------------------------------------------- ending

    /// <summary>Wakes both threads (blocked in poll) without freeing the descriptor they use.</summary>
    public void Shutdown()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>Frees the descriptor and the buffer; only once both of the session's threads are done.</summary>
    public void Dispose()
    {
        _socket.Dispose();
        _buffer = null;
    }
}
