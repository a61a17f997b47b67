using System.Security.Cryptography;

namespace Vnet.Links;

/// <summary>
/// The shared secret of an overlay: 32 random bytes, written as base64 (<c>vnet keygen</c>). A daemon
/// proves it holds the key without sending it (see <see cref="Handshake"/>).
/// </summary>
public sealed class NetworkKey
{
    public const int Size = 32;

    private readonly byte[] _key;

    private NetworkKey(byte[] key) => _key = key;

    public static NetworkKey Generate() => new(RandomNumberGenerator.GetBytes(Size));

    public static bool TryParse(string? text, out NetworkKey? key, out string? error)
    {
        key = null;
        error = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "the network key is empty";
            return false;
        }
        var buffer = new byte[Size + 3];
        if (!Convert.TryFromBase64String(text.Trim(), buffer, out var n) || n != Size)
        {
            error = $"the network key must be {Size} bytes in base64 (make one with 'vnet keygen')";
            return false;
        }
        key = new NetworkKey(buffer[..Size]);
        return true;
    }

    public static NetworkKey Parse(string text) =>
        TryParse(text, out var key, out var error) ? key! : throw new FormatException(error);

    public override string ToString() => Convert.ToBase64String(_key);

    internal byte[] Mac(ReadOnlySpan<byte> data) => HMACSHA256.HashData(_key, data);
}
