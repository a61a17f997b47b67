using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Peers;

namespace Vnet.Control;

/// <summary>
/// Remote control: the vnet CLI, authenticated with an administrator's key (Noise, like a daemon's link), sends control
/// requests as CONTROL messages over TCP and gets one response each, the same protocol as the
/// local socket, through the same dispatcher. At most <see cref="ConcurrencyLimit.Max"/> sessions
/// are served at once (each holds a socket, a task and up to one command): a session beyond that
/// gets one error response ("busy") and is closed. A session whose administrator's key is taken
/// out of <c>admin_keys</c> (a reload) ends at once, as sshd ends nothing but tinc and WireGuard
/// drop a removed peer: a revoked key must not keep a shell open.
/// </summary>
/// <param name="isAdministrator">Whether a key is an administrator's now (the daemon's key ring).</param>
public sealed partial class ToolSessionHost(ICommandHandler commands, ConcurrencyLimit sessions, Func<PublicKeyId, bool> isAdministrator, ILogger logger)
    : IToolSessionHost
{
    private static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(60);

    /// <summary>How long a refused session may take to send the request it is refused on.</summary>
    private static readonly TimeSpan RefusalTimeout = TimeSpan.FromSeconds(5);

    private readonly LogLimiter _logLimit = new();

    // The sessions being served, with what ends each: at most MaxToolSessions entries.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<CancellationTokenSource, PublicKeyId> _open = new();

    public async Task ServeAsync(Socket socket, PeerIdentity peer, uint localSession, CancellationToken ct)
    {
        using var channel = new SecureChannel(socket, peer, localSession);
        if (!sessions.TryEnter())
        {
            await RefuseAsync(channel, peer, ct).ConfigureAwait(false);
            return;
        }
        using var end = CancellationTokenSource.CreateLinkedTokenSource(ct);
        _open[end] = peer.PublicKey;
        try
        {
            // The key may have gone between the handshake and now.
            if (isAdministrator(peer.PublicKey))
                await ServeRequestsAsync(channel, peer.PublicKey, end.Token).ConfigureAwait(false);
        }
        finally
        {
            _open.TryRemove(end, out _);
            sessions.Exit();
        }
    }

    /// <summary>Ends the sessions of keys that are no longer administrators' (after a reload); returns how many.</summary>
    public int EndRevoked()
    {
        var ended = 0;
        foreach (var (end, key) in _open)
        {
            if (isAdministrator(key))
                continue;
            try
            {
                end.Cancel();
                ended++;
            }
            catch (ObjectDisposedException)
            {
                // The session ended meanwhile.
            }
        }
        if (ended > 0)
            Log.Revoked(logger, ended);
        return ended;
    }

    /// <summary>
    /// Reads the session's first request and answers it with the refusal: a CLI reads its answer
    /// after sending, and closing on a request not yet read would reset the connection under it.
    /// </summary>
    private async Task RefuseAsync(SecureChannel channel, PeerIdentity peer, CancellationToken ct)
    {
        if (_logLimit.TryAcquire("busy", out var suppressed))
            Log.Busy(logger, LogText.Safe(peer.Name), sessions.Max, suppressed);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(RefusalTimeout);
        try
        {
            var (type, _) = await channel.ReadAsync(Wire.MaxControlPayload - SealedRecordOverhead, timeout.Token).ConfigureAwait(false);
            if (type != MessageType.Control)
                return;
            var response = new ControlResponse(false, null, $"busy: {sessions.Max} remote control sessions are open; try again");
            await channel.WriteAsync(MessageType.Control, JsonSerializer.SerializeToUtf8Bytes(response, ControlJson.Default.ControlResponse), timeout.Token)
                .ConfigureAwait(false);
        }
        catch (Exception e) when (e is HandshakeException or SocketException or IOException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    private async Task ServeRequestsAsync(SecureChannel channel, PublicKeyId key, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            MessageType type;
            byte[] payload;
            using (var idle = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                idle.CancelAfter(IdleTimeout);
                try
                {
                    (type, payload) = await channel.ReadAsync(Wire.MaxControlPayload - SealedRecordOverhead, idle.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is HandshakeException or SocketException or IOException or OperationCanceledException or ObjectDisposedException)
                {
                    return;
                }
            }
            // A request that raced a revocation is not run.
            if (type != MessageType.Control || !isAdministrator(key))
                return;
            ControlResponse response;
            try
            {
                var request = JsonSerializer.Deserialize(payload, ControlJson.Default.ControlRequest);
                response = request is null || string.IsNullOrEmpty(request.Command)
                    ? new ControlResponse(false, null, "empty or malformed request")
                    : ControlResponse.From(await commands.HandleAsync(request.Command, request.Args).ConfigureAwait(false));
            }
            catch (JsonException e)
            {
                response = new ControlResponse(false, null, $"malformed request: {e.Message}");
            }
            try
            {
                await channel.WriteAsync(MessageType.Control, JsonSerializer.SerializeToUtf8Bytes(response, ControlJson.Default.ControlResponse), ct)
                    .ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
        }
    }

    /// <summary>What sealing adds to a payload (counter and tag).</summary>
    private const int SealedRecordOverhead = Wire.CounterSize + Wire.TagSize;

    private static partial class Log
    {
        [LoggerMessage(EventId = 201, Level = LogLevel.Warning,
            Message = "Refused remote control from {Tool}: {Max} sessions are open ({Suppressed} more refusals not logged before this one)")]
        public static partial void Busy(ILogger logger, string tool, int max, long suppressed);

        [LoggerMessage(EventId = 202, Level = LogLevel.Warning, Message = "Ended {Count} remote control session(s) whose administrator key was removed")]
        public static partial void Revoked(ILogger logger, int count);
    }
}

/// <summary>Attaches the command side to a daemon: whoever hosts a daemon (the CLI, a test) calls this once, before starting it.</summary>
public static class DaemonControl
{
    /// <summary>Makes the dispatcher the handler of the Proxy's requests and of CLI sessions over TCP, and returns it.</summary>
    public static CommandDispatcher Attach(VnetDaemon daemon)
    {
        var dispatcher = new CommandDispatcher(daemon);
        daemon.Peers.Commands = dispatcher;
        daemon.Commands = dispatcher;
        var tools = new ToolSessionHost(dispatcher, daemon.ToolSessions, daemon.Keys.IsAdministrator, daemon.Loggers.CreateLogger("vnet.control"));
        daemon.Keys.AdministratorsChanged += () => tools.EndRevoked();
        daemon.Links.ToolSessions = tools;
        return dispatcher;
    }
}
