using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Vnet.Engine;
using Vnet.Frames;
using Vnet.Native;

namespace Vnet.Links;

/// <summary>
/// One authenticated connection between two daemons.
/// <code>
/// Outbound flow (sender thread):
///  1. Control messages (TCP) and keep-alives go first, in order.
///  2. Up to 64 queued frames are taken at once.
///  3. TCP: every frame gets a 16-byte header (and its virtio header) in a scratch area; one writev
///     sends headers and frames for the whole batch; a 64 KiB super-frame travels whole.
///     UDP: a super-frame is cut into MTU-sized segments that keep a partial checksum; each
///     segment is one datagram.
///  4. The frames' references are released.
/// Inbound flow (receiver thread, TCP): read a large chunk, parse every complete message in it;
/// a data payload that is only partly there is completed by reading straight into a pooled frame,
/// so a super-frame is copied at most once. Frames go to VirtualSwitch.Forward on this thread.
/// UDP datagrams arrive through <see cref="UdpTransport"/>'s receiver, which calls DeliverData.
/// </code>
/// A session is dead after <see cref="DeadAfter"/> without any message on its data channel, or on
/// any socket error; the link's dialer then builds a new one.
/// </summary>
public sealed unsafe class LinkSession : IDisposable, IFlushable
{
    public static readonly TimeSpan KeepAliveInterval = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan DeadAfter = TimeSpan.FromSeconds(3);

    /// <summary>How long <see cref="Leave"/> waits for its BYE to be written before closing anyway.</summary>
    private static readonly TimeSpan LeaveTimeout = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Path MTU assumed for UDP links (an Ethernet underlay). Segments of super-frames are cut so that
    /// header, virtio header and frame fit one IPv4 datagram of this size.
    /// </summary>
    public const int UdpPathMtu = 1500;

    private const int MaxUdpFrame = UdpPathMtu - 20 - 8 - Wire.HeaderSize - VirtioNetHeader.Size;

    private const int BatchSize = 64;
    private const int HeaderSlot = 32;
    private const int ReceiveBufferSize = Wire.HeaderSize + Wire.MaxControlPayload;

    private readonly Socket _tcp;
    private readonly LinkPort _port;
    private readonly VirtualSwitch _switch;
    private readonly FramePool _pool;
    private readonly UdpTransport? _udp;
    private readonly LinkManager _events;
    private readonly SendQueue _queue;
    private readonly Queue<byte[]> _control = new();
    private readonly Lock _controlLock = new();
    private readonly Thread _sender;
    private readonly Thread _receiver;
    private readonly int _fd;
    private int _closed;
    private int _threadsLeft = 2;
    private long _lastDataRxTicks;
    private long _srttMicros = -1;
    private long _lastRttMicros = -1;
    private uint _keepAliveSeq;
    private string _closeReason = "";
    private string? _leaving;
    private long _lastKeepAliveTicks;
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Whoever holds the send lock owns the socket's write side and this scratch space: the sender
    // thread for a batch, or a data-path thread sending one frame inline.
    private readonly Lock _sendLock = new();
    private readonly Frame?[] _batch = new Frame?[BatchSize];
    private readonly byte[] _headers = GC.AllocateUninitializedArray<byte>(BatchSize * HeaderSlot, pinned: true);
    private readonly LibC.IoVec[] _iov = new LibC.IoVec[BatchSize * 2];
    private readonly List<Frame> _segments = new(128);
    private readonly DelayLine _delay = new(8192);
    private readonly byte[] _datagram = GC.AllocateUninitializedArray<byte>(Wire.HeaderSize + Wire.MaxDataPayload + 65536, pinned: true);
    private long _inlineSends;

    private enum SendOutcome
    {
        Sent,
        WouldBlock,
        Failed,
    }

    internal LinkSession(Socket tcp, PeerIdentity peer, uint localSession, LinkPort port, VirtualSwitch sw, FramePool pool,
        UdpTransport? udp, LinkManager events, int queueCapacity)
    {
        _tcp = tcp;
        Peer = peer;
        LocalSession = localSession;
        _port = port;
        _switch = sw;
        _pool = pool;
        _udp = peer.Transport == LinkTransport.Udp ? udp : null;
        _events = events;
        _queue = new SendQueue(queueCapacity);
        _fd = (int)tcp.SafeHandle.DangerousGetHandle();
        _lastDataRxTicks = Stopwatch.GetTimestamp();
        Started = DateTimeOffset.UtcNow;
        RemoteEndPoint = tcp.RemoteEndPoint?.ToString() ?? "?";
        _sender = new Thread(SendLoop) { IsBackground = true, Name = $"link-{peer.Name}-tx" };
        _receiver = new Thread(ReceiveLoop) { IsBackground = true, Name = $"link-{peer.Name}-rx" };
    }

