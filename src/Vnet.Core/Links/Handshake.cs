using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Vnet.Forwarding;

namespace Vnet.Links;

public enum DaemonRole : byte
{
    Host = 0,
    Proxy = 1,

    /// <summary>The vnet CLI controlling a daemon over TCP with the network key: no link, commands only.</summary>
    Tool = 2,
}

public enum LinkTransport : byte
{
    Tcp = 0,
    Udp = 1,
}

/// <summary>Who is at the other end of an authenticated link, and the secrets of this session.</summary>
public sealed record PeerIdentity(
    string Name,
    DaemonRole Role,
    LinkTransport Transport,
    bool Star,
    uint RemoteSession,
    byte[] SessionKey);

/// <summary>
/// Mutual authentication with the network key, never sending it: a challenge-response over both
/// sides' random nonces, bound to everything both sides said.
/// <code>
/// initiator -> HELLO     version range, nonce_i, role, star?, transport, session_i, name_i
/// responder -> CHALLENGE nonce_r, role, session_r, name_r, proof_r = HMAC(K, "vnet1 responder" | transcript)
/// initiator -> AUTH      proof_i = HMAC(K, "vnet1 initiator" | transcript)
/// responder -> WELCOME   (or REJECT with a reason)
/// transcript = HELLO payload | CHALLENGE payload without its proof
/// </code>
/// Each side checks the other's proof in constant time; a replayed transcript fails because the
/// other side's nonce is fresh. The session key (for the later encrypted revision) is
/// HMAC(K, "vnet1 session" | transcript).
/// </summary>
public static class Handshake
{
    public const int NonceSize = 32;
    public const int ProofSize = 32;
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    public sealed class Initiator
    {
        private readonly NetworkKey _key;
        private readonly string _name;
        private byte[]? _hello;
        private byte[]? _transcript;

        public Initiator(NetworkKey key, string name, DaemonRole role, LinkTransport transport, bool star, uint localSession)
        {
            _key = key;
            _name = name;
            Role = role;
            Transport = transport;
            Star = star;
            LocalSession = localSession;
        }

        public DaemonRole Role { get; }

        public LinkTransport Transport { get; }

        public bool Star { get; }

        public uint LocalSession { get; }

        public byte[] CreateHello()
        {
            var name = Encoding.UTF8.GetBytes(_name);
            var hello = new byte[2 + NonceSize + 3 + 4 + 1 + name.Length];
            hello[0] = Wire.Version;
            hello[1] = Wire.Version;
            RandomNumberGenerator.Fill(hello.AsSpan(2, NonceSize));
            var o = 2 + NonceSize;
            hello[o++] = (byte)Role;
            hello[o++] = Star ? (byte)1 : (byte)0;
            hello[o++] = (byte)Transport;
            BinaryPrimitives.WriteUInt32BigEndian(hello.AsSpan(o), LocalSession);
            o += 4;
            hello[o++] = (byte)name.Length;
            name.CopyTo(hello, o);
            _hello = hello;
            return hello;
        }

        /// <summary>Checks the responder's proof; on success returns the AUTH payload.</summary>
        public byte[]? OnChallenge(ReadOnlySpan<byte> challenge, out PeerIdentity? peer, out string? error)
        {
            peer = null;
            if (_hello is null)
                throw new InvalidOperationException("CreateHello first");
            if (!TryParseChallenge(challenge, out var role, out var session, out var name, out error))
                return null;
            if (name == _name)
            {
                error = $"the peer calls itself '{name}', which is this daemon's own name";
                return null;
            }
            var body = challenge[..^ProofSize];
            _transcript = [.. _hello, .. body];
            var expected = Proof(_key, "vnet1 responder", _transcript);
            if (!CryptographicOperations.FixedTimeEquals(expected, challenge[^ProofSize..]))
            {
                error = "the peer does not hold the network key (bad proof)";
                return null;
            }
            peer = new PeerIdentity(name, role, Transport, Star, session, Proof(_key, "vnet1 session", _transcript));
            return Proof(_key, "vnet1 initiator", _transcript);
        }
    }

    public sealed class Responder
    {
        private readonly NetworkKey _key;
        private readonly string _name;
        private readonly DaemonRole _role;
        private readonly uint _localSession;
        private byte[]? _transcript;
        private PeerIdentity? _peer;

