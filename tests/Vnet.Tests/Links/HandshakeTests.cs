using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Vnet.Links;

namespace Vnet.Tests.Links;

/// <summary>
/// The handshake as pure functions: an initiator and a responder exchange byte arrays, and the test
/// plays the network in between, so it can replay, tamper and forge. Proofs are recomputed here from
/// the documented construction (HMAC-SHA256 over a label and the transcript) to pin the format.
/// </summary>
public sealed class HandshakeTests
{
    private const int HelloNonce = 2;
    private const int HelloRole = HelloNonce + Handshake.NonceSize;
    private const int HelloStar = HelloRole + 1;
    private const int HelloTransport = HelloStar + 1;
    private const int HelloSession = HelloTransport + 1;
    private const int HelloNameLength = HelloSession + 4;
    private const int HelloName = HelloNameLength + 1;

    private const int ChallengeRole = Handshake.NonceSize;
    private const int ChallengeSession = ChallengeRole + 1;
    private const int ChallengeNameLength = ChallengeSession + 4;
    private const int ChallengeName = ChallengeNameLength + 1;

    private static readonly byte[] KeyBytes = [.. Enumerable.Range(0, NetworkKey.Size).Select(i => (byte)(0xA0 + i))];
    private static readonly NetworkKey Key = NetworkKey.Parse(Convert.ToBase64String(KeyBytes));
    private static readonly NetworkKey OtherKey = NetworkKey.Generate();

    // Success.

    [Theory]
    [InlineData(DaemonRole.Host, DaemonRole.Proxy, LinkTransport.Tcp, true)]
    [InlineData(DaemonRole.Host, DaemonRole.Proxy, LinkTransport.Udp, true)]
    [InlineData(DaemonRole.Host, DaemonRole.Host, LinkTransport.Tcp, false)]
    [InlineData(DaemonRole.Host, DaemonRole.Host, LinkTransport.Udp, false)]
    [InlineData(DaemonRole.Proxy, DaemonRole.Host, LinkTransport.Udp, false)]
    public void Run_SameKey_BothSidesSeeEachOtherAndAgreeOnTheSessionKey(
        DaemonRole initiatorRole, DaemonRole responderRole, LinkTransport transport, bool star)
    {
        var initiator = new Handshake.Initiator(Key, "host-1", initiatorRole, transport, star, 0x1111_1111);
        var responder = new Handshake.Responder(Key, "proxy.lan", responderRole, 0x2222_2222);

        var challenge = responder.OnHello(initiator.CreateHello(), out var helloError);
        Assert.Null(helloError);
        Assert.NotNull(challenge);
        var auth = initiator.OnChallenge(challenge, out var seenByInitiator, out var challengeError);
        Assert.Null(challengeError);
        Assert.NotNull(auth);
        var seenByResponder = responder.OnAuth(auth, out var authError);
        Assert.Null(authError);

        Assert.NotNull(seenByInitiator);
        Assert.NotNull(seenByResponder);
        Assert.Equal("proxy.lan", seenByInitiator.Name);
        Assert.Equal(responderRole, seenByInitiator.Role);
        Assert.Equal(0x2222_2222u, seenByInitiator.RemoteSession);
        Assert.Equal("host-1", seenByResponder.Name);
        Assert.Equal(initiatorRole, seenByResponder.Role);
        Assert.Equal(0x1111_1111u, seenByResponder.RemoteSession);
        // Transport and star are the initiator's choice; both sides must run the link the same way.
        Assert.Equal(transport, seenByInitiator.Transport);
        Assert.Equal(transport, seenByResponder.Transport);
        Assert.Equal(star, seenByInitiator.Star);
        Assert.Equal(star, seenByResponder.Star);
        Assert.Equal(32, seenByInitiator.SessionKey.Length);
        Assert.Equal(seenByInitiator.SessionKey, seenByResponder.SessionKey);
    }

