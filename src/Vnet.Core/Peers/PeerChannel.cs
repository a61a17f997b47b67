using System.Collections.Concurrent;
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

/// <summary>A message as a service receives it: which link and which session it came on.</summary>
public readonly record struct PeerEnvelope(LinkPort Port, LinkSession Session, PeerMessage Message)
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
///     the loop) and its response goes back on the same session.
///  4. Anything else is posted to the control loop (after an injected delay in tests), where a
///     message whose session has closed meanwhile is dropped: a newer session starts afresh.
///  5. The handler registered for the type runs, on the loop.
/// Link up and down: posted to the loop the same way and raised as PeerUp / PeerDown there.
/// </code>
/// </summary>
public sealed partial class PeerChannel : ILinkEvents
{
    /// <summary>How long the Proxy waits for a host to answer a request.</summary>
    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);

    private readonly string _name;
    private readonly bool _isProxy;
    private readonly string _proxyName;
    private readonly LinkManager _links;
    private readonly ControlLoop _loop;
    private readonly ILogger _logger;
    private readonly List<Action<PeerEnvelope>>[] _handlers = [.. Enum.GetValues<PeerMessageType>().Select(_ => new List<Action<PeerEnvelope>>())];
    private readonly ConcurrentDictionary<long, PendingRequest> _pending = new();
    private long _nextRequestId;
    private long _badMessages;
    private long _refused;
    private long _staleDropped;
    private long _messagesSent;
    private long _bytesSent;
    private long _messagesReceived;
    private long _bytesReceived;

    private sealed record PendingRequest(string Peer, TaskCompletionSource<JsonNode?> Done);

    public PeerChannel(string name, bool isProxy, string proxyName, LinkManager links, ControlLoop loop, ILogger logger)
    {
        _name = name;
        _isProxy = isProxy;
        _proxyName = proxyName;
        _links = links;
        _loop = loop;
        _logger = logger;
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
        var message = PeerMessage.TryParse(payload, out var error);
        if (message is null)
        {
            Interlocked.Increment(ref _badMessages);
            port.Counters.CountRxError();
            Log.BadMessage(_logger, port.Peer, LogText.Safe(error!));
            return;
        }
        if (RefusalOf(port, message.Type) is { } why)
        {
            Interlocked.Increment(ref _refused);
            Log.Refused(_logger, message.Type, port.Peer, why);
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
        _loop.PostAfter(delay, () => Dispatch(new PeerEnvelope(port, session, message)));
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
        if (handlers.Count == 0)
            Log.Refused(_logger, envelope.Message.Type, envelope.Peer, "no handler for it on this daemon");
        foreach (var handler in handlers)
            handler(envelope);
    }

    // ---------------------------------------------------------------- requests (Proxy -> host)

    /// <summary>
    /// Proxy: runs a command on a host over its star link (hosts take commands only from the Proxy).
    /// Fails with a reason when the host is not connected, refuses, or does not answer in time.
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
            throw new DaemonCommandException($"daemon {daemon} did not answer '{command}' within {wait.TotalSeconds:0} s");
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
            Log.Refused(_logger, message.Type, port.Peer, "a response to no request of ours");
            return;
        }
        if (message.Ok)
            pending.Done.TrySetResult(message.Data);
        else
            pending.Done.TrySetException(new DaemonCommandException(message.Error ?? $"{port.Peer} refused the command"));
    }

    /// <summary>Host: a command from the Proxy; runs off the loop, answers on the same session.</summary>
    private void OnRequest(LinkPort port, LinkSession session, PeerMessage message) => _ = Task.Run(async () =>
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
    });

    /// <summary>Requests to a host that went away fail at once rather than time out.</summary>
    private void FailPending(string peer, string reason)
    {
        foreach (var (_, pending) in _pending)
        {
            if (pending.Peer == peer)
                pending.Done.TrySetException(new DaemonCommandException($"daemon {peer} went away: {reason}"));
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 300, Level = LogLevel.Warning, Message = "Bad control message from {Peer}: {Reason}")]
        public static partial void BadMessage(ILogger logger, string peer, string reason);

        [LoggerMessage(EventId = 301, Level = LogLevel.Warning, Message = "Refused {Type} from {Peer}: {Reason}")]
        public static partial void Refused(ILogger logger, PeerMessageType type, string peer, string reason);
    }
}
