using System.Globalization;

namespace Vnet.Patterns;

/// <summary>Message sizes as people type them: 512, 64K, 1M, 10M, 1G (K, M, G are powers of 1024).</summary>
public static class ByteSize
{
    /// <summary>Reads a size; a trailing B or iB is allowed (512B, 64KB, 64KiB), in any case.</summary>
    public static bool TryParse(string? text, out long bytes)
    {
        bytes = 0;
        if (string.IsNullOrWhiteSpace(text))
            return false;
        var s = text.Trim();
        if (s.EndsWith("iB", StringComparison.OrdinalIgnoreCase))
            s = s[..^2];
        else if (s.EndsWith('B') || s.EndsWith('b'))
            s = s[..^1];
        var shift = s.Length == 0 ? 0 : char.ToUpperInvariant(s[^1]) switch
        {
            'K' => 10,
            'M' => 20,
            'G' => 30,
            'T' => 40,
            _ => 0,
        };
        if (shift > 0)
            s = s[..^1];
        if (s.Length == 0 || !s.All(char.IsAsciiDigit)
            || !long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var number)
            || number > long.MaxValue >> shift)
        {
            return false;
        }
        bytes = number << shift;
        return true;
    }

    /// <summary>The shortest exact form: 65536 is "64K", 1536 stays "1536".</summary>
    public static string Format(long bytes)
    {
        foreach (var (shift, suffix) in new[] { (40, "T"), (30, "G"), (20, "M"), (10, "K") })
        {
            if (bytes != 0 && bytes % (1L << shift) == 0)
                return string.Create(CultureInfo.InvariantCulture, $"{bytes >> shift}{suffix}");
        }
        return bytes.ToString(CultureInfo.InvariantCulture);
    }
}
