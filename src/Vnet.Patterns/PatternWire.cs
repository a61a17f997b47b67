using System.Buffers.Binary;
using System.Text;

namespace Vnet.Patterns;

/// <summary>What a connection between two ranks carries.</summary>
internal enum ChannelKind : byte
{
    /// <summary>Messages, one way: from the rank that dialed to the rank it targets.</summary>
    Data = 1,

    /// <summary>The barrier, both ways: between rank 0 and one other rank (which dials).</summary>
    Control = 2,
}

internal enum ControlType : byte
{
    /// <summary>Rank k to rank 0: "I finished round r".</summary>
    Done = 1,

    /// <summary>Rank 0 to rank k: "everyone finished round r; go on".</summary>
    Go = 2,

    /// <summary>Either way: the run failed, with the reason (UTF-8). The sender closes next.</summary>
    Abort = 3,
}

/// <summary>
/// The first thing both ends of every connection send: who they are and what run they are in, so
/// that ranks started with different arguments refuse each other with a clear message instead of
/// failing mid-run. 24 bytes, big-endian:
/// <code>
///  0      4         5         6      7          8   12     16       20      24
///  | VPAT | version | channel | kind | reserved | n | rank | rounds | bytes |
/// </code>
/// </summary>
internal readonly record struct Hello(ChannelKind Channel, PatternKind Kind, int N, int Rank, int Rounds, int Bytes)
{
    public const int Size = 24;
    private const uint Magic = 0x56504154; // "VPAT"
    private const byte Version = 1;

    public void Write(Span<byte> buffer)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer, Magic);
        buffer[4] = Version;
        buffer[5] = (byte)Channel;
        buffer[6] = (byte)Kind;
        buffer[7] = 0;
        BinaryPrimitives.WriteInt32BigEndian(buffer[8..], N);
        BinaryPrimitives.WriteInt32BigEndian(buffer[12..], Rank);
        BinaryPrimitives.WriteInt32BigEndian(buffer[16..], Rounds);
        BinaryPrimitives.WriteInt32BigEndian(buffer[20..], Bytes);
    }

    /// <summary>False when the bytes are not a hello of this version: a stray client, not a rank.</summary>
    public static bool TryRead(ReadOnlySpan<byte> buffer, out Hello hello)
    {
        hello = default;
        if (buffer.Length < Size || BinaryPrimitives.ReadUInt32BigEndian(buffer) != Magic || buffer[4] != Version)
            return false;
        var channel = (ChannelKind)buffer[5];
        var kind = (PatternKind)buffer[6];
        if (!Enum.IsDefined(channel) || !Enum.IsDefined(kind))
            return false;
        hello = new Hello(channel, kind, BinaryPrimitives.ReadInt32BigEndian(buffer[8..]), BinaryPrimitives.ReadInt32BigEndian(buffer[12..]),
            BinaryPrimitives.ReadInt32BigEndian(buffer[16..]), BinaryPrimitives.ReadInt32BigEndian(buffer[20..]));
        return true;
    }

    public bool SameRun(Hello other) => Kind == other.Kind && N == other.N && Rounds == other.Rounds && Bytes == other.Bytes;

    /// <summary>The run as a person would compare it: "ring, 4 ranks, 10 rounds of 64K".</summary>
    public string DescribeRun() => $"{Kind.Name()}, {N} ranks, {Rounds} rounds of {ByteSize.Format(Bytes)}";
}

/// <summary>
/// A message's header on a data connection, 8 bytes big-endian: round (1-based), payload length.
/// The payload follows; its contents are arbitrary.
/// </summary>
internal static class DataFrame
{
    public const int HeaderSize = 8;

    public static void WriteHeader(Span<byte> buffer, int round, int length)
    {
        BinaryPrimitives.WriteInt32BigEndian(buffer, round);
        BinaryPrimitives.WriteInt32BigEndian(buffer[4..], length);
    }

    public static (int Round, int Length) ReadHeader(ReadOnlySpan<byte> buffer) =>
        (BinaryPrimitives.ReadInt32BigEndian(buffer), BinaryPrimitives.ReadInt32BigEndian(buffer[4..]));
}

/// <summary>
/// A barrier message, big-endian: type (1), round (4), text length (4), text (UTF-8, only Abort
/// has one). Round 0 is the start barrier, when every connection is up.
/// </summary>
internal readonly record struct ControlMessage(ControlType Type, int Round, string? Text = null)
{
    public const int HeaderSize = 9;

    /// <summary>Reasons are one line; a longer one is cut, and a peer claiming more is broken.</summary>
    public const int MaxText = 2048;

    public byte[] Encode()
    {
        var text = Text is null ? [] : Encoding.UTF8.GetBytes(Text.Length > MaxText / 4 ? Text[..(MaxText / 4)] : Text);
        var buffer = new byte[HeaderSize + text.Length];
        buffer[0] = (byte)Type;
        BinaryPrimitives.WriteInt32BigEndian(buffer.AsSpan(1), Round);
        BinaryPrimitives.WriteInt32BigEndian(buffer.AsSpan(5), text.Length);
        text.CopyTo(buffer, HeaderSize);
        return buffer;
    }

    public static (ControlType Type, int Round, int TextLength) ReadHeader(ReadOnlySpan<byte> buffer) =>
        ((ControlType)buffer[0], BinaryPrimitives.ReadInt32BigEndian(buffer[1..]), BinaryPrimitives.ReadInt32BigEndian(buffer[5..]));

    public override string ToString() => Type switch
    {
        ControlType.Done => $"done with round {Round}",
        ControlType.Go => $"go after round {Round}",
        _ => $"abort ({Text})",
    };
}
