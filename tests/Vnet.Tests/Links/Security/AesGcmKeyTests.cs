using System.Buffers.Binary;
using System.Security.Cryptography;
using Vnet.Links.Security;

namespace Vnet.Tests.Links.Security;

/// <summary>
/// The links' AES-256-GCM (libsodium, key expanded once) against .NET's own (OpenSSL): the same
/// key, nonce and associated data give the same ciphertext and tag, each opens what the other
/// sealed, in place and not, and nothing opens with any byte changed.
/// </summary>
public sealed class AesGcmKeyTests
{
    private static readonly byte[] Raw = RandomNumberGenerator.GetBytes(32);

    private static byte[] Nonce(ulong counter)
    {
        var nonce = new byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(nonce.AsSpan(4), counter);
        return nonce;
    }

    [Theory]
    [InlineData(0, 0UL)]
    [InlineData(1, 1UL)]
    [InlineData(1400, 0x0102_0304_0506_0708UL)]
    [InlineData(65_536, ulong.MaxValue)]
    public void Seal_SameAsOpenSsl_AndOpensWhatOpenSslSealed(int length, ulong counter)
    {
        using var key = new AesGcmKey(Raw);
        using var reference = new AesGcm(Raw, 16);
        var plain = RandomNumberGenerator.GetBytes(length);
        var ad = RandomNumberGenerator.GetBytes(16);

        var sealedHere = new byte[length + 16];
        key.Seal(counter, ad, plain, sealedHere);
        var expected = new byte[length + 16];
        reference.Encrypt(Nonce(counter), plain, expected.AsSpan(0, length), expected.AsSpan(length), ad);
        Assert.Equal(expected, sealedHere);

        var opened = new byte[length];
        Assert.True(key.Open(counter, ad, expected, opened));
        Assert.Equal(plain, opened);
    }

    [Fact]
    public void SealAndOpen_InPlace_RoundTrip()
    {
        using var key = new AesGcmKey(Raw);
        var plain = RandomNumberGenerator.GetBytes(1400);
        var buffer = new byte[1400 + 16];
        plain.CopyTo(buffer, 0);

        key.Seal(7, "header"u8, buffer.AsSpan(0, 1400), buffer);
        Assert.NotEqual(plain, buffer[..1400]);
        Assert.True(key.Open(7, "header"u8, buffer, buffer.AsSpan(0, 1400)));
        Assert.Equal(plain, buffer[..1400]);
    }

    [Fact]
    public void Open_AnyByteChanged_OrOtherCounterOrAssociatedData_Refused()
    {
        using var key = new AesGcmKey(Raw);
        var plain = RandomNumberGenerator.GetBytes(64);
        var sealedMessage = new byte[64 + 16];
        key.Seal(42, "ad"u8, plain, sealedMessage);
        var output = new byte[64];

        for (var i = 0; i < sealedMessage.Length; i++)
        {
            var changed = (byte[])sealedMessage.Clone();
            changed[i] ^= 0x01;
            Assert.False(key.Open(42, "ad"u8, changed, output), $"byte {i} changed and it opened");
        }
        Assert.False(key.Open(43, "ad"u8, sealedMessage, output));
        Assert.False(key.Open(42, "aD"u8, sealedMessage, output));
        Assert.False(key.Open(42, "ad"u8, sealedMessage.AsSpan(0, 15), output));
        Assert.True(key.Open(42, "ad"u8, sealedMessage, output));
    }

    [Fact]
    public void Seal_AfterDispose_Throws_NeverTouchesFreedMemory()
    {
        var key = new AesGcmKey(Raw);
        key.Dispose();
        var output = new byte[32];
        Assert.Throws<ObjectDisposedException>(() => key.Seal(0, default, new byte[16], output));
    }
}
