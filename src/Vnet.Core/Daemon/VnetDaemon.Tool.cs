using System.Net.Sockets;
using System.Text.Json;
using Vnet.Control;
using Vnet.Links;

namespace Vnet.Daemon;

public sealed partial class VnetDaemon
{
    private static readonly TimeSpan ToolIdleTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Remote control: the vnet CLI, authenticated with the network key like a daemon, sends control
    /// requests as CONTROL messages and gets one response each, the same protocol as the local socket.
    /// </summary>
    async Task IToolSessionHost.ServeAsync(Socket socket, PeerIdentity peer, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            LinkHeader header;
            byte[] payload;
            using (var idle = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                idle.CancelAfter(ToolIdleTimeout);
                try
                {
                    (header, payload) = await HandshakeChannel.ReadAsync(socket, Wire.MaxControlPayload, idle.Token);
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
                var request = JsonSerializer.Deserialize(payload, ControlJson.Default.ControlRequest)
                    ?? throw new DaemonCommandException("empty request");
                response = new ControlResponse(true, await ControlCommands.Handle(this, request), null);
            }
            catch (JsonException e)
            {
                response = new ControlResponse(false, null, $"malformed request: {e.Message}");
            }
            catch (Exception e) when (e is DaemonCommandException or ArgumentException or FormatException or InvalidOperationException)
            {
                response = new ControlResponse(false, null, e.Message);
            }
            try
            {
                await HandshakeChannel.WriteAsync(socket, MessageType.Control, peer.RemoteSession,
                    JsonSerializer.SerializeToUtf8Bytes(response, ControlJson.Default.ControlResponse), ct);
            }
            catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
        }
    }
}
