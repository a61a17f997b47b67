using Vnet.Patterns;

namespace Vnet.Tests.Patterns;

/// <summary>Who sends to whom: the properties every pattern shares, then each pattern's own shape, for 1..9 ranks.</summary>
public sealed class PatternGraphTests
{
    private const int MaxRanks = 9;

    public static TheoryData<PatternKind> Kinds() => [.. Enum.GetValues<PatternKind>()];

    private static IEnumerable<int> Sizes => Enumerable.Range(1, MaxRanks);

    private static (int, int) Edge(int a, int b) => (Math.Min(a, b), Math.Max(a, b));

    // Every pattern.

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Targets_AnySize_InRangeAscendingNoSelfNoRepeats(PatternKind kind)
    {
        foreach (var n in Sizes)
        {
            for (var rank = 0; rank < n; rank++)
            {
                var targets = kind.Targets(rank, n);
                Assert.DoesNotContain(rank, targets);
                Assert.All(targets, t => Assert.InRange(t, 0, n - 1));
                Assert.Equal(targets.Order(), targets);
                Assert.Equal(targets.Count, targets.Distinct().Count());
            }
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Sources_AnySize_ExactlyTheRanksThatTargetIt(PatternKind kind)
    {
        foreach (var n in Sizes)
        {
            for (var rank = 0; rank < n; rank++)
            {
                var expected = Enumerable.Range(0, n).Where(j => kind.Targets(j, n).Contains(rank));
                Assert.Equal(expected, kind.Sources(rank, n));
            }
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Edges_AnySize_UndirectedUnionOfTargetsWithoutSelfEdges(PatternKind kind)
    {
        foreach (var n in Sizes)
        {
            var expected = Enumerable.Range(0, n).SelectMany(r => kind.Targets(r, n).Select(t => Edge(r, t))).ToHashSet();
            var edges = kind.Edges(n);
            Assert.True(expected.SetEquals(edges), $"{kind.Name()} n={n}");
            Assert.All(edges, e => Assert.True(e.Item1 < e.Item2, $"{e} in {kind.Name()} n={n}"));
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Edges_SeveralRanks_ConnectEveryRank(PatternKind kind)
    {
        // Every pattern is one application: a rank cut off from the others would not be part of it.
        foreach (var n in Sizes)
        {
            var reached = new HashSet<int> { 0 };
            var edges = kind.Edges(n);
            for (var grew = true; grew;)
            {
                grew = false;
                foreach (var (a, b) in edges)
                {
                    if (reached.Contains(a) != reached.Contains(b))
                        grew |= reached.Add(a) | reached.Add(b);
                }
            }
            Assert.Equal(n, reached.Count);
        }
    }

    [Theory]
    [InlineData(PatternKind.AllToAll)]
    [InlineData(PatternKind.NeighborMesh)]
    [InlineData(PatternKind.Bus)]
    [InlineData(PatternKind.Tree)]
    [InlineData(PatternKind.Reduction)]
    public void Targets_SymmetricPatterns_EveryTargetSendsBack(PatternKind kind)
    {
        foreach (var n in Sizes)
        {
            for (var rank = 0; rank < n; rank++)
            {
                foreach (var t in kind.Targets(rank, n))
                    Assert.Contains(rank, kind.Targets(t, n));
                Assert.Equal(kind.Targets(rank, n), kind.Sources(rank, n));
            }
        }
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Targets_OneRank_Nothing(PatternKind kind)
    {
        Assert.Empty(kind.Targets(0, 1));
        Assert.Empty(kind.Sources(0, 1));
        Assert.Empty(kind.Edges(1));
    }

    [Theory]
    [InlineData(-1, 4)]
    [InlineData(4, 4)]
    [InlineData(0, 0)]
    public void Targets_RankOutOfRange_Throws(int rank, int n)
    {
        Assert.ThrowsAny<ArgumentException>(() => PatternKind.Ring.Targets(rank, n));
        Assert.ThrowsAny<ArgumentException>(() => PatternKind.Ring.Sources(rank, n));
    }

    [Fact]
    public void Targets_UnknownKind_Throws()
    {
        Assert.ThrowsAny<ArgumentException>(() => ((PatternKind)99).Targets(0, 2));
    }

    // Each pattern's shape.

    [Fact]
    public void Targets_AllToAll_EveryOtherRank()
    {
        foreach (var n in Sizes)
        {
            for (var rank = 0; rank < n; rank++)
                Assert.Equal(Enumerable.Range(0, n).Where(j => j != rank), PatternKind.AllToAll.Targets(rank, n));
            Assert.Equal(n * (n - 1) / 2, PatternKind.AllToAll.Edges(n).Count);
        }
    }

    [Fact]
    public void Targets_Ring_NextRankOnlyWrapping()
    {
        foreach (var n in Sizes.Where(n => n > 1))
        {
            for (var rank = 0; rank < n; rank++)
            {
                Assert.Equal([(rank + 1) % n], PatternKind.Ring.Targets(rank, n));
                Assert.Equal([(rank + n - 1) % n], PatternKind.Ring.Sources(rank, n));
            }
            // Two ranks send both ways over one edge; from three on, the ring is a cycle of n edges.
            Assert.Equal(n == 2 ? 1 : n, PatternKind.Ring.Edges(n).Count);
        }
        Assert.Equal([3], PatternKind.Ring.Sources(0, 4));
    }

    [Fact]
    public void Targets_Ring_NotSymmetric()
    {
        Assert.Equal([1], PatternKind.Ring.Targets(0, 4));
        Assert.DoesNotContain(0, PatternKind.Ring.Targets(1, 4));
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(2, 1, 2)]
    [InlineData(3, 1, 3)]
    [InlineData(4, 2, 2)]
    [InlineData(5, 1, 5)]
    [InlineData(6, 2, 3)]
    [InlineData(7, 1, 7)]
    [InlineData(8, 2, 4)]
    [InlineData(9, 3, 3)]
    [InlineData(12, 3, 4)]
    [InlineData(16, 4, 4)]
    [InlineData(18, 3, 6)]
    public void MeshShape_N_LargestDivisorUpToSquareRootRows(int n, int rows, int columns)
    {
        Assert.Equal((rows, columns), PatternGraph.MeshShape(n));
    }

    [Fact]
    public void Targets_NeighborMesh_UpDownLeftRightWithoutWrap()
    {
        // 6 ranks: 2 rows of 3.   0 1 2
        //                         3 4 5
        Assert.Equal([1, 3], PatternKind.NeighborMesh.Targets(0, 6));
        Assert.Equal([0, 2, 4], PatternKind.NeighborMesh.Targets(1, 6));
        Assert.Equal([1, 5], PatternKind.NeighborMesh.Targets(2, 6));
        Assert.Equal([1, 3, 5], PatternKind.NeighborMesh.Targets(4, 6));
        // 9 ranks: 3 x 3, the centre has all four.
        Assert.Equal([1, 3, 5, 7], PatternKind.NeighborMesh.Targets(4, 9));
        Assert.Equal([5, 7], PatternKind.NeighborMesh.Targets(8, 9));
        // A prime count is one row: a line.
        Assert.Equal([1, 3], PatternKind.NeighborMesh.Targets(2, 5));
    }

    [Fact]
    public void Edges_NeighborMesh_GridEdgeCount()
    {
        foreach (var n in Sizes)
        {
            var (rows, columns) = PatternGraph.MeshShape(n);
            Assert.Equal(rows * (columns - 1) + columns * (rows - 1), PatternKind.NeighborMesh.Edges(n).Count);
            Assert.All(PatternKind.NeighborMesh.Edges(n), e =>
                Assert.True(e.Item2 - e.Item1 == 1 && e.Item1 / columns == e.Item2 / columns || e.Item2 - e.Item1 == columns, $"{e} n={n}"));
        }
    }

    [Fact]
    public void Targets_Bus_NeighboursOnALine()
    {
        Assert.Equal([1], PatternKind.Bus.Targets(0, 5));
        Assert.Equal([1, 3], PatternKind.Bus.Targets(2, 5));
        Assert.Equal([3], PatternKind.Bus.Targets(4, 5));
        foreach (var n in Sizes)
            Assert.True(Enumerable.Range(0, n - 1).Select(i => (i, i + 1)).ToHashSet().SetEquals(PatternKind.Bus.Edges(n)));
    }

    [Theory]
    [InlineData(PatternKind.Tree)]
    [InlineData(PatternKind.Reduction)]
    public void Targets_TreeAndReduction_ParentAndChildrenOfABinaryTree(PatternKind kind)
    {
        Assert.Equal([1, 2], kind.Targets(0, 7));
        Assert.Equal([0, 3, 4], kind.Targets(1, 7));
        Assert.Equal([0, 5, 6], kind.Targets(2, 7));
        Assert.Equal([2], kind.Targets(6, 7));
        Assert.Equal([1, 7], kind.Targets(3, 8));
        foreach (var n in Sizes)
        {
            var edges = kind.Edges(n);
            // A tree: n - 1 edges, each joining a rank to its parent (i - 1) / 2.
            Assert.Equal(n - 1, edges.Count);
            Assert.True(Enumerable.Range(1, n - 1).Select(i => ((i - 1) / 2, i)).ToHashSet().SetEquals(edges));
            for (var rank = 0; rank < n; rank++)
                Assert.InRange(kind.Targets(rank, n).Count, n == 1 ? 0 : 1, 3);
        }
    }

    [Fact]
    public void Edges_Reduction_SameTopologyAsTree()
    {
        foreach (var n in Sizes)
            Assert.True(PatternKind.Tree.Edges(n).SetEquals(PatternKind.Reduction.Edges(n)));
    }

    [Fact]
    public void TreeParentAndChildren_Ranks_HeapNumbering()
    {
        Assert.Equal(-1, PatternGraph.TreeParent(0));
        Assert.Equal(0, PatternGraph.TreeParent(2));
        Assert.Equal(2, PatternGraph.TreeParent(6));
        Assert.Equal([5, 6], PatternGraph.TreeChildren(2, 7));
        Assert.Equal([5], PatternGraph.TreeChildren(2, 6));
        Assert.Empty(PatternGraph.TreeChildren(3, 7));
    }

    // Names.

    [Theory]
    [MemberData(nameof(Kinds))]
    public void Name_EveryKind_ParsesBack(PatternKind kind)
    {
        Assert.True(PatternGraph.TryParse(kind.Name(), out var parsed));
        Assert.Equal(kind, parsed);
    }

    [Fact]
    public void TryParse_Names_CommandLineSpellingAnyCase()
    {
        Assert.Equal(["all-to-all", "ring", "neighbor-mesh", "bus", "tree", "reduction"], PatternGraph.Names);
        Assert.True(PatternGraph.TryParse("All-To-All", out var kind));
        Assert.Equal(PatternKind.AllToAll, kind);
        Assert.False(PatternGraph.TryParse("alltoall", out _));
        Assert.False(PatternGraph.TryParse(null, out _));
    }
}
