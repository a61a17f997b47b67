using NSec.Cryptography;
using Vnet.Links;
using Vnet.Links.Security;

namespace Vnet.Tests.Links.Security;

/// <summary>
/// The link handshake: the Noise framework's own test vector for Noise_IKpsk2_25519_AESGCM_SHA256
/// (from the cacophony suite, which every Noise implementation checks itself against), then the
/// daemon's use of it: both sides agree on keys, and a wrong key, a wrong preshared key or any
/// flipped bit is refused.
/// </summary>
public sealed class NoiseHandshakeTests
{
    // cacophony vectors, "Noise_IKpsk2_25519_AESGCM_SHA256".
    private const string Prologue = "4a6f686e2047616c74";
    private const string Psk = "54686973206973206d7920417573747269616e20706572737065637469766521";
    private const string InitStatic = "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1";
    private const string InitEphemeral = "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a";
    private const string RespStatic = "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893";
    private const string RespEphemeral = "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b";
    private const string HandshakeHash = "48c3f1eb397c797af6b139032c6074cb41282ff033ee25d5aee4a4badd3a2c3f";
    private const string Payload1 = "4c756477696720766f6e204d69736573";
    private const string Message1 = "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79445a1baf339186d7867062b0dd31f5de322d370165d217939b2b7ed9e2bae7840458ea65c2ce1554e0e8077fe7334c4bd514c658fd04d97b86d216f58f59714a7e24144155045c8f36bed85a2cb0fd9af7";
    private const string Payload2 = "4d757272617920526f746862617264";
    private const string Message2 = "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1448088432fe8d675e949799d2a968211a66cc7ba2b0f4cad8eda3c2bd37eae737bbf88";
    private const string Payload3 = "462e20412e20486179656b";
    private const string Message3 = "38cbf3835c78b7802df0dd0d9640ff8575debd0cb61cfb52590da1";

    private static byte[] Hex(string hex) => Convert.FromHexString(hex);

