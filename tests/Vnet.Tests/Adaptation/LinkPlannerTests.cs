using Vnet.Adaptation;
using Vnet.Frames;
using Vnet.Inference;
using static Vnet.Tests.Inference.Vttif;

namespace Vnet.Tests.Adaptation;

public sealed class LinkPlannerTests
{
    private const double MB = 1_000_000;

    private static Dictionary<string, StarPath> Star(params (string Host, double Rtt)[] paths) =>
        paths.ToDictionary(p => p.Host, p => new StarPath(p.Host, p.Rtt, null));

    private static readonly Dictionary<string, StarPath> EvenStar = Star(("h1", 10), ("h2", 10), ("h3", 10), ("h4", 10), ("h5", 10));

    private static string[] Names(IReadOnlyList<PlannedLink> links) => [.. links.Select(l => $"{l.A}-{l.B}")];

    [Fact]
    public void Choose_BudgetOne_HeaviestFirstAndNoHostTwice()
    {
        HostDemand[] demands =
        [
            new("h1", "h2", 10 * MB),
            new("h1", "h3", 5 * MB),
            new("h3", "h4", 4 * MB),
            new("h2", "h4", 3 * MB),
        ];

        var links = LinkPlanner.Choose(demands, EvenStar, budgetPerHost: 1);

        Assert.Equal(["h1-h2", "h3-h4"], Names(links));
        Assert.Equal(10 * MB, links[0].BytesPerSecond);
        Assert.All(links, l => Assert.False(l.Kept));
    }

    [Fact]
    public void Choose_BudgetTwo_EachHostUpToTwoLinks()
    {
        HostDemand[] demands =
        [
            new("h1", "h2", 10 * MB),
            new("h1", "h3", 8 * MB),
            new("h1", "h4", 6 * MB),
            new("h2", "h3", 4 * MB),
            new("h3", "h4", 2 * MB),
        ];

        var links = LinkPlanner.Choose(demands, EvenStar, budgetPerHost: 2);

        // h1 is full after h1-h2 and h1-h3; h3 is full after h2-h3.
        Assert.Equal(["h1-h2", "h1-h3", "h2-h3"], Names(links));
    }

    [Fact]
    public void Choose_BudgetZero_Nothing() =>
        Assert.Empty(LinkPlanner.Choose([new HostDemand("h1", "h2", MB)], EvenStar, 0));

