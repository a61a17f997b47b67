using System.Diagnostics;

namespace Vnet.Frames;

/// <summary>
/// One Ethernet frame (or a TSO/GSO super-frame of up to 64 KiB) in a pooled, pinned buffer.
/// <para>
/// Layout: <c>[headroom][frame bytes][tailroom]</c>. The headroom lets a reader place a virtio-net
/// header or a link header right before the frame so that one read or one send covers both.
/// A frame is reference counted because a flood sends the same bytes to several ports; each port
/// releases its reference when it is done, and the last release returns the buffer to its pool.
/// </para>
/// </summary>
public sealed class Frame
{
    /// <summary>Bytes before <see cref="Offset"/> that stay free for headers.</summary>
    public const int Headroom = 64;

    /// <summary>Largest frame: a 64 KiB IP super-frame plus Ethernet and VLAN headers, with slack.</summary>
    public const int MaxLength = 65536 + 1024;

    public const int Capacity = Headroom + MaxLength;

    private readonly FramePool? _pool;
    private int _refs;

    internal Frame(FramePool? pool)
    {
        _pool = pool;
        Buffer = GC.AllocateUninitializedArray<byte>(Capacity, pinned: true);
        Reset();
    }

    /// <summary>Creates a frame outside any pool (tests, tools).</summary>
    public static Frame CreateUnpooled() => new(null) { _refs = 1 };

    /// <summary>Pinned (on the pinned object heap), so native I/O can use it without a handle.</summary>
    public byte[] Buffer { get; }

    /// <summary>Start of the Ethernet header inside <see cref="Buffer"/>.</summary>
    public int Offset { get; private set; }

    public int Length { get; set; }

    /// <summary>Offload metadata (checksum to complete, GSO segmentation) carried with the frame.</summary>
    public VirtioNetHeader Offload;

    /// <summary>Port id the frame came in on: the switch never sends it back there.</summary>
    public int IngressPort;

    /// <summary>Remaining link hops; a frame that arrives with 0 is dropped.</summary>
    public byte HopLimit;

    public Span<byte> Data => Buffer.AsSpan(Offset, Length);

    /// <summary>
    /// Whether the frame's bytes lie inside its buffer. <see cref="Length"/> is set freely, and native
    /// writes take a pointer and a length: they check this first rather than hand the kernel memory
    /// past the buffer.
    /// </summary>
    public bool FitsBuffer => (uint)Length <= (uint)(Buffer.Length - Offset);

    public Memory<byte> Memory => Buffer.AsMemory(Offset, Length);

    public MacAddress Destination => MacAddress.Read(Buffer.AsSpan(Offset, 6));

    public MacAddress Source => MacAddress.Read(Buffer.AsSpan(Offset + 6, 6));

    public int References => Volatile.Read(ref _refs);

    /// <summary>Moves the start of the frame; used when a header in front of it was consumed.</summary>
    public void SetBounds(int offset, int length)
    {
        Debug.Assert(offset >= 0 && length >= 0 && offset + length <= Capacity);
        Offset = offset;
        Length = length;
    }

    public void AddReference() => Interlocked.Increment(ref _refs);

    /// <summary>Drops one reference; the last one returns the frame to its pool.</summary>
    public void Release()
    {
        var left = Interlocked.Decrement(ref _refs);
        if (left == 0)
        {
            _pool?.Return(this);
        }
        else if (left < 0)
        {
            throw new InvalidOperationException("Frame released more often than referenced.");
        }
    }

    internal void Reset()
    {
        Offset = Headroom;
        Length = 0;
        Offload = default;
        IngressPort = -1;
        HopLimit = 0;
    }

    internal void Rent() => _refs = 1;
}
