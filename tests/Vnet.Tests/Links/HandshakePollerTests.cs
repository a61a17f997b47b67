using System.Net;
using System.Net.Sockets;
using Vnet.Links;

namespace Vnet.Tests.Links;

/// <summary>
/// The handshake's poller on real loopback sockets: a wait ends when the socket is readable or
/// writable, when the peer goes, when the socket is shut down under it, or when it is cancelled
/// (and the poller goes on serving the others).
/// </summary>
public sealed class HandshakePollerTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(5);
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

    public HandshakePollerTests()
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(4);
    }

    public void Dispose() => _listener.Dispose();

    private (Socket Client, Socket Server) Connected()
    {
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        HandshakeChannel.ConnectAsync(client, _listener.LocalEndPoint!, CancellationToken.None).Wait(Bound);
        var server = _listener.Accept();
        return (client, server);
    }

    [Fact]
    public async Task Wait_ReadableOnlyOnceDataArrives()
    {
        var (client, server) = Connected();
        using var _ = client;
        using var __ = server;
        var wait = HandshakePoller.Shared.WaitAsync(server, write: false, CancellationToken.None);
        await Task.Delay(100);
        Assert.False(wait.IsCompleted);
        client.Send(new byte[] { 1, 2, 3 });
        await wait.WaitAsync(Bound);
        Assert.True(wait.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Wait_WritableAtOnceOnAConnectedSocket()
    {
        var (client, server) = Connected();
        using var _ = client;
        using var __ = server;
        await HandshakePoller.Shared.WaitAsync(client, write: true, CancellationToken.None).WaitAsync(Bound);
    }

    [Fact]
    public async Task Wait_EndsWhenThePeerCloses_AndTheReadThenSaysSo()
    {
        var (client, server) = Connected();
        using var _ = server;
        var read = HandshakeChannel.ReadAsync(server, CancellationToken.None);
        client.Dispose();
        var e = await Assert.ThrowsAsync<HandshakeException>(() => read.WaitAsync(Bound));
        Assert.Contains("closed the connection", e.Message);
    }

    [Fact]
    public async Task Wait_EndsWhenTheSocketIsShutDownUnderIt()
    {
        var (client, server) = Connected();
        using var _ = client;
        using var __ = server;
        var read = HandshakeChannel.ReadAsync(server, CancellationToken.None);
        await Task.Delay(50);
        server.Shutdown(SocketShutdown.Both);
        await Assert.ThrowsAnyAsync<Exception>(() => read.WaitAsync(Bound));
    }

    [Fact]
    public async Task Wait_Cancelled_FailsAndLeavesTheList()
    {
        var (client, server) = Connected();
        using var _ = client;
        using var __ = server;
        using var cts = new CancellationTokenSource();
        var wait = HandshakePoller.Shared.WaitAsync(server, write: false, cts.Token);
        await Task.Delay(50);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait.WaitAsync(Bound));
        // The poller's thread still serves the others after a cancellation.
        var next = HandshakePoller.Shared.WaitAsync(server, write: false, CancellationToken.None);
        client.Send(new byte[] { 9 });
        await next.WaitAsync(Bound);
    }

    [Fact]
    public async Task ReadAsync_MessageInPieces_Reassembled()
    {
        var (client, server) = Connected();
        using var _ = client;
        using var __ = server;
        var payload = new byte[300];
        Random.Shared.NextBytes(payload);
        var message = new byte[Wire.HeaderSize + payload.Length];
        Wire.Write(message, new LinkHeader(MessageType.HandshakeInit, MessageFlags.None, 0, 7, payload.Length));
        payload.CopyTo(message, Wire.HeaderSize);
        var read = HandshakeChannel.ReadAsync(server, CancellationToken.None);
        for (var at = 0; at < message.Length; at += 50)
        {
            client.Send(message, at, Math.Min(50, message.Length - at), SocketFlags.None);
            await Task.Delay(10);
        }
        var (header, got) = await read.WaitAsync(Bound);
        Assert.Equal(MessageType.HandshakeInit, header.Type);
        Assert.Equal(7u, header.Session);
        Assert.Equal(payload, got);
    }

    [Fact]
    public async Task ConnectAsync_NobodyListening_Refused()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)probe.LocalEndPoint!).Port;
        probe.Dispose();
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var e = await Assert.ThrowsAsync<SocketException>(() =>
            HandshakeChannel.ConnectAsync(socket, new IPEndPoint(IPAddress.Loopback, port), CancellationToken.None).WaitAsync(Bound));
        Assert.Equal(SocketError.ConnectionRefused, e.SocketErrorCode);
    }

    [Fact]
    public async Task SendAllAsync_MoreThanTheSocketBuffers_WaitsAndDeliversEverything()
    {
        var (client, server) = Connected();
        using var _ = client;
        using var __ = server;
        client.SendBufferSize = 16 * 1024;
        server.ReceiveBufferSize = 16 * 1024;
        var data = new byte[4 * 1024 * 1024];
        Random.Shared.NextBytes(data);
        var send = HandshakeChannel.SendAllAsync(client, data, CancellationToken.None);
        await Task.Delay(100);
        Assert.False(send.IsCompleted);
        var got = new byte[data.Length];
        var at = 0;
        var deadline = DateTime.UtcNow + Bound;
        server.ReceiveTimeout = 5000;
        while (at < got.Length && DateTime.UtcNow < deadline)
            at += server.Receive(got, at, got.Length - at, SocketFlags.None);
        await send.WaitAsync(Bound);
        Assert.Equal(data, got);
    }
}