    [Fact]
    public void Choose_NearTie_SlowestStarPathWins()
    {
        // h1-h3 carries 5 % less but its star path is 110 ms against 20 ms: a direct link helps it most.
        HostDemand[] demands = [new("h1", "h2", 10 * MB), new("h1", "h3", 9.5 * MB)];
        var star = Star(("h1", 10), ("h2", 10), ("h3", 100));

        var link = Assert.Single(LinkPlanner.Choose(demands, star, 1));

        Assert.Equal("h1-h3", $"{link.A}-{link.B}");
        Assert.StartsWith("h1-h3 carry 9.5 MB/s, star path 110 ms", link.Reason, StringComparison.Ordinal);
        Assert.Contains("taken before h1-h2", link.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Choose_MoreThanTenPercentApart_HeavierWinsWhateverTheStar()
    {
        HostDemand[] demands = [new("h1", "h2", 10 * MB), new("h1", "h3", 8.9 * MB)];
        var star = Star(("h1", 10), ("h2", 10), ("h3", 100));

        var link = Assert.Single(LinkPlanner.Choose(demands, star, 1));

        Assert.Equal("h1-h2", $"{link.A}-{link.B}");
        Assert.Equal("h1-h2 carry 10.0 MB/s, star path 20 ms", link.Reason);
    }

    [Fact]
    public void Choose_NearTieSameRtt_LowerStarThroughputWins()
    {
        HostDemand[] demands = [new("h1", "h2", 10 * MB), new("h1", "h3", 10 * MB)];
        var star = new Dictionary<string, StarPath>
        {
            ["h1"] = new("h1", 10, 100 * MB),
            ["h2"] = new("h2", 10, 50 * MB),
            ["h3"] = new("h3", 10, 5 * MB),
        };

        var link = Assert.Single(LinkPlanner.Choose(demands, star, 1));

        Assert.Equal("h1-h3", $"{link.A}-{link.B}");
    }

    [Fact]
    public void Choose_UnmeasuredStar_LosesTiesToAMeasuredSlowOne()
    {
        HostDemand[] demands = [new("h1", "h2", 10 * MB), new("h1", "h3", 10 * MB)];

        var link = Assert.Single(LinkPlanner.Choose(demands, Star(("h3", 30)), 1));

        Assert.Equal("h1-h3", $"{link.A}-{link.B}");
    }

    [Fact]
    public void Choose_ExistingLinkInNearTie_KeptRatherThanReplaced()
    {
        HostDemand[] demands = [new("h1", "h2", 10 * MB), new("h1", "h3", 10.5 * MB)];
        var star = Star(("h1", 10), ("h2", 10), ("h3", 100));

        var link = Assert.Single(LinkPlanner.Choose(demands, star, 1, new HashSet<(string, string)> { ("h2", "h1") }));

        Assert.Equal("h1-h2", $"{link.A}-{link.B}");
        Assert.True(link.Kept);
        Assert.EndsWith("existing link kept", link.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Choose_ExistingLinksCountAgainstBudget_AndIdleOnesAreLeftOut()
    {
        // h1-h2 exists and still carries the most; h1-h4 exists but carries nothing now.
        HostDemand[] demands = [new("h1", "h2", 10 * MB), new("h1", "h3", 5 * MB), new("h3", "h4", 1 * MB)];
        var existing = new HashSet<(string, string)> { ("h1", "h2"), ("h1", "h4") };

        var links = LinkPlanner.Choose(demands, EvenStar, 1, existing);

        Assert.Equal(["h1-h2", "h3-h4"], Names(links));
        Assert.Equal([true, false], links.Select(l => l.Kept));
    }

    [Fact]
    public void Choose_ExistingLinkClearlyOutweighed_Replaced()
    {
        HostDemand[] demands = [new("h1", "h2", 5 * MB), new("h1", "h3", 10 * MB)];

        var link = Assert.Single(LinkPlanner.Choose(demands, EvenStar, 1, new HashSet<(string, string)> { ("h1", "h2") }));

        Assert.Equal("h1-h3", $"{link.A}-{link.B}");
        Assert.False(link.Kept);
    }

    [Fact]
    public void Choose_PairsWithTheProxy_NeverChosen()
    {
        HostDemand[] demands = [new("proxy", "h1", 100 * MB), new("h2", "proxy", 50 * MB), new("h1", "h2", 1 * MB)];

        var links = LinkPlanner.Choose(demands, EvenStar, 3, proxy: "proxy");

        Assert.Equal(["h1-h2"], Names(links));
    }

    [Fact]
    public void Choose_BothDirectionsAndRepeats_MergedPerHostPair()
    {
        // 4 + 4 = 8 MB/s for h2-h1 beats 6 MB/s for h1-h3.
        HostDemand[] demands = [new("h2", "h1", 4 * MB), new("h1", "h3", 6 * MB), new("h1", "h2", 4 * MB), new("h3", "h3", 99 * MB)];

        var links = LinkPlanner.Choose(demands, EvenStar, 1);

        var link = Assert.Single(links);
        Assert.Equal(("h1", "h2", 8 * MB), (link.A, link.B, link.BytesPerSecond));
    }

    [Fact]
    public void Choose_ReasonNamesRateStarPathAndThroughput()
    {
        var star = new Dictionary<string, StarPath> { ["h1"] = new("h1", 15, 2 * MB), ["h2"] = new("h2", 25, 8 * MB) };

        var link = Assert.Single(LinkPlanner.Choose([new HostDemand("h1", "h2", 1.2 * MB)], star, 1));

        Assert.Equal("h1-h2 carry 1.2 MB/s, star path 40 ms at 2.0 MB/s", link.Reason);
    }

    [Fact]
    public void DemandsOf_EdgesBetweenHosts_SummedPerHostPair()
    {
        var vmHost = new Dictionary<MacAddress, string> { [Mac(1)] = "h1", [Mac(2)] = "h1", [Mac(3)] = "h2", [Mac(4)] = "h3" };
        Edge[] edges =
        [
            new(P(1, 3), 3 * MB, 1),
            new(P(2, 3), 2 * MB, 0.66),
            new(P(1, 2), 9 * MB, 1),   // inside h1: no link helps
            new(P(3, 4), 1 * MB, 0.33),
            new(P(4, 9), 7 * MB, 1),   // VM 9's host is unknown
        ];

        var demands = LinkPlanner.DemandsOf(edges, vmHost);

        Assert.Equal([new HostDemand("h1", "h2", 5 * MB), new HostDemand("h2", "h3", 1 * MB)], demands);
    }
}
