using Vnet.Adaptation;

namespace Vnet.Tests.Adaptation;

public sealed class RouteChooserTests
{
    private const string Proxy = "proxy";

    private static Dictionary<(string, string), double> Rtt(params (string A, string B, double Ms)[] measured) =>
        measured.ToDictionary(m => (m.A, m.B), m => m.Ms);

    [Fact]
    public void Best_DirectFastest_Direct()
    {
        var r = RouteChooser.Best("h1", "h2", Rtt(("h1", "h2", 5), ("h1", Proxy, 20), (Proxy, "h2", 20), ("h1", "h3", 4), ("h3", "h2", 4)), Proxy);

        Assert.Equal(RouteKind.Direct, r.Kind);
        Assert.Equal(["h1", "h2"], r.Hops);
        Assert.Equal(5, r.RttMs);
        Assert.Equal("h2", r.NextHop);
        Assert.Equal("direct 5 ms is the lowest RTT; star 40 ms, best relay via h3 8 ms", r.Reason);
    }

    [Fact]
    public void Best_StarFastest_Star()
    {
        var r = RouteChooser.Best("h1", "h2", Rtt(("h1", "h2", 100), ("h1", Proxy, 20), ("h2", Proxy, 20)), Proxy);

        Assert.Equal(RouteKind.Star, r.Kind);
        Assert.Equal(["h1", Proxy, "h2"], r.Hops);
        Assert.Equal(40, r.RttMs);
        Assert.Equal("star 40 ms (h1-proxy 20 ms + proxy-h2 20 ms) is the lowest RTT; direct 100 ms", r.Reason);
    }

    [Fact]
    public void Best_RelayBeatsDirectAndStar_TwoHop()
    {
        // The triangle inequality does not hold on the internet: h1-h3-h2 beats h1-h2.
        var r = RouteChooser.Best(
            "h1",
            "h2",
            Rtt(("h1", "h2", 100), ("h1", Proxy, 60), (Proxy, "h2", 60), ("h1", "h3", 10), ("h3", "h2", 15), ("h1", "h4", 5), ("h4", "h2", 50)),
            Proxy);

        Assert.Equal(RouteKind.TwoHop, r.Kind);
        Assert.Equal(["h1", "h3", "h2"], r.Hops);
        Assert.Equal(25, r.RttMs);
        Assert.Equal("via h3 25 ms (h1-h3 10 ms + h3-h2 15 ms) is the lowest RTT; direct 100 ms, star 120 ms", r.Reason);
    }

    [Fact]
    public void Best_NoDirectMeasurement_StarOrRelayOnly()
    {
        var r = RouteChooser.Best("h1", "h2", Rtt(("h1", Proxy, 10), (Proxy, "h2", 10)), Proxy);

        Assert.Equal(RouteKind.Star, r.Kind);
        Assert.Contains("direct not measured", r.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Best_NothingMeasured_StarWithUnknownRtt()
    {
        var r = RouteChooser.Best("h1", "h2", Rtt(("h3", "h4", 1)), Proxy);

        Assert.Equal(RouteKind.Star, r.Kind);
        Assert.Equal(["h1", Proxy, "h2"], r.Hops);
        Assert.Null(r.RttMs);
    }

    [Fact]
    public void Best_HalfMeasuredStarOrRelay_NotCandidates()
    {
        // Only one leg of the star and of the relay is known: the measured direct path is the only choice.
        var r = RouteChooser.Best("h1", "h2", Rtt(("h1", "h2", 300), ("h1", Proxy, 1), ("h1", "h3", 1)), Proxy);

        Assert.Equal(RouteKind.Direct, r.Kind);
        Assert.Equal("direct 300 ms is the lowest RTT; star not measured", r.Reason);
    }

    [Fact]
    public void Best_MeasurementsInEitherOrder_Symmetric()
    {
        var forward = RouteChooser.Best("h1", "h2", Rtt(("h2", "h1", 5), (Proxy, "h1", 1), ("h2", Proxy, 1)), Proxy);
        var backward = RouteChooser.Best("h2", "h1", Rtt(("h2", "h1", 5), (Proxy, "h1", 1), ("h2", Proxy, 1)), Proxy);

        Assert.Equal((RouteKind.Star, 2.0), (forward.Kind, forward.RttMs!.Value));
        Assert.Equal((RouteKind.Star, 2.0), (backward.Kind, backward.RttMs!.Value));
        Assert.Equal(["h2", Proxy, "h1"], backward.Hops);
    }

    [Fact]
    public void Best_BothOrdersMeasuredDifferently_UsesTheMean()
    {
        var r = RouteChooser.Best("h1", "h2", Rtt(("h1", "h2", 4), ("h2", "h1", 8)), Proxy);

        Assert.Equal(6, r.RttMs);
    }

    [Fact]
    public void Best_EqualRtts_FewerHopsWin()
    {
        var r = RouteChooser.Best("h1", "h2", Rtt(("h1", "h2", 20), ("h1", Proxy, 10), (Proxy, "h2", 10), ("h1", "h3", 10), ("h3", "h2", 10)), Proxy);
        Assert.Equal(RouteKind.Direct, r.Kind);

        var s = RouteChooser.Best("h1", "h2", Rtt(("h1", Proxy, 10), (Proxy, "h2", 10), ("h1", "h3", 10), ("h3", "h2", 10)), Proxy);
        Assert.Equal(RouteKind.Star, s.Kind);
    }

    [Fact]
    public void Best_OneEndIsTheProxy_StarLinkUnlessARelayBeatsIt()
    {
        var star = RouteChooser.Best("h1", Proxy, Rtt(("h1", Proxy, 10), ("h1", "h2", 3), ("h2", Proxy, 9)), Proxy);
        Assert.Equal(RouteKind.Star, star.Kind);
        Assert.Equal(["h1", Proxy], star.Hops);

        var relay = RouteChooser.Best(Proxy, "h1", Rtt(("h1", Proxy, 80), ("h1", "h2", 3), ("h2", Proxy, 9)), Proxy);
        Assert.Equal(RouteKind.TwoHop, relay.Kind);
        Assert.Equal([Proxy, "h2", "h1"], relay.Hops);
    }

    [Fact]
    public void Best_BadMeasurements_Ignored()
    {
        var r = RouteChooser.Best("h1", "h2", Rtt(("h1", "h2", double.NaN), ("h1", Proxy, -1), (Proxy, "h2", 3), ("h1", "h3", double.PositiveInfinity), ("h3", "h2", 1)), Proxy);

        Assert.Null(r.RttMs);
    }

    [Fact]
    public void Best_SameDaemonTwice_Throws() =>
        Assert.Throws<ArgumentException>(() => RouteChooser.Best("h1", "h1", Rtt(), Proxy));
}
