using Vnet.Forwarding;
using Vnet.Language;
using Vnet.Links;
using Vnet.Tests.Support;

namespace Vnet.Tests.Overlay;

/// <summary>
/// The Proxy's side of <c>vnet topo dump|diff|apply</c> on real daemons linked over loopback: the
/// dump describes the live overlay, applying it changes nothing, a description is applied daemon by
/// daemon, and a daemon's failure rolls back the daemons changed before it.
/// </summary>
public sealed class OverlayApplierTests : IAsyncLifetime
{
    private const string Vm5 = "02:00:00:00:00:05";
    private const string Vm6 = "02:00:00:00:00:06";

    private DaemonNet _net = null!;

    public async Task InitializeAsync() => _net = await DaemonNet.StartAsync("h1", "h2");

    public async Task DisposeAsync() => await _net.DisposeAsync();

    /// <summary>The running overlay as the test knows it, with extra lines per daemon and extra links.</summary>
    private string Describe(string proxy = "", string h1 = "", string h2 = "", string links = "") => $$"""
        proxy proxy at {{_net.At("proxy")}} {
        {{proxy}}
        }
        host h1 at {{_net.At("h1")}} {
        {{h1}}
        }
        host h2 at {{_net.At("h2")}} {
        {{h2}}
        }
        link h1 -> proxy
        link h2 -> proxy
        {{links}}
        """;

    private static OverlayDescription Parse(string text) => OverlayParser.Parse(text, "t.vnet").OrThrow();

    private Task<OverlayApplyReport> Apply(string text, bool dryRun = false) => OverlayApplier.ApplyAsync(_net.Proxy.Overlay, Parse(text), dryRun);

    private async Task<string> Shapes() =>
        string.Join("\n--\n", await Task.WhenAll(new[] { "proxy", "h1", "h2" }.Select(_net.Shape)));

    [Fact]
    public async Task DumpAsync_PlainStar_DescribesTheDaemonsAndTheirStarLinks()
    {
        var dump = await OverlayApplier.DumpAsync(_net.Proxy.Overlay);

        Assert.Equal(Parse(Describe()), dump);
        Assert.Equal(dump, Parse(OverlayFormatter.Format(dump)));
    }

    [Fact]
    public async Task ApplyAsync_TheDump_NoChangesAndNothingSent()
    {
        var before = await Shapes();
        var dump = await OverlayApplier.DumpAsync(_net.Proxy.Overlay);

        var report = await OverlayApplier.ApplyAsync(_net.Proxy.Overlay, dump, dryRun: false);

        Assert.Equal("no changes\n", report.Diff);
        Assert.Null(report.Error);
        Assert.False(report.Applied);
        Assert.Empty(report.Daemons);
        Assert.Equal(before, await Shapes());
    }

    [Fact]
    public async Task ApplyAsync_DirectLinkWithRules_AppliedAtBothEndsAndTheDumpSaysSo()
    {
        var text = Describe(
            h1: $"rule any -> {Vm6} to link h2",
            h2: $"rule any -> {Vm5} to link h1",
            links: "link h1 -> h2 udp");

        var dry = await Apply(text, dryRun: true);
        var dryShapes = await Shapes();
        var report = await Apply(text);

        Assert.True(dry.DryRun);
        Assert.Null(dry.Error);
        Assert.Equal(report.Diff, dry.Diff);
        Assert.Equal($"""
            h1:
              + link h2 (dials {_net.At("h2")}, udp)
              + rule any -> {Vm6} to link h2
            h2:
              + link h1 (h1 dials in, udp)
              + rule any -> {Vm5} to link h1

            """, report.Diff);
        Assert.DoesNotContain("link:h2", dryShapes, StringComparison.Ordinal);
        Assert.True(report.Applied, report.Error);
        Assert.Equal(["h1", "h2"], report.Daemons);
        await DaemonNet.Until(() => _net["h2"].Links.Find("h1") is { IsUp: true }, DaemonNet.UpTimeout, "link h1 -> h2 up");
        var dump = await OverlayApplier.DumpAsync(_net.Proxy.Overlay);
        Assert.Equal("no changes\n", OverlayDiff.Compute(dump, Parse(text)).ToString());
        Assert.Equal("no changes\n", (await Apply(OverlayFormatter.Format(dump))).Diff);
    }

