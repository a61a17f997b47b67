using System.Buffers.Binary;

namespace Vnet.Links.Security;

/// <summary>
/// The one layout of every message after the handshake, on TCP and in UDP datagrams alike:
/// <code>
/// header (16, cleartext: the associated data) | counter (8, the nonce) | ciphertext | tag (16)
/// </code>
/// The header carries the Encrypted flag, the key epoch and the payload length (counter, ciphertext
/// and tag), so a receiver can frame, route and pick the key before it opens anything, and cannot
/// be fooled by any change to those fields.
/// </summary>
internal static class SealedRecord
{
    /// <summary>Bytes a sealed payload adds to its plaintext.</summary>
    public const int Overhead = Wire.CounterSize + Wire.TagSize;

    /// <summary>
    /// Writes header, counter, ciphertext and tag for <paramref name="plaintext"/> into
    /// <paramref name="destination"/>; returns the message length. The plaintext may already sit at
    /// <c>destination[HeaderSize + CounterSize..]</c> (sealed in place) or anywhere else that does
    /// not overlap the destination (sealed from there, saving a copy). No allocation.
    /// </summary>
    public static int Seal(Span<byte> destination, EpochKey key, MessageType type, MessageFlags flags, byte hopLimit, uint session,
        ReadOnlySpan<byte> plaintext)
    {
        var length = Wire.HeaderSize + Overhead + plaintext.Length;
        var header = destination[..Wire.HeaderSize];
        Wire.Write(header, new LinkHeader(type, flags | MessageFlags.Encrypted, hopLimit, session, Overhead + plaintext.Length, key.Epoch));
        var counterAt = destination.Slice(Wire.HeaderSize, Wire.CounterSize);
        var body = destination.Slice(Wire.HeaderSize + Wire.CounterSize, plaintext.Length + Wire.TagSize);
        var counter = SendCipher.Seal(key, header, plaintext, body);
        BinaryPrimitives.WriteUInt64BigEndian(counterAt, counter);
        return length;
    }

    /// <summary>A sealed control message as a new array (control path: allocation is fine).</summary>
    public static byte[] SealToArray(SendCipher cipher, MessageType type, uint session, ReadOnlySpan<byte> plaintext)
    {
        var message = new byte[Wire.HeaderSize + Overhead + plaintext.Length];
        Seal(message, cipher.Current, type, MessageFlags.None, 0, session, plaintext);
        return message;
    }

    /// <summary>
    /// Opens a sealed payload (counter, ciphertext, tag) under its header into
    /// <paramref name="plaintext"/>, which may start where the ciphertext starts. False when it does
    /// not authenticate, is a replay, or is malformed.
    /// </summary>
    public static bool Open(ReceiveCipher cipher, in LinkHeader header, ReadOnlySpan<byte> headerBytes, ReadOnlySpan<byte> sealedPayload,
        bool stream, Span<byte> plaintext)
    {
        if ((header.Flags & MessageFlags.Encrypted) == 0 || sealedPayload.Length < Overhead)
            return false;
        var counter = BinaryPrimitives.ReadUInt64BigEndian(sealedPayload);
        return cipher.Open(header.Epoch, counter, stream, headerBytes[..Wire.HeaderSize], sealedPayload[Wire.CounterSize..], plaintext);
    }

    /// <summary>Plaintext length of a sealed payload of <paramref name="payloadLength"/> bytes (negative: too short).</summary>
    public static int PlaintextLength(int payloadLength) => payloadLength - Overhead;
}
