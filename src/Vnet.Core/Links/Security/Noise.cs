using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using NSec.Cryptography;

namespace Vnet.Links.Security;

/// <summary>
/// Noise's symmetric state for <c>Noise_IKpsk2_25519_AESGCM_SHA256</c> (the Noise Protocol Framework,
/// revision 34: MixHash, MixKey, MixKeyAndHash, EncryptAndHash, DecryptAndHash, Split), with the
/// framework's HKDF over HMAC-SHA256. Used only during a handshake: allocation is fine here.
/// </summary>
internal sealed class SymmetricState
{
    public const int HashLength = 32;

    private byte[] _ck;
    private byte[] _h;
    private byte[]? _k;
    private ulong _n;

    public SymmetricState(string protocolName, ReadOnlySpan<byte> prologue)
    {
        var name = Encoding.ASCII.GetBytes(protocolName);
        _h = name.Length <= HashLength ? [.. name, .. new byte[HashLength - name.Length]] : SHA256.HashData(name);
        _ck = (byte[])_h.Clone();
        MixHash(prologue);
    }

    public ReadOnlySpan<byte> Hash => _h;

    public void MixHash(ReadOnlySpan<byte> data)
    {
        var buffer = new byte[HashLength + data.Length];
        _h.CopyTo(buffer, 0);
        data.CopyTo(buffer.AsSpan(HashLength));
        _h = SHA256.HashData(buffer);
    }

    public void MixKey(ReadOnlySpan<byte> inputKeyMaterial)
    {
        var (ck, k, _) = Hkdf(_ck, inputKeyMaterial, 2);
        _ck = ck;
        _k = k;
        _n = 0;
    }

    public void MixKeyAndHash(ReadOnlySpan<byte> inputKeyMaterial)
    {
        var (ck, h, k) = Hkdf(_ck, inputKeyMaterial, 3);
        _ck = ck;
        MixHash(h);
        _k = k;
        _n = 0;
    }

    public byte[] EncryptAndHash(ReadOnlySpan<byte> plaintext)
    {
        if (_k is null)
        {
            MixHash(plaintext);
            return plaintext.ToArray();
        }
        var ciphertext = new byte[plaintext.Length + 16];
        using (var aead = new AesGcm(_k, 16))
            aead.Encrypt(Nonce(_n++), plaintext, ciphertext.AsSpan(0, plaintext.Length), ciphertext.AsSpan(plaintext.Length), _h);
        MixHash(ciphertext);
        return ciphertext;
    }

    /// <summary>Null when the ciphertext does not authenticate (wrong keys, a flipped bit).</summary>
    public byte[]? DecryptAndHash(ReadOnlySpan<byte> ciphertext)
    {
        if (_k is null)
        {
            MixHash(ciphertext);
            return ciphertext.ToArray();
        }
        if (ciphertext.Length < 16)
            return null;
        var plaintext = new byte[ciphertext.Length - 16];
        try
        {
            using var aead = new AesGcm(_k, 16);
            aead.Decrypt(Nonce(_n), ciphertext[..plaintext.Length], ciphertext[plaintext.Length..], plaintext, _h);
        }
        catch (AuthenticationTagMismatchException)
        {
            return null;
        }
        _n++;
        MixHash(ciphertext);
        return plaintext;
    }

    /// <summary>The two transport keys: the first for what the initiator sends, the second for what it receives.</summary>
    public (byte[] InitiatorToResponder, byte[] ResponderToInitiator) Split()
    {
        var (k1, k2, _) = Hkdf(_ck, [], 2);
        return (k1, k2);
    }

    /// <summary>AESGCM's Noise nonce: 32 zero bits, then the counter big-endian.</summary>
    public static byte[] Nonce(ulong n)
    {
        var nonce = new byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(nonce.AsSpan(4), n);
        return nonce;
    }

    /// <summary>The framework's HKDF: HMAC-SHA256 extract with the chaining key, then 2 or 3 outputs.</summary>
    public static (byte[] First, byte[] Second, byte[]? Third) Hkdf(ReadOnlySpan<byte> chainingKey, ReadOnlySpan<byte> inputKeyMaterial, int outputs)
    {
        var tempKey = HMACSHA256.HashData(chainingKey, inputKeyMaterial);
        var first = HMACSHA256.HashData(tempKey, new byte[] { 0x01 });
        var second = HMACSHA256.HashData(tempKey, (byte[])[.. first, 0x02]);
        var third = outputs == 3 ? HMACSHA256.HashData(tempKey, (byte[])[.. second, 0x03]) : null;
        CryptographicOperations.ZeroMemory(tempKey);
        return (first, second, third);
    }
}

