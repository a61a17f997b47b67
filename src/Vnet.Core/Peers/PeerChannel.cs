using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Vnet.Daemon;
using Vnet.Links;

namespace Vnet.Peers;

/// <summary>Runs a control command by name: the daemon's command dispatcher, as whoever hosts the daemon wires it.</summary>
public interface ICommandHandler
{
    /// <summary>Runs a command; errors come back as a result, never as an exception.</summary>
    Task<CommandResult> HandleAsync(string command, JsonObject? args);
}

/// <summary>What a command returned: data, or the reason it was refused.</summary>
public sealed record CommandResult(bool Ok, JsonNode? Data, string? Error)
{
    public static CommandResult Success(JsonNode? data) => new(true, data, null);

    public static CommandResult Failure(string error) => new(false, null, error);
}

/// <summary>Control messages between daemons, counted (what the directory and VTTIF cost on the wire).</summary>
public readonly record struct PeerTraffic(long MessagesSent, long BytesSent, long MessagesReceived, long BytesReceived);

/// <summary>
/// A message as a service receives it: which link and which session it came on, and when it came
/// (<c>ReceivedAt</c>, Stopwatch ticks: a message handled at the loop's next tick is still timed by its arrival).
/// </summary>
public readonly record struct PeerEnvelope(LinkPort Port, LinkSession Session, PeerMessage Message, long ReceivedAt = 0)
{
    public string Peer => Port.Peer;
}

/// <summary>
/// The daemon's conversation with other daemons over its links: typed messages, who may send what,
/// request and response with the Proxy, and link events turned into events on the control loop.
/// <code>
/// Inbound (a session's receiver thread):
///  1. Parse and check the JSON; a bad message is counted and logged with the peer and the reason.
///  2. Refuse what this peer may not send (hosts take directory messages and requests only from
///     the Proxy over the star; the Proxy takes them only from hosts on the star).
///  3. A response completes its pending request here; a request runs off the loop (it may wait for
///     the loop), at most MaxConcurrentRequests at once (more are answered "busy" at once), and
///     its response goes back on the same session.
///  4. Anything else is posted to the control loop (after an injected delay in tests), where a
///     message whose session has closed meanwhile is dropped: a newer session starts afresh. The
///     periodic ones (a VTTIF report, a digest) wait for the loop's next tick instead of waking it
///     (ControlLoop.PostAtNextTick), in order with the rest: an idle peer's heartbeat then costs
///     the receiver thread only, not a pool worker too. A
///     link may have at most MaxBacklogMessages (and MaxBacklogBytes) posted and not yet handled;
///     a session that would exceed that is cut ("flooding the control plane"), not queued for.
///  5. The handler registered for the type runs, on the loop.
/// Link up and down: posted to the loop the same way and raised as PeerUp / PeerDown there.
/// Every log line a peer can cause is cleaned (LogText) and rate-limited per reason (LogLimiter).
/// </code>
/// </summary>
public sealed partial class PeerChannel : ILinkEvents
{
    /// <summary>How long the Proxy waits for a host to answer a request.</summary>
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Messages of one link posted to the control loop and not yet handled. A healthy peer has a
    /// handful (a digest after a change and every 30 s, deltas as VMs come and go, a traffic report per period): only a
    /// peer that sends faster than the loop handles, for long, gets near this.
    /// </summary>
    public const int MaxBacklogMessages = 1024;

    /// <summary>Their JSON bytes: a message may be up to 2 MiB, so a count alone would allow 2 GiB.</summary>
    public const long MaxBacklogBytes = 16L << 20;

    /// <summary>The Proxy's requests a host runs at once (each may wait for the host's loop).</summary>
    public const int MaxConcurrentRequests = 16;

    // Reasons of rate-limited log lines (LogLimiter keys: constants, never peer text).
    private const string BadMessageLine = "bad control messages";
    private const string RefusedLine = "refused control messages";
    private const string FloodLine = "peers flooding the control plane";
    private const string BusyLine = "requests refused as busy";

