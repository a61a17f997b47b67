namespace Vnet.Inference;

/// <summary>An edge of the application topology: two VMs that exchange traffic.</summary>
/// <param name="BytesPerSecond">Smoothed rate, both directions summed.</param>
/// <param name="Normalized">Rate divided by the strongest pair's rate (the strongest edge has 1).</param>
public sealed record Edge(VmPair Pair, double BytesPerSecond, double Normalized);

/// <summary>
/// The inferred application topology: its edges, heaviest first, and when this edge set became
/// current (rates change under an unchanged edge set without moving <paramref name="Since"/>).
/// </summary>
public sealed record InferredTopology(IReadOnlyList<Edge> Edges, DateTimeOffset Since)
{
    /// <summary>No edges, before inference has seen anything.</summary>
    public static InferredTopology Empty { get; } = new([], DateTimeOffset.MinValue);

    public bool Contains(VmPair pair) => Edges.Any(e => e.Pair == pair);
}

/// <summary>A change of the inferred topology: the edges that appeared and disappeared.</summary>
/// <param name="Id">Grows by one per event, from 1; callers poll with <see cref="TopologyInference.EventsSince"/>.</param>
/// <param name="Topology">The topology that became current.</param>
public sealed record TopologyEvent(long Id, DateTimeOffset At, IReadOnlyList<VmPair> Added, IReadOnlyList<VmPair> Removed, InferredTopology Topology);
