using Vnet.Frames;

namespace Vnet.Links;

/// <summary>What became of a batch handed to a transport.</summary>
internal enum LinkSendOutcome
{
    /// <summary>Sent, or dropped and counted: either way the frames are done with.</summary>
    Sent,

    /// <summary>An inline send found the socket full before writing anything: the frames go back to the queue.</summary>
    WouldBlock,

    /// <summary>An inline send took only the first frames (see <c>taken</c>): the others go back to the queue.</summary>
    Partly,

    /// <summary>The session ended (it is closed with the reason).</summary>
    Failed,
}

/// <summary>
/// What differs between a TCP and a UDP link: how its frames and keep-alives travel (its data
/// channel), and what the session's TCP connection may carry besides control messages.
/// <see cref="LinkSession"/> owns everything else (lifecycle, queues, control messages, keep-alive
/// timing, RTT) and calls a transport once per batch or per session, never per frame.
/// <list type="bullet">
/// <item><see cref="TcpLinkTransport"/>: frames and keep-alives in-band on the connection.</item>
/// <item><see cref="UdpLinkTransport"/>: frames and keep-alives in datagrams on the daemon's
/// shared <see cref="UdpTransport"/> socket; the connection carries control messages only.</item>
/// </list>
/// An AEAD layer (a later protocol revision) belongs in the implementations, where a frame becomes
/// bytes on the wire and back: each transport seals and opens its own data messages with the
/// session key, and the session and its queues never see ciphertext.
/// </summary>
internal interface ILinkTransport
{
    /// <summary>
    /// Sends <paramref name="batch"/>[0..<paramref name="count"/>) on the data channel; the caller
    /// holds the session's send lock. The first <paramref name="taken"/> frames are done with (sent,
    /// or dropped and counted) and the caller releases them; the others go back to the queue. With
    /// <paramref name="inline"/> (a reader thread flushing) a transport must not wait for a full
    /// socket: it answers WouldBlock (nothing taken) or Partly instead. Without it, every frame is
    /// taken.
    /// </summary>
    LinkSendOutcome SendBatch(Frame?[] batch, int count, bool inline, out int taken);

    /// <summary>Sends a keep-alive or its answer on the data channel now (emulated delay already waited out).</summary>
    void SendProbe(MessageType type, ReadOnlySpan<byte> payload);

    /// <summary>
    /// The session's receiver thread: reads the TCP connection until the session ends (closing it
    /// with the reason), handing control messages to <see cref="LinkSession.ReceiveSealedControl"/>.
    /// </summary>
    void Receive();

    /// <summary>Gives the send buffers back to their shelf: the session ended and the caller holds its send lock.</summary>
    void ReleaseBuffers();
}
