using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using Vnet.Engine;
using Vnet.Frames;
using Vnet.Links.Security;

namespace Vnet.Links;

/// <summary>
/// One authenticated, encrypted session between two daemons, over a TCP connection (<see cref="LinkConnection"/>)
/// that carries its control messages, and a transport (<see cref="ILinkTransport"/>) that carries
/// its frames and keep-alives: the same connection (<see cref="TcpLinkTransport"/>) or datagrams
/// (<see cref="UdpLinkTransport"/>).
/// <code>
/// Every message after the handshake is sealed (SealedRecord: AES-256-GCM with this direction's key,
/// the header as associated data, an explicit counter); the key steps to its next epoch every two
/// minutes (SendCipher, ReceiveCipher).
/// Outbound (sender thread, or a reader thread flushing inline under the same send lock):
///  1. Queued control messages (and keep-alives of a TCP link) are sealed and written first, in
///     order; a BYE from Leave ends the session once it is out.
///  2. Frames due from the emulation delay line, else up to 64 queued frames, are taken at once.
///  3. The transport sends the batch (one call per batch).
///  4. The frames' references are released.
/// Inbound (receiver thread): the transport reads the connection until the session ends; control
///   messages come back to ReceiveSealedControl, frames go to DeliverFrame (VirtualSwitch.Forward on this
///   thread). A UDP link's frames arrive on UdpTransport's receive thread, also through DeliverFrame.
/// Clock (LinkManager, every second, and at a silent session's deadline): Tick sends a keep-alive
///   each second (the leading end; the other answers, see LeadsKeepAlives) and ends a silent session.
/// End: Close shuts the connection down, which wakes both threads; the last one to finish frees
///   the connection and queues and reports to LinkManager.OnSessionDown.
/// </code>
/// A session is dead after <see cref="DeadAfter"/> without any message on its data channel, or on
/// any socket error; the link's dialer then builds a new one.
/// </summary>
public sealed class LinkSession : IDisposable, IFlushable
{
    public static readonly TimeSpan KeepAliveInterval = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan DeadAfter = TimeSpan.FromSeconds(3);

    /// <summary>Longest sleep of an idle sender thread (see SendLoop): a safety net, as the readers' poll timeout.</summary>
    private const int IdleWaitMs = 5000;

    /// <summary>Frames sent at once (one system call on a TCP link).</summary>
    internal const int BatchSize = 64;

    /// <summary>How long <see cref="Leave"/> waits for its BYE to be written before closing anyway.</summary>
    private static readonly TimeSpan LeaveTimeout = TimeSpan.FromSeconds(1);

    private readonly LinkConnection _connection;
    private readonly ILinkTransport _transport;
    private readonly LinkPort _port;
    private readonly VirtualSwitch _switch;
    private readonly LinkManager _events;
    private readonly SendQueue _queue;
    private readonly Queue<(MessageType Type, byte[] Payload)> _control = new();
    private readonly SendCipher _seal;
    private readonly ReceiveCipher _open;
    private readonly SendCipher? _datagramSeal;
    private readonly ReceiveCipher? _datagramOpen;
    private readonly Lock _controlLock = new();
    private readonly Thread _sender;
    private readonly Thread _receiver;
    private int _closed;
    private int _threadsLeft = 2;
    private long _lastDataRxTicks;
    private long _srttMicros = -1;
    private long _lastRttMicros = -1;
    private uint _keepAliveSeq;
    private string _closeReason = "";
    private string? _leaving;
    private long _lastKeepAliveTicks;
    private long _keepAlivesSent;
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Whoever holds the send lock owns the connection's write side, the transport's scratch space and
    // this batch: the sender thread, or a data-path thread flushing inline.
    private readonly Lock _sendLock = new();
    private readonly Frame?[] _batch = new Frame?[BatchSize];
    private readonly DelayLine _delay = new(8192);
    private long _inlineSends;
    private long _sentFrames;
    // Written by the one thread that receives this session's frames (its receiver, or udp-rx).
    private long _receivedFrames;

