using System.Net.Sockets;

namespace Vnet.Links.Security;

/// <summary>
/// Sealed messages over a socket after a handshake, for sessions that are not links: the vnet CLI
/// talking to a daemon over TCP (both ends). Same layout as a link's (SealedRecord); asynchronous,
/// and allocation is fine here.
/// </summary>
public sealed class SecureChannel : IDisposable
{
    private readonly Socket _socket;
    private readonly uint _remoteSession;
    private readonly uint _localSession;
    private readonly SendCipher _seal;
    private readonly ReceiveCipher _open;

    public SecureChannel(Socket socket, PeerIdentity peer, uint localSession)
    {
        _socket = socket;
        _remoteSession = peer.RemoteSession;
        _localSession = localSession;
        var stream = peer.Keys.For(SessionChannel.Stream);
        _seal = new SendCipher(stream.Send);
        _open = new ReceiveCipher(stream.Receive);
    }

    public Task WriteAsync(MessageType type, ReadOnlySpan<byte> payload, CancellationToken ct)
    {
        _seal.RekeyIfDue();
        var message = SealedRecord.SealToArray(_seal, type, _remoteSession, payload);
        return HandshakeChannel.SendAllAsync(_socket, message, ct);
    }

    /// <summary>The next message, opened; throws <see cref="HandshakeException"/> for anything that is not a sealed message of this session.</summary>
    public async Task<(MessageType Type, byte[] Payload)> ReadAsync(int maxPayload, CancellationToken ct)
    {
        var (header, sealedPayload) = await HandshakeChannel.ReadAsync(_socket, maxPayload + SealedRecord.Overhead, ct).ConfigureAwait(false);
        if (header.Session != _localSession)
            throw new HandshakeException($"a message for session {header.Session:x8}, not {_localSession:x8}");
        var length = SealedRecord.PlaintextLength(sealedPayload.Length);
        var headerBytes = new byte[Wire.HeaderSize];
        Wire.Write(headerBytes, header);
        var plain = length >= 0 ? new byte[length] : null;
        if (plain is null || !SealedRecord.Open(_open, header, headerBytes, sealedPayload, stream: true, plain))
            throw new HandshakeException("a message that does not open");
        return (header.Type, plain);
    }

    public void Dispose()
    {
        _seal.Dispose();
        _open.Dispose();
    }
}
