using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using NSec.Cryptography;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Links;
using Vnet.Links.Security;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// The link handshake (<see cref="NoiseHandshake"/>, <c>Noise_IKpsk2_25519_AESGCM_SHA256</c>) as a
/// daemon meets it from the network, between fixed key pairs: the responder's
/// <see cref="NoiseHandshake.Mac1Valid"/> and <see cref="NoiseHandshake.Responder.ReadInit"/>, the
/// initiator's <see cref="NoiseHandshake.Initiator.ReadResponse"/>, the CONFIRM check, a REJECT's
/// reason on its way to the log, the replay memory of tool INITs (<see cref="RecentTimestamps"/>),
/// and the framing <see cref="HandshakeChannel.ReadAsync(System.Net.Sockets.Socket, CancellationToken)"/>
/// applies (its header and length rules; the socket part is not fuzzed).
/// <para>
/// Everything after mac1 is authenticated, so fuzzed bytes never get past the first AEAD tag. Two
/// kinds of input reach further: raw messages, whose mac1 the harness fixes up under the
/// responder's key (the same <see cref="NoiseHandshake.Mac1"/> the code uses), exercise the
/// length checks, the X25519 public key import (low-order points) and the refusals; and hellos,
/// which the harness seals into a genuine INIT or RESPONSE with the code's own Noise state
/// (internal <c>WriteFirst</c>/<c>WriteSecond</c>), exercise the decoders of what is inside.
/// Only documented refusals may escape: null with a reason, or <see cref="HandshakeException"/>.
/// Checked: a refusal has a reason; a genuine message always authenticates; an accepted hello is
/// well formed and encodes back to the bytes sent; an accepted INIT leads to a RESPONSE the
/// initiator accepts, with one pair of keys that the CONFIRM proves; an accepted REJECT reason is
/// safe for a log; a replayed (timestamp, ephemeral) pair is never fresh, a newer one always is.
/// </para>
/// <para>Input: byte 0 chooses what the rest is (its low 3 bits):</para>
/// <code>
/// 0  an INIT after mac1 (the harness puts the right mac1 in front); the responder reads it
/// 1  an initiator's hello, sealed into a genuine INIT by the fixed initiator; the responder reads it
/// 2  a RESPONSE to the fixed initiator's INIT
/// 3  a responder's hello, sealed into a genuine RESPONSE to the fixed INIT; the initiator reads it
/// 4  a CONFIRM (the responder's check of the fixed session)
/// 5  a TCP stream of handshake messages (16-byte header, payload), at most 8: each as its type
///    goes (INIT: mac1 fixed up, RESPONSE, CONFIRM, REJECT; any other type is refused)
/// 6  tool INIT timestamps: records of key (1 byte; bit 7 set: u64 timestamp, else i32 milliseconds
///    after the previous one) and u64 ephemeral fingerprint, for RecentTimestamps.IsFresh
/// 7  an INIT as it came (mac1 included, not fixed up)
/// </code>
/// </summary>
public sealed class HandshakeTarget : FuzzTarget
{
    private const int MaxMessages = 8;
    private const int MaxTimestamps = 2048;

    private static readonly byte[] Prologue = "vnet2"u8.ToArray();
    private static readonly byte[] ResponderPrivate = SHA256.HashData("vnet fuzz responder static"u8);
    private static readonly byte[] InitiatorPrivate = SHA256.HashData("vnet fuzz initiator static"u8);
    private static readonly byte[] InitiatorEphemeral = SHA256.HashData("vnet fuzz initiator ephemeral"u8);
    private static readonly byte[] ResponderEphemeral = SHA256.HashData("vnet fuzz responder ephemeral"u8);

    private static readonly StaticKeyPair ResponderKey = new(Import(ResponderPrivate));
    private static readonly StaticKeyPair InitiatorKey = new(Import(InitiatorPrivate));
    private static readonly PresharedKey Psk = PresharedKey.FromBytes(SHA256.HashData("vnet fuzz preshared key"u8));

    private static readonly InitiatorHello FixedHello = new("h1", DaemonRole.Host, LinkTransport.Udp, false, 0x11223344, 1_750_000_000_000_000_000);
    private static readonly ResponderHello FixedAnswer = new("proxy", DaemonRole.Proxy, 0x55667788);

