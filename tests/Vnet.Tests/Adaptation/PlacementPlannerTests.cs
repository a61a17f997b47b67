using Vnet.Adaptation;
using Vnet.Frames;
using Vnet.Inference;
using static Vnet.Tests.Inference.Vttif;

namespace Vnet.Tests.Adaptation;

public sealed class PlacementPlannerTests
{
    private const double MB = 1_000_000;

    private static Dictionary<MacAddress, string> At(params (int Vm, string Host)[] vms) => vms.ToDictionary(v => Mac(v.Vm), v => v.Host);

    private static Dictionary<string, int> Cap(params (string Host, int Slots)[] hosts) => hosts.ToDictionary(h => h.Host, h => h.Slots);

    private static (VmPair, double)[] Traffic(params (int A, int B, double Rate)[] t) => [.. t.Select(x => (P(x.A, x.B), x.Rate))];

    [Fact]
    public void Plan_ChattyPairOnTwoHosts_CoLocated()
    {
        var plan = PlacementPlanner.Plan(At((1, "h1"), (2, "h2")), Traffic((1, 2, 5 * MB)), Cap(("h1", 4), ("h2", 4)));

        var move = Assert.Single(plan.Moves);
        // Equal free slots either way: the lower MAC moves.
        Assert.Equal((Mac(1), "h1", "h2", 5 * MB), (move.Vm, move.From, move.To, move.Saved));
        Assert.Equal(5 * MB, plan.InterHostBefore);
        Assert.Equal(0, plan.InterHostAfter);
        Assert.Equal("02:00:00:00:00:01 exchanges 5.0 MB/s with VMs on h2 and 0 B/s with the others on h1: moving it saves 5.0 MB/s between hosts", move.Reason);
    }

    [Fact]
    public void Plan_DestinationFull_MovesTheOtherVm()
    {
        var plan = PlacementPlanner.Plan(At((1, "h1"), (2, "h2")), Traffic((1, 2, 5 * MB)), Cap(("h1", 2), ("h2", 1)));

        var move = Assert.Single(plan.Moves);
        Assert.Equal((Mac(2), "h2", "h1"), (move.Vm, move.From, move.To));
    }

    [Fact]
    public void Plan_BothHostsFull_NoMove()
    {
        var plan = PlacementPlanner.Plan(At((1, "h1"), (2, "h2"), (3, "h1"), (4, "h2")), Traffic((1, 2, 5 * MB)), Cap(("h1", 2), ("h2", 2)));

        Assert.Empty(plan.Moves);
        Assert.Equal(plan.InterHostBefore, plan.InterHostAfter);
    }

    [Fact]
    public void Plan_NothingToGain_NoMove()
    {
        // VM 1 talks as much to its neighbour on h1 as to VM 3 on h2: moving it saves nothing.
        var vms = At((1, "h1"), (2, "h1"), (3, "h2"), (4, "h2"));
        var traffic = Traffic((1, 2, 3 * MB), (1, 3, 3 * MB), (3, 4, 3 * MB));

        var plan = PlacementPlanner.Plan(vms, traffic, Cap(("h1", 8), ("h2", 8)));

        Assert.Empty(plan.Moves);
        Assert.Equal(3 * MB, plan.InterHostBefore);
    }

    [Fact]
    public void Plan_HeaviestGainFirst_AndCapacityRespected()
    {
        // Two chatty groups split across three hosts of three slots each.
        var vms = At((1, "h1"), (2, "h2"), (3, "h3"), (4, "h1"), (5, "h2"));
        var traffic = Traffic((1, 2, 10 * MB), (4, 5, 4 * MB), (3, 5, 1 * MB));
        var capacity = Cap(("h1", 3), ("h2", 3), ("h3", 3));

        var plan = PlacementPlanner.Plan(vms, traffic, capacity);

        Assert.Equal([10 * MB, 4 * MB, 1 * MB], plan.Moves.Select(m => m.Saved));
        Assert.Equal((Mac(1), "h2"), (plan.Moves[0].Vm, plan.Moves[0].To));
        Assert.Equal(15 * MB, plan.InterHostBefore);
        Assert.Equal(0, plan.InterHostAfter);
        var after = vms.ToDictionary(v => v.Key, v => v.Value);
        foreach (var m in plan.Moves)
            after[m.Vm] = m.To;
        Assert.All(after.Values.GroupBy(h => h), g => Assert.True(g.Count() <= capacity[g.Key]));
    }