    public PeerIdentity Peer { get; }

    public uint LocalSession { get; }

    public LinkTransport Transport => Peer.Transport;

    public DateTimeOffset Started { get; }

    public string RemoteEndPoint { get; }

    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    public string CloseReason => _closeReason;

    /// <summary>Smoothed round-trip time from keep-alives, in microseconds; -1 before the first.</summary>
    public long SmoothedRttMicros => Interlocked.Read(ref _srttMicros);

    public long LastRttMicros => Interlocked.Read(ref _lastRttMicros);

    /// <summary>For UDP links: where the peer's datagrams come from (learned from its probe).</summary>
    internal UdpPeer? UdpPeer { get; set; }

    /// <summary>For UDP links started here: the peer confirmed our probe, so the UDP path works.</summary>
    internal volatile bool ProbeAcknowledged;

    public TimeSpan SilentFor => Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastDataRxTicks));

    public int QueuedFrames => _queue.Count;

    /// <summary>Completes when both threads have finished and the link was told.</summary>
    public Task Completion => _completion.Task;

    internal void Start()
    {
        _receiver.Start();
        _sender.Start();
    }

    /// <summary>Queues a frame (taking over its reference); false when the queue is full or closed.</summary>
    internal bool Enqueue(Frame frame)
    {
        // An emulated link holds frames in its delay line; the sender thread releases them when due.
        if (_port.Emulation is { } emulation)
        {
            if (!_delay.TryAdd(frame, emulation))
                return false;
            _queue.Wake();
            return true;
        }
        // Inside a reader's batch the reader flushes us when it runs dry; otherwise the sender thread.
        if (!TransmitBatch.Active)
            return _queue.TryEnqueue(frame, wake: true);
        if (!_queue.TryEnqueue(frame, wake: false))
            return false;
        TransmitBatch.Register(this);
        return true;
    }

    /// <summary>
    /// Sends the queue on the calling reader thread when nobody else is sending: one batch, one
    /// system call, no thread hand-off. A socket that cannot take it now (or a queue longer than a
    /// batch) is left to the sender thread, which waits for the socket without holding up a reader.
    /// </summary>
    public void Flush()
    {
        if (_queue.IsEmpty || IsClosed)
            return;
        if (_sendLock.TryEnter())
        {
            try
            {
                var n = _queue.DequeueBatch(_batch);
                if (n > 0)
                {
                    var outcome = _udp is null ? SendTcpBatch(_batch, n, inline: true) : SendUdpBatch(_batch, n);
                    if (outcome == SendOutcome.WouldBlock)
                    {
                        for (var dropped = _queue.RequeueFront(_batch, n); dropped > 0; dropped--)
                            _port.Counters.CountTxDrop();
                    }
                    else
                    {
                        Interlocked.Add(ref _inlineSends, n);
                        for (var i = 0; i < n; i++)
                            _batch[i]!.Release();
                    }
                    Array.Clear(_batch, 0, n);
                }
            }
            finally
            {
                _sendLock.Exit();
            }
        }
        if (!_queue.IsEmpty)
            _queue.Wake();
    }

    /// <summary>Frames sent on the arriving thread rather than by the sender thread.</summary>
    public long InlineSends => Interlocked.Read(ref _inlineSends);

    /// <summary>Sends a control message over the reliable (TCP) channel.</summary>
    public void SendControl(MessageType type, ReadOnlySpan<byte> payload)
    {
        var message = new byte[Wire.HeaderSize + payload.Length];
        Wire.Write(message, new LinkHeader(type, MessageFlags.None, 0, Peer.RemoteSession, payload.Length));
        payload.CopyTo(message.AsSpan(Wire.HeaderSize));
        lock (_controlLock)
            _control.Enqueue(message);
        _queue.Wake();
    }

    /// <summary>Called by the link manager's clock: keep-alives and the dead-peer check.</summary>
    internal void Tick()
    {
        if (IsClosed)
            return;
        if (SilentFor > DeadAfter)
        {
            Close($"no message for {DeadAfter.TotalSeconds:0} s");
            return;
        }
        if (Stopwatch.GetElapsedTime(_lastKeepAliveTicks) < KeepAliveInterval)
            return;
        _lastKeepAliveTicks = Stopwatch.GetTimestamp();
        Span<byte> payload = stackalloc byte[12];
        BinaryPrimitives.WriteInt64BigEndian(payload, Stopwatch.GetTimestamp());
        BinaryPrimitives.WriteUInt32BigEndian(payload.Slice(8), ++_keepAliveSeq);
        SendProbe(MessageType.KeepAlive, payload);
    }

    /// <summary>
    /// Sends a keep-alive or its answer on the data channel. On an emulated link it waits out the
    /// link's delay first, so the RTT the link reports is the one its frames see.
    /// </summary>
    internal void SendProbe(MessageType type, ReadOnlySpan<byte> payload)
    {
        var delay = _port.Emulation?.Delay ?? TimeSpan.Zero;
        if (delay > TimeSpan.Zero)
        {
            var copy = payload.ToArray();
            _ = Task.Delay(delay).ContinueWith(_ => SendProbeNow(type, copy), TaskScheduler.Default);
            return;
        }
        SendProbeNow(type, payload);
    }

    private void SendProbeNow(MessageType type, ReadOnlySpan<byte> payload)
    {
        if (IsClosed)
            return;
        if (_udp is not null && UdpPeer is { } peer)
            _udp.SendMessage(peer, type, Peer.RemoteSession, payload);
        else if (_udp is null)
            SendControl(type, payload);
    }

    internal void NoteDataReceived() => Interlocked.Exchange(ref _lastDataRxTicks, Stopwatch.GetTimestamp());

    internal void OnKeepAliveAck(ReadOnlySpan<byte> payload)
    {
        if (payload.Length < 8)
            return;
        var sent = BinaryPrimitives.ReadInt64BigEndian(payload);
        var micros = (long)Stopwatch.GetElapsedTime(sent).TotalMicroseconds;
        if (micros < 0 || micros > 60_000_000)
            return;
        Interlocked.Exchange(ref _lastRttMicros, micros);
        var srtt = Interlocked.Read(ref _srttMicros);
        // RFC 6298 smoothing: 7/8 old, 1/8 new.
        Interlocked.Exchange(ref _srttMicros, srtt < 0 ? micros : ((srtt * 7) + micros) / 8);
    }

    /// <summary>
    /// Ends the session after telling the peer why (BYE). The sender closes the session once the BYE
    /// is written (closing here at once would cut it off); a peer that does not read cannot hold
    /// the session open longer than <see cref="LeaveTimeout"/>.
    /// </summary>
    public void Leave(string reason)
    {
        if (IsClosed)
            return;
        SendControl(MessageType.Bye, System.Text.Encoding.UTF8.GetBytes(reason));
        Interlocked.CompareExchange(ref _leaving, reason, null);
        _queue.Wake();
        _ = Task.Delay(LeaveTimeout).ContinueWith(_ => Close(reason), TaskScheduler.Default);
    }

    /// <summary>Ends the session (idempotent); the threads finish and the link is told once.</summary>
    public void Close(string reason)
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
            return;
        _closeReason = reason;
        try
        {
            // Shutdown wakes both threads without freeing the descriptor they use.
            _tcp.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
        _queue.Close();
    }

    /// <summary>Closes the session; its threads release the socket and queue when they finish.</summary>
    public void Dispose() => Close("disposed");

    private void ThreadDone()
    {
        if (Interlocked.Decrement(ref _threadsLeft) != 0)
            return;
        _tcp.Dispose();
        _delay.Clear();
        _queue.Dispose();
        try
        {
            _events.OnSessionDown(_port, this, _closeReason);
        }
        finally
        {
            _completion.TrySetResult();
        }
    }

    // ---------------------------------------------------------------- sending

    private void SendLoop()
    {
        try
        {
            while (!IsClosed)
            {
                int n;
                var nextDue = long.MaxValue;
                var outcome = SendOutcome.Sent;
                lock (_sendLock)
                {
                    // Read before the flush: a BYE queued by Leave is then surely written by it.
                    var leaving = Volatile.Read(ref _leaving);
                    if (!FlushControl())
                        break;
                    if (leaving is not null)
                    {
                        Close(leaving);
                        break;
                    }
                    n = _delay.IsEmpty ? 0 : _delay.DequeueDue(_batch, out nextDue);
                    if (n == 0)
                        n = _queue.DequeueBatch(_batch);
                    if (n > 0)
                    {
                        outcome = _udp is null ? SendTcpBatch(_batch, n, inline: false) : SendUdpBatch(_batch, n);
                        for (var i = 0; i < n; i++)
                        {
                            _batch[i]!.Release();
                            _batch[i] = null;
                        }
                    }
                }
                if (outcome == SendOutcome.Failed)
                    break;
                if (n == 0)
                {
                    // Sleep until work arrives, or until the next held-back frame is due.
                    var wait = 100;
                    if (nextDue != long.MaxValue)
                        wait = (int)Math.Clamp((nextDue - Stopwatch.GetTimestamp()) * 1000 / Stopwatch.Frequency, 0, 100);
                    if (wait > 0)
                        _queue.Wait(wait);
                }
            }
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
        {
            Close($"send failed: {e.Message}");
        }
        finally
        {
            Close(_closeReason.Length > 0 ? _closeReason : "closed");
            ThreadDone();
        }
    }

    private bool FlushControl()
    {
        while (true)
        {
            byte[]? message;
            lock (_controlLock)
            {
                if (!_control.TryDequeue(out message))
                    return true;
            }
            fixed (byte* p = message)
            {
                var iov = new LibC.IoVec { Base = p, Length = (nuint)message.Length };
                if (WriteAll(&iov, 1, message.Length, mayDefer: false) != SendOutcome.Sent)
                    return false;
            }
        }
    }

    private SendOutcome SendTcpBatch(Frame?[] batch, int n, bool inline)
    {
        var total = 0;
        var count = 0;
        var frames = 0;
        var bytes = 0;
        fixed (byte* h = _headers)
        fixed (LibC.IoVec* v = _iov)
        {
            for (var i = 0; i < n; i++)
            {
                var frame = batch[i]!;
                if (frame.HopLimit == 0)
                {
                    _port.Counters.CountTxDrop();
                    continue;
                }
                var offload = !frame.Offload.IsPlain;
                var extra = offload ? VirtioNetHeader.Size : 0;
                var hdr = new Span<byte>(h + (i * HeaderSlot), HeaderSlot);
                Wire.Write(hdr, new LinkHeader(MessageType.Data, offload ? MessageFlags.Offload : MessageFlags.None,
                    (byte)(frame.HopLimit - 1), Peer.RemoteSession, extra + frame.Length));
                if (offload)
                    frame.Offload.Write(hdr.Slice(Wire.HeaderSize));
                v[count++] = new LibC.IoVec { Base = h + (i * HeaderSlot), Length = (nuint)(Wire.HeaderSize + extra) };
                // Frame buffers live on the pinned object heap: their address is stable.
                fixed (byte* f = &frame.Buffer[frame.Offset])
                    v[count++] = new LibC.IoVec { Base = f, Length = (nuint)frame.Length };
                total += Wire.HeaderSize + extra + frame.Length;
                frames++;
                bytes += frame.Length;
            }
            if (count == 0)
                return SendOutcome.Sent;
            var outcome = WriteAll(v, count, total, mayDefer: inline);
            if (outcome == SendOutcome.Sent)
                _port.Counters.CountTx(frames, bytes);
            return outcome;
        }
    }

    /// <summary>
    /// writev until everything is out, across partial writes and EAGAIN. With
    /// <paramref name="mayDefer"/>, a socket that takes nothing right now gives
    /// <see cref="SendOutcome.WouldBlock"/> (the frame goes to the queue instead); once part of a
    /// message is written, the rest must follow, so it waits.
    /// </summary>
    private SendOutcome WriteAll(LibC.IoVec* iov, int count, int total, bool mayDefer)
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
                    if (mayDefer && done == 0)
                        return SendOutcome.WouldBlock;
                    var pfd = new LibC.PollFd { Fd = _fd, Events = LibC.POLLOUT };
                    LibC.Poll(&pfd, 1, 200);
                    if (IsClosed)
                        return SendOutcome.Failed;
                    continue;
                }
                Close($"send failed: {LibC.ErrorText(errno)}");
                return SendOutcome.Failed;
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
        return SendOutcome.Sent;
    }

    private SendOutcome SendUdpBatch(Frame?[] batch, int n)
    {
        var segments = _segments;
        var datagram = _datagram;
        var peer = UdpPeer;
        for (var i = 0; i < n; i++)
        {
            var frame = batch[i]!;
            if (peer is null || frame.HopLimit == 0)
            {
                _port.Counters.CountTxDrop();
                continue;
            }
            if (!frame.Offload.IsGso)
            {
                SendDatagram(frame, peer, datagram);
                continue;
            }
            // Segment takes over a reference; the batch keeps its own for the release below.
            frame.AddReference();
            segments.Clear();
            if (!Offloads.Segment(frame, _pool, segments, completeChecksums: false, MaxUdpFrame))
            {
                _port.Counters.CountTxDrop();
                continue;
            }
            SendSegments(segments, frame.HopLimit, peer, datagram);
            foreach (var segment in segments)
                segment.Release();
            segments.Clear();
        }
        return SendOutcome.Sent;
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
            sent = _udp!.SendSegmented(p, length, segment, peer);
        if (sent == length)
        {
            _port.Counters.CountTx(count, frameBytes);
            return;
        }
        for (var i = 0; i < count; i++)
            _port.Counters.CountTxDrop();
    }

    private static int DatagramSize(Frame frame) =>
        Wire.HeaderSize + (frame.Offload.IsPlain ? 0 : VirtioNetHeader.Size) + frame.Length;

    private int WriteDatagram(Frame frame, Span<byte> span)
    {
        var offload = !frame.Offload.IsPlain;
        var extra = offload ? VirtioNetHeader.Size : 0;
        Wire.Write(span, new LinkHeader(MessageType.Data, offload ? MessageFlags.Offload : MessageFlags.None,
            (byte)(frame.HopLimit - 1), Peer.RemoteSession, extra + frame.Length));
        if (offload)
            frame.Offload.Write(span.Slice(Wire.HeaderSize));
        frame.Data.CopyTo(span.Slice(Wire.HeaderSize + extra));
        return Wire.HeaderSize + extra + frame.Length;
    }

    // ---------------------------------------------------------------- receiving

    private void ReceiveLoop()
    {
        TransmitBatch.Begin();
        var buffer = GC.AllocateUninitializedArray<byte>(ReceiveBufferSize, pinned: true);
        var start = 0;
        var end = 0;
        try
        {
            while (!IsClosed)
            {
                if (start == end)
                {
                    start = end = 0;
                }
                else if (start > 0 && buffer.Length - end < Wire.HeaderSize)
                {
                    buffer.AsSpan(start, end - start).CopyTo(buffer);
                    end -= start;
                    start = 0;
                }
                var got = ReceiveSome(buffer.AsSpan(end));
                if (got <= 0)
                {
                    Close("peer closed the connection");
                    break;
                }
                end += got;
                if (!ParseMessages(buffer, ref start, ref end))
                    break;
            }
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
        {
            Close($"receive failed: {e.Message}");
        }
        finally
        {
            TransmitBatch.End();
            ThreadDone();
        }
    }

    /// <summary>
    /// One recv on the raw descriptor: .NET's synchronous Receive allocates an operation object per
    /// call once the socket is non-blocking (after the async handshake), which the data path must
    /// not. Returns bytes read, 0 when the peer closed or the session ended, -1 on an error.
    /// </summary>
    private int ReceiveSome(Span<byte> into)
    {
        fixed (byte* p = into)
        {
            while (!IsClosed)
            {
                var n = LibC.Recv(_fd, p, (nuint)into.Length, 0);
                if (n >= 0)
                    return (int)n;
                var errno = LibC.LastError;
                if (errno == LibC.EINTR)
                    continue;
                if (errno != LibC.EAGAIN)
                {
                    Close($"receive failed: {LibC.ErrorText(errno)}");
                    return -1;
                }
                // Nothing more to read now: what the frames read so far produced goes out first.
                TransmitBatch.Flush();
                var pfd = new LibC.PollFd { Fd = _fd, Events = LibC.POLLIN };
                LibC.Poll(&pfd, 1, 200);
            }
            return 0;
        }
    }

    /// <summary>Handles every complete message in buffer[start..end); false when the session must end.</summary>
    private bool ParseMessages(byte[] buffer, ref int start, ref int end)
    {
        while (end - start >= Wire.HeaderSize)
        {
            var error = Wire.TryRead(buffer.AsSpan(start, end - start), out var header);
            if (error != WireError.None)
            {
                _port.Counters.CountRxError();
                Close($"protocol error from {Peer.Name}: {Wire.Describe(error)}");
                return false;
            }
            if (header.Session != LocalSession)
            {
                Close($"protocol error from {Peer.Name}: message for session {header.Session:x8}, not {LocalSession:x8}");
                return false;
            }
            var payloadStart = start + Wire.HeaderSize;
            var have = end - payloadStart;

            if (header.Type == MessageType.Data)
            {
                if (_udp is not null)
                {
                    Close($"protocol error from {Peer.Name}: data on the control channel of a UDP link");
                    return false;
                }
                var inBuffer = Math.Min(have, header.PayloadLength);
                if (!ReceiveData(header, buffer.AsSpan(payloadStart, inBuffer)))
                    return false;
                start = payloadStart + inBuffer;
                if (start >= end)
                {
                    start = end = 0;
                }
                continue;
            }

            if (have < header.PayloadLength)
            {
                // A control message larger than the buffer cannot be completed in place.
                if (Wire.HeaderSize + header.PayloadLength > buffer.Length)
                {
                    Close($"protocol error from {Peer.Name}: control message of {header.PayloadLength} bytes is too large");
                    return false;
                }
                if (start > 0)
                {
                    buffer.AsSpan(start, end - start).CopyTo(buffer);
                    end -= start;
                    start = 0;
                }
                return true;
            }
            var payload = buffer.AsSpan(payloadStart, header.PayloadLength);
            start = payloadStart + header.PayloadLength;
            if (!HandleControl(header, payload))
                return false;
        }
        if (start == end)
            start = end = 0;
        return true;
    }

    /// <summary>
    /// Completes a data message whose first bytes are in <paramref name="partial"/>: the rest is read
    /// from the socket straight into the frame.
    /// </summary>
    private bool ReceiveData(LinkHeader header, ReadOnlySpan<byte> partial)
    {
        NoteDataReceived();
        var extra = (header.Flags & MessageFlags.Offload) != 0 ? VirtioNetHeader.Size : 0;
        var frameLength = header.PayloadLength - extra;
        var frame = frameLength >= 14 ? _pool.TryRent() : null;
        if (frame is null)
        {
            if (frameLength < 14)
                _port.Counters.CountRxError();
            else
                _switch.CountDrop(DropReason.NoBuffer);
            return Discard(header.PayloadLength - partial.Length);
        }
        var at = Frame.Headroom - extra;
        partial.CopyTo(frame.Buffer.AsSpan(at));
        var filled = partial.Length;
        while (filled < header.PayloadLength)
        {
            var got = ReceiveSome(frame.Buffer.AsSpan(at + filled, header.PayloadLength - filled));
            if (got <= 0)
            {
                frame.Release();
                Close("peer closed the connection");
                return false;
            }
            filled += got;
        }
        if (extra > 0)
            frame.Offload = VirtioNetHeader.Read(frame.Buffer.AsSpan(at, extra));
        frame.SetBounds(Frame.Headroom, frameLength);
        DeliverFrame(frame, header.HopLimit);
        return true;
    }

    private bool Discard(int bytes)
    {
        Span<byte> sink = stackalloc byte[4096];
        while (bytes > 0)
        {
            var got = ReceiveSome(sink.Slice(0, Math.Min(bytes, sink.Length)));
            if (got <= 0)
            {
                Close("peer closed the connection");
                return false;
            }
            bytes -= got;
        }
        return true;
    }

    /// <summary>Hands a received frame to the switch (from the TCP receiver or the UDP transport).</summary>
    internal void DeliverFrame(Frame frame, byte hopLimit)
    {
        _port.Counters.CountRx(frame.Length);
        frame.IngressPort = _port.Id;
        frame.HopLimit = hopLimit;
        _switch.Forward(frame);
    }

    private bool HandleControl(LinkHeader header, ReadOnlySpan<byte> payload)
    {
        switch (header.Type)
        {
            case MessageType.KeepAlive:
                if (_udp is null)
                {
                    NoteDataReceived();
                    SendProbe(MessageType.KeepAliveAck, payload);
                }
                return true;
            case MessageType.KeepAliveAck:
                if (_udp is null)
                {
                    NoteDataReceived();
                    OnKeepAliveAck(payload);
                }
                return true;
            case MessageType.Control:
                _events.OnSessionControl(_port, this, payload.ToArray());
                return true;
            case MessageType.Bye:
                Close($"peer said goodbye: {System.Text.Encoding.UTF8.GetString(payload)}");
                return false;
            default:
                Close($"protocol error from {Peer.Name}: unexpected {header.Type} after the handshake");
                return false;
        }
    }
}
