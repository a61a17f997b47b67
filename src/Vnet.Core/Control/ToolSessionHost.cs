using System.Net.Sockets;
using System.Text.Json;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Peers;

namespace Vnet.Control;

/// <summary>
/// Remote control: the vnet CLI, authenticated with the network key like a daemon, sends control
/// requests as CONTROL messages over TCP and gets one response each, the same protocol as the
/// local socket, through the same dispatcher.
/// </summary>
public sealed class ToolSessionHost(ICommandHandler commands) : IToolSessionHost
{
    private static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(60);

    public async Task ServeAsync(Socket socket, PeerIdentity peer, uint localSession, CancellationToken ct)
    {
        using var channel = new SecureChannel(socket, peer, localSession);
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
}

/// <summary>Attaches the command side to a daemon: whoever hosts a daemon (the CLI, a test) calls this once, before starting it.</summary>
public static class DaemonControl
{
    /// <summary>Makes the dispatcher the handler of the Proxy's requests and of CLI sessions over TCP, and returns it.</summary>
    public static CommandDispatcher Attach(VnetDaemon daemon)
    {
        var dispatcher = new CommandDispatcher(daemon);
        daemon.Peers.Commands = dispatcher;
        daemon.Links.ToolSessions = new ToolSessionHost(dispatcher);
        return dispatcher;
    }
}
