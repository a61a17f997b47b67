using System.Buffers.Binary;
using Vnet.Links;

namespace Vnet.Tests.Links;

/// <summary>
/// The 16-byte link header: what is accepted round-trips exactly, everything else is refused with
/// the right <see cref="WireError"/>, and the byte layout is pinned so that a refactoring cannot
/// silently change the wire format two daemons of different builds must agree on.
/// </summary>
public sealed class WireTests
{
    private static readonly MessageFlags[] AllFlagCombinations =
    [
        MessageFlags.None,
        MessageFlags.Offload,
        MessageFlags.Encrypted,
        MessageFlags.Offload | MessageFlags.Encrypted,
    ];

    public static TheoryData<MessageType, MessageFlags> TypesAndFlags()
    {
        var data = new TheoryData<MessageType, MessageFlags>();
        foreach (var type in Enum.GetValues<MessageType>())
        {
            foreach (var flags in AllFlagCombinations)
                data.Add(type, flags);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(TypesAndFlags))]
    public void TryRead_WrittenHeader_RoundTripsOrRefusesFlags(MessageType type, MessageFlags flags)
    {
        var sealedType = !Wire.IsHandshake(type);
        var written = new LinkHeader(type, flags, HopLimit: 7, Session: 0xDEAD_BEEF, PayloadLength: 1234, Epoch: sealedType ? (byte)3 : (byte)0);
        var bytes = new byte[Wire.HeaderSize];
        Wire.Write(bytes, written);

        var error = Wire.TryRead(bytes, out var read);

        // Offload only on data; every message after the handshake sealed, the handshake's never.
        var offloadMisplaced = (flags & MessageFlags.Offload) != 0 && type != MessageType.Data;
        var sealedRight = ((flags & MessageFlags.Encrypted) != 0) == sealedType;
        if (!offloadMisplaced && sealedRight)
        {
            Assert.Equal(WireError.None, error);
            Assert.Equal(written, read);
        }
        else
        {
            Assert.Equal(offloadMisplaced ? WireError.UnknownFlags : WireError.NotSealed, error);
            Assert.Equal(default, read);
        }
    }

    [Theory]
    [InlineData((byte)0, 0u)]
    [InlineData((byte)1, 1u)]
    [InlineData((byte)255, uint.MaxValue)]
    public void TryRead_ExtremeHopLimitAndSession_RoundTrip(byte hopLimit, uint session)
    {
        var written = new LinkHeader(MessageType.Data, MessageFlags.Encrypted, hopLimit, session, 0);
        var bytes = new byte[Wire.HeaderSize];
        Wire.Write(bytes, written);

        Assert.Equal(WireError.None, Wire.TryRead(bytes, out var read));
        Assert.Equal(written, read);
    }

    [Fact]
    public void Write_DataHeader_MatchesGoldenBigEndianBytes()
    {
        var bytes = new byte[Wire.HeaderSize];

        Wire.Write(bytes, new LinkHeader(MessageType.Data, MessageFlags.Offload | MessageFlags.Encrypted, 7, 0x0102_0304, 0x0000_05DC, 9));

        byte[] golden =
        [
            0x56, 0x4E,             // 'V' 'N'
            0x02,                   // version
            0x10,                   // type: Data (16)
            0x03,                   // flags: Offload | Encrypted
            0x07,                   // hop limit
            0x09,                   // key epoch
            0x00,                   // reserved
            0x01, 0x02, 0x03, 0x04, // session id
            0x00, 0x00, 0x05, 0xDC, // payload length 1500
        ];
        Assert.Equal(golden, bytes);
    }

    [Fact]
    public void TryRead_GoldenControlBytes_ParsesEveryField()
    {
        byte[] golden =
        [
            0x56, 0x4E, 0x02, 0x20, 0x02, 0x00, 0x05, 0x00,
            0xA1, 0xB2, 0xC3, 0xD4, 0x00, 0x01, 0x02, 0x03,
        ];

        Assert.Equal(WireError.None, Wire.TryRead(golden, out var header));

        Assert.Equal(new LinkHeader(MessageType.Control, MessageFlags.Encrypted, 0, 0xA1B2_C3D4, 0x0001_0203, 5), header);
    }

    [Fact]
    public void MessageType_Values_ArePinned()
    {
        // Renumbering a type would make two builds misread each other.
        Assert.Equal(
            [5, 6, 7, 8, 16, 17, 18, 19, 20, 32, 33],
            Enum.GetValues<MessageType>().Select(t => (int)t).ToArray());
        Assert.Equal(1, (int)MessageFlags.Offload);
        Assert.Equal(2, (int)MessageFlags.Encrypted);
        Assert.Equal(0x564E, Wire.Magic);
        Assert.Equal(16, Wire.HeaderSize);
    }

    [Fact]
    public void TryRead_HeaderFollowedByPayload_ReadsOnlyTheHeader()
    {
        var bytes = new byte[Wire.HeaderSize + 100];
        bytes.AsSpan(Wire.HeaderSize).Fill(0xFF);
        Wire.Write(bytes, new LinkHeader(MessageType.KeepAlive, MessageFlags.Encrypted, 0, 5, 100));

        Assert.Equal(WireError.None, Wire.TryRead(bytes, out var header));
        Assert.Equal(100, header.PayloadLength);
    }

