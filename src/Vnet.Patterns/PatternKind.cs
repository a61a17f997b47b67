namespace Vnet.Patterns;

/// <summary>
/// The communication patterns of the synthetic BSP benchmark: who sends to whom in every round.
/// Definitions are in <see cref="PatternGraph"/> and docs/patterns.md.
/// </summary>
public enum PatternKind
{
    AllToAll,
    Ring,
    NeighborMesh,
    Bus,
    Tree,
    Reduction,
}