    private static Key Private(string hex) =>
        Key.Import(KeyAgreementAlgorithm.X25519, Hex(hex), KeyBlobFormat.RawPrivateKey, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });

    [Fact]
    public void Vector_CacophonyIkPsk2AesGcmSha256_SameMessagesHashAndTransportKeys()
    {
        using var initiatorStatic = new StaticKeyPair(Private(InitStatic));
        using var responderStatic = new StaticKeyPair(Private(RespStatic));
        var psk = PresharedKey.FromBytes(Hex(Psk));
        using var initiator = new NoiseHandshake.Initiator(initiatorStatic, responderStatic.Public, psk, Hex(Prologue), Private(InitEphemeral));
        using var responder = new NoiseHandshake.Responder(responderStatic, psk, Hex(Prologue), Private(RespEphemeral));

        var m1 = initiator.WriteFirst(Hex(Payload1));
        Assert.Equal(Message1, Convert.ToHexStringLower(m1));
        var read = responder.ReadFirst(m1, out var error);
        Assert.Null(error);
        Assert.Equal(initiatorStatic.Public, read!.Value.Initiator);
        Assert.Equal(Payload1, Convert.ToHexStringLower(read.Value.Payload));

        var m2 = responder.WriteSecond(Hex(Payload2));
        Assert.Equal(Message2, Convert.ToHexStringLower(m2));
        Assert.Equal(Payload2, Convert.ToHexStringLower(initiator.ReadSecond(m2, out error)!));
        Assert.Equal(HandshakeHash, Convert.ToHexStringLower(initiator.HandshakeHash));
        Assert.Equal(HandshakeHash, Convert.ToHexStringLower(responder.HandshakeHash));

        // The first transport message (initiator -> responder, nonce 0) with the split keys.
        var (send, _) = initiator.Split();
        var plaintext = Hex(Payload3);
        var sealedMessage = new byte[plaintext.Length + 16];
        using var key = new EpochKey(0, send);
        SendCipher.Seal(key, [], plaintext, sealedMessage);
        Assert.Equal(Message3, Convert.ToHexStringLower(sealedMessage));
    }

    private static InitiatorHello Hello(string name = "h1") =>
        new(name, DaemonRole.Host, LinkTransport.Udp, true, 0x1234, NoiseHandshake.Timestamp());

    [Fact]
    public void Handshake_BothSides_AgreeOnNamesAndOnePairOfKeys()
    {
        using var host = StaticKeyPair.Generate();
        using var proxy = StaticKeyPair.Generate();
        var psk = PresharedKey.Generate();
        using var initiator = new NoiseHandshake.Initiator(host, proxy.Public, psk);
        using var responder = new NoiseHandshake.Responder(proxy, psk);

        var init = initiator.CreateInit(Hello());
        var (who, hello) = responder.ReadInit(init, out var error)!.Value;
        var (response, responderKeys) = responder.CreateResponse(new ResponderHello("proxy", DaemonRole.Proxy, 0x5678));
        var (answer, initiatorKeys) = initiator.ReadResponse(response, out error)!.Value;

        Assert.Null(error);
        Assert.Equal(host.Public, who);
        Assert.Equal(("h1", DaemonRole.Host, LinkTransport.Udp, true, 0x1234u), (hello.Name, hello.Role, hello.Transport, hello.Star, hello.Session));
        Assert.Equal(("proxy", DaemonRole.Proxy, 0x5678u), (answer.Name, answer.Role, answer.Session));
        Assert.Equal(initiatorKeys.Send, responderKeys.Receive);
        Assert.Equal(initiatorKeys.Receive, responderKeys.Send);
        Assert.NotEqual(initiatorKeys.Send, initiatorKeys.Receive);
    }

    [Fact]
    public void ReadInit_SenderDoesNotKnowTheResponderKey_RefusedAtMac1BeforeAnyWork()
    {
        using var host = StaticKeyPair.Generate();
        using var proxy = StaticKeyPair.Generate();
        using var someoneElse = StaticKeyPair.Generate();
        using var initiator = new NoiseHandshake.Initiator(host, someoneElse.Public, PresharedKey.None);
        using var responder = new NoiseHandshake.Responder(proxy, PresharedKey.None);

        Assert.Null(responder.ReadInit(initiator.CreateInit(Hello()), out var error));
        Assert.Contains("mac1", error, StringComparison.Ordinal);
    }

    [Fact]
    public void ReadResponse_AnotherPresharedKey_DoesNotAuthenticate()
    {
        using var host = StaticKeyPair.Generate();
        using var proxy = StaticKeyPair.Generate();
        using var initiator = new NoiseHandshake.Initiator(host, proxy.Public, PresharedKey.Generate());
        using var responder = new NoiseHandshake.Responder(proxy, PresharedKey.Generate());
        responder.ReadInit(initiator.CreateInit(Hello()), out _);

        var (response, _) = responder.CreateResponse(new ResponderHello("proxy", DaemonRole.Proxy, 1));

        Assert.Null(initiator.ReadResponse(response, out var error));
        Assert.Contains("does not authenticate", error, StringComparison.Ordinal);
    }

    /// <summary>Any single flipped bit of either message is refused (the property an attacker on the path meets).</summary>
    [Fact]
    public void Handshake_AnyBitFlippedInEitherMessage_Refused()
    {
        using var host = StaticKeyPair.Generate();
        using var proxy = StaticKeyPair.Generate();
        var psk = PresharedKey.Generate();
        using var reference = new NoiseHandshake.Initiator(host, proxy.Public, psk);
        var init = reference.CreateInit(Hello());
        for (var bit = 0; bit < init.Length * 8; bit++)
        {
            var flipped = (byte[])init.Clone();
            flipped[bit / 8] ^= (byte)(1 << (bit % 8));
            using var responder = new NoiseHandshake.Responder(proxy, psk);
            Assert.True(responder.ReadInit(flipped, out _) is null, $"INIT with bit {bit} flipped was taken");
        }

        using var responderOk = new NoiseHandshake.Responder(proxy, psk);
        responderOk.ReadInit(init, out _);
        var (response, _) = responderOk.CreateResponse(new ResponderHello("proxy", DaemonRole.Proxy, 1));
        for (var bit = 0; bit < response.Length * 8; bit++)
        {
            var flipped = (byte[])response.Clone();
            flipped[bit / 8] ^= (byte)(1 << (bit % 8));
            using var initiator = new NoiseHandshake.Initiator(host, proxy.Public, psk);
            var again = initiator.CreateInit(Hello());
            using var responder = new NoiseHandshake.Responder(proxy, psk);
            responder.ReadInit(again, out _);
            var (fresh, _) = responder.CreateResponse(new ResponderHello("proxy", DaemonRole.Proxy, 1));
            var tampered = (byte[])fresh.Clone();
            tampered[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.True(initiator.ReadResponse(tampered, out _) is null, $"RESPONSE with bit {bit} flipped was taken");
        }
    }
}
