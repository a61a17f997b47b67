using System.Net.Sockets;

namespace Vnet.Links;

/// <summary>
/// Framed messages over a TCP socket for the handshake and tool sessions (allocation is fine here).
/// Every call works on a non-blocking socket with plain syscalls and waits in
/// <see cref="HandshakePoller"/>, never with the socket's own async methods: those would register
/// the descriptor with .NET's socket engine for good, and a link's every segment would then wake it.
/// </summary>
public static class HandshakeChannel
{
    public const int MaxHandshakePayload = 1024;

    /// <summary>Connects without the runtime's socket engine (see the type's remarks); throws a SocketException as Connect would.</summary>
    public static async Task ConnectAsync(Socket socket, System.Net.EndPoint address, CancellationToken ct)
    {
        socket.Blocking = false;
        try
        {
            socket.Connect(address);
            return;
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
        {
        }
        await HandshakePoller.Shared.WaitAsync(socket, write: true, ct).ConfigureAwait(false);
        var error = (SocketError)(int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
        if (error != SocketError.Success)
            throw new SocketException((int)error);
    }

    public static async Task<(LinkHeader Header, byte[] Payload)> ReadAsync(Socket socket, CancellationToken ct) =>
        await ReadAsync(socket, MaxHandshakePayload, ct);

    public static async Task<(LinkHeader Header, byte[] Payload)> ReadAsync(Socket socket, int maxPayload, CancellationToken ct)
    {
        var head = new byte[Wire.HeaderSize];
        await ReadExactlyAsync(socket, head, ct);
        var error = Wire.TryRead(head, out var header);
        if (error != WireError.None)
            throw new HandshakeException(Wire.Describe(error));
        if (header.PayloadLength > maxPayload)
            throw new HandshakeException(maxPayload == MaxHandshakePayload
                ? $"{header.Type} of {header.PayloadLength} bytes is too large for a handshake"
                : $"{header.Type} of {header.PayloadLength} bytes is too large (at most {maxPayload})");
        var payload = new byte[header.PayloadLength];
        await ReadExactlyAsync(socket, payload, ct);
        return (header, payload);
    }

    public static async Task WriteAsync(Socket socket, MessageType type, uint session, byte[] payload, CancellationToken ct)
    {
        var message = new byte[Wire.HeaderSize + payload.Length];
        Wire.Write(message, new LinkHeader(type, MessageFlags.None, 0, session, payload.Length));
        payload.CopyTo(message, Wire.HeaderSize);
        await SendAllAsync(socket, message, ct);
    }

    /// <summary>Sends every byte, waiting in the poller while the socket's buffer is full.</summary>
    public static async Task SendAllAsync(Socket socket, byte[] message, CancellationToken ct)
    {
        if (socket.Blocking)
            socket.Blocking = false;
        var sent = 0;
        while (sent < message.Length)
        {
            var n = socket.Send(message, sent, message.Length - sent, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock)
            {
                await HandshakePoller.Shared.WaitAsync(socket, write: true, ct).ConfigureAwait(false);
                continue;
            }
            if (error != SocketError.Success)
                throw new SocketException((int)error);
            sent += n;
        }
    }

    private static async Task ReadExactlyAsync(Socket socket, byte[] buffer, CancellationToken ct)
    {
        if (socket.Blocking)
            socket.Blocking = false;
        var got = 0;
        while (got < buffer.Length)
        {
            var n = socket.Receive(buffer, got, buffer.Length - got, SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock)
            {
                await HandshakePoller.Shared.WaitAsync(socket, write: false, ct).ConfigureAwait(false);
                continue;
            }
            if (error != SocketError.Success)
                throw new SocketException((int)error);
            if (n == 0)
                throw new HandshakeException("the peer closed the connection during the handshake") { PeerClosed = true };
            got += n;
        }
    }
}

/// <summary>A handshake failed for a reason worth logging (never thrown on the data path).</summary>
public sealed class HandshakeException : Exception
{
    public HandshakeException()
    {
    }

    public HandshakeException(string message)
        : base(message)
    {
    }

    /// <summary>
    /// The peer closed without a word: what a daemon does with an INIT that was not made for its
    /// key (a bad mac1 gets no answer), so a tool can say which setting to check.
    /// </summary>
    public bool PeerClosed { get; init; }

    public HandshakeException(string message, Exception inner)
        : base(message, inner)
    {
    }

    /// <summary>
    /// The REJECT a responder sends for an INIT whose timestamp is not newer than the last it took
    /// from that key. For a live daemon that means its clock is behind (it jumped back), which the
    /// operator can heal; the wording is part of the wire (the initiator recognises it).
    /// </summary>
    public const string StaleTimestampReason = "handshake timestamp older than the last one from this key: is this host's clock behind?";

    /// <summary>The peer refused the INIT because its timestamp was stale (see <see cref="StaleTimestampReason"/>).</summary>
    public bool StaleTimestamp { get; private init; }

    /// <summary>A REJECT's reason as the initiator reports it (peer text, cleaned for logs).</summary>
    internal static HandshakeException Refused(string by, ReadOnlySpan<byte> reason)
    {
        var text = System.Text.Encoding.UTF8.GetString(reason);
        return new HandshakeException($"{by}: {Daemon.LogText.Safe(text)}") { StaleTimestamp = text == StaleTimestampReason };
    }
}