        public Responder(NetworkKey key, string name, DaemonRole role, uint localSession)
        {
            _key = key;
            _name = name;
            _role = role;
            _localSession = localSession;
        }

        /// <summary>Parses HELLO; on success returns the CHALLENGE payload.</summary>
        public byte[]? OnHello(ReadOnlySpan<byte> hello, out string? error)
        {
            error = null;
            if (hello.Length < 2 + NonceSize + 3 + 4 + 2)
            {
                error = "HELLO too short";
                return null;
            }
            if (hello[0] > Wire.Version || hello[1] < Wire.Version)
            {
                error = $"no common protocol version (peer speaks {hello[0]}..{hello[1]}, this daemon {Wire.Version})";
                return null;
            }
            var o = 2 + NonceSize;
            var role = hello[o++];
            var star = hello[o++];
            var transport = hello[o++];
            var session = BinaryPrimitives.ReadUInt32BigEndian(hello.Slice(o));
            o += 4;
            var nameLength = hello[o++];
            if (role > 2 || star > 1 || transport > 1 || hello.Length != o + nameLength)
            {
                error = "malformed HELLO";
                return null;
            }
            var name = DecodeName(hello.Slice(o, nameLength));
            if (name is null)
            {
                error = "HELLO carries an invalid daemon name";
                return null;
            }
            if (name == _name)
            {
                error = $"the peer calls itself '{name}', which is this daemon's own name";
                return null;
            }

            var own = Encoding.UTF8.GetBytes(_name);
            var body = new byte[NonceSize + 1 + 4 + 1 + own.Length];
            RandomNumberGenerator.Fill(body.AsSpan(0, NonceSize));
            var b = NonceSize;
            body[b++] = (byte)_role;
            BinaryPrimitives.WriteUInt32BigEndian(body.AsSpan(b), _localSession);
            b += 4;
            body[b++] = (byte)own.Length;
            own.CopyTo(body, b);

            _transcript = [.. hello, .. body];
            _peer = new PeerIdentity(name, (DaemonRole)role, (LinkTransport)transport, star == 1, session,
                Proof(_key, "vnet1 session", _transcript));
            return [.. body, .. Proof(_key, "vnet1 responder", _transcript)];
        }

        /// <summary>Checks the initiator's proof; the peer is authenticated when this returns it.</summary>
        public PeerIdentity? OnAuth(ReadOnlySpan<byte> auth, out string? error)
        {
            error = null;
            if (_transcript is null || _peer is null)
                throw new InvalidOperationException("OnHello first");
            if (auth.Length != ProofSize)
            {
                error = "malformed AUTH";
                return null;
            }
            var expected = Proof(_key, "vnet1 initiator", _transcript);
            if (!CryptographicOperations.FixedTimeEquals(expected, auth))
            {
                error = "the peer does not hold the network key (bad proof)";
                return null;
            }
            return _peer;
        }
    }

    private static bool TryParseChallenge(ReadOnlySpan<byte> c, out DaemonRole role, out uint session, out string name, out string? error)
    {
        role = default;
        session = 0;
        name = "";
        error = null;
        if (c.Length < NonceSize + 1 + 4 + 2 + ProofSize)
        {
            error = "CHALLENGE too short";
            return false;
        }
        var o = NonceSize;
        var r = c[o++];
        session = BinaryPrimitives.ReadUInt32BigEndian(c.Slice(o));
        o += 4;
        var nameLength = c[o++];
        if (r > 1 || c.Length != o + nameLength + ProofSize)
        {
            error = "malformed CHALLENGE";
            return false;
        }
        var decoded = DecodeName(c.Slice(o, nameLength));
        if (decoded is null)
        {
            error = "CHALLENGE carries an invalid daemon name";
            return false;
        }
        role = (DaemonRole)r;
        name = decoded;
        return true;
    }

    private static string? DecodeName(ReadOnlySpan<byte> bytes)
    {
        string name;
        try
        {
            name = new UTF8Encoding(false, true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return null;
        }
        return Names.IsValid(name) ? name : null;
    }

    private static byte[] Proof(NetworkKey key, string label, byte[] transcript)
    {
        var l = Encoding.ASCII.GetBytes(label);
        return key.Mac([.. l, .. transcript]);
    }
}