    [Fact]
    public void Run_Twice_SessionKeysAndNoncesDiffer()
    {
        var first = Run(Key, Key);
        var second = Run(Key, Key);

        Assert.NotEqual(first.InitiatorPeer!.SessionKey, second.InitiatorPeer!.SessionKey);
        Assert.NotEqual(first.Hello.AsSpan(HelloNonce, Handshake.NonceSize).ToArray(), second.Hello.AsSpan(HelloNonce, Handshake.NonceSize).ToArray());
        Assert.NotEqual(first.Challenge!.AsSpan(0, Handshake.NonceSize).ToArray(), second.Challenge!.AsSpan(0, Handshake.NonceSize).ToArray());
    }

    [Fact]
    public void Run_SameKey_ProofsFollowTheDocumentedConstruction()
    {
        var run = Run(Key, Key);

        var transcript = Transcript(run.Hello, run.Challenge!);
        Assert.Equal(Proof(KeyBytes, "vnet1 responder", transcript), run.Challenge![^Handshake.ProofSize..]);
        Assert.Equal(Proof(KeyBytes, "vnet1 initiator", transcript), run.Auth);
        Assert.Equal(Proof(KeyBytes, "vnet1 session", transcript), run.InitiatorPeer!.SessionKey);
    }

    [Fact]
    public void CreateHello_Layout_CarriesVersionRangeRoleStarTransportSessionAndName()
    {
        var hello = new Handshake.Initiator(Key, "abc", DaemonRole.Proxy, LinkTransport.Udp, star: true, 0x0A0B_0C0D).CreateHello();

        Assert.Equal(HelloName + 3, hello.Length);
        Assert.Equal(Wire.Version, hello[0]);
        Assert.Equal(Wire.Version, hello[1]);
        Assert.Equal(1, hello[HelloRole]);
        Assert.Equal(1, hello[HelloStar]);
        Assert.Equal(1, hello[HelloTransport]);
        Assert.Equal(0x0A0B_0C0Du, BinaryPrimitives.ReadUInt32BigEndian(hello.AsSpan(HelloSession)));
        Assert.Equal(3, hello[HelloNameLength]);
        Assert.Equal("abc"u8.ToArray(), hello[HelloName..]);
    }

    // Wrong key.

    [Fact]
    public void OnChallenge_ResponderHasOtherKey_InitiatorRefusesWithBadProof()
    {
        var run = Run(initiatorKey: Key, responderKey: OtherKey);

        Assert.Null(run.Auth);
        Assert.Null(run.InitiatorPeer);
        Assert.Equal("the peer does not hold the network key (bad proof)", run.InitiatorError);
    }

    [Fact]
    public void OnAuth_InitiatorHasOtherKey_ResponderRefusesWithBadProof()
    {
        // An initiator with the wrong key stops at the responder's proof, so an attacker who wants to
        // get further must forge AUTH: the best it can do is a proof under its own key.
        var attackerKey = RandomNumberGenerator.GetBytes(NetworkKey.Size);
        var initiator = new Handshake.Initiator(NetworkKey.Parse(Convert.ToBase64String(attackerKey)), "mallory", DaemonRole.Host, LinkTransport.Tcp, false, 7);
        var responder = new Handshake.Responder(Key, "proxy", DaemonRole.Proxy, 8);
        var hello = initiator.CreateHello();
        var challenge = responder.OnHello(hello, out _)!;
        Assert.Null(initiator.OnChallenge(challenge, out _, out var initiatorError));
        Assert.Contains("bad proof", initiatorError, StringComparison.Ordinal);

        var forged = Proof(attackerKey, "vnet1 initiator", Transcript(hello, challenge));
        var peer = responder.OnAuth(forged, out var error);

        Assert.Null(peer);
        Assert.Equal("the peer does not hold the network key (bad proof)", error);
    }

