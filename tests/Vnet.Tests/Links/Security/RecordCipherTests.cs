using System.Security.Cryptography;
using Vnet.Links;
using Vnet.Links.Security;

namespace Vnet.Tests.Links.Security;

/// <summary>Sealing and opening records: round trips, tampering, replays, and stepping keys.</summary>
public sealed class RecordCipherTests
{
    private const uint Session = 0x0102_0304;
    private static readonly byte[] Key = RandomNumberGenerator.GetBytes(32);

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(1500)]
    [InlineData(65_000)]
    public void SealThenOpen_AnyLength_SamePlaintext(int length)
    {
        using var send = new SendCipher(Key);
        using var receive = new ReceiveCipher(Key);
        var plain = RandomNumberGenerator.GetBytes(length);

        var message = SealedRecord.SealToArray(send, MessageType.Control, Session, plain);

        Assert.Equal(plain, Open(receive, message, stream: true));
    }

    [Fact]
    public void Open_AnyBitFlipped_RefusedAndTheNextGenuineMessageStillOpens()
    {
        using var send = new SendCipher(Key);
        var message = SealedRecord.SealToArray(send, MessageType.Control, Session, "a control message"u8);
        for (var bit = 0; bit < message.Length * 8; bit++)
        {
            using var receive = new ReceiveCipher(Key);
            var flipped = (byte[])message.Clone();
            flipped[bit / 8] ^= (byte)(1 << (bit % 8));

            Assert.Null(Open(receive, flipped, stream: false));
            Assert.NotNull(Open(receive, message, stream: false));
        }
    }

    [Fact]
    public void Stream_CounterNotAboveTheLast_Refused()
    {
        using var send = new SendCipher(Key);
        using var receive = new ReceiveCipher(Key);
        var first = SealedRecord.SealToArray(send, MessageType.Control, Session, "1"u8);
        var second = SealedRecord.SealToArray(send, MessageType.Control, Session, "2"u8);

        Assert.NotNull(Open(receive, second, stream: true));
        // An earlier message after a later one on TCP: only an attacker reorders a stream.
        Assert.Null(Open(receive, first, stream: true));
        Assert.Null(Open(receive, second, stream: true));
        Assert.Equal(2, receive.Refused);
    }

    [Fact]
    public void Datagrams_ReorderedWithinTheWindowTaken_ReplaysAndTooOldRefused()
    {
        using var send = new SendCipher(Key);
        using var receive = new ReceiveCipher(Key);
        var messages = Enumerable.Range(0, ReplayWindow.Size + 10)
            .Select(i => SealedRecord.SealToArray(send, MessageType.Data, Session, BitConverter.GetBytes(i))).ToList();

        Assert.NotNull(Open(receive, messages[5], stream: false));
        Assert.NotNull(Open(receive, messages[2], stream: false));
        Assert.Null(Open(receive, messages[5], stream: false));
        Assert.NotNull(Open(receive, messages[^1], stream: false));
        // messages[2] is now more than a window behind the newest: too old, as is one never seen.
        Assert.Null(Open(receive, messages[3], stream: false));
        Assert.NotNull(Open(receive, messages[^2], stream: false));
        Assert.Null(Open(receive, messages[^2], stream: false));
    }

    [Fact]
    public void Rekey_ReceiverFollowsTheNextEpochAndStillOpensAStragglerOfThePrevious()
    {
        using var send = new SendCipher(Key, rekeyAfter: TimeSpan.Zero);
        using var receive = new ReceiveCipher(Key);
        var old = SealedRecord.SealToArray(send, MessageType.Data, Session, "sealed before the step"u8);

        send.RekeyIfDue();
        var next = SealedRecord.SealToArray(send, MessageType.Data, Session, "after"u8);

        Assert.Equal(1, send.Current.Epoch);
        Assert.Equal("after"u8.ToArray(), Open(receive, next, stream: false));
        Assert.Equal("sealed before the step"u8.ToArray(), Open(receive, old, stream: false));
        Assert.Equal(1, receive.Rekeys);
    }

    [Fact]
    public void Rekey_SenderThatSealedNothing_DoesNotStepAgain_SoTheReceiverCanFollow()
    {
        using var send = new SendCipher(Key, rekeyAfter: TimeSpan.Zero);
        using var receive = new ReceiveCipher(Key);
        SealedRecord.SealToArray(send, MessageType.Control, Session, "0"u8);

        // An idle channel: due again and again, but nothing sealed under the new key.
        for (var i = 0; i < 5; i++)
            send.RekeyIfDue();
        var message = SealedRecord.SealToArray(send, MessageType.Control, Session, "still followed"u8);

        Assert.Equal(1, send.Current.Epoch);
        Assert.Equal("still followed"u8.ToArray(), Open(receive, message, stream: true));
    }

    [Fact]
    public void Open_EpochTwoAhead_Refused()
    {
        using var send = new SendCipher(Key, rekeyAfter: TimeSpan.Zero);
        using var receive = new ReceiveCipher(Key);
        SealedRecord.SealToArray(send, MessageType.Data, Session, "0"u8);
        send.RekeyIfDue();
        SealedRecord.SealToArray(send, MessageType.Data, Session, "1"u8);
        send.RekeyIfDue();

        var message = SealedRecord.SealToArray(send, MessageType.Data, Session, "2"u8);

        Assert.Equal(2, send.Current.Epoch);
        Assert.Null(Open(receive, message, stream: false));
    }

    private static byte[]? Open(ReceiveCipher receive, byte[] message, bool stream)
    {
        // As a connection reads it: a header whose length does not match what follows is refused before opening.
        if (Wire.TryRead(message, out var header) != WireError.None || header.PayloadLength != message.Length - Wire.HeaderSize)
            return null;
        var payload = message.AsSpan(Wire.HeaderSize, header.PayloadLength);
        var length = SealedRecord.PlaintextLength(payload.Length);
        if (length < 0)
            return null;
        var plain = new byte[length];
        return SealedRecord.Open(receive, header, message, payload, stream, plain) ? plain : null;
    }
}