    private readonly string _name;
    private readonly bool _isProxy;
    private readonly string _proxyName;
    private readonly LinkManager _links;
    private readonly ControlLoop _loop;
    private readonly ILogger _logger;
    private readonly List<Action<PeerEnvelope>>[] _handlers = [.. Enum.GetValues<PeerMessageType>().Select(_ => new List<Action<PeerEnvelope>>())];
    private readonly ConcurrentDictionary<long, PendingRequest> _pending = new();
    private readonly ConditionalWeakTable<LinkPort, Backlog> _backlogs = new();
    private readonly ConcurrencyLimit _requests = new(MaxConcurrentRequests);
    private readonly LogLimiter _logLimit = new();
    private long _nextRequestId;
    private long _floods;
    private long _badMessages;
    private long _refused;
    private long _staleDropped;
    private long _messagesSent;
    private long _bytesSent;
    private long _messagesReceived;
    private long _bytesReceived;

    private sealed record PendingRequest(string Peer, TaskCompletionSource<JsonNode?> Done);

    /// <summary>
    /// What one link has waiting on the control loop. Per link, not per session: a peer that
    /// reconnects does not start a fresh budget while its earlier messages still wait.
    /// </summary>
    private sealed class Backlog
    {
        public int Messages;
        public long Bytes;

        /// <summary>The session being cut for flooding: what it still delivers is dropped unparsed.</summary>
        public LinkSession? Cut;

        public bool TryAdd(int bytes)
        {
            var messages = Interlocked.Increment(ref Messages);
            var total = Interlocked.Add(ref Bytes, bytes);
            if (messages <= MaxBacklogMessages && total <= MaxBacklogBytes)
                return true;
            Remove(bytes);
            return false;
        }

        public void Remove(int bytes)
        {
            Interlocked.Decrement(ref Messages);
            Interlocked.Add(ref Bytes, -bytes);
        }
    }

    public PeerChannel(string name, bool isProxy, string proxyName, LinkManager links, ControlLoop loop, ILogger logger)
    {
        _name = name;
        _isProxy = isProxy;
        _proxyName = proxyName;
        _links = links;
        _loop = loop;
        _logger = logger;
        // A burst of faults followed by silence still gets its "N more" line.
        _loop.Every(LogLimiter.Window, () => _logLimit.Drain((reason, count) => Log.Suppressed(_logger, count, reason)));
    }

    /// <summary>A link's session came up (on the loop; the session is the port's current one).</summary>
    public event Action<LinkPort, LinkSession>? PeerUp;

    /// <summary>A link's session ended (on the loop).</summary>
    public event Action<LinkPort, LinkSession, string>? PeerDown;

    /// <summary>Runs the Proxy's requests on a host; without one, requests are refused.</summary>
    public ICommandHandler? Commands { get; set; }

    /// <summary>
    /// Fault injection for tests and simulations: how long to hold back an inbound message before
    /// the loop sees it (zero: at once; negative: never, the message is lost). Holding back some
    /// messages reorders them.
    /// </summary>
    public Func<LinkPort, PeerMessage, TimeSpan>? InboundDelay { get; set; }

    /// <summary>Messages that did not parse or failed their checks.</summary>
    public long BadMessages => Interlocked.Read(ref _badMessages);

    /// <summary>Well-formed messages this peer may not send us.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Messages dropped because their session had ended before the loop got to them.</summary>
    public long StaleDropped => Interlocked.Read(ref _staleDropped);

    /// <summary>Sessions cut because their link had too much waiting on the control loop.</summary>
    public long Floods => Interlocked.Read(ref _floods);

    /// <summary>The Proxy's requests answered "busy" because <see cref="MaxConcurrentRequests"/> were running.</summary>
    public long RequestsRefused => _requests.Refused;

    /// <summary>Log lines about peer faults left out by the rate limit, since start.</summary>
    public long LogLinesSuppressed => _logLimit.Suppressed;

    /// <summary>Registers a handler of a message type (before start); handlers run on the control loop, in order.</summary>
    public void On(PeerMessageType type, Action<PeerEnvelope> handler) => _handlers[(int)type].Add(handler);