    [Fact]
    public async Task ApplyAsync_DirectLinkTransportChanged_RemadeAtBothEndsWithItsRules()
    {
        string Text(string transport) => Describe(
            h1: $"rule any -> {Vm6} to link h2",
            h2: $"rule any -> {Vm5} to link h1",
            links: $"link h1 -> h2 {transport}");
        Assert.True((await Apply(Text("udp"))).Applied);

        var report = await Apply(Text("tcp"));

        Assert.True(report.Applied, report.Error);
        Assert.Contains("- rule any -> 02:00:00:00:00:06 to link h2", report.Diff, StringComparison.Ordinal);
        Assert.Contains("+ link h1 (h1 dials in, tcp)", report.Diff, StringComparison.Ordinal);
        await DaemonNet.Until(() => _net["h1"].Links.Find("h2")?.Session is { IsClosed: false, Transport: LinkTransport.Tcp }
            && _net["h2"].Links.Find("h1")?.Session is { IsClosed: false, Transport: LinkTransport.Tcp },
            DaemonNet.UpTimeout, "link h1 - h2 up over tcp");
        Assert.Equal("no changes\n", (await Apply(Text("tcp"), dryRun: true)).Diff);
        Assert.Contains(_net["h2"].RuleCommands.List(), r => r.Origin == RuleOrigin.User && r.Action.ToString() == "link:h1");
    }

    [Fact]
    public async Task ApplyAsync_SecondDaemonFailsWhileRunning_FirstRolledBackAndTheReportSaysWhy()
    {
        var before = await Shapes();
        var text = Describe(
            proxy: $"rule any -> {Vm5} to link h1",
            h1: $"rule any -> {Vm6} to link proxy",
            h2: "interface vnetnodev0 pcap");

        var report = await Apply(text);

        Assert.False(report.Applied);
        Assert.Equal(["proxy", "h1"], report.Daemons);
        Assert.StartsWith("h2 refused its changes: h2 could not add interface vnetnodev0 pcap", report.Error, StringComparison.Ordinal);
        Assert.Equal("h1 rolled back; proxy rolled back", report.Rollback);
        Assert.Equal(before, await Shapes());
    }

    /// <summary>
    /// A host takes its change set and its star session ends before the answer leaves (the session
    /// closed under the answer, as when the link drops then): the Proxy cannot tell a refusal from a
    /// set taken. Before, it rolled back the daemons before h2 and left h2 with its part: the
    /// description half applied. Now it waits for h2 to come back, sees its version moved, and
    /// rolls h2 back too.
    /// </summary>
    [Fact]
    public async Task ApplyAsync_HostTakesItsSetButTheAnswerIsLostWithItsSession_NothingHalfApplied()
    {
        var before = await Shapes();
        var h2 = _net["h2"];
        AnswerLost.Install(h2, "apply");
        var text = Describe(
            proxy: $"rule any -> {Vm5} to link h1",
            h1: $"rule any -> {Vm6} to link proxy",
            h2: $"rule any -> {Vm5} to link proxy");

        var report = await Apply(text);

        Assert.False(report.Applied);
        Assert.Equal(before, await Shapes());
        Assert.StartsWith("h2 did not answer its changes: daemon h2 went away", report.Error, StringComparison.Ordinal);
        Assert.Equal("h2 had taken its changes: rolled back; h1 rolled back; proxy rolled back", report.Rollback);
    }

    /// <summary>The same with the set refused by h2 (a change it cannot make), its answer lost as well: h2 had not changed and is left alone.</summary>
    [Fact]
    public async Task ApplyAsync_HostRefusesItsSetAndTheAnswerIsLost_ItsVersionSaysSo_OthersRolledBack()
    {
        var before = await Shapes();
        var h2 = _net["h2"];
        AnswerLost.Install(h2, "apply");
        var text = Describe(h1: $"rule any -> {Vm6} to link proxy", h2: "interface vnetnodev0 pcap");

        var report = await Apply(text);

        Assert.False(report.Applied);
        Assert.Equal("h2 had not taken its changes; h1 rolled back", report.Rollback);
        Assert.Equal(before, await Shapes());
    }

