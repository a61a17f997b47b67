using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Peers;

namespace Vnet.Control;

/// <summary>
/// Remote control: the vnet CLI, authenticated with the network key like a daemon, sends control
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

    public async Task ServeAsync(Socket socket, PeerIdentity peer, CancellationToken ct)
    {
        if (!sessions.TryEnter())
        {
            await RefuseAsync(socket, peer, ct).ConfigureAwait(false);
            return;
        }
        try
        {
            await ServeRequestsAsync(socket, peer, ct).ConfigureAwait(false);
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
    private async Task RefuseAsync(Socket socket, PeerIdentity peer, CancellationToken ct)
    {
        if (_logLimit.TryAcquire("busy", out var suppressed))
            Log.Busy(logger, LogText.Safe(peer.Name), sessions.Max, suppressed);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(RefusalTimeout);
        try
        {
            var (header, _) = await HandshakeChannel.ReadAsync(socket, Wire.MaxControlPayload, timeout.Token).ConfigureAwait(false);
            if (header.Type != MessageType.Control)
                return;
            var response = new ControlResponse(false, null, $"busy: {sessions.Max} remote control sessions are open; try again");
            await HandshakeChannel.WriteAsync(socket, MessageType.Control, peer.RemoteSession,
                JsonSerializer.SerializeToUtf8Bytes(response, ControlJson.Default.ControlResponse), timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HandshakeException or SocketException or IOException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    private async Task ServeRequestsAsync(Socket socket, PeerIdentity peer, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            LinkHeader header;
            byte[] payload;
            using (var idle = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                idle.CancelAfter(IdleTimeout);
                try
                {
                    (header, payload) = await HandshakeChannel.ReadAsync(socket, Wire.MaxControlPayload, idle.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is HandshakeException or SocketException or IOException or OperationCanceledException or ObjectDisposedException)
                {
                    return;
                }
            }
            if (header.Type != MessageType.Control)
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
                await HandshakeChannel.WriteAsync(socket, MessageType.Control, peer.RemoteSession,
                    JsonSerializer.SerializeToUtf8Bytes(response, ControlJson.Default.ControlResponse), ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
        }
    }

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