    /// <param name="transport">Makes the session's transport (TCP or UDP); called once, last in the constructor.</param>
    /// <param name="rekeyAfter">Tests only (<see cref="LinkManagerOptions.RekeyAfter"/>): a shorter key lifetime.</param>
    internal LinkSession(Socket tcp, PeerIdentity peer, uint localSession, LinkPort port, VirtualSwitch sw,
        LinkManager events, int queueCapacity, Func<LinkSession, ILinkTransport> transport, TimeSpan? rekeyAfter = null)
    {
        Peer = peer;
        LocalSession = localSession;
        _port = port;
        _switch = sw;
        _events = events;
        _queue = new SendQueue(queueCapacity);
        _lastDataRxTicks = Stopwatch.GetTimestamp();
        Started = DateTimeOffset.UtcNow;
        var stream = peer.Keys.For(SessionChannel.Stream);
        _seal = new SendCipher(stream.Send, rekeyAfter);
        _open = new ReceiveCipher(stream.Receive);
        if (peer.Transport == LinkTransport.Udp)
        {
            var datagram = peer.Keys.For(SessionChannel.Datagram);
            _datagramSeal = new SendCipher(datagram.Send, rekeyAfter);
            _datagramOpen = new ReceiveCipher(datagram.Receive);
        }
        _connection = new LinkConnection(tcp, this);
        var name = peer.Stream == 0 ? peer.Name : $"{peer.Name}.{peer.Stream}";
        _sender = new Thread(SendLoop) { IsBackground = true, Name = $"link-{name}-tx" };
        _receiver = new Thread(ReceiveLoop) { IsBackground = true, Name = $"link-{name}-rx" };
        // Last: the transport may read what is set above (the connection, the peer).
        _transport = transport(this);
    }

    public PeerIdentity Peer { get; }

    public uint LocalSession { get; }

    public LinkTransport Transport => Peer.Transport;

    /// <summary>Which of the link's parallel connections this is (its slot in the port); 0 for the link's first.</summary>
    public int Stream => Peer.Stream;

    /// <summary>Frames this session handed to its transport (the port's counters sum every session's).</summary>
    public long SentFrames => Interlocked.Read(ref _sentFrames);

    /// <summary>Frames that arrived on this session.</summary>
    public long ReceivedFrames => Volatile.Read(ref _receivedFrames);

    public DateTimeOffset Started { get; }

    public string RemoteEndPoint => _connection.RemoteEndPoint;

    /// <summary>A UDP link's datagram peer (where its latest authenticated datagram came from), null until known and on TCP links.</summary>
    public string? DatagramEndPoint => (_transport as UdpLinkTransport)?.Peer?.ToString();

    /// <summary>How many times a UDP link's datagram peer moved (roaming); null on TCP links.</summary>
    public long? DatagramRoams => (_transport as UdpLinkTransport)?.Roams;

    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    public string CloseReason => _closeReason;

    /// <summary>Keep-alives this end sent (answers not counted); see <see cref="LeadsKeepAlives"/>.</summary>
    public long KeepAlivesSent => Interlocked.Read(ref _keepAlivesSent);

    /// <summary>Smoothed round-trip time from keep-alives, in microseconds; -1 before the first.</summary>
    public long SmoothedRttMicros => Interlocked.Read(ref _srttMicros);

    public long LastRttMicros => Interlocked.Read(ref _lastRttMicros);

    public TimeSpan SilentFor => Stopwatch.GetElapsedTime(Interlocked.Read(ref _lastDataRxTicks));

    /// <summary>When the session is dead unless its peer is heard before (Stopwatch ticks): the link clock checks it then.</summary>
    internal long DeadAt => Interlocked.Read(ref _lastDataRxTicks) + DeadAfterTicks;

    private static readonly long DeadAfterTicks = (long)(DeadAfter.TotalSeconds * Stopwatch.Frequency);

    public int QueuedFrames => _queue.Count;

    /// <summary>Completes when both threads have finished and the link was told.</summary>
    public Task Completion => _completion.Task;

    /// <summary>Frames sent on the arriving thread rather than by the sender thread.</summary>
    public long InlineSends => Interlocked.Read(ref _inlineSends);

    /// <summary>What carries the frames and keep-alives (the link manager sets up a UDP one).</summary>
    internal ILinkTransport DataChannel => _transport;

    /// <summary>The TCP connection: control messages for every link, everything for a TCP link.</summary>
    internal LinkConnection Connection => _connection;

