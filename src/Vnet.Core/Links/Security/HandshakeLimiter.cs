using System.Diagnostics;
using System.Net;

namespace Vnet.Links.Security;

/// <summary>
/// Keeps a flood of handshakes from one address from delaying anyone else's. Under load (at least
/// <see cref="UnderLoad"/> handshakes in progress, as WireGuard turns on its cookies only under
/// load) each source address gets at most <see cref="PerAddressInProgress"/> handshakes in progress
/// and a budget of <see cref="Burst"/> that refills at <see cref="PerSecond"/> a second (a
/// re-dialing host needs a few a second at most). Below that nobody is limited: many hosts behind
/// one address (a site's NAT) all re-dial at once after a Proxy restart. The table of addresses is
/// bounded; when full, the quietest entries go. Only handshakes whose INIT passed mac1 are counted:
/// connections still waiting for their INIT are <see cref="InitWaitList"/>'s.
/// </summary>
internal sealed class HandshakeLimiter
{
    public const int UnderLoad = 16;
    public const int PerAddressInProgress = 4;
    public const double Burst = 10;
    public const double PerSecond = 5;
    public const int MaxAddresses = 4096;

    private readonly Dictionary<IPAddress, Entry> _entries = [];
    private readonly Lock _lock = new();
    private long _refused;
    private int _inProgress;

    private sealed class Entry
    {
        public double Tokens = Burst;
        public long Refilled = Stopwatch.GetTimestamp();
        public int InProgress;
    }

    /// <summary>Handshakes refused by the limits.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>Takes a handshake slot for <paramref name="address"/>; false (counted) when it is over its limits.</summary>
    public bool TryBegin(IPAddress address)
    {
        lock (_lock)
        {
            if (!_entries.TryGetValue(address, out var entry))
            {
                if (_entries.Count >= MaxAddresses)
                    Evict();
                _entries[address] = entry = new Entry();
            }
            var now = Stopwatch.GetTimestamp();
            entry.Tokens = Math.Min(Burst, entry.Tokens + (Stopwatch.GetElapsedTime(entry.Refilled, now).TotalSeconds * PerSecond));
            entry.Refilled = now;
            if (_inProgress >= UnderLoad && (entry.InProgress >= PerAddressInProgress || entry.Tokens < 1))
            {
                Interlocked.Increment(ref _refused);
                return false;
            }
            // Spent in any case: an address that was busy before the load began has less left once it does.
            entry.Tokens = Math.Max(0, entry.Tokens - 1);
            entry.InProgress++;
            _inProgress++;
            return true;
        }
    }

    /// <summary>Gives the slot back when the handshake ends (whatever its outcome).</summary>
    public void End(IPAddress address)
    {
        lock (_lock)
        {
            if (_entries.TryGetValue(address, out var entry) && entry.InProgress > 0)
            {
                entry.InProgress--;
                _inProgress--;
            }
        }
    }

    /// <summary>Drops idle addresses whose budget is full again (they would start afresh anyway), else the fullest.</summary>
    private void Evict()
    {
        var now = Stopwatch.GetTimestamp();
        List<IPAddress>? idle = null;
        foreach (var (address, entry) in _entries)
        {
            if (entry.InProgress == 0 && entry.Tokens + (Stopwatch.GetElapsedTime(entry.Refilled, now).TotalSeconds * PerSecond) >= Burst)
                (idle ??= []).Add(address);
        }
        if (idle is null)
        {
            // Every entry is busy or spent: forget one that has nothing in progress.
            foreach (var (address, entry) in _entries)
            {
                if (entry.InProgress == 0)
                {
                    idle = [address];
                    break;
                }
            }
        }
        foreach (var address in idle ?? [])
            _entries.Remove(address);
    }
}