    // ---------------------------------------------------------------- sending

    /// <summary>Sends on a session; false when it has closed.</summary>
    public bool Send(LinkSession session, PeerMessage message)
    {
        if (session.IsClosed)
            return false;
        var bytes = message.Serialize();
        session.SendControl(MessageType.Control, bytes);
        Interlocked.Add(ref _bytesSent, bytes.Length);
        Interlocked.Increment(ref _messagesSent);
        return true;
    }

    /// <summary>Sends one message on several sessions, serialized once.</summary>
    public void Send(IEnumerable<LinkSession> sessions, PeerMessage message)
    {
        byte[]? bytes = null;
        foreach (var session in sessions)
        {
            if (session.IsClosed)
                continue;
            bytes ??= message.Serialize();
            session.SendControl(MessageType.Control, bytes);
            Interlocked.Add(ref _bytesSent, bytes.Length);
            Interlocked.Increment(ref _messagesSent);
        }
    }

    /// <summary>Control messages and their bytes (JSON payloads) sent and received, since start.</summary>
    public PeerTraffic Traffic => new(Interlocked.Read(ref _messagesSent), Interlocked.Read(ref _bytesSent),
        Interlocked.Read(ref _messagesReceived), Interlocked.Read(ref _bytesReceived));

    /// <summary>Sends on the current session of the link to <paramref name="peer"/>; false when it is down.</summary>
    public bool Send(string peer, PeerMessage message) =>
        _links.Find(peer)?.Session is { } session && Send(session, message);

    // ---------------------------------------------------------------- link events (link threads)

    void ILinkEvents.OnLinkUp(LinkPort port, LinkSession session) => _loop.Post(() =>
    {
        if (!session.IsClosed && port.Session == session)
            PeerUp?.Invoke(port, session);
    });

    void ILinkEvents.OnLinkDown(LinkPort port, LinkSession session, string reason)
    {
        FailPending(port.Peer, reason);
        _loop.Post(() => PeerDown?.Invoke(port, session, reason));
    }

    void ILinkEvents.OnControl(LinkPort port, LinkSession session, byte[] payload)
    {
        Interlocked.Increment(ref _messagesReceived);
        Interlocked.Add(ref _bytesReceived, payload.Length);
        var backlog = _backlogs.GetValue(port, static _ => new Backlog());
        if (ReferenceEquals(Volatile.Read(ref backlog.Cut), session))
            return;
        var message = PeerMessage.TryParse(payload, out var error);
        if (message is null)
        {
            Interlocked.Increment(ref _badMessages);
            port.Counters.CountRxError();
            if (MayLog(BadMessageLine))
                Log.BadMessage(_logger, LogText.Safe(port.Peer), LogText.Safe(error));
            return;
        }
        if (RefusalOf(port, message.Type) is { } why)
        {
            Interlocked.Increment(ref _refused);
            if (MayLog(RefusedLine))
                Log.Refused(_logger, message.Type, LogText.Safe(port.Peer), why);
            return;
        }
        switch (message.Type)
        {
            case PeerMessageType.Response:
                OnResponse(port, message);
                return;
            case PeerMessageType.Request:
                OnRequest(port, session, message);
                return;
        }
        var delay = InboundDelay?.Invoke(port, message) ?? TimeSpan.Zero;
        if (delay < TimeSpan.Zero)
            return;
        var bytes = payload.Length;
        if (!backlog.TryAdd(bytes))
        {
            CutFlooding(port, session, backlog);
            return;
        }
        var received = Stopwatch.GetTimestamp();
        Action handle = () =>
        {
            try
            {
                // A session cut for flooding may take a moment to close: its queue goes now.
                if (ReferenceEquals(Volatile.Read(ref backlog.Cut), session))
                    Interlocked.Increment(ref _staleDropped);
                else
                    Dispatch(new PeerEnvelope(port, session, message, received));
            }
            finally
            {
                backlog.Remove(bytes);
            }
        };
        if (delay == TimeSpan.Zero && WaitsForTick(message.Type))
            _loop.PostAtNextTick(handle);
        else
            _loop.PostAfter(delay, handle);
    }

