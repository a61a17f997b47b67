using System.Security.Cryptography;
using System.Text;

namespace Vnet.Configuration;

/// <summary>
/// The web front's secret (docs/web.md). It is compared in constant time, through SHA-256 digests
/// so that not even its length leaks, and never printed: <see cref="ToString"/> hides it, so a
/// configuration record written to a log shows no secret. The browser's cookie holds a value
/// derived from it (<see cref="CookieValue"/>), not the token itself.
/// </summary>
public sealed class WebToken
{
    /// <summary>Fewer characters are refused: a token is guessed over the network.</summary>
    public const int MinLength = 16;

    private readonly byte[] _digest;
    private readonly byte[] _cookieDigest;

    private WebToken(string token)
    {
        _digest = SHA256.HashData(Encoding.UTF8.GetBytes(token));
        CookieValue = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes("vnet-web-cookie\n" + token)));
        _cookieDigest = SHA256.HashData(Encoding.UTF8.GetBytes(CookieValue));
    }

    /// <summary>What the session cookie carries: proof of the token, from which the token cannot be read back.</summary>
    public string CookieValue { get; }

    /// <summary>The token from its file's trimmed text, or null and why not.</summary>
    public static WebToken? TryParse(string text, out string? error)
    {
        error = null;
        if (text.Length < MinLength || text.Any(char.IsWhiteSpace))
        {
            error = $"a web token is one word of at least {MinLength} characters (e.g. 'openssl rand -hex 32')";
            return null;
        }
        return new WebToken(text);
    }

    /// <summary>Whether <paramref name="candidate"/> is the token (constant time).</summary>
    public bool Matches(string? candidate) =>
        candidate is not null && CryptographicOperations.FixedTimeEquals(_digest, SHA256.HashData(Encoding.UTF8.GetBytes(candidate)));

    /// <summary>Whether a cookie carries <see cref="CookieValue"/> (constant time).</summary>
    public bool MatchesCookie(string? cookie) =>
        cookie is not null && CryptographicOperations.FixedTimeEquals(_cookieDigest, SHA256.HashData(Encoding.UTF8.GetBytes(cookie)));

    public override string ToString() => "(web token)";
}
