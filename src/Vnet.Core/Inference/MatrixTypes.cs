using Vnet.Frames;

namespace Vnet.Inference;

/// <summary>
/// One cell of a daemon's local traffic matrix as it reports it: everything its local VM
/// <paramref name="Source"/> has sent to <paramref name="Destination"/> since the daemon started.
/// Cumulative rather than per-period counters, so that a lost or late report loses no traffic.
/// </summary>
public readonly record struct MatrixEntry(MacAddress Source, MacAddress Destination, long Bytes, long Frames);

/// <summary>A directed pair's smoothed rate, as the aggregator's filter holds it.</summary>
public sealed record PairRate(MacAddress Source, MacAddress Destination, double BytesPerSecond);

/// <summary>
/// An unordered pair of VMs, the key of a topology edge. Always normalised so that
/// <see cref="A"/> &lt;= <see cref="B"/>: (x, y) and (y, x) are the same value and hash alike.
/// </summary>
public readonly record struct VmPair : IComparable<VmPair>
{
    private VmPair(MacAddress a, MacAddress b)
    {
        A = a;
        B = b;
    }

    public MacAddress A { get; }

    public MacAddress B { get; }

    public static VmPair Of(MacAddress a, MacAddress b) => a <= b ? new VmPair(a, b) : new VmPair(b, a);

    public bool Contains(MacAddress mac) => A == mac || B == mac;

    /// <summary>The pair's other end.</summary>
    public MacAddress Other(MacAddress mac) =>
        mac == A ? B : mac == B ? A : throw new ArgumentException($"{mac} is not in {this}", nameof(mac));

    public int CompareTo(VmPair other)
    {
        var c = A.CompareTo(other.A);
        return c != 0 ? c : B.CompareTo(other.B);
    }

    public static bool operator <(VmPair x, VmPair y) => x.CompareTo(y) < 0;

    public static bool operator >(VmPair x, VmPair y) => x.CompareTo(y) > 0;

    public static bool operator <=(VmPair x, VmPair y) => x.CompareTo(y) <= 0;

    public static bool operator >=(VmPair x, VmPair y) => x.CompareTo(y) >= 0;

    public override string ToString() => $"{A}-{B}";
}