    [Fact]
    public void Run_AnyOutcome_KeyNeverAppearsInAMessage()
    {
        var good = Run(Key, Key);
        var bad = Run(Key, OtherKey);
        var reverse = Run(OtherKey, Key);
        var base64 = Encoding.ASCII.GetBytes(Key.ToString());

        foreach (var message in new[] { good.Hello, good.Challenge!, good.Auth!, bad.Hello, bad.Challenge!, reverse.Hello, reverse.Challenge! })
        {
            // Any 8-byte piece of the key in a message would be a leak (a random match is 2^-64 likely).
            for (var i = 0; i + 8 <= KeyBytes.Length; i++)
                Assert.True(message.AsSpan().IndexOf(KeyBytes.AsSpan(i, 8)) < 0, $"key bytes {i}..{i + 7} found in a message");
            Assert.True(message.AsSpan().IndexOf(base64.AsSpan(0, 8)) < 0, "the key's base64 found in a message");
        }
    }

    // Replays.

    [Fact]
    public void OnChallenge_ChallengeReplayedFromEarlierRun_Refused()
    {
        var earlier = Run(Key, Key);
        Assert.NotNull(earlier.InitiatorPeer);
        var initiator = NewInitiator();
        initiator.CreateHello();

        var auth = initiator.OnChallenge(earlier.Challenge, out var peer, out var error);

        Assert.Null(auth);
        Assert.Null(peer);
        Assert.Contains("bad proof", error, StringComparison.Ordinal);
    }

    [Fact]
    public void OnAuth_HelloAndAuthReplayedFromEarlierRun_Refused()
    {
        var earlier = Run(Key, Key);
        Assert.NotNull(earlier.ResponderPeer);
        var responder = NewResponder();
        Assert.NotNull(responder.OnHello(earlier.Hello, out _));

        var peer = responder.OnAuth(earlier.Auth, out var error);

        Assert.Null(peer);
        Assert.Contains("bad proof", error, StringComparison.Ordinal);
    }

    // Tampering.

    public static TheoryData<string, int> HelloFields() => new()
    {
        { "nonce", HelloNonce + 5 },
        { "role", HelloRole },
        { "star", HelloStar },
        { "transport", HelloTransport },
        { "session", HelloSession + 3 },
        { "name", HelloName + 1 },
    };

    [Theory]
    [MemberData(nameof(HelloFields))]
    public void OnChallenge_HelloTamperedInTransit_BothProofsFail(string field, int offset)
    {
        var initiator = NewInitiator();
        var responder = NewResponder();
        var hello = initiator.CreateHello();
        // Bit 0 keeps role, star and transport in range and a name character valid ('h' -> 'i').
        var tampered = (byte[])hello.Clone();
        tampered[offset] ^= 1;

        var challenge = responder.OnHello(tampered, out var helloError);
        Assert.True(challenge is not null, $"tampered {field} should still parse: {helloError}");

        Assert.Null(initiator.OnChallenge(challenge, out _, out var error));
        Assert.Contains("bad proof", error, StringComparison.Ordinal);
        // The honest initiator's AUTH (over what it really sent) does not satisfy the responder either.
        Assert.Null(responder.OnAuth(Proof(KeyBytes, "vnet1 initiator", Transcript(hello, challenge)), out var authError));
        Assert.Contains("bad proof", authError, StringComparison.Ordinal);
    }

    public static TheoryData<string, int> ChallengeFields() => new()
    {
        { "nonce", 9 },
        { "role", ChallengeRole },
        { "session", ChallengeSession },
        { "name", ChallengeName + 2 },
        { "proof", -1 },
    };

    [Theory]
    [MemberData(nameof(ChallengeFields))]
    public void OnChallenge_ChallengeTamperedInTransit_Refused(string field, int offset)
    {
        var initiator = NewInitiator();
        var responder = NewResponder();
        var challenge = responder.OnHello(initiator.CreateHello(), out _)!;
        var tampered = (byte[])challenge.Clone();
        tampered[offset < 0 ? tampered.Length - 1 : offset] ^= 1;

        var auth = initiator.OnChallenge(tampered, out var peer, out var error);

        Assert.True(auth is null, $"tampered {field} accepted");
        Assert.Null(peer);
        Assert.Contains("bad proof", error, StringComparison.Ordinal);
    }