/// <summary>
/// What the initiator says about itself inside its (encrypted) first message. <paramref name="Stream"/>
/// is which of a link's parallel connections this one is (0 to <see cref="MaxStream"/>; 0 for the
/// link's first, the only one of a link with one stream).
/// </summary>
public sealed record InitiatorHello(string Name, DaemonRole Role, LinkTransport Transport, bool Star, uint Session, ulong Timestamp, byte Stream = 0)
{
    public const byte MaxStream = 7;
}

/// <summary>What the responder says about itself inside its (encrypted) answer.</summary>
public sealed record ResponderHello(string Name, DaemonRole Role, uint Session);

/// <summary>The keys of an established session, one per direction.</summary>
public sealed record SessionKeys(byte[] Send, byte[] Receive)
{
    public const int ConfirmationSize = 32;

    /// <summary>
    /// Key confirmation, the initiator's third message: in IKpsk2 the responder cannot tell from the
    /// INIT whether the initiator holds the preshared key, so it takes a session only once the
    /// initiator proves it derived the same keys. An HMAC under the initiator's send key: it says
    /// nothing of the key, and nobody without the key can make it.
    /// </summary>
    public byte[] InitiatorConfirmation() => System.Security.Cryptography.HMACSHA256.HashData(Send, "vnet2 confirm"u8);

    /// <summary>The responder's check of <see cref="InitiatorConfirmation"/> (in constant time).</summary>
    public bool ConfirmsInitiator(ReadOnlySpan<byte> confirmation)
    {
        Span<byte> expected = stackalloc byte[ConfirmationSize];
        System.Security.Cryptography.HMACSHA256.HashData(Receive, "vnet2 confirm"u8, expected);
        return confirmation.Length == ConfirmationSize && System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(expected, confirmation);
    }

    /// <summary>
    /// The keys of one channel of a session: a UDP link has two with no order between them (its
    /// connection, a stream, and its datagrams), each opened by its own thread, so each has its own
    /// keys and counters. HMAC-SHA256 keyed with a uniformly random key is a PRF, so the derived
    /// keys are independent.
    /// </summary>
    public SessionKeys For(SessionChannel channel)
    {
        var label = channel == SessionChannel.Stream ? "vnet2 stream"u8 : "vnet2 datagram"u8;
        return new SessionKeys(System.Security.Cryptography.HMACSHA256.HashData(Send, label),
            System.Security.Cryptography.HMACSHA256.HashData(Receive, label));
    }
}

/// <summary>The two ways a session's messages travel: in order on its TCP connection, or as datagrams.</summary>
public enum SessionChannel
{
    Stream,
    Datagram,
}

/// <summary>
/// The link handshake: <c>Noise_IKpsk2_25519_AESGCM_SHA256</c>, the pattern WireGuard uses (with
/// AES-GCM and SHA-256 in place of ChaCha20-Poly1305 and BLAKE2s). The initiator knows the
/// responder's static public key in advance (a host pins the Proxy's, and learns other hosts' from
/// the Proxy); one round trip authenticates both static keys, mixes in ephemeral keys (forward
/// secrecy) and the overlay's optional preshared key, and yields one key per direction.
/// <code>
/// prologue "vnet2"; pre-message  &lt;- s
/// initiator -> INIT      mac1(16) | e, es, s, ss, {hello: version, role, transport, star, session, timestamp, name}
/// responder -> RESPONSE  e, ee, se, psk, {hello: version, role, session, name}
/// initiator -> CONFIRM   HMAC-SHA256(initiator's send key, "vnet2 confirm")   (SessionKeys.InitiatorConfirmation)
/// </code>
/// mac1 = HMAC-SHA256(SHA-256("vnet2 mac1" | responder's public key), message)[..16]: a sender who does
/// not even know the responder's public key is dropped before any Diffie-Hellman (as WireGuard's
/// MAC1). The timestamp lets the responder refuse a replayed INIT (it must grow per initiator key).
/// </summary>
public static class NoiseHandshake
{
    public const string ProtocolName = "Noise_IKpsk2_25519_AESGCM_SHA256";
    public const byte Version = 2;
    public const int Mac1Size = 16;
    public const int KeySize = 32;

    private static readonly byte[] Prologue = "vnet2"u8.ToArray();

