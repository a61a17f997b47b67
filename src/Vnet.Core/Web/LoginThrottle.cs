using System.Diagnostics;
using System.Net;

namespace Vnet.Web;

/// <summary>
/// Wrong tokens per client address (docs/web.md): after <see cref="MaxFailures"/> in one
/// <see cref="Window"/>, every request from that address is refused (429) until the window ends,
/// the right token included, so guessing costs a minute per ten tries. The table is bounded
/// (<see cref="MaxAddresses"/>): when full, the address whose window started first is dropped, so
/// many addresses cannot grow it; an address that floods alone cannot lock others out. Thread-safe.
/// </summary>
public sealed class LoginThrottle
{
    public const int MaxFailures = 10;
    public const int MaxAddresses = 4096;
    public static readonly TimeSpan Window = TimeSpan.FromMinutes(1);

    private readonly Func<long> _clock;
    private readonly Lock _gate = new();
    private readonly Dictionary<IPAddress, (long Start, int Failures)> _byAddress = [];

    /// <param name="clock">Stopwatch ticks (tests give their own).</param>
    public LoginThrottle(Func<long>? clock = null) => _clock = clock ?? Stopwatch.GetTimestamp;

    private static long WindowTicks => (long)(Window.TotalSeconds * Stopwatch.Frequency);

    /// <summary>Addresses tracked now.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
                return _byAddress.Count;
        }
    }

    /// <summary>How long <paramref name="address"/> is still refused, or null when it is not.</summary>
    public TimeSpan? Blocked(IPAddress? address)
    {
        if (address is null)
            return null;
        var now = _clock();
        lock (_gate)
        {
            if (!_byAddress.TryGetValue(address, out var entry) || entry.Failures < MaxFailures)
                return null;
            var left = entry.Start + WindowTicks - now;
            if (left <= 0)
            {
                _byAddress.Remove(address);
                return null;
            }
            return TimeSpan.FromSeconds((double)left / Stopwatch.Frequency);
        }
    }

    /// <summary>Counts a wrong token from <paramref name="address"/>.</summary>
    public void Failed(IPAddress? address)
    {
        if (address is null)
            return;
        var now = _clock();
        lock (_gate)
        {
            if (_byAddress.TryGetValue(address, out var entry) && now - entry.Start < WindowTicks)
            {
                _byAddress[address] = (entry.Start, entry.Failures + 1);
                return;
            }
            if (!_byAddress.ContainsKey(address) && _byAddress.Count >= MaxAddresses)
                Evict(now);
            _byAddress[address] = (now, 1);
        }
    }

    /// <summary>Drops every ended window, or, if none has, the oldest.</summary>
    private void Evict(long now)
    {
        IPAddress? oldest = null;
        var oldestStart = long.MaxValue;
        List<IPAddress>? ended = null;
        foreach (var (address, entry) in _byAddress)
        {
            if (now - entry.Start >= WindowTicks)
                (ended ??= []).Add(address);
            else if (entry.Start < oldestStart)
                (oldest, oldestStart) = (address, entry.Start);
        }
        if (ended is not null)
        {
            foreach (var address in ended)
                _byAddress.Remove(address);
        }
        else if (oldest is not null)
        {
            _byAddress.Remove(oldest);
        }
    }
}