    [Fact]
    public void OnAuth_AuthTamperedInTransit_Refused()
    {
        var initiator = NewInitiator();
        var responder = NewResponder();
        var auth = initiator.OnChallenge(responder.OnHello(initiator.CreateHello(), out _), out _, out _)!;
        auth[17] ^= 0x80;

        Assert.Null(responder.OnAuth(auth, out var error));
        Assert.Contains("bad proof", error, StringComparison.Ordinal);
    }

    // Names.

    [Theory]
    [InlineData("-leading-dash")]
    [InlineData(".hidden")]
    [InlineData("has space")]
    [InlineData("slash/name")]
    [InlineData("caf\u00e9")]
    [InlineData("a23456789012345678901234567890123")]
    public void OnHello_InvalidInitiatorName_Refused(string name)
    {
        var hello = new Handshake.Initiator(Key, name, DaemonRole.Host, LinkTransport.Tcp, false, 1).CreateHello();

        Assert.Null(NewResponder().OnHello(hello, out var error));
        Assert.Equal("HELLO carries an invalid daemon name", error);
    }

    [Fact]
    public void OnHello_NameNotUtf8_Refused()
    {
        var hello = NewInitiator().CreateHello();
        hello[HelloName] = 0xFF;

        Assert.Null(NewResponder().OnHello(hello, out var error));
        Assert.Equal("HELLO carries an invalid daemon name", error);
    }

    [Theory]
    [InlineData("-x")]
    [InlineData("two words")]
    [InlineData("a23456789012345678901234567890123")]
    public void OnChallenge_InvalidResponderName_Refused(string name)
    {
        var initiator = NewInitiator();
        var challenge = new Handshake.Responder(Key, name, DaemonRole.Proxy, 2).OnHello(initiator.CreateHello(), out _);
        Assert.NotNull(challenge);

        Assert.Null(initiator.OnChallenge(challenge, out _, out var error));
        Assert.Equal("CHALLENGE carries an invalid daemon name", error);
    }

    [Fact]
    public void OnHello_PeerUsesResponderName_Refused()
    {
        var hello = new Handshake.Initiator(Key, "proxy", DaemonRole.Host, LinkTransport.Tcp, false, 1).CreateHello();

        Assert.Null(new Handshake.Responder(Key, "proxy", DaemonRole.Proxy, 2).OnHello(hello, out var error));
        Assert.Contains("'proxy', which is this daemon's own name", error, StringComparison.Ordinal);
    }

    [Fact]
    public void OnChallenge_PeerUsesInitiatorName_Refused()
    {
        // A responder called "host-1" answers someone else; its CHALLENGE then reaches the real "host-1".
        var challenge = new Handshake.Responder(Key, "host-1", DaemonRole.Proxy, 2).OnHello(
            new Handshake.Initiator(Key, "other", DaemonRole.Host, LinkTransport.Tcp, false, 1).CreateHello(), out _);
        var initiator = NewInitiator();
        initiator.CreateHello();

        Assert.Null(initiator.OnChallenge(challenge, out _, out var error));
        Assert.Contains("'host-1', which is this daemon's own name", error, StringComparison.Ordinal);
    }