    /// <summary>The one handshake between the fixed parties (fixed ephemeral keys on both sides: always the same bytes).</summary>
    private static readonly FixedSession Fixed = Complete();

    private sealed record FixedSession(byte[] Init, byte[] Response, SessionKeys InitiatorKeys, SessionKeys ResponderKeys);

    public override string Name => "handshake";

    public override string Description => "Vnet.Links.Security.NoiseHandshake: INIT, RESPONSE, CONFIRM, REJECT, framing, INIT replay memory";

    private static Key Import(byte[] privateKey) =>
        Key.Import(KeyAgreementAlgorithm.X25519, privateKey, KeyBlobFormat.RawPrivateKey,
            new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });

    /// <summary>The fixed initiator (its ephemeral key too: it disposes that key, so each gets its own copy).</summary>
    private static NoiseHandshake.Initiator NewInitiator() =>
        new(InitiatorKey, ResponderKey.Public, Psk, Prologue, Import(InitiatorEphemeral));

    private static FixedSession Complete()
    {
        using var initiator = NewInitiator();
        var init = initiator.CreateInit(FixedHello);
        using var ephemeral = Import(ResponderEphemeral);
        using var responder = new NoiseHandshake.Responder(ResponderKey, Psk, Prologue, ephemeral);
        _ = responder.ReadInit(init, out var error) ?? throw new InvalidOperationException($"the fixed INIT does not read: {error}");
        var (response, responderKeys) = responder.CreateResponse(FixedAnswer);
        var answer = initiator.ReadResponse(response, out error) ?? throw new InvalidOperationException($"the fixed RESPONSE does not read: {error}");
        return new FixedSession(init, response, answer.Keys, responderKeys);
    }

    protected override void Run(ReadOnlySpan<byte> data)
    {
        if (data.Length < 1)
            return;
        var rest = data[1..];
        try
        {
            switch (data[0] & 7)
            {
                case 0:
                    RespondWithMac1(rest);
                    break;
                case 1:
                    SealedInit(rest);
                    break;
                case 2:
                    FixedInitiatorReads(rest);
                    break;
                case 3:
                    SealedResponse(rest);
                    break;
                case 4:
                    Confirm(rest);
                    break;
                case 5:
                    Stream(rest);
                    break;
                case 6:
                    Timestamps(rest);
                    break;
                default:
                    Raw(rest);
                    break;
            }
        }
        catch (HandshakeException)
        {
            // Documented: a refusal LinkManager logs and counts.
        }
    }

    // ---------------------------------------------------------------- INIT (responder)

    /// <summary>Mode 0: the rest is the Noise message; mac1 in front, computed as an initiator that knows the key does.</summary>
    private static void RespondWithMac1(ReadOnlySpan<byte> message)
    {
        if (message.Length + NoiseHandshake.Mac1Size > HandshakeChannel.MaxHandshakePayload)
            return;
        byte[] init = [.. NoiseHandshake.Mac1(ResponderKey.Public, message), .. message];
        if (message.Length > 0 && !NoiseHandshake.Mac1Valid(ResponderKey.Public, init))
            throw new FuzzFindingException("Mac1Valid refuses the mac1 that Mac1 computed");
        Respond(init, null, default);
    }

    /// <summary>Mode 7: the INIT as it came, mac1 included.</summary>
    private static void Raw(ReadOnlySpan<byte> init)
    {
        if (init.Length > HandshakeChannel.MaxHandshakePayload)
            return;
        if (NoiseHandshake.Mac1Valid(ResponderKey.Public, init))
        {
            Respond(init.ToArray(), null, default);
            return;
        }
        // What the daemon never gets to (it refuses at mac1 first): ReadInit must refuse it the same way.
        using var responder = new NoiseHandshake.Responder(ResponderKey, Psk);
        if (responder.ReadInit(init, out var error) is not null || string.IsNullOrEmpty(error))
            throw new FuzzFindingException($"ReadInit took an INIT whose mac1 Mac1Valid refuses (error: {error ?? "none"})");
    }

    /// <summary>Mode 1: the rest is the initiator's hello, in a genuine INIT.</summary>
    private static void SealedInit(ReadOnlySpan<byte> hello)
    {
        // INIT: mac1, e, s and its tag, the hello and its tag.
        if (NoiseHandshake.Mac1Size + 32 + 48 + hello.Length + 16 > HandshakeChannel.MaxHandshakePayload)
            return;
        using var initiator = NewInitiator();
        var message = initiator.WriteFirst(hello);
        byte[] init = [.. NoiseHandshake.Mac1(ResponderKey.Public, message), .. message];
        Respond(init, initiator, hello);
    }

    /// <summary>
    /// What <c>LinkManager.Respond</c> does with an INIT: mac1, ReadInit, then (the admission is the
    /// caller's) the replay fingerprint and the RESPONSE. With the initiator that sealed
    /// <paramref name="sealedHello"/>, the rest of the handshake must complete.
    /// </summary>
    private static void Respond(byte[] init, NoiseHandshake.Initiator? initiator, ReadOnlySpan<byte> sealedHello)
    {
        var genuine = initiator is not null;
        if (!NoiseHandshake.Mac1Valid(ResponderKey.Public, init))
        {
            if (genuine)
                throw new FuzzFindingException("a genuine INIT fails mac1");
            return;
        }
        using var responder = new NoiseHandshake.Responder(ResponderKey, Psk);
        var read = responder.ReadInit(init, out var error);
        if (read is null)
        {
            Refused(error, "ReadInit");
            if (genuine && !error!.StartsWith("malformed", StringComparison.Ordinal) && !error.StartsWith("protocol version", StringComparison.Ordinal))
                throw new FuzzFindingException($"a genuine INIT was refused for something else than its hello: {error}");
            return;
        }
        var (key, hello) = read.Value;
        Check(hello);
        if (genuine)
        {
            if (!key.Equals(InitiatorKey.Public))
                throw new FuzzFindingException($"ReadInit names initiator key {key}, not the one that sealed it");
            var encoded = NoiseHandshake.Encode(hello);
            if (!encoded.AsSpan().SequenceEqual(sealedHello))
                throw new FuzzFindingException($"accepted hello {hello} encodes to {Convert.ToHexString(encoded)}, not the {Convert.ToHexString(sealedHello)} sent");
        }
        _ = NoiseHandshake.EphemeralFingerprint(init);
        var (response, keys) = responder.CreateResponse(FixedAnswer);
        if (initiator is null)
            return;
        var answer = initiator.ReadResponse(response, out error)
            ?? throw new FuzzFindingException($"the initiator refuses the responder's answer to its INIT: {error}");
        if (answer.Hello != FixedAnswer)
            throw new FuzzFindingException($"the initiator read {answer.Hello}, the responder sent {FixedAnswer}");
        if (!answer.Keys.Send.AsSpan().SequenceEqual(keys.Receive) || !answer.Keys.Receive.AsSpan().SequenceEqual(keys.Send))
            throw new FuzzFindingException("the two sides of one handshake derived different keys");
        if (!keys.ConfirmsInitiator(answer.Keys.InitiatorConfirmation()))
            throw new FuzzFindingException("the responder refuses the initiator's CONFIRM of the same handshake");
    }

    // ---------------------------------------------------------------- RESPONSE (initiator)

    /// <summary>Mode 2: a RESPONSE to the fixed INIT.</summary>
    private static void FixedInitiatorReads(ReadOnlySpan<byte> response)
    {
        if (response.Length > HandshakeChannel.MaxHandshakePayload)
            return;
        using var initiator = NewInitiator();
        _ = initiator.CreateInit(FixedHello);
        var answer = initiator.ReadResponse(response, out var error);
        if (answer is null)
        {
            Refused(error, "ReadResponse");
            return;
        }
        Check(answer.Value.Hello);
        // Only the fixed responder (its ephemeral key) can answer, and every answer of it gives the same keys.
        if (!Fixed.ResponderKeys.ConfirmsInitiator(answer.Value.Keys.InitiatorConfirmation()))
            throw new FuzzFindingException("an accepted RESPONSE gives keys the fixed responder does not have");
    }

    /// <summary>Mode 3: the rest is the responder's hello, in a genuine RESPONSE to the fixed INIT.</summary>
    private static void SealedResponse(ReadOnlySpan<byte> hello)
    {
        if (32 + hello.Length + 16 > HandshakeChannel.MaxHandshakePayload)
            return;
        using var initiator = NewInitiator();
        var init = initiator.CreateInit(FixedHello);
        using var ephemeral = Import(ResponderEphemeral);
        using var responder = new NoiseHandshake.Responder(ResponderKey, Psk, Prologue, ephemeral);
        _ = responder.ReadInit(init, out var error) ?? throw new FuzzFindingException($"the fixed INIT is refused: {error}");
        var response = responder.WriteSecond(hello);
        var (initiatorToResponder, responderToInitiator) = responder.Split();
        var answer = initiator.ReadResponse(response, out error);
        if (answer is null)
        {
            Refused(error, "ReadResponse");
            if (!error!.StartsWith("malformed", StringComparison.Ordinal))
                throw new FuzzFindingException($"a genuine RESPONSE was refused for something else than its hello: {error}");
            return;
        }
        var (read, keys) = answer.Value;
        Check(read);
        var encoded = NoiseHandshake.Encode(read);
        if (!encoded.AsSpan().SequenceEqual(hello))
            throw new FuzzFindingException($"accepted hello {read} encodes to {Convert.ToHexString(encoded)}, not the {Convert.ToHexString(hello)} sent");
        if (!keys.Send.AsSpan().SequenceEqual(initiatorToResponder) || !keys.Receive.AsSpan().SequenceEqual(responderToInitiator))
            throw new FuzzFindingException("the two sides of one handshake derived different keys");
        if (!new SessionKeys(responderToInitiator, initiatorToResponder).ConfirmsInitiator(keys.InitiatorConfirmation()))
            throw new FuzzFindingException("the responder refuses the initiator's CONFIRM of the same handshake");
    }

    // ---------------------------------------------------------------- CONFIRM, REJECT, framing

    /// <summary>Mode 4: the responder's check of a CONFIRM for the fixed session.</summary>
    private static void Confirm(ReadOnlySpan<byte> confirmation)
    {
        var expected = Fixed.InitiatorKeys.InitiatorConfirmation();
        if (Fixed.ResponderKeys.ConfirmsInitiator(confirmation) != confirmation.SequenceEqual(expected))
            throw new FuzzFindingException($"ConfirmsInitiator is wrong about {Convert.ToHexString(confirmation)}");
    }

    /// <summary>A REJECT's payload: the initiator logs the peer's reason (LinkManager.Initiate).</summary>
    private static void Reject(ReadOnlySpan<byte> payload)
    {
        var reason = LogText.Safe(Encoding.UTF8.GetString(payload));
        if (reason.Length > LogText.MaxLength + 1)
            throw new FuzzFindingException($"a logged reason of {reason.Length} characters");
        for (var i = 0; i < reason.Length; i++)
        {
            var c = reason[i];
            if (char.IsHighSurrogate(c) && i + 1 < reason.Length && char.IsLowSurrogate(reason[i + 1]))
            {
                i++;
                continue;
            }
            if (char.IsControl(c) || char.IsSurrogate(c) || char.GetUnicodeCategory(c) is
                    System.Globalization.UnicodeCategory.LineSeparator or System.Globalization.UnicodeCategory.ParagraphSeparator or
                    System.Globalization.UnicodeCategory.Format)
                throw new FuzzFindingException($"a logged reason keeps U+{(int)c:X4}");
        }
    }

    /// <summary>Mode 5: messages framed as HandshakeChannel.ReadAsync reads them from a TCP stream.</summary>
    private static void Stream(ReadOnlySpan<byte> stream)
    {
        for (var i = 0; i < MaxMessages; i++)
        {
            // Fewer bytes than the header or payload says: "the peer closed the connection during the handshake".
            if (stream.Length < Wire.HeaderSize)
                return;
            var wireError = Wire.TryRead(stream[..Wire.HeaderSize], out var header);
            if (wireError != WireError.None)
            {
                if (string.IsNullOrEmpty(Wire.Describe(wireError)) || Wire.Describe(wireError) == Wire.Describe(WireError.None))
                    throw new FuzzFindingException($"{wireError} has no description");
                return;
            }
            if (header.PayloadLength > HandshakeChannel.MaxHandshakePayload)
                return;
            if (stream.Length < Wire.HeaderSize + header.PayloadLength)
                return;
            var payload = stream.Slice(Wire.HeaderSize, header.PayloadLength);
            stream = stream[(Wire.HeaderSize + header.PayloadLength)..];
            switch (header.Type)
            {
                case MessageType.HandshakeInit:
                    var init = payload.ToArray();
                    if (init.Length > NoiseHandshake.Mac1Size)
                        NoiseHandshake.Mac1(ResponderKey.Public, init.AsSpan(NoiseHandshake.Mac1Size)).CopyTo(init, 0);
                    Respond(init, null, default);
                    break;
                case MessageType.HandshakeResponse:
                    FixedInitiatorReads(payload);
                    break;
                case MessageType.HandshakeConfirm:
                    Confirm(payload);
                    break;
                case MessageType.Reject:
                    Reject(payload);
                    break;
                default:
                    // "expected a handshake, got ...": the connection ends.
                    return;
            }
        }
    }

    // ---------------------------------------------------------------- tool INIT replay memory

    /// <summary>Mode 6: (key, timestamp, ephemeral) records for one RecentTimestamps.</summary>
    private static void Timestamps(ReadOnlySpan<byte> records)
    {
        var recent = new RecentTimestamps();
        var accepted = new HashSet<(byte, ulong, ulong)>();
        var newest = new Dictionary<byte, ulong>();
        ulong timestamp = 1_750_000_000_000_000_000;
        for (var n = 0; n < MaxTimestamps && records.Length > 0; n++)
        {
            var kind = records[0];
            var absolute = (kind & 0x80) != 0;
            var need = 1 + (absolute ? 8 : 4) + 8;
            if (records.Length < need)
                return;
            timestamp = absolute
                ? BinaryPrimitives.ReadUInt64BigEndian(records[1..])
                : unchecked(timestamp + (ulong)((long)BinaryPrimitives.ReadInt32BigEndian(records[1..]) * 1_000_000));
            var ephemeral = BinaryPrimitives.ReadUInt64BigEndian(records[(need - 8)..]);
            records = records[need..];
            var key = (byte)(kind & 0x7F);
            var fresh = recent.IsFresh(Keys[key], timestamp, ephemeral);
            if (fresh && !accepted.Add((key, timestamp, ephemeral)))
                throw new FuzzFindingException($"key {key}: the INIT of timestamp {timestamp}, ephemeral {ephemeral:x16} was taken twice (a replay)");
            var hasNewest = newest.TryGetValue(key, out var last);
            if (!fresh && (!hasNewest || timestamp > last))
                throw new FuzzFindingException($"key {key}: an INIT newer than every one before (timestamp {timestamp}) was refused");
            if (fresh && (!hasNewest || timestamp > last))
                newest[key] = timestamp;
        }
    }

    /// <summary>128 distinct public keys (fewer than RecentTimestamps.MaxKeys, which would start over).</summary>
    private static readonly PublicKeyId[] Keys = [.. Enumerable.Range(0, 128).Select(i =>
    {
        var bytes = new byte[PublicKeyId.Size];
        bytes[0] = (byte)i;
        bytes[31] = 0x40;
        return PublicKeyId.FromBytes(bytes);
    })];

    // ---------------------------------------------------------------- checks and encodings

    private static void Refused(string? error, string what)
    {
        if (string.IsNullOrEmpty(error))
            throw new FuzzFindingException($"{what} refused without a reason");
    }

    private static void Check(InitiatorHello hello)
    {
        if (!Names.IsValid(hello.Name) || hello.Role > DaemonRole.Tool || hello.Transport > LinkTransport.Udp || hello.Session == 0)
            throw new FuzzFindingException($"accepted a malformed initiator hello: {hello}");
    }

    private static void Check(ResponderHello hello)
    {
        if (!Names.IsValid(hello.Name) || hello.Role > DaemonRole.Tool || hello.Session == 0)
            throw new FuzzFindingException($"accepted a malformed responder hello: {hello}");
    }

    private static byte[] Frame(MessageType type, uint session, ReadOnlySpan<byte> payload, MessageFlags flags = MessageFlags.None)
    {
        var message = new byte[Wire.HeaderSize + payload.Length];
        Wire.Write(message, new LinkHeader(type, flags, 0, session, payload.Length));
        payload.CopyTo(message.AsSpan(Wire.HeaderSize));
        return message;
    }

    public override IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        static byte[] Mode(int mode, params byte[][] parts) => [(byte)mode, .. parts.SelectMany(p => p)];
        var confirmation = Fixed.InitiatorKeys.InitiatorConfirmation();
        var toolHello = new InitiatorHello("admin", DaemonRole.Tool, LinkTransport.Tcp, false, 7, 1_750_000_000_000_000_000);

        yield return ("init-fixed-mac1", Mode(0, Fixed.Init[NoiseHandshake.Mac1Size..]));
        yield return ("init-short", Mode(0, Fixed.Init.AsSpan(NoiseHandshake.Mac1Size, 40).ToArray()));
        // An all-zero ephemeral key: a low-order point, refused at the first Diffie-Hellman.
        yield return ("init-low-order-ephemeral", Mode(0, new byte[32], Fixed.Init[(NoiseHandshake.Mac1Size + 32)..]));
        yield return ("hello-host-udp-star", Mode(1, NoiseHandshake.Encode(FixedHello with { Star = true })));
        yield return ("hello-proxy-tcp", Mode(1, NoiseHandshake.Encode(new InitiatorHello("proxy", DaemonRole.Proxy, LinkTransport.Tcp, false, 0xfffffffe, 1))));
        yield return ("hello-tool", Mode(1, NoiseHandshake.Encode(toolHello)));
        yield return ("hello-version-1", Mode(1, [1, .. NoiseHandshake.Encode(FixedHello)[1..]]));
        yield return ("hello-bad-name", Mode(1, [.. NoiseHandshake.Encode(FixedHello)[..16], 3, (byte)'a', 0xC3, 0x28]));
        yield return ("response-fixed", Mode(2, Fixed.Response));
        yield return ("response-flipped", Mode(2, [.. Fixed.Response[..^1], (byte)(Fixed.Response[^1] ^ 1)]));
        yield return ("answer-proxy", Mode(3, NoiseHandshake.Encode(FixedAnswer)));
        yield return ("answer-host-long-name", Mode(3, NoiseHandshake.Encode(new ResponderHello(new string('h', 32), DaemonRole.Host, 1))));
        yield return ("answer-session-0", Mode(3, NoiseHandshake.Encode(FixedAnswer with { Session = 0 })));
        yield return ("confirm-fixed", Mode(4, confirmation));
        yield return ("confirm-short", Mode(4, confirmation[..16]));
        yield return ("stream-session", Mode(5, Frame(MessageType.HandshakeInit, 0, Fixed.Init),
            Frame(MessageType.HandshakeResponse, FixedHello.Session, Fixed.Response),
            Frame(MessageType.HandshakeConfirm, FixedAnswer.Session, confirmation)));
        yield return ("stream-reject", Mode(5, Frame(MessageType.Reject, FixedHello.Session, "not admitted"u8),
            Frame(MessageType.Reject, FixedHello.Session, [.. "\u001b[2J\r\nforged line \u202eevil"u8, 0xED, 0xA0, 0x80])));
        yield return ("stream-sealed-data", Mode(5, Frame(MessageType.Data, 9, new byte[24], MessageFlags.Encrypted)));
        static byte[] Stamp(byte key, ulong timestamp, ulong ephemeral)
        {
            var b = new byte[17];
            b[0] = (byte)(key | 0x80);
            BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(1), timestamp);
            BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(9), ephemeral);
            return b;
        }
        static byte[] After(byte key, int milliseconds, ulong ephemeral)
        {
            var b = new byte[13];
            b[0] = key;
            BinaryPrimitives.WriteInt32BigEndian(b.AsSpan(1), milliseconds);
            BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(5), ephemeral);
            return b;
        }
        yield return ("timestamps", Mode(6, Stamp(1, 1_750_000_000_000_000_000, 1), After(1, 0, 2), After(1, 0, 2), After(1, -5, 3),
            After(2, 0, 1), After(1, 61_000, 4), After(1, -60_500, 5), After(1, -1_000, 6)));
        yield return ("init-as-sent", Mode(7, Fixed.Init));
    }
}
