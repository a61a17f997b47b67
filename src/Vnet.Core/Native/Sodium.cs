using System.Runtime.InteropServices;

namespace Vnet.Native;

/// <summary>
/// libsodium's AES-256-GCM with a precomputed key (the <c>_afternm</c> calls), from the same
/// libsodium NSec ships and loads. NSec's AES-GCM expands the key schedule and the GHASH table
/// on every call (<c>crypto_aead_aes256gcm_beforenm</c>): a quarter of the cost of sealing a
/// 1.4 KB datagram. Here that happens once per key (see <see cref="Links.Security.AesGcmKey"/>).
/// </summary>
internal static unsafe partial class Sodium
{
    private const string Lib = "libsodium";

    /// <summary>Size of the precomputed state (crypto_aead_aes256gcm_statebytes); 16-byte aligned.</summary>
    public const int AesGcmStateBytes = 512;

    public const int AesGcmKeyBytes = 32;
    public const int AesGcmNonceBytes = 12;
    public const int AesGcmTagBytes = 16;

    [LibraryImport(Lib, EntryPoint = "sodium_init")]
    public static partial int Init();

    [LibraryImport(Lib, EntryPoint = "crypto_aead_aes256gcm_is_available")]
    public static partial int AesGcmIsAvailable();

    [LibraryImport(Lib, EntryPoint = "crypto_aead_aes256gcm_statebytes")]
    public static partial nuint AesGcmStateSize();

    [LibraryImport(Lib, EntryPoint = "crypto_aead_aes256gcm_beforenm")]
    public static partial int AesGcmBeforeNm(byte* state, byte* key);

    // The state is passed as its SafeHandle: the marshaller holds a reference for the call, so a
    // key released by another thread meanwhile is freed only after it (or the call throws first).
    [LibraryImport(Lib, EntryPoint = "crypto_aead_aes256gcm_encrypt_afternm")]
    public static partial int AesGcmEncrypt(byte* c, ulong* clen, byte* m, ulong mlen, byte* ad, ulong adlen, byte* nsec, byte* npub,
        Links.Security.AesGcmKey state);

    [LibraryImport(Lib, EntryPoint = "crypto_aead_aes256gcm_decrypt_afternm")]
    public static partial int AesGcmDecrypt(byte* m, ulong* mlen, byte* nsec, byte* c, ulong clen, byte* ad, ulong adlen, byte* npub,
        Links.Security.AesGcmKey state);

    [LibraryImport(Lib, EntryPoint = "sodium_memzero")]
    public static partial void MemZero(byte* p, nuint length);
}
