using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Vnet.Control;
using Vnet.Links;

namespace Vnet.Daemon;

public sealed partial class VnetDaemon
{
    /// <summary>How long the Proxy waits for a host to answer a request.</summary>
    public static readonly TimeSpan RemoteTimeout = TimeSpan.FromSeconds(10);

    private readonly ConcurrentDictionary<long, PendingRequest> _pending = new();
    private long _nextRequestId;

    private sealed record PendingRequest(string Peer, TaskCompletionSource<JsonNode?> Done);

    /// <summary>
    /// Runs a control command on a daemon: here, or (on the Proxy) on a host over its star link,
    /// which takes commands only from the Proxy. Fails with a reason when the host is not connected
    /// or does not answer in time.
    /// </summary>
    public async Task<JsonNode?> CallAsync(string daemon, string command, JsonObject? args, TimeSpan? timeout = null)
    {
        if (daemon == Name)
            return await ControlCommands.Handle(this, new ControlRequest(command, args));
        if (!IsProxy)
            throw new DaemonCommandException($"{Name} is a host; only the Proxy reaches other daemons");
        if (Links.Find(daemon) is not { Star: true, Session: { IsClosed: false } session })
            throw new DaemonCommandException($"daemon {daemon} is not connected to the Proxy");
        var id = Interlocked.Increment(ref _nextRequestId);
        var pending = new PendingRequest(daemon, new TaskCompletionSource<JsonNode?>(TaskCreationOptions.RunContinuationsAsynchronously));
        _pending[id] = pending;
        try
        {
            session.SendControl(MessageType.Control, new PeerMessage
            {
                Type = PeerMessage.Request,
                Id = id,
                Command = command,
                Args = args?.DeepClone().AsObject(),
            }.Serialize());
            return await pending.Done.Task.WaitAsync(timeout ?? RemoteTimeout);
        }
        catch (TimeoutException)
        {
            throw new DaemonCommandException($"daemon {daemon} did not answer '{command}' within {(timeout ?? RemoteTimeout).TotalSeconds:0} s");
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>Proxy: a host's answer to one of our requests (on the receiver thread).</summary>
    private void OnResponse(LinkPort port, PeerMessage message)
    {
        if (!_pending.TryGetValue(message.Id, out var pending) || pending.Peer != port.Peer)
        {
            Log.IgnoredControl(_logger, port.Peer, message.Type, "a response to no request of ours");
            return;
        }
        if (message.Ok)
            pending.Done.TrySetResult(message.Data);
        else
            pending.Done.TrySetException(new DaemonCommandException(message.Error ?? $"{port.Peer} refused the command"));
    }

    /// <summary>Host: a command from the Proxy; runs off the control loop, answers on the link.</summary>
    private void OnRequest(LinkPort port, LinkSession session, PeerMessage message)
    {
        _ = Task.Run(async () =>
        {
            PeerMessage answer;
            try
            {
                var data = await ControlCommands.Handle(this, new ControlRequest(message.Command ?? "", message.Args));
                answer = new PeerMessage { Type = PeerMessage.Response, Id = message.Id, Ok = true, Data = data };
            }
            catch (Exception e) when (e is DaemonCommandException or ArgumentException or FormatException or InvalidOperationException)
            {
                answer = new PeerMessage { Type = PeerMessage.Response, Id = message.Id, Ok = false, Error = e.Message };
            }
            if (!session.IsClosed)
                session.SendControl(MessageType.Control, answer.Serialize());
        });
    }

    /// <summary>Requests to a host that went away fail at once rather than time out.</summary>
    private void FailPending(string peer, string reason)
    {
        foreach (var (id, pending) in _pending)
        {
            if (pending.Peer == peer)
                pending.Done.TrySetException(new DaemonCommandException($"daemon {peer} went away: {reason}"));
        }
    }

    /// <summary>
    /// Proxy: the state of every daemon of the overlay, its own and each connected host's, with the
    /// address the Proxy reaches each host at. Hosts whose star link is down are listed in
    /// <see cref="OverlayStates.Unreachable"/>.
    /// </summary>
    public async Task<OverlayStates> GatherStates()
    {
        if (!IsProxy)
            throw new DaemonCommandException($"{Name} is a host; overlay commands go to the Proxy");
        var own = await Run(State);
        var hosts = Links.Links.Where(l => l.Star).OrderBy(l => l.Peer, StringComparer.Ordinal).ToList();
        var calls = hosts.Where(l => l.IsUp).Select(async l =>
        {
            try
            {
                return (l, State: ControlJson.FromNode<DaemonState>(await CallAsync(l.Peer, "state", null)), Error: (string?)null);
            }
            catch (DaemonCommandException e)
            {
                return (l, State: (DaemonState?)null, Error: e.Message);
            }
        }).ToList();
        var states = new List<DaemonState> { own };
        var unreachable = hosts.Where(l => !l.IsUp).Select(l => $"{l.Peer}: link down ({l.LastDownReason})").ToList();
        foreach (var (link, state, error) in await Task.WhenAll(calls))
        {
            if (state is null)
            {
                unreachable.Add($"{link.Peer}: {error}");
                continue;
            }
            states.Add(WithReachableAddress(state, link));
        }
        return new OverlayStates(states, unreachable);
    }

    /// <summary>A host listening on every address is reached where its star link comes from.</summary>
    private static DaemonState WithReachableAddress(DaemonState state, LinkPort star)
    {
        if (state.Listen is null || !System.Net.IPEndPoint.TryParse(state.Listen, out var listen))
            return state;
        if (!listen.Address.Equals(System.Net.IPAddress.Any) && !listen.Address.Equals(System.Net.IPAddress.IPv6Any))
            return state;
        if (star.Session?.RemoteEndPoint is not { } remote || !System.Net.IPEndPoint.TryParse(remote, out var from))
            return state;
        return state with { Listen = new System.Net.IPEndPoint(from.Address, listen.Port).ToString() };
    }

}

/// <summary>What the Proxy knows of the whole overlay at one moment.</summary>
public sealed record OverlayStates(IReadOnlyList<DaemonState> Daemons, IReadOnlyList<string> Unreachable);
