namespace Vnet.Patterns;

/// <summary>
/// Who sends to whom in each pattern, for <c>n</c> ranks numbered 0..n-1. Traffic inference is
/// judged against <see cref="Edges"/>: the undirected topology a pattern exercises.
/// </summary>
/// <remarks>
/// This is not named <c>Patterns</c>: a class of the same name as its namespace cannot be named
/// from any <c>Vnet.*</c> namespace (the name finds the namespace <c>Vnet.Patterns</c> first).
/// The members are extension methods, so <c>PatternKind.Ring.Targets(0, 4)</c> reads well too.
/// <list type="bullet">
/// <item>all-to-all: every rank sends to every other rank.</item>
/// <item>ring: rank i sends to (i + 1) mod n.</item>
/// <item>neighbor-mesh: ranks fill a grid of <see cref="MeshShape"/> row by row; each sends to
/// its up, down, left and right neighbours that exist (no wrap).</item>
/// <item>bus: rank i sends to i - 1 and i + 1 that exist (a line, no wrap).</item>
/// <item>tree: a binary tree rooted at 0 (parent (i - 1) / 2, children 2i + 1 and 2i + 2); each
/// rank sends to its parent and its children.</item>
/// <item>reduction: the same tree and the same messages as tree, but ordered: a rank sends up
/// only after it heard from all its children, and down only after it heard from its parent (the
/// root: after it heard from all its children).</item>
/// </list>
/// Lists are in ascending rank order and never contain the rank itself.
/// </remarks>
public static class PatternGraph
{
    /// <summary>Pattern names as the CLI and the JSON report spell them, in enum order.</summary>
    public static IReadOnlyList<string> Names { get; } = ["all-to-all", "ring", "neighbor-mesh", "bus", "tree", "reduction"];

    public static string Name(this PatternKind kind) =>
        (uint)kind < (uint)Names.Count ? Names[(int)kind] : throw new ArgumentOutOfRangeException(nameof(kind), kind, "not a pattern");

    public static bool TryParse(string? text, out PatternKind kind)
    {
        for (var i = 0; i < Names.Count; i++)
        {
            if (string.Equals(text, Names[i], StringComparison.OrdinalIgnoreCase))
            {
                kind = (PatternKind)i;
                return true;
            }
        }
        kind = default;
        return false;
    }

    /// <summary>
    /// The neighbor-mesh grid for <paramref name="n"/> ranks: rows is the largest divisor of n
    /// that is at most sqrt(n), so the grid is as square as n allows (a prime n gives one row).
    /// </summary>
    public static (int Rows, int Columns) MeshShape(int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        var rows = 1;
        for (var r = 2; (long)r * r <= n; r++)
        {
            if (n % r == 0)
                rows = r;
        }
        return (rows, n / rows);
    }

    /// <summary>The tree parent of <paramref name="rank"/> (tree and reduction), or -1 for the root.</summary>
    public static int TreeParent(int rank) => rank == 0 ? -1 : (rank - 1) / 2;

    /// <summary>The ranks <paramref name="rank"/> sends one message to in every round.</summary>
    public static IReadOnlyList<int> Targets(this PatternKind kind, int rank, int n)
    {
        Check(kind, rank, n);
        var targets = new List<int>(4);
        switch (kind)
        {
            case PatternKind.AllToAll:
                for (var j = 0; j < n; j++)
                {
                    if (j != rank)
                        targets.Add(j);
                }
                break;
            case PatternKind.Ring:
                if (n > 1)
                    targets.Add((rank + 1) % n);
                break;
            case PatternKind.NeighborMesh:
                var (rows, columns) = MeshShape(n);
                var (row, column) = (rank / columns, rank % columns);
                if (row > 0)
                    targets.Add(rank - columns);
                if (column > 0)
                    targets.Add(rank - 1);
                if (column < columns - 1)
                    targets.Add(rank + 1);
                if (row < rows - 1)
                    targets.Add(rank + columns);
                break;
            case PatternKind.Bus:
                if (rank > 0)
                    targets.Add(rank - 1);
                if (rank < n - 1)
                    targets.Add(rank + 1);
                break;
            case PatternKind.Tree:
            case PatternKind.Reduction:
                if (rank > 0)
                    targets.Add(TreeParent(rank));
                targets.AddRange(TreeChildren(rank, n));
                break;
        }
        return targets;
    }

    /// <summary>The ranks that send one message to <paramref name="rank"/> in every round.</summary>
    public static IReadOnlyList<int> Sources(this PatternKind kind, int rank, int n)
    {
        Check(kind, rank, n);
        // Only the ring is directed; every other pattern sends back along each edge.
        if (kind == PatternKind.Ring)
            return n > 1 ? [(rank + n - 1) % n] : [];
        return Targets(kind, rank, n);
    }

    /// <summary>The tree children of <paramref name="rank"/> among <paramref name="n"/> ranks.</summary>
    public static IReadOnlyList<int> TreeChildren(int rank, int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        var first = 2L * rank + 1;
        if (first >= n)
            return [];
        return first + 1 < n ? [(int)first, (int)first + 1] : [(int)first];
    }

    /// <summary>
    /// The undirected edges of the pattern, each as (lower rank, higher rank): the application
    /// topology that traffic inference should find when the pattern runs.
    /// </summary>
    public static IReadOnlySet<(int, int)> Edges(this PatternKind kind, int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        var edges = new HashSet<(int, int)>();
        for (var rank = 0; rank < n; rank++)
        {
            foreach (var target in Targets(kind, rank, n))
                edges.Add((Math.Min(rank, target), Math.Max(rank, target)));
        }
        return edges;
    }

    private static void Check(PatternKind kind, int rank, int n)
    {
        if (!Enum.IsDefined(kind))
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "not a pattern");
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(rank, n);
    }
}
