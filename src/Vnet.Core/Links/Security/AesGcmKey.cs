using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Vnet.Native;

namespace Vnet.Links.Security;

/// <summary>
/// One AES-256-GCM key, expanded once (libsodium's key schedule and GHASH powers) into native
/// memory that the GC never moves or copies, and wiped when released. Sealing and opening take the
/// nonce as a 64-bit counter (96-bit nonce: 32 zero bits and the counter, big-endian). The state is
/// only read by Seal and Open, so any number of threads may use one key at once.
/// </summary>
internal sealed unsafe class AesGcmKey : SafeHandle
{
    public const int TagSize = Sodium.AesGcmTagBytes;

    static AesGcmKey()
    {
        // sodium_init picks the AES-NI code and is idempotent (NSec calls it too).
        if (Sodium.Init() < 0)
            throw new PlatformNotSupportedException("libsodium did not initialise");
        if (Sodium.AesGcmStateSize() > Sodium.AesGcmStateBytes)
            throw new PlatformNotSupportedException("libsodium's AES-GCM state is larger than this build expects");
    }

    public AesGcmKey(ReadOnlySpan<byte> key) : base(0, ownsHandle: true)
    {
        if (key.Length != Sodium.AesGcmKeyBytes)
            throw new ArgumentException($"an AES-256-GCM key is {Sodium.AesGcmKeyBytes} bytes", nameof(key));
        if (Sodium.AesGcmIsAvailable() == 0)
            throw new PlatformNotSupportedException("AES-256-GCM needs a CPU with AES-NI and PCLMUL");
        var state = (byte*)NativeMemory.AlignedAlloc(Sodium.AesGcmStateBytes, 64);
        SetHandle((nint)state);
        fixed (byte* k = key)
        {
            if (Sodium.AesGcmBeforeNm(state, k) != 0)
                throw new System.Security.Cryptography.CryptographicException("libsodium refused the AES-256-GCM key");
        }
    }

    public override bool IsInvalid => handle == 0;

    /// <summary>
    /// Writes ciphertext and tag of <paramref name="plaintext"/> to <paramref name="destination"/>
    /// (plaintext length + <see cref="TagSize"/>; it may be the plaintext's own memory: in place).
    /// </summary>
    public void Seal(ulong counter, ReadOnlySpan<byte> associatedData, ReadOnlySpan<byte> plaintext, Span<byte> destination)
    {
        if (destination.Length < plaintext.Length + TagSize)
            throw new ArgumentException("no room for ciphertext and tag", nameof(destination));
        var nonce = stackalloc byte[Sodium.AesGcmNonceBytes];
        Nonce(counter, nonce);
        fixed (byte* m = plaintext)
        fixed (byte* c = destination)
        fixed (byte* ad = associatedData)
        {
            ulong length;
            // Refused only for messages far beyond any frame (libsodium's per-message limit).
            if (Sodium.AesGcmEncrypt(c, &length, m, (ulong)plaintext.Length, ad, (ulong)associatedData.Length, null, nonce, this) != 0)
                throw new System.Security.Cryptography.CryptographicException("libsodium refused to seal the message");
        }
    }

    /// <summary>
    /// Opens <paramref name="ciphertext"/> (with its tag) into <paramref name="plaintext"/> (at least
    /// the ciphertext's length minus the tag; it may start where the ciphertext starts). False when
    /// it does not authenticate; the plaintext's content is then undefined.
    /// </summary>
    public bool Open(ulong counter, ReadOnlySpan<byte> associatedData, ReadOnlySpan<byte> ciphertext, Span<byte> plaintext)
    {
        if (ciphertext.Length < TagSize || plaintext.Length < ciphertext.Length - TagSize)
            return false;
        var nonce = stackalloc byte[Sodium.AesGcmNonceBytes];
        Nonce(counter, nonce);
        fixed (byte* c = ciphertext)
        fixed (byte* m = plaintext)
        fixed (byte* ad = associatedData)
        {
            ulong length;
            return Sodium.AesGcmDecrypt(m, &length, null, c, (ulong)ciphertext.Length, ad, (ulong)associatedData.Length, nonce, this) == 0;
        }
    }

    private static void Nonce(ulong counter, byte* nonce)
    {
        *(uint*)nonce = 0;
        BinaryPrimitives.WriteUInt64BigEndian(new Span<byte>(nonce + 4, 8), counter);
    }

    protected override bool ReleaseHandle()
    {
        Sodium.MemZero((byte*)handle, Sodium.AesGcmStateBytes);
        NativeMemory.AlignedFree((void*)handle);
        return true;
    }
}