    /// <summary>Largest handshake message (a name of at most 32 characters fits many times over).</summary>
    public const int MaxMessage = 512;

    private static readonly KeyAgreementAlgorithm X25519 = KeyAgreementAlgorithm.X25519;

    public static byte[] Mac1(PublicKeyId responder, ReadOnlySpan<byte> message)
    {
        var key = SHA256.HashData([.. "vnet2 mac1"u8, .. responder.Bytes]);
        return HMACSHA256.HashData(key, message)[..Mac1Size];
    }

    /// <summary>Checks a message's mac1 in constant time (the responder's first, cheap check).</summary>
    public static bool Mac1Valid(PublicKeyId self, ReadOnlySpan<byte> mac1AndMessage) =>
        mac1AndMessage.Length > Mac1Size &&
        CryptographicOperations.FixedTimeEquals(Mac1(self, mac1AndMessage[Mac1Size..]), mac1AndMessage[..Mac1Size]);

    /// <summary>The first 8 bytes of an INIT's ephemeral public key (right after mac1): what a replay repeats. The INIT was read whole before.</summary>
    public static ulong EphemeralFingerprint(ReadOnlySpan<byte> mac1AndMessage) =>
        System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(mac1AndMessage.Slice(Mac1Size, sizeof(ulong)));