    [Fact]
    public async Task ApplyAsync_DaemonNotRunning_RefusedBeforeAnythingIsSent()
    {
        var before = await Shapes();
        var text = Describe(h1: $"rule any -> {Vm6} to link proxy") + "\nhost h3 at 127.0.0.1:9\nlink h3 -> proxy\n";

        var report = await Apply(text);

        Assert.False(report.Applied);
        Assert.Empty(report.Daemons);
        Assert.Contains("h3 is not part of the running overlay (start it first)", report.Error, StringComparison.Ordinal);
        Assert.Contains("+ host h3", report.Diff, StringComparison.Ordinal);
        Assert.Equal(before, await Shapes());
    }

    [Fact]
    public async Task ApplyAsync_HostWhoseStarLinkIsDown_RefusedNamingItAndWhy()
    {
        await _net["h2"].DisposeAsync();
        await DaemonNet.Until(() => _net.Proxy.Links.Find("h2") is { IsUp: false }, DaemonNet.UpTimeout, "star link h2 down at the Proxy");
        var text = Describe(h1: $"rule any -> {Vm6} to link proxy", h2: $"rule any -> {Vm5} to link proxy");

        var report = await Apply(text);

        Assert.False(report.Applied);
        Assert.Empty(report.Daemons);
        Assert.Contains("h2 is not reachable: link down", report.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(_net["h1"].RuleCommands.List(), r => r.Origin == RuleOrigin.User);
    }

    [Fact]
    public async Task ApplyAsync_HostDownThatAnotherHostDials_DumpStillParsesAndApplyNamesTheHost()
    {
        var linked = Describe(h1: $"rule any -> {Vm6} to link h2", links: "link h1 -> h2 udp");
        Assert.True((await Apply(linked)).Applied);
        await _net["h2"].DisposeAsync();
        await DaemonNet.Until(() => _net.Proxy.Links.Find("h2") is { IsUp: false }, DaemonNet.UpTimeout, "star link h2 down at the Proxy");
        var before = await _net.Shape("h1");

        // h1 still has its end of the link (dialing in vain) and a rule naming it: the dump must
        // not name a daemon it cannot describe.
        var dump = OverlayFormatter.Format(await OverlayApplier.DumpAsync(_net.Proxy.Overlay));
        var parsed = OverlayParser.Parse(dump, "live");
        var report = await Apply(Describe(h1: $"rule any -> {Vm6} to link h2\nrule any -> {Vm5} to link proxy", links: "link h1 -> h2 udp"));

        Assert.True(parsed.Success, dump + "\n" + parsed);
        Assert.Null(parsed.Overlay.Daemon("h2"));
        Assert.Empty(parsed.Overlay.Daemon("h1")!.Rules);
        Assert.False(report.Applied);
        Assert.StartsWith("cannot apply: h2 is not reachable: link down", report.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(";", report.Error, StringComparison.Ordinal);
        // Only what would really change at h1: its link and first rule are live already.
        Assert.Equal($"""
            h1:
              + rule any -> {Vm5} to link proxy
            h2:
              + host h2 at {_net.At("h2")} (not applied: start the daemon)

            """, report.Diff);
        Assert.Equal(before, await _net.Shape("h1"));
    }

    [Fact]
    public async Task ApplyAsync_StarTransportChanged_RefusedTheStarBelongsToTheHostsConfiguration()
    {
        var text = Describe().Replace("link h2 -> proxy", "link h2 -> proxy udp", StringComparison.Ordinal);

        var report = await Apply(text);

        Assert.False(report.Applied);
        Assert.Contains("belongs to h2's configuration", report.Error, StringComparison.Ordinal);
        Assert.Equal(LinkTransport.Tcp, _net["h2"].LinkCommands.List().Single(l => l.Peer == "proxy").Transport);
    }
}