    /// <summary>
    /// Messages a peer sends on a period that the loop reads on a period too: a VTTIF report (the
    /// next VTTIF tick folds it in, timed by its arrival) and a digest (anti-entropy, on a grid of
    /// seconds). They wait for the loop's next tick, at most a second.
    /// </summary>
    internal static bool WaitsForTick(PeerMessageType type) => type is PeerMessageType.Traffic or PeerMessageType.Digest;

    /// <summary>
    /// The session's link has as much waiting on the loop as it may: the session ends (telling the
    /// peer why) instead of the daemon queueing more. The dialer or the peer may bring a new one;
    /// the messages already posted are dropped as stale when the loop gets to them.
    /// </summary>
    private void CutFlooding(LinkPort port, LinkSession session, Backlog backlog)
    {
        if (ReferenceEquals(Interlocked.Exchange(ref backlog.Cut, session), session))
            return;
        Interlocked.Increment(ref _floods);
        if (MayLog(FloodLine))
            Log.Flooding(_logger, LogText.Safe(port.Peer), Volatile.Read(ref backlog.Messages), Volatile.Read(ref backlog.Bytes));
        session.Leave($"flooding the control plane: more than {MaxBacklogMessages} messages or {MaxBacklogBytes >> 20} MiB waiting to be handled");
    }

    /// <summary>Whether a line about a peer fault may be logged now (after the line about what the limit left out, if any).</summary>
    private bool MayLog(string reason)
    {
        if (!_logLimit.TryAcquire(reason, out var suppressed))
            return false;
        if (suppressed > 0)
            Log.Suppressed(_logger, suppressed, reason);
        return true;
    }

    /// <summary>Who may send what: the star carries the directory and requests, each way once.</summary>
    private string? RefusalOf(LinkPort port, PeerMessageType type)
    {
        var fromProxy = !_isProxy && port.Peer == _proxyName && port.Star;
        var fromStarHost = _isProxy && port.Star;
        return type switch
        {
            PeerMessageType.Vms or PeerMessageType.Traffic or PeerMessageType.Response when !fromStarHost =>
                "only a host on the star sends this, to the Proxy",
            PeerMessageType.Locations or PeerMessageType.Request or PeerMessageType.Keys when !fromProxy =>
                "only the Proxy sends this, over the star",
            PeerMessageType.Digest or PeerMessageType.Sync when !fromProxy && !fromStarHost =>
                "directory messages travel over the star only",
            _ => null,
        };
    }

    private void Dispatch(PeerEnvelope envelope)
    {
        if (envelope.Session.IsClosed)
        {
            // The session ended before the loop got here; its successor starts with a snapshot.
            Interlocked.Increment(ref _staleDropped);
            return;
        }
        var handlers = _handlers[(int)envelope.Message.Type];
        if (handlers.Count == 0 && MayLog(RefusedLine))
            Log.Refused(_logger, envelope.Message.Type, LogText.Safe(envelope.Peer), "no handler for it on this daemon");
        foreach (var handler in handlers)
            handler(envelope);
    }

    // ---------------------------------------------------------------- requests (Proxy -> host)

