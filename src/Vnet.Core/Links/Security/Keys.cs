using System.Diagnostics.CodeAnalysis;
using NSec.Cryptography;

namespace Vnet.Links.Security;

/// <summary>
/// A daemon's (or an administrator's) public key: 32 bytes of X25519, written as base64 like
/// WireGuard's. It names a daemon on the wire; the Proxy admits hosts by it and hosts pin the Proxy's.
/// </summary>
public sealed class PublicKeyId : IEquatable<PublicKeyId>
{
    public const int Size = 32;

    private readonly byte[] _bytes;

    private PublicKeyId(byte[] bytes) => _bytes = bytes;

    public ReadOnlySpan<byte> Bytes => _bytes;

    public static PublicKeyId FromBytes(ReadOnlySpan<byte> bytes) =>
        bytes.Length == Size ? new PublicKeyId(bytes.ToArray()) : throw new ArgumentException($"a public key is {Size} bytes", nameof(bytes));

    public static bool TryParse([NotNullWhen(true)] string? text, [NotNullWhen(true)] out PublicKeyId? key)
    {
        key = null;
        Span<byte> buffer = stackalloc byte[Size + 3];
        if (string.IsNullOrWhiteSpace(text) || !Convert.TryFromBase64String(text.Trim(), buffer, out var n) || n != Size)
            return false;
        key = new PublicKeyId(buffer[..Size].ToArray());
        return true;
    }

    public static PublicKeyId Parse(string text) =>
        TryParse(text, out var key) ? key : throw new FormatException($"'{text}' is not a public key (32 bytes in base64; 'vnet pubkey' prints one)");

    public bool Equals(PublicKeyId? other) =>
        other is not null && System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(_bytes, other._bytes);

    public override bool Equals(object? obj) => Equals(obj as PublicKeyId);

    public override int GetHashCode() => BitConverter.ToInt32(_bytes, 0);

    public override string ToString() => Convert.ToBase64String(_bytes);
}

/// <summary>
/// A static X25519 key pair: the daemon's identity (its private key file, made by <c>vnet keygen</c>),
/// or an administrator's for <c>vnet --remote</c>. The private half never leaves this object in
/// text: <see cref="ToString"/> shows the public key only.
/// </summary>
public sealed class StaticKeyPair : IDisposable
{
    public const int PrivateKeySize = 32;

    internal StaticKeyPair(Key key)
    {
        Key = key;
        Public = PublicKeyId.FromBytes(key.PublicKey.Export(KeyBlobFormat.RawPublicKey));
    }

    internal Key Key { get; }

    public PublicKeyId Public { get; }

    public static StaticKeyPair Generate() =>
        new(Key.Create(KeyAgreementAlgorithm.X25519, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport }));

    /// <summary>Reads a private key written as base64 (a key file's content); null with the reason when it is not one.</summary>
    public static StaticKeyPair? TryParse(string? text, out string? error)
    {
        error = null;
        Span<byte> buffer = stackalloc byte[PrivateKeySize + 3];
        if (string.IsNullOrWhiteSpace(text) || !Convert.TryFromBase64String(text.Trim(), buffer, out var n) || n != PrivateKeySize)
        {
            error = $"a private key is {PrivateKeySize} bytes in base64 (make one with 'vnet keygen')";
            return null;
        }
        try
        {
            return new StaticKeyPair(Key.Import(KeyAgreementAlgorithm.X25519, buffer[..PrivateKeySize], KeyBlobFormat.RawPrivateKey,
                new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport }));
        }
        catch (FormatException e)
        {
            error = e.Message;
            return null;
        }
        finally
        {
            buffer.Clear();
        }
    }

    /// <summary>The private key as a key file holds it (only for <c>vnet keygen</c>).</summary>
    public string ExportPrivate() => Convert.ToBase64String(Key.Export(KeyBlobFormat.RawPrivateKey));

    public override string ToString() => $"key pair {Public}";

    public void Dispose() => Key.Dispose();
}

/// <summary>
/// An optional secret shared by the whole overlay, mixed into every handshake (Noise's psk, as
/// WireGuard's preshared key): without it even an admitted key gets nowhere. Absent, 32 zero bytes.
/// </summary>
public sealed class PresharedKey
{
    public const int Size = 32;

    private readonly byte[] _key;

    private PresharedKey(byte[] key) => _key = key;

    public static PresharedKey None { get; } = new(new byte[Size]);

    internal static PresharedKey FromBytes(byte[] key) => key.Length == Size ? new PresharedKey(key) : throw new ArgumentException($"a preshared key is {Size} bytes", nameof(key));

    internal ReadOnlySpan<byte> Bytes => _key;

    public static PresharedKey Generate() => new(System.Security.Cryptography.RandomNumberGenerator.GetBytes(Size));

    public static PresharedKey? TryParse(string? text, out string? error)
    {
        error = null;
        var buffer = new byte[Size + 3];
        if (string.IsNullOrWhiteSpace(text) || !Convert.TryFromBase64String(text.Trim(), buffer, out var n) || n != Size)
        {
            error = $"a preshared key is {Size} bytes in base64 (make one with 'vnet keygen')";
            return null;
        }
        return new PresharedKey(buffer[..Size]);
    }

    public string Export() => Convert.ToBase64String(_key);

    public override string ToString() => "preshared key (hidden)";
}