    private static byte[] Dh(Key own, ReadOnlySpan<byte> theirs)
    {
        if (!NSec.Cryptography.PublicKey.TryImport(X25519, theirs, KeyBlobFormat.RawPublicKey, out var peer) || peer is null)
            throw new HandshakeException("not an X25519 public key");
        using var secret = X25519.Agree(own, peer, new SharedSecretCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport })
            ?? throw new HandshakeException("a degenerate public key");
        return secret.Export(SharedSecretBlobFormat.RawSharedSecret);
    }

    private static Key Ephemeral() =>
        Key.Create(X25519, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });

    private static byte[] Public(Key key) => key.PublicKey.Export(KeyBlobFormat.RawPublicKey);

    /// <summary>The initiator's side: <see cref="CreateInit"/>, then <see cref="ReadResponse"/>.</summary>
    public sealed class Initiator : IDisposable
    {
        private readonly StaticKeyPair _s;
        private readonly PublicKeyId _rs;
        private readonly PresharedKey _psk;
        private readonly SymmetricState _state;
        private Key? _e;

        public Initiator(StaticKeyPair self, PublicKeyId responder, PresharedKey psk)
            : this(self, responder, psk, Prologue, null)
        {
        }

        /// <summary>With a given prologue and ephemeral key: for the framework's test vectors only.</summary>
        internal Initiator(StaticKeyPair self, PublicKeyId responder, PresharedKey psk, ReadOnlySpan<byte> prologue, Key? ephemeral)
        {
            _s = self;
            _rs = responder;
            _psk = psk;
            _e = ephemeral;
            _state = new SymmetricState(ProtocolName, prologue);
            _state.MixHash(responder.Bytes);
        }

        internal ReadOnlySpan<byte> HandshakeHash => _state.Hash;

        /// <summary>The INIT payload: mac1 followed by the Noise message.</summary>
        public byte[] CreateInit(InitiatorHello hello)
        {
            var message = WriteFirst(Encode(hello));
            return [.. Mac1(_rs, message), .. message];
        }

        /// <summary>-> e, es, s, ss, {payload}</summary>
        internal byte[] WriteFirst(ReadOnlySpan<byte> payload)
        {
            _e ??= Ephemeral();
            var e = Public(_e);
            _state.MixHash(e);
            _state.MixKey(e);
            _state.MixKey(Dh(_e, _rs.Bytes));
            var s = _state.EncryptAndHash(_s.Public.Bytes);
            _state.MixKey(Dh(_s.Key, _rs.Bytes));
            var sealedPayload = _state.EncryptAndHash(payload);
            return [.. e, .. s, .. sealedPayload];
        }

        /// <summary>Reads the RESPONSE; the responder's hello and the session keys, or null with the reason.</summary>
        public (ResponderHello Hello, SessionKeys Keys)? ReadResponse(ReadOnlySpan<byte> message, out string? error)
        {
            var payload = ReadSecond(message, out error);
            if (payload is null)
                return null;
            var hello = DecodeResponder(payload, out error);
            if (hello is null)
                return null;
            var (send, receive) = _state.Split();
            return (hello, new SessionKeys(send, receive));
        }

        /// <summary>&lt;- e, ee, se, psk, {payload}</summary>
        internal byte[]? ReadSecond(ReadOnlySpan<byte> message, out string? error)
        {
            error = null;
            if (_e is null)
                throw new InvalidOperationException("no INIT was created");
            if (message.Length < KeySize + 16)
            {
                error = "the response is too short";
                return null;
            }
            var re = message[..KeySize];
            _state.MixHash(re);
            _state.MixKey(re);
            try
            {
                _state.MixKey(Dh(_e, re));
                _state.MixKey(Dh(_s.Key, re));
            }
            catch (HandshakeException e)
            {
                error = e.Message;
                return null;
            }
            _state.MixKeyAndHash(_psk.Bytes);
            var payload = _state.DecryptAndHash(message[KeySize..]);
            if (payload is null)
                error = "the response does not authenticate (not the pinned key, or another preshared key)";
            return payload;
        }

        internal (byte[] Send, byte[] Receive) Split() => _state.Split();

        public void Dispose() => _e?.Dispose();
    }

    /// <summary>The responder's side: <see cref="ReadInit"/>, the caller's admission check, then <see cref="CreateResponse"/>.</summary>
    public sealed class Responder : IDisposable
    {
        private readonly StaticKeyPair _s;
        private readonly PresharedKey _psk;
        private readonly SymmetricState _state;
        private readonly Key? _fixedEphemeral;
        private byte[]? _re;
        private byte[]? _rs;

        public Responder(StaticKeyPair self, PresharedKey psk)
            : this(self, psk, Prologue, null)
        {
        }

        /// <summary>With a given prologue and ephemeral key: for the framework's test vectors only.</summary>
        internal Responder(StaticKeyPair self, PresharedKey psk, ReadOnlySpan<byte> prologue, Key? ephemeral)
        {
            _s = self;
            _psk = psk;
            _fixedEphemeral = ephemeral;
            _state = new SymmetricState(ProtocolName, prologue);
            _state.MixHash(self.Public.Bytes);
        }

        internal ReadOnlySpan<byte> HandshakeHash => _state.Hash;

        /// <summary>
        /// Reads an INIT (mac1 and the Noise message): the initiator's static key and hello, or null
        /// with the reason. The caller decides whether that key may be that name.
        /// </summary>
        public (PublicKeyId Initiator, InitiatorHello Hello)? ReadInit(ReadOnlySpan<byte> mac1AndMessage, out string? error)
        {
            error = null;
            if (!Mac1Valid(_s.Public, mac1AndMessage))
            {
                error = "bad mac1 (the sender does not know this daemon's public key)";
                return null;
            }
            var read = ReadFirst(mac1AndMessage[Mac1Size..], out error);
            if (read is null)
                return null;
            var hello = DecodeInitiator(read.Value.Payload, out error);
            return hello is null ? null : (read.Value.Initiator, hello);
        }

        /// <summary>-> e, es, s, ss, {payload}: the initiator's static key and the payload, or null.</summary>
        internal (PublicKeyId Initiator, byte[] Payload)? ReadFirst(ReadOnlySpan<byte> message, out string? error)
        {
            error = null;
            if (message.Length < KeySize + KeySize + 16 + 16)
            {
                error = "the handshake is too short";
                return null;
            }
            var re = message[..KeySize];
            _state.MixHash(re);
            _state.MixKey(re);
            try
            {
                _state.MixKey(Dh(_s.Key, re));
                var rs = _state.DecryptAndHash(message.Slice(KeySize, KeySize + 16));
                if (rs is null)
                {
                    error = "the handshake does not authenticate";
                    return null;
                }
                _state.MixKey(Dh(_s.Key, rs));
                var payload = _state.DecryptAndHash(message[(KeySize + KeySize + 16)..]);
                if (payload is null)
                {
                    error = "the handshake does not authenticate";
                    return null;
                }
                _re = re.ToArray();
                _rs = rs;
                return (PublicKeyId.FromBytes(rs), payload);
            }
            catch (HandshakeException e)
            {
                error = e.Message;
                return null;
            }
        }

        /// <summary>The RESPONSE message and the session keys.</summary>
        public (byte[] Message, SessionKeys Keys) CreateResponse(ResponderHello hello)
        {
            var message = WriteSecond(Encode(hello));
            var (receive, send) = _state.Split();
            return (message, new SessionKeys(send, receive));
        }

        /// <summary>&lt;- e, ee, se, psk, {payload}</summary>
        internal byte[] WriteSecond(ReadOnlySpan<byte> payload)
        {
            if (_re is null || _rs is null)
                throw new InvalidOperationException("no INIT was read");
            var e = _fixedEphemeral ?? Ephemeral();
            try
            {
                var ePublic = Public(e);
                _state.MixHash(ePublic);
                _state.MixKey(ePublic);
                _state.MixKey(Dh(e, _re));
                _state.MixKey(Dh(e, _rs));
                _state.MixKeyAndHash(_psk.Bytes);
                var sealedPayload = _state.EncryptAndHash(payload);
                return [.. ePublic, .. sealedPayload];
            }
            finally
            {
                if (_fixedEphemeral is null)
                    e.Dispose();
            }
        }

        internal (byte[] InitiatorToResponder, byte[] ResponderToInitiator) Split() => _state.Split();

        public void Dispose()
        {
        }
    }

    // ---------------------------------------------------------------- payloads

    /// <summary>
    /// The initiator's hello as the protocol lays it out: version, role, transport, star and stream
    /// (bit 0: star; bits 4-6: the stream, 0 for a link's first connection, so that hello is the
    /// byte it always was), session, timestamp, name.
    /// </summary>
    internal static byte[] Encode(InitiatorHello h)
    {
        var name = Encoding.UTF8.GetBytes(h.Name);
        var b = new byte[1 + 1 + 1 + 1 + 4 + 8 + 1 + name.Length];
        b[0] = Version;
        b[1] = (byte)h.Role;
        b[2] = (byte)h.Transport;
        b[3] = (byte)((h.Star ? 1 : 0) | (h.Stream << 4));
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(4), h.Session);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(8), h.Timestamp);
        b[16] = (byte)name.Length;
        name.CopyTo(b, 17);
        return b;
    }

    /// <summary>The responder's hello: version, role, session, name.</summary>
    internal static byte[] Encode(ResponderHello h)
    {
        var name = Encoding.UTF8.GetBytes(h.Name);
        var b = new byte[1 + 1 + 4 + 1 + name.Length];
        b[0] = Version;
        b[1] = (byte)h.Role;
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(2), h.Session);
        b[6] = (byte)name.Length;
        name.CopyTo(b, 7);
        return b;
    }

    private static InitiatorHello? DecodeInitiator(ReadOnlySpan<byte> p, out string? error)
    {
        error = null;
        if (p.Length < 17 || p[0] != Version)
        {
            error = p.Length > 0 && p[0] != Version ? $"protocol version {p[0]}, this daemon speaks {Version}" : "malformed hello";
            return null;
        }
        // Byte 3: star in bit 0, the stream in bits 4-6; any other bit set is malformed.
        if (p[1] > (byte)DaemonRole.Tool || p[2] > (byte)LinkTransport.Udp || (p[3] & 0x8e) != 0 || p[16] != p.Length - 17)
        {
            error = "malformed hello";
            return null;
        }
        var name = DecodeName(p[17..], out error);
        if (name is null)
            return null;
        var session = BinaryPrimitives.ReadUInt32BigEndian(p[4..]);
        if (session == 0)
        {
            error = "malformed hello (session 0)";
            return null;
        }
        return new InitiatorHello(name, (DaemonRole)p[1], (LinkTransport)p[2], (p[3] & 1) == 1, session, BinaryPrimitives.ReadUInt64BigEndian(p[8..]),
            (byte)(p[3] >> 4));
    }

    private static ResponderHello? DecodeResponder(ReadOnlySpan<byte> p, out string? error)
    {
        error = null;
        if (p.Length < 7 || p[0] != Version || p[1] > (byte)DaemonRole.Tool || p[6] != p.Length - 7)
        {
            error = "malformed hello";
            return null;
        }
        var name = DecodeName(p[7..], out error);
        var session = BinaryPrimitives.ReadUInt32BigEndian(p[2..]);
        if (name is null || session == 0)
        {
            error ??= "malformed hello (session 0)";
            return null;
        }
        return new ResponderHello(name, (DaemonRole)p[1], session);
    }

    private static string? DecodeName(ReadOnlySpan<byte> bytes, out string? error)
    {
        error = null;
        string name;
        try
        {
            name = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            error = "malformed name";
            return null;
        }
        if (!Forwarding.Names.IsValid(name))
        {
            error = "malformed name";
            return null;
        }
        return name;
    }

    /// <summary>Now as the INIT timestamp: nanoseconds since 1970, coarsened to a millisecond (no fine timing leaks).</summary>
    public static ulong Timestamp() => (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000UL;
}
