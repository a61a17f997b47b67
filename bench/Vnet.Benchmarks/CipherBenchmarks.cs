using System.Security.Cryptography;
using BenchmarkDotNet.Attributes;
using NSec.Cryptography;

namespace Vnet.Benchmarks;

/// <summary>
/// The AEAD a link seals every message with, per message: one UDP datagram's frame (1,400 B) and one
/// TCP record's super-frame (64 KiB), through libsodium with the key expanded once (AesGcmKey, what
/// links use), through NSec (which expands it per call), and through OpenSSL
/// (System.Security.Cryptography), AES-256-GCM and ChaCha20-Poly1305. Chooses the cipher; 0 B allocated.
/// </summary>
[MemoryDiagnoser]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "BenchmarkDotNet disposes in GlobalCleanup; its classes cannot be sealed")]
public class CipherBenchmarks
{
    [Params(1400, 65536)]
    public int Size { get; set; }

    private readonly byte[] _nonce = new byte[12];
    private readonly byte[] _ad = new byte[16];
    private byte[] _plain = [];
    private byte[] _sealed = [];
    private readonly byte[] _tag = new byte[16];
    private Vnet.Links.Security.AesGcmKey _links = null!;
    private Key _sodiumAes = null!;
    private Key _sodiumChaCha = null!;
    private AesGcm _opensslAes = null!;
    private System.Security.Cryptography.ChaCha20Poly1305 _opensslChaCha = null!;

    [GlobalSetup]
    public void Setup()
    {
        var raw = RandomNumberGenerator.GetBytes(32);
        _plain = RandomNumberGenerator.GetBytes(Size);
        _sealed = new byte[Size + 16];
        _links = new Vnet.Links.Security.AesGcmKey(raw);
        _sodiumAes = Key.Import(AeadAlgorithm.Aes256Gcm, raw, KeyBlobFormat.RawSymmetricKey);
        _sodiumChaCha = Key.Import(AeadAlgorithm.ChaCha20Poly1305, raw, KeyBlobFormat.RawSymmetricKey);
        _opensslAes = new AesGcm(raw, 16);
        _opensslChaCha = new System.Security.Cryptography.ChaCha20Poly1305(raw);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _links?.Dispose();
        _sodiumAes?.Dispose();
        _sodiumChaCha?.Dispose();
        _opensslAes?.Dispose();
        _opensslChaCha?.Dispose();
    }

    [Benchmark(Baseline = true)]
    public void LinkAesGcm() => _links.Seal(0, _ad, _plain, _sealed);

    [Benchmark]
    public void SodiumAesGcm() => AeadAlgorithm.Aes256Gcm.Encrypt(_sodiumAes, _nonce, _ad, _plain, _sealed);

    [Benchmark]
    public void SodiumChaCha20Poly1305() => AeadAlgorithm.ChaCha20Poly1305.Encrypt(_sodiumChaCha, _nonce, _ad, _plain, _sealed);

    [Benchmark]
    public void OpenSslAesGcm() => _opensslAes.Encrypt(_nonce, _plain, _sealed.AsSpan(0, Size), _tag, _ad);

    [Benchmark]
    public void OpenSslChaCha20Poly1305() => _opensslChaCha.Encrypt(_nonce, _plain, _sealed.AsSpan(0, Size), _tag, _ad);

    [Benchmark]
    public bool SodiumAesGcmOpen()
    {
        AeadAlgorithm.Aes256Gcm.Encrypt(_sodiumAes, _nonce, _ad, _plain, _sealed);
        return AeadAlgorithm.Aes256Gcm.Decrypt(_sodiumAes, _nonce, _ad, _sealed, _plain);
    }

    [Benchmark]
    public void OpenSslAesGcmOpen()
    {
        _opensslAes.Encrypt(_nonce, _plain, _sealed.AsSpan(0, Size), _tag, _ad);
        _opensslAes.Decrypt(_nonce, _sealed.AsSpan(0, Size), _tag, _plain, _ad);
    }
}