    internal PortCounters Counters => _port.Counters;

    /// <summary>What this daemon sends on its connection is sealed with this (by the send lock's holder).</summary>
    internal SendCipher Sealer => _seal;

    /// <summary>What arrives on the connection is opened with this (by the connection's receiving thread only).</summary>
    internal ReceiveCipher Opener => _open;

    /// <summary>A UDP link's datagrams are sealed with this (frames by the send lock's holder; probes from any thread).</summary>
    internal SendCipher DatagramSealer => _datagramSeal ?? throw new InvalidOperationException("a TCP link has no datagrams");

    /// <summary>A UDP link's datagrams are opened with this (by UdpTransport's receiving thread only).</summary>
    internal ReceiveCipher DatagramOpener => _datagramOpen ?? throw new InvalidOperationException("a TCP link has no datagrams");

    /// <summary>Messages that did not open (forged, replayed, or from a stale key), since the session began.</summary>
    public long RefusedMessages => _open.Refused + (_datagramOpen?.Refused ?? 0);

    /// <summary>Times the send key stepped to its next epoch.</summary>
    public long Rekeys => _seal.Rekeys + (_datagramSeal?.Rekeys ?? 0);

    internal void Start()
    {
        _receiver.Start();
        _sender.Start();
    }

    // ---------------------------------------------------------------- sending

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
                // Closed since the look above: the session's buffers may be back on their shelf.
                if (IsClosed)
                    return;
                var n = _queue.DequeueBatch(_batch);
                if (n > 0)
                {
                    _seal.RekeyIfDue();
                    _datagramSeal?.RekeyIfDue();
                    if (_transport.SendBatch(_batch, n, inline: true, out var taken) == LinkSendOutcome.Failed)
                        taken = n;
                    Interlocked.Add(ref _inlineSends, taken);
                    Interlocked.Add(ref _sentFrames, taken);
                    for (var i = 0; i < taken; i++)
                        _batch[i]!.Release();
                    // What the socket could not take now goes back to the head of the queue, in order.
                    for (var dropped = _queue.RequeueFront(_batch, taken, n - taken); dropped > 0; dropped--)
                        _port.Counters.CountTxDrop();
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

    /// <summary>Wakes the sender thread (bytes an inline write could not finish wait for it).</summary>
    internal void WakeSender() => _queue.Wake();

    /// <summary>Sends a control message over the reliable (TCP) channel; it is sealed when it is written.</summary>
    public void SendControl(MessageType type, ReadOnlySpan<byte> payload)
    {
        var copy = payload.ToArray();
        lock (_controlLock)
            _control.Enqueue((type, copy));
        _queue.Wake();
    }

    private void SendLoop()
    {
        ForwardingPriority.ApplyToCurrentThread();
        try
        {
            while (!IsClosed)
            {
                int n;
                var nextDue = long.MaxValue;
                var outcome = LinkSendOutcome.Sent;
                lock (_sendLock)
                {
                    _seal.RekeyIfDue();
                    _datagramSeal?.RekeyIfDue();
                    // Read before the flush: a BYE queued by Leave is then surely written by it.
                    var leaving = Volatile.Read(ref _leaving);
                    // What a reader's inline write left goes before anything else.
                    if (_connection.HasCarry && !_connection.DrainCarry())
                        break;
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
                        outcome = _transport.SendBatch(_batch, n, inline: false, out _);
                        Interlocked.Add(ref _sentFrames, n);
                        for (var i = 0; i < n; i++)
                        {
                            _batch[i]!.Release();
                            _batch[i] = null;
                        }
                    }
                }
                if (outcome == LinkSendOutcome.Failed)
                    break;
                if (n == 0 && !_connection.HasCarry)
                {
                    // Sleep until work arrives (frames, control messages, a carry to drain and
                    // leaving all wake the queue), or until the next held-back frame is due. An
                    // idle link's key is stepped by the clock (Tick), so the timeout is only a
                    // safety net: an idle sender used to wake 10 times, then once, a second.
                    var wait = IdleWaitMs;
                    if (nextDue != long.MaxValue)
                        wait = (int)Math.Clamp((nextDue - Stopwatch.GetTimestamp()) * 1000 / Stopwatch.Frequency, 0, IdleWaitMs);
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

    /// <summary>Seals and writes the queued control messages (under the send lock); false when the session ended.</summary>
    private bool FlushControl()
    {
        while (true)
        {
            (MessageType Type, byte[] Payload) next;
            lock (_controlLock)
            {
                if (!_control.TryDequeue(out next))
                    return true;
            }
            var message = SealedRecord.SealToArray(_seal, next.Type, Peer.RemoteSession, next.Payload);
            if (_connection.Write(message) != LinkSendOutcome.Sent)
                return false;
        }
    }

    // ---------------------------------------------------------------- keep-alives

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
        // An idle sender thread sleeps (up to IdleWaitMs): the clock steps an old key for it, as
        // the send-lock holder; a busy sender steps its own before each batch.
        if (_sendLock.TryEnter())
        {
            try
            {
                _seal.RekeyIfDue();
                _datagramSeal?.RekeyIfDue();
            }
            finally
            {
                _sendLock.Exit();
            }
        }
        // A tick that comes a hair early must not push the keep-alive to the next tick (2 s); an
        // extra tick (another session's deadline) must not send one early.
        var sinceKeepAlive = Stopwatch.GetElapsedTime(_lastKeepAliveTicks);
        if (sinceKeepAlive < KeepAliveInterval - KeepAliveSlack)
            return;
        if (!LeadsKeepAlives && !FollowerNeedsKeepAlive(sinceKeepAlive))
            return;
        _lastKeepAliveTicks = Stopwatch.GetTimestamp();
        Interlocked.Increment(ref _keepAlivesSent);
        Span<byte> payload = stackalloc byte[12];
        BinaryPrimitives.WriteInt64BigEndian(payload, Stopwatch.GetTimestamp());
        BinaryPrimitives.WriteUInt32BigEndian(payload.Slice(8), ++_keepAliveSeq);
        SendProbe(MessageType.KeepAlive, payload);
    }

    /// <summary>
    /// One end of a link sends the keep-alives, the other answers (an idle link used to carry two
    /// pairs a second, and every one was a wake-up on both daemons): each end still hears the other
    /// every second, so the dead timer is unchanged. The end with the lower session id leads; both
    /// ends know both ids. On equal ids both lead, as before.
    /// </summary>
    internal bool LeadsKeepAlives => LocalSession <= Peer.RemoteSession;

    /// <summary>A follower's own RTT is refreshed this often (the leader's answers give only the leader one).</summary>
    internal static readonly TimeSpan FollowerRttRefresh = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The follower sends a keep-alive of its own when it has no RTT yet, when its RTT is
    /// <see cref="FollowerRttRefresh"/> old, or when the leader's keep-alive is overdue (lost, or a
    /// leader of an older build that waits for ours): then the leader hears it within the same second.
    /// </summary>
    private bool FollowerNeedsKeepAlive(TimeSpan sinceKeepAlive) =>
        SmoothedRttMicros < 0
        || sinceKeepAlive >= FollowerRttRefresh - KeepAliveSlack
        || SilentFor > LeaderOverdue;

    /// <summary>How early a keep-alive may go on a tick that came a little early (timers' jitter).</summary>
    private static readonly TimeSpan KeepAliveSlack = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// The leader's keep-alive is overdue when nothing came for this long: the follower's tick after
    /// it (at most a clock period later, 2.25 s after the last message) sends one of its own, which
    /// the leader hears well inside its 3 s.
    /// </summary>
    internal static readonly TimeSpan LeaderOverdue = TimeSpan.FromMilliseconds(1250);

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
        if (!IsClosed)
            _transport.SendProbe(type, payload);
    }

    /// <summary>Longest keep-alive payload that is answered (ours are 12 bytes): an answer never amplifies.</summary>
    internal const int MaxProbePayload = 32;

    /// <summary>
    /// A keep-alive or its answer arrived (opened) on the data channel (from the transport's receiver:
    /// the session's own thread for TCP, UdpTransport's for UDP): the peer is alive; answer, or take the RTT.
    /// </summary>
    internal void ReceiveProbe(MessageType type, ReadOnlySpan<byte> payload)
    {
        NoteDataReceived();
        if (type == MessageType.KeepAlive)
        {
            if (payload.Length <= MaxProbePayload)
                SendProbe(MessageType.KeepAliveAck, payload);
        }
        else
        {
            OnKeepAliveAck(payload);
        }
    }

    internal void NoteDataReceived() => Interlocked.Exchange(ref _lastDataRxTicks, Stopwatch.GetTimestamp());

    private void OnKeepAliveAck(ReadOnlySpan<byte> payload)
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

    // ---------------------------------------------------------------- receiving

    private void ReceiveLoop()
    {
        ForwardingPriority.ApplyToCurrentThread();
        TransmitBatch.Begin();
        InterfacePort.BeginHelping();
        try
        {
            _transport.Receive();
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
        {
            Close($"receive failed: {e.Message}");
        }
#pragma warning disable CA1031 // Whatever a peer's bytes cause ends this session, never the daemon.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _port.Counters.CountRxError();
            Close($"receive fault ({e.GetType().Name}): {Daemon.LogText.Safe(e.Message)}");
        }
        finally
        {
            TransmitBatch.End();
            ThreadDone();
        }
    }

    /// <summary>
    /// Hands a received frame to the switch (from the TCP receiver or the UDP transport), which checks
    /// its offload header and clamps its hop limit before forwarding: both come from the peer.
    /// </summary>
    internal void DeliverFrame(Frame frame, byte hopLimit)
    {
        _port.Counters.CountRx(frame.Length);
        Volatile.Write(ref _receivedFrames, _receivedFrames + 1);
        frame.IngressPort = _port.Id;
        _switch.ForwardFromLink(frame, hopLimit);
    }

    /// <summary>
    /// A message on the connection that is neither data nor keep-alive, which every transport hands
    /// here (receiver thread). False when the session must end.
    /// </summary>
    /// <summary>
    /// A sealed message other than a frame or probe from the connection (the receiving thread):
    /// opened with the stream keys, then handled; false when the session ended (it did not open, or said goodbye).
    /// </summary>
    internal bool ReceiveSealedControl(in LinkHeader header, ReadOnlySpan<byte> headerBytes, ReadOnlySpan<byte> payload)
    {
        var length = SealedRecord.PlaintextLength(payload.Length);
        // Control messages are rare and become messages of their own (PeerChannel keeps them): a copy is fine here.
        var plain = length >= 0 ? new byte[length] : null;
        if (plain is null || !SealedRecord.Open(_open, header, headerBytes, payload, stream: true, plain))
        {
            Counters.CountRxError();
            Close($"protocol error from {Peer.Name}: a {header.Type} message that does not open");
            return false;
        }
        return ReceiveControl(header, plain);
    }

    private bool ReceiveControl(in LinkHeader header, ReadOnlySpan<byte> payload)
    {
        switch (header.Type)
        {
            case MessageType.Control:
                _events.OnSessionControl(_port, this, payload.ToArray());
                return true;
            case MessageType.Bye:
                Close($"peer said goodbye: {Daemon.LogText.Safe(System.Text.Encoding.UTF8.GetString(payload))}");
                return false;
            default:
                Close($"protocol error from {Peer.Name}: unexpected {header.Type} after the handshake");
                return false;
        }
    }

    // ---------------------------------------------------------------- ending

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
        _connection.Shutdown();
        _queue.Close();
    }

    /// <summary>Closes the session; its threads release the socket and queue when they finish.</summary>
    public void Dispose() => Close("disposed");

    private void ThreadDone()
    {
        if (Interlocked.Decrement(ref _threadsLeft) != 0)
            return;
        _connection.Dispose();
        _delay.Clear();
        _queue.Dispose();
        // Both threads are done; a reader may still be inside Flush, and holds the send lock there.
        lock (_sendLock)
        {
            _transport.ReleaseBuffers();
            _connection.ReleaseBuffers();
        }
        // The ciphers are not disposed here: an interface thread may be sealing a batch in Flush, a
        // probe on the link manager's tick, and UdpTransport's thread opening a datagram, each with
        // no lock shared with this end (a disposed key there threw and ended the daemon). Their keys
        // are SafeHandles, freed when the session is unreachable.
        try
        {
            _events.OnSessionDown(_port, this, _closeReason);
        }
        finally
        {
            _completion.TrySetResult();
        }
    }
}