    [Fact]
    public void Plan_GreedyStep_CanSpendTheOnlyFreeSlotOnASmallGain()
    {
        // h1 and h2 are full; only h3 has room. The greedy plan moves 5 to h3 (saves 1 MB/s),
        // which frees h2 for 1 (saves 10 MB/s): each step helps, the sum is not the optimum.
        var vms = At((1, "h1"), (2, "h2"), (3, "h3"), (4, "h1"), (5, "h2"));
        var traffic = Traffic((1, 2, 10 * MB), (4, 5, 4 * MB), (3, 5, 1 * MB));

        var plan = PlacementPlanner.Plan(vms, traffic, Cap(("h1", 2), ("h2", 2), ("h3", 2)));

        Assert.Equal([(Mac(5), "h3"), (Mac(1), "h2")], plan.Moves.Select(m => (m.Vm, m.To)));
        Assert.Equal(plan.InterHostBefore - plan.Moves.Sum(m => m.Saved), plan.InterHostAfter, 3);
        Assert.Equal(4 * MB, plan.InterHostAfter);
    }

    [Fact]
    public void Plan_UnlistedHostsAndPinnedVms_StayPut()
    {
        // VM 9 is a machine on the Proxy's LAN; VM 2 is pinned by the operator.
        var vms = At((1, "h1"), (9, "proxy"), (2, "h2"), (3, "h1"));
        var traffic = Traffic((1, 9, 5 * MB), (2, 3, 5 * MB));

        var plan = PlacementPlanner.Plan(vms, traffic, Cap(("h1", 1), ("h2", 4)), pinned: new HashSet<MacAddress> { Mac(2) });

        // Only 3 -> h2 is allowed (h1 is full for 2, 2 is pinned, the proxy takes no VMs).
        var move = Assert.Single(plan.Moves);
        Assert.Equal((Mac(3), "h1", "h2"), (move.Vm, move.From, move.To));
        Assert.Equal(5 * MB, plan.InterHostAfter);
    }

    [Fact]
    public void Plan_MaxMoves_StopsEarly()
    {
        var vms = At((1, "h1"), (2, "h2"), (3, "h3"), (4, "h4"));
        var traffic = Traffic((1, 2, 5 * MB), (3, 4, 4 * MB));

        var plan = PlacementPlanner.Plan(vms, traffic, Cap(("h1", 2), ("h2", 2), ("h3", 2), ("h4", 2)), maxMoves: 1);

        var move = Assert.Single(plan.Moves);
        Assert.Equal(5 * MB, move.Saved);
        Assert.Equal(4 * MB, plan.InterHostAfter);
    }

    [Fact]
    public void Plan_TiedSavings_DestinationWithMoreFreeSlotsWins()
    {
        // Moving 1 to h2 or 2 to h1 saves the same; h1 has more room left.
        var plan = PlacementPlanner.Plan(At((1, "h1"), (2, "h2")), Traffic((1, 2, 5 * MB)), Cap(("h1", 4), ("h2", 2)));

        var move = Assert.Single(plan.Moves);
        Assert.Equal((Mac(2), "h1"), (move.Vm, move.To));
    }

    [Fact]
    public void Plan_UnknownVmsAndEmptyTraffic_Ignored()
    {
        var plan = PlacementPlanner.Plan(At((1, "h1")), Traffic((1, 7, 5 * MB)), Cap(("h1", 4), ("h2", 4)));

        Assert.Empty(plan.Moves);
        Assert.Equal(0, plan.InterHostBefore);
    }
}
