using Vnet.Frames;
using Vnet.Inference;

namespace Vnet.Tests.Inference;

/// <summary>Small builders shared by the inference and adaptation tests.</summary>
internal static class Vttif
{
    public static readonly DateTimeOffset Epoch = new(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>VM number <paramref name="i"/>: a locally administered unicast MAC.</summary>
    public static MacAddress Mac(int i) => new(0x0200_0000_0000UL | (uint)i);

    public static DateTimeOffset T(double seconds) => Epoch + TimeSpan.FromSeconds(seconds);

    public static VmPair P(int a, int b) => VmPair.Of(Mac(a), Mac(b));

    public static MatrixEntry E(int src, int dst, long bytes, long frames = -1) =>
        new(Mac(src), Mac(dst), bytes, frames < 0 ? bytes / 1000 : frames);

    public static PairRate R(int src, int dst, double rate) => new(Mac(src), Mac(dst), rate);

    /// <summary>Options whose filter follows its input at once, to read measured rates directly.</summary>
    public static VttifOptions Raw { get; } = new() { TimeConstant = TimeSpan.FromTicks(1) };

    public static double RateOf(IReadOnlyList<PairRate> matrix, int src, int dst) =>
        matrix.SingleOrDefault(p => p.Source == Mac(src) && p.Destination == Mac(dst))?.BytesPerSecond ?? 0;

    public static VmPair[] Pairs(InferredTopology t) => [.. t.Edges.Select(e => e.Pair).Order()];

    public static VmPair[] Sorted(IEnumerable<VmPair> pairs) => [.. pairs.Order()];
}
