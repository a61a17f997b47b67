using System.Globalization;

namespace Vnet.Inference;

/// <summary>Rates as people read them in reasons, logs and the CLI ("1.2 MB/s"): decimal units,
/// as link speeds are quoted.</summary>
public static class RateFormat
{
    public static string BytesPerSecond(double rate)
    {
        var abs = Math.Abs(rate);
        return abs switch
        {
            >= 1e9 => Fmt(rate / 1e9, "GB/s"),
            >= 1e6 => Fmt(rate / 1e6, "MB/s"),
            >= 1e3 => Fmt(rate / 1e3, "kB/s"),
            _ => string.Create(CultureInfo.InvariantCulture, $"{rate:0} B/s"),
        };

        static string Fmt(double v, string unit) => string.Create(CultureInfo.InvariantCulture, $"{v:0.0} {unit}");
    }

    public static string Milliseconds(double ms) => string.Create(CultureInfo.InvariantCulture, $"{ms:0.#} ms");
}
