namespace Vnet.Links;

/// <summary>
/// Keeps the large pinned buffers of ended link sessions for the next ones. A session's scratch
/// area (512 KiB) and datagram buffer used to be allocated per session: after each reconnection
/// the dead ones stayed in the pinned object heap until a full collection, which a daemon that
/// allocates little seldom makes, and the heap grew by megabytes per reconnection (the soak's
/// growing RSS). Taken here, a buffer is reused instead; at most <c>keep</c> are kept, so a burst
/// of sessions leaves no more than that behind.
/// </summary>
internal sealed class BufferShelf(int size, int keep)
{
    private readonly Stack<byte[]> _free = new();
    private readonly Lock _lock = new();

    /// <summary>The scratch areas of TCP links and the carry buffers of their connections.</summary>
    public static BufferShelf Scratch { get; } = new(LinkConnection.MaxInlineWrite, 64);

    /// <summary>The datagram buffers of UDP links.</summary>
    public static BufferShelf Datagram { get; } = new(UdpLinkTransport.DatagramBufferSize, 64);

    public int Size => size;

    /// <summary>Buffers on the shelf now.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
                return _free.Count;
        }
    }

    /// <summary>A buffer of <see cref="Size"/> bytes (contents undefined), from the shelf if there is one.</summary>
    public byte[] Take()
    {
        lock (_lock)
        {
            if (_free.TryPop(out var buffer))
                return buffer;
        }
        return GC.AllocateUninitializedArray<byte>(size, pinned: true);
    }

    /// <summary>Puts a buffer back once nothing uses it any more (null: nothing to give back).</summary>
    public void Return(byte[]? buffer)
    {
        if (buffer is null || buffer.Length != size)
            return;
        lock (_lock)
        {
            if (_free.Count < keep)
                _free.Push(buffer);
        }
    }
}