    // Malformed payloads.

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(HelloName)]
    public void OnHello_TooShort_Refused(int length)
    {
        var hello = NewInitiator().CreateHello();

        Assert.Null(NewResponder().OnHello(hello.AsSpan(0, length), out var error));
        Assert.Equal("HELLO too short", error);
    }

    [Fact]
    public void OnHello_EmptyName_RefusedAsTooShort()
    {
        var hello = new Handshake.Initiator(Key, "", DaemonRole.Host, LinkTransport.Tcp, false, 1).CreateHello();

        Assert.Null(NewResponder().OnHello(hello, out var error));
        Assert.Equal("HELLO too short", error);
    }

    public static TheoryData<string, int, int> MalformedHellos() => new()
    {
        // field, offset (-1: append a byte, -2: drop the last byte), new value
        { "role", HelloRole, 3 },
        { "star", HelloStar, 2 },
        { "transport", HelloTransport, 2 },
        { "name length too large", HelloNameLength, 200 },
        { "name length too small", HelloNameLength, 1 },
        { "trailing byte", -1, 0 },
        { "missing byte", -2, 0 },
    };

    [Theory]
    [MemberData(nameof(MalformedHellos))]
    public void OnHello_Malformed_Refused(string what, int offset, int value)
    {
        var hello = NewInitiator().CreateHello();
        hello = offset switch
        {
            -1 => [.. hello, 0x61],
            -2 => hello[..^1],
            _ => hello,
        };
        if (offset >= 0)
            hello[offset] = (byte)value;

        Assert.True(NewResponder().OnHello(hello, out var error) is null, $"{what} accepted");
        Assert.Equal("malformed HELLO", error);
    }

    [Theory]
    [InlineData(2, 2)]
    [InlineData(0, 0)]
    [InlineData(3, 7)]
    [InlineData(2, 1)]
    public void OnHello_NoCommonVersion_RefusedNamingBothRanges(byte lowest, byte highest)
    {
        var hello = NewInitiator().CreateHello();
        hello[0] = lowest;
        hello[1] = highest;

        Assert.Null(NewResponder().OnHello(hello, out var error));
        Assert.Equal($"no common protocol version (peer speaks {lowest}..{highest}, this daemon 1)", error);
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 9)]
    [InlineData(0, 255)]
    public void OnHello_RangeIncludingVersion1_Accepted(byte lowest, byte highest)
    {
        var hello = NewInitiator().CreateHello();
        hello[0] = lowest;
        hello[1] = highest;

        Assert.NotNull(NewResponder().OnHello(hello, out var error));
        Assert.Null(error);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(Handshake.NonceSize + 1 + 4 + 1 + Handshake.ProofSize)]
    public void OnChallenge_TooShort_Refused(int length)
    {
        var initiator = NewInitiator();
        var challenge = NewResponder().OnHello(initiator.CreateHello(), out _)!;

        Assert.Null(initiator.OnChallenge(challenge.AsSpan(0, length), out _, out var error));
        Assert.Equal("CHALLENGE too short", error);
    }

    [Theory]
    [InlineData("role", ChallengeRole, 2)]
    [InlineData("name length too large", ChallengeNameLength, 200)]
    [InlineData("name length too small", ChallengeNameLength, 1)]
    public void OnChallenge_Malformed_Refused(string what, int offset, byte value)
    {
        var initiator = NewInitiator();
        var challenge = NewResponder().OnHello(initiator.CreateHello(), out _)!;
        challenge[offset] = value;

        Assert.True(initiator.OnChallenge(challenge, out _, out var error) is null, $"{what} accepted");
        Assert.Equal("malformed CHALLENGE", error);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(31)]
    [InlineData(33)]
    public void OnAuth_WrongLength_Refused(int length)
    {
        var responder = NewResponder();
        responder.OnHello(NewInitiator().CreateHello(), out _);

        Assert.Null(responder.OnAuth(new byte[length], out var error));
        Assert.Equal("malformed AUTH", error);
    }

    [Fact]
    public void OnChallenge_BeforeCreateHello_Throws() =>
        Assert.Throws<InvalidOperationException>(() => NewInitiator().OnChallenge(new byte[80], out _, out _));

    [Fact]
    public void OnAuth_BeforeOnHello_Throws() =>
        Assert.Throws<InvalidOperationException>(() => NewResponder().OnAuth(new byte[32], out _));

    // Network key.

    [Fact]
    public void TryParse_Base64Of32Bytes_RoundTrips()
    {
        var text = Convert.ToBase64String(KeyBytes);

        Assert.True(NetworkKey.TryParse(text, out var key, out var error));

        Assert.Null(error);
        Assert.Equal(text, key!.ToString());
    }

    [Fact]
    public void TryParse_SurroundingWhitespace_Accepted()
    {
        // A key file usually ends with a newline.
        var text = Convert.ToBase64String(KeyBytes);

        Assert.True(NetworkKey.TryParse($"  {text}\n", out var key, out _));
        Assert.Equal(text, key!.ToString());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(16)]
    [InlineData(31)]
    [InlineData(33)]
    [InlineData(34)]
    [InlineData(35)]
    [InlineData(36)]
    [InlineData(64)]
    public void TryParse_WrongLength_Refused(int bytes)
    {
        var text = Convert.ToBase64String(new byte[bytes]);

        Assert.False(NetworkKey.TryParse(text, out var key, out var error));
        Assert.Null(key);
        Assert.NotNull(error);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("not base64 at all!")]
    [InlineData("oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr8")]
    [InlineData("oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr8=x")]
    [InlineData("****************************************8=")]
    public void TryParse_Garbage_RefusedWithReason(string text)
    {
        Assert.False(NetworkKey.TryParse(text, out var key, out var error));
        Assert.Null(key);
        Assert.NotNull(error);
    }

    [Fact]
    public void TryParse_WrongLength_ReasonSays32BytesAndKeygen()
    {
        Assert.False(NetworkKey.TryParse("AAAA", out _, out var error));

        Assert.Contains("32 bytes in base64", error, StringComparison.Ordinal);
        Assert.Contains("vnet keygen", error, StringComparison.Ordinal);
    }

    [Fact]
    public void TryParse_Null_Refused()
    {
        Assert.False(NetworkKey.TryParse(null, out _, out var error));
        Assert.Equal("the network key is empty", error);
    }

    [Fact]
    public void Parse_Garbage_ThrowsFormatExceptionWithReason()
    {
        var e = Assert.Throws<FormatException>(() => NetworkKey.Parse("AAAA"));
        Assert.Contains("32 bytes", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Generate_ManyKeys_AllDistinctAndParseable()
    {
        var keys = Enumerable.Range(0, 200).Select(_ => NetworkKey.Generate().ToString()).ToList();

        Assert.Equal(keys.Count, keys.Distinct().Count());
        Assert.All(keys, k =>
        {
            Assert.Equal(NetworkKey.Size, Convert.FromBase64String(k).Length);
            Assert.Equal(k, NetworkKey.Parse(k).ToString());
        });
    }

    // Helpers.

    private sealed record Outcome(
        byte[] Hello,
        byte[]? Challenge,
        byte[]? Auth,
        PeerIdentity? InitiatorPeer,
        PeerIdentity? ResponderPeer,
        string? InitiatorError,
        string? ResponderError);

    private static Handshake.Initiator NewInitiator(NetworkKey? key = null) =>
        new(key ?? Key, "host-1", DaemonRole.Host, LinkTransport.Tcp, star: true, 0x1234_5678);

    private static Handshake.Responder NewResponder(NetworkKey? key = null) =>
        new(key ?? Key, "proxy", DaemonRole.Proxy, 0x8765_4321);

    /// <summary>A whole exchange, stopping at the first refusal as the link manager does.</summary>
    private static Outcome Run(NetworkKey initiatorKey, NetworkKey responderKey)
    {
        var initiator = NewInitiator(initiatorKey);
        var responder = NewResponder(responderKey);
        var hello = initiator.CreateHello();
        var challenge = responder.OnHello(hello, out var responderError);
        if (challenge is null)
            return new(hello, null, null, null, null, null, responderError);
        var auth = initiator.OnChallenge(challenge, out var initiatorPeer, out var initiatorError);
        if (auth is null)
            return new(hello, challenge, null, null, null, initiatorError, null);
        var responderPeer = responder.OnAuth(auth, out responderError);
        return new(hello, challenge, auth, initiatorPeer, responderPeer, initiatorError, responderError);
    }

    private static byte[] Transcript(byte[] hello, byte[] challenge) => [.. hello, .. challenge.AsSpan(0, challenge.Length - Handshake.ProofSize)];

    private static byte[] Proof(byte[] key, string label, byte[] transcript) =>
        HMACSHA256.HashData(key, (byte[])[.. Encoding.ASCII.GetBytes(label), .. transcript]);
}
