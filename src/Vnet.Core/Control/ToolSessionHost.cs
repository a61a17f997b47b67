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
/// gets one error response ("busy") and is closed.
/// </summary>
public sealed partial class ToolSessionHost(ICommandHandler commands, ConcurrencyLimit sessions, ILogger logger) : IToolSessionHost
{
    private static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(60);

    /// <summary>How long a refused session may take to send the request it is refused on.</summary>
    private static readonly TimeSpan RefusalTimeout = TimeSpan.FromSeconds(5);

    private readonly LogLimiter _logLimit = new();

    public async Task ServeAsync(Socket socket, PeerIdentity peer, uint localSession, CancellationToken ct)
    {
        using var channel = new SecureChannel(socket, peer, localSession);
        if (!sessions.TryEnter())
        {
            await RefuseAsync(channel, peer, ct).ConfigureAwait(false);
            return;
        }
        try
        {
            await ServeRequestsAsync(channel, ct).ConfigureAwait(false);
        }
        finally
        {
            sessions.Exit();
        }
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

    private async Task ServeRequestsAsync(SecureChannel channel, CancellationToken ct)
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
            if (type != MessageType.Control)
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
        daemon.Links.ToolSessions = new ToolSessionHost(dispatcher, daemon.ToolSessions, daemon.Loggers.CreateLogger("vnet.control"));
        return dispatcher;
    }
}