    // Refusals.

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(15)]
    public void TryRead_FewerThan16Bytes_Truncated(int length)
    {
        var bytes = Valid();

        Assert.Equal(WireError.Truncated, Wire.TryRead(bytes.AsSpan(0, length), out var header));
        Assert.Equal(default, header);
    }

    [Theory]
    [InlineData(0x00, 0x00)]
    [InlineData(0x4E, 0x56)]
    [InlineData(0x56, 0x4F)]
    [InlineData(0x47, 0x45)]
    public void TryRead_WrongMagic_BadMagic(byte first, byte second)
    {
        var bytes = Valid();
        bytes[0] = first;
        bytes[1] = second;

        Assert.Equal(WireError.BadMagic, Wire.TryRead(bytes, out _));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(255)]
    public void TryRead_OtherVersion_BadVersion(byte version)
    {
        var bytes = Valid();
        bytes[2] = version;

        Assert.Equal(WireError.BadVersion, Wire.TryRead(bytes, out _));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(9)]
    [InlineData(15)]
    [InlineData(21)]
    [InlineData(31)]
    [InlineData(34)]
    [InlineData(255)]
    public void TryRead_UnassignedType_UnknownType(byte type)
    {
        var bytes = Valid();
        bytes[3] = type;

        Assert.Equal(WireError.UnknownType, Wire.TryRead(bytes, out _));
        Assert.False(Wire.IsKnown((MessageType)type));
    }

    [Theory]
    [InlineData(0x06)]
    [InlineData(0x04)]
    [InlineData(0x80)]
    [InlineData(0xFF)]
    public void TryRead_UnassignedFlagsOnData_UnknownFlags(byte flags)
    {
        var bytes = Valid(MessageType.Data);
        bytes[4] = flags;

        Assert.Equal(WireError.UnknownFlags, Wire.TryRead(bytes, out _));
    }

    [Theory]
    [InlineData(MessageType.HandshakeInit)]
    [InlineData(MessageType.KeepAlive)]
    [InlineData(MessageType.Control)]
    [InlineData(MessageType.Bye)]
    public void TryRead_OffloadFlagOnNonDataMessage_UnknownFlags(MessageType type)
    {
        var bytes = Valid(type);
        bytes[4] |= (byte)MessageFlags.Offload;

        Assert.Equal(WireError.UnknownFlags, Wire.TryRead(bytes, out _));
    }

    [Theory]
    [InlineData(MessageType.KeepAlive, 0x00, 0x01)]
    [InlineData(MessageType.Data, 0xFF, 0xFF)]
    [InlineData(MessageType.HandshakeInit, 0x01, 0x00)]
    [InlineData(MessageType.Reject, 0x00, 0x01)]
    public void TryRead_ReservedFieldOrAHandshakeEpochNotZero_ReservedNotZero(MessageType type, byte epoch, byte reserved)
    {
        var bytes = Valid(type);
        bytes[6] = epoch;
        bytes[7] = reserved;

        Assert.Equal(WireError.ReservedNotZero, Wire.TryRead(bytes, out _));
    }

    [Theory]
    [InlineData(MessageType.Data, -1)]
    [InlineData(MessageType.Data, int.MinValue)]
    [InlineData(MessageType.Data, Wire.MaxDataPayload + 1)]
    [InlineData(MessageType.Data, Wire.MaxControlPayload)]
    [InlineData(MessageType.Data, int.MaxValue)]
    [InlineData(MessageType.Control, -1)]
    [InlineData(MessageType.Control, Wire.MaxControlPayload + 1)]
    [InlineData(MessageType.HandshakeInit, Wire.MaxControlPayload + 1)]
    [InlineData(MessageType.KeepAlive, int.MaxValue)]
    public void TryRead_LengthOutOfRange_TooLong(MessageType type, int length)
    {
        var bytes = Valid(type);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(12), length);

        Assert.Equal(WireError.TooLong, Wire.TryRead(bytes, out _));
    }

    [Theory]
    [InlineData(MessageType.Data, 0)]
    [InlineData(MessageType.Data, Wire.MaxDataPayload)]
    [InlineData(MessageType.Control, Wire.MaxDataPayload + 1)]
    [InlineData(MessageType.Control, Wire.MaxControlPayload)]
    [InlineData(MessageType.Bye, 0)]
    public void TryRead_LengthAtLimit_Accepted(MessageType type, int length)
    {
        var bytes = Valid(type);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(12), length);

        Assert.Equal(WireError.None, Wire.TryRead(bytes, out var header));
        Assert.Equal(length, header.PayloadLength);
    }

    [Fact]
    public void MaxDataPayload_HoldsCounterVirtioHeaderLargestFrameAndTag()
    {
        Assert.Equal(8 + 10 + Vnet.Frames.Frame.MaxLength + 16, Wire.MaxDataPayload);
        Assert.True(Wire.MaxControlPayload > Wire.MaxDataPayload);
    }

    [Fact]
    public void Describe_EveryError_HasItsOwnText()
    {
        var errors = Enum.GetValues<WireError>().Where(e => e != WireError.None).ToArray();

        var texts = errors.Select(Wire.Describe).ToArray();

        Assert.All(texts, t => Assert.NotEqual("ok", t));
        Assert.Equal(texts.Length, texts.Distinct().Count());
        Assert.Equal("ok", Wire.Describe(WireError.None));
    }

    private static byte[] Valid(MessageType type = MessageType.KeepAlive)
    {
        var bytes = new byte[Wire.HeaderSize];
        Wire.Write(bytes, new LinkHeader(type, Wire.IsHandshake(type) ? MessageFlags.None : MessageFlags.Encrypted, 3, 42, 12));
        return bytes;
    }
}
