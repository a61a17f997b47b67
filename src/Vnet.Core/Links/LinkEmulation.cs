using System.Globalization;

namespace Vnet.Links;

/// <summary>
/// What a link should look like, imposed by the sending daemon: added delay and jitter, random
/// loss, and a rate limit with a bounded queue (a tail-drop buffer of <see cref="QueueLimit"/>),
/// in the spirit of VDE's wirefilter. It lets one try adaptation policies on one machine, whose
/// kernel has no netem, and it is a link property a user may want on a real overlay too.
/// </summary>
public sealed record LinkEmulation
{
    public TimeSpan Delay { get; init; }

    public TimeSpan Jitter { get; init; }

    /// <summary>Probability in [0, 1) that a frame is dropped.</summary>
    public double Loss { get; init; }

    /// <summary>Bits per second the link carries; 0 for no limit.</summary>
    public long RateBitsPerSecond { get; init; }

    /// <summary>Most time a frame may wait for the rate limit before it is dropped (the buffer).</summary>
    public TimeSpan QueueLimit { get; init; } = TimeSpan.FromMilliseconds(100);

    public bool IsNone => Delay == TimeSpan.Zero && Jitter == TimeSpan.Zero && Loss == 0 && RateBitsPerSecond == 0;

    /// <summary>
    /// Parses <c>delay=20ms,jitter=2ms,loss=1%,rate=50mbit,queue=100ms</c> (any subset; units ms,
    /// s; kbit, mbit, gbit; loss as a percentage or a fraction).
    /// </summary>
    public static LinkEmulation Parse(string text)
    {
        var e = new LinkEmulation();
        if (string.IsNullOrWhiteSpace(text) || text.Trim() == "none")
            return e;
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
                throw new FormatException($"'{part}' is not key=value (delay, jitter, loss, rate, queue)");
            var key = part[..eq].Trim();
            var value = part[(eq + 1)..].Trim();
            e = key switch
            {
                "delay" => e with { Delay = Time(value) },
                "jitter" => e with { Jitter = Time(value) },
                "queue" => e with { QueueLimit = Time(value) },
                "loss" => e with { Loss = Fraction(value) },
                "rate" => e with { RateBitsPerSecond = Rate(value) },
                _ => throw new FormatException($"unknown emulation setting '{key}' (delay, jitter, loss, rate, queue)"),
            };
        }
        return e;
    }

    private static TimeSpan Time(string v)
    {
        var (number, unit) = Split(v);
        var ms = unit switch
        {
            "ms" => number,
            "s" => number * 1000,
            "us" => number / 1000,
            _ => throw new FormatException($"'{v}' is not a time such as 20ms"),
        };
        if (ms < 0 || ms > 60_000)
            throw new FormatException($"'{v}' is out of range (0..60s)");
        return TimeSpan.FromMilliseconds(ms);
    }

    private static double Fraction(string v)
    {
        var percent = v.EndsWith('%');
        if (!double.TryParse(percent ? v[..^1] : v, NumberStyles.Float, CultureInfo.InvariantCulture, out var x))
            throw new FormatException($"'{v}' is not a loss such as 1% or 0.01");
        x = percent ? x / 100 : x;
        if (x is < 0 or >= 1)
            throw new FormatException($"loss '{v}' must be at least 0 and below 100%");
        return x;
    }

    private static long Rate(string v)
    {
        var (number, unit) = Split(v);
        var bits = unit switch
        {
            "bit" or "" => number,
            "kbit" => number * 1e3,
            "mbit" => number * 1e6,
            "gbit" => number * 1e9,
            _ => throw new FormatException($"'{v}' is not a rate such as 50mbit"),
        };
        if (bits is < 8_000 or > 1e12)
            throw new FormatException($"rate '{v}' is out of range (8kbit..1000gbit)");
        return (long)bits;
    }

    private static (double, string) Split(string v)
    {
        var i = 0;
        while (i < v.Length && (char.IsAsciiDigit(v[i]) || v[i] == '.'))
            i++;
        if (i == 0 || !double.TryParse(v.AsSpan(0, i), NumberStyles.Float, CultureInfo.InvariantCulture, out var n))
            throw new FormatException($"'{v}' does not start with a number");
        return (n, v[i..].Trim().ToLowerInvariant());
    }

    public override string ToString()
    {
        if (IsNone)
            return "none";
        var parts = new List<string>();
        if (Delay > TimeSpan.Zero)
            parts.Add(FormattableString.Invariant($"delay={Delay.TotalMilliseconds:0.###}ms"));
        if (Jitter > TimeSpan.Zero)
            parts.Add(FormattableString.Invariant($"jitter={Jitter.TotalMilliseconds:0.###}ms"));
        if (Loss > 0)
            parts.Add(FormattableString.Invariant($"loss={Loss * 100:0.###}%"));
        if (RateBitsPerSecond > 0)
            parts.Add(FormattableString.Invariant($"rate={RateBitsPerSecond / 1e6:0.###}mbit"));
        if (RateBitsPerSecond > 0 && QueueLimit != TimeSpan.FromMilliseconds(100))
            parts.Add(FormattableString.Invariant($"queue={QueueLimit.TotalMilliseconds:0.###}ms"));
        return string.Join(',', parts);
    }
}