    /// <summary>
    /// Proxy: runs a command on a host over its star link (hosts take commands only from the Proxy).
    /// Fails with a reason when the host is not connected, refuses, or does not answer in time; in
    /// the last case, and when the link goes down before the answer, the host may have run it all
    /// the same (<see cref="DaemonCommandException.OutcomeUnknown"/>).
    /// </summary>
    public async Task<JsonNode?> CallAsync(string daemon, string command, JsonObject? args, TimeSpan? timeout = null)
    {
        if (!_isProxy)
            throw new DaemonCommandException($"{_name} is a host; only the Proxy reaches other daemons");
        if (_links.Find(daemon) is not { Star: true, Session: { IsClosed: false } session })
            throw new DaemonCommandException($"daemon {daemon} is not connected to the Proxy");
        var id = Interlocked.Increment(ref _nextRequestId);
        var pending = new PendingRequest(daemon, new TaskCompletionSource<JsonNode?>(TaskCreationOptions.RunContinuationsAsynchronously));
        _pending[id] = pending;
        var wait = timeout ?? RequestTimeout;
        try
        {
            Send(session, new PeerMessage
            {
                Type = PeerMessageType.Request,
                Id = id,
                Command = command,
                Args = args?.DeepClone().AsObject(),
            });
            return await pending.Done.Task.WaitAsync(wait).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            throw new DaemonCommandException($"daemon {daemon} did not answer '{command}' within {wait.TotalSeconds:0} s") { OutcomeUnknown = true };
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    private void OnResponse(LinkPort port, PeerMessage message)
    {
        if (!_pending.TryGetValue(message.Id, out var pending) || pending.Peer != port.Peer)
        {
            if (MayLog(RefusedLine))
                Log.Refused(_logger, message.Type, LogText.Safe(port.Peer), "a response to no request of ours");
            return;
        }
        if (message.Ok)
            pending.Done.TrySetResult(message.Data);
        else
            pending.Done.TrySetException(new DaemonCommandException(message.Error ?? $"{port.Peer} refused the command"));
    }

    /// <summary>
    /// Host: a command from the Proxy; runs off the loop, answers on the same session. At most
    /// <see cref="MaxConcurrentRequests"/> run at once: each holds a task and, while it waits for the
    /// loop, a loop item; more are answered at once with an error, which the Proxy reports.
    /// </summary>
    private void OnRequest(LinkPort port, LinkSession session, PeerMessage message)
    {
        if (!_requests.TryEnter())
        {
            if (MayLog(BusyLine))
                Log.Busy(_logger, LogText.Safe(port.Peer), MaxConcurrentRequests);
            Send(session, new PeerMessage
            {
                Type = PeerMessageType.Response,
                Id = message.Id,
                Ok = false,
                Error = $"{_name} is busy: {MaxConcurrentRequests} requests from the Proxy are running; try again",
            });
            return;
        }
        _ = Task.Run(async () =>
        {
            try
            {
                var result = Commands is { } commands
                    ? await commands.HandleAsync(message.Command ?? "", message.Args).ConfigureAwait(false)
                    : CommandResult.Failure($"{_name} takes no commands");
                Send(session, new PeerMessage
                {
                    Type = PeerMessageType.Response,
                    Id = message.Id,
                    Ok = result.Ok,
                    Data = result.Data,
                    Error = result.Error,
                });
            }
            finally
            {
                _requests.Exit();
            }
        });
    }

    /// <summary>Requests to a host that went away fail at once rather than time out.</summary>
    private void FailPending(string peer, string reason)
    {
        foreach (var (_, pending) in _pending)
        {
            if (pending.Peer == peer)
                pending.Done.TrySetException(new DaemonCommandException($"daemon {peer} went away: {LogText.Safe(reason)}") { OutcomeUnknown = true });
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 300, Level = LogLevel.Warning, Message = "Bad control message from {Peer}: {Reason}")]
        public static partial void BadMessage(ILogger logger, string peer, string reason);

        [LoggerMessage(EventId = 301, Level = LogLevel.Warning, Message = "Refused {Type} from {Peer}: {Reason}")]
        public static partial void Refused(ILogger logger, PeerMessageType type, string peer, string reason);

        [LoggerMessage(EventId = 302, Level = LogLevel.Warning,
            Message = "Cutting the session with {Peer}: flooding the control plane ({Messages} messages, {Bytes} bytes waiting for the control loop)")]
        public static partial void Flooding(ILogger logger, string peer, int messages, long bytes);

        [LoggerMessage(EventId = 303, Level = LogLevel.Warning, Message = "Refused a request from {Peer}: {Max} are running already")]
        public static partial void Busy(ILogger logger, string peer, int max);

        [LoggerMessage(EventId = 304, Level = LogLevel.Warning, Message = "{Count} more lines about {Reason} in the last minute were not logged")]
        public static partial void Suppressed(ILogger logger, long count, string reason);
    }
}
