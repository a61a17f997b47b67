using System.Text.Json.Nodes;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Links;

namespace Vnet.Tests.Daemon;

/// <summary>
/// <see cref="VnetDaemon.Apply"/> on real daemons linked over loopback: a change set is taken whole
/// or not at all, whether a change is refused while the set is checked or fails while it runs.
/// </summary>
public sealed class ApplyTests : IAsyncLifetime
{
    private const string Vm5 = "02:00:00:00:00:05";
    private const string Vm6 = "02:00:00:00:00:06";

    private DaemonNet _net = null!;

    public async Task InitializeAsync() => _net = await DaemonNet.StartAsync("h1", "h2");

    public async Task DisposeAsync() => await _net.DisposeAsync();

    private static DaemonChange Rule(string op, string dst, string to, string src = "any", string? ingress = null) =>
        new() { Op = op, Src = src, Dst = dst, In = ingress, To = to };

    private static DaemonChange AddRule(string dst, string to) => Rule(DaemonChange.AddRule, dst, to);

    private static DaemonChange RemoveRule(string dst, string to) => Rule(DaemonChange.RemoveRule, dst, to);

    private static DaemonChange ExpectLink(string peer, string transport = "tcp") =>
        new() { Op = DaemonChange.AddLink, Peer = peer, Transport = transport };

    private static DaemonChange RemoveLink(string peer) => new() { Op = DaemonChange.RemoveLink, Peer = peer };

    /// <summary>Each one is refused while the set is checked, for its own reason.</summary>
    public static TheoryData<string, string> RefusedChanges() => new()
    {
        { """{"op":"addRule","src":"any","dst":"02:00:00:00:00:06","to":"link:nowhere"}""", "no port link:nowhere" },
        { """{"op":"addRule","src":"ff:ff:ff:ff:ff:ff","dst":"any","to":"link:proxy"}""", "group address" },
        { """{"op":"addRule","src":"any","dst":"02:00:00:00:00:05","to":"link:proxy"}""", "already exists" },
        { """{"op":"removeRule","src":"any","dst":"02:00:00:00:00:07","to":"link:proxy"}""", "no user rule" },
        { """{"op":"addVm","name":"tap9","mac":"02:00:00:00:00:07"}""", "no interface tap9" },
        { """{"op":"addVm","name":"tap9","mac":"01:00:5e:00:00:01"}""", "not a VM MAC" },
        { """{"op":"addInterface","name":"eth0","kind":"tap","mtu":100}""", "out of range" },
        { """{"op":"addInterface","name":"eth0","kind":"vde"}""", "neither tap nor pcap" },
        { """{"op":"removeInterface","name":"eth0"}""", "no interface eth0" },
        { """{"op":"addLink","peer":"h1","transport":"tcp"}""", "cannot be a peer" },
        { """{"op":"addLink","peer":"h2","transport":"sctp"}""", "neither tcp nor udp" },
        { """{"op":"addLink","peer":"h2","dial":"127.0.0.1"}""", "not an address:port" },
        { """{"op":"removeLink","peer":"h3"}""", "no link h3" },
        { """{"op":"removeLink","peer":"proxy"}""", "star link" },
        { """{"op":"addRule","dst":"any","to":"flood"}""", "missing 'src'" },
        { """{"op":"reboot"}""", "unknown change" },
    };

    [Theory]
    [MemberData(nameof(RefusedChanges))]
    public async Task Apply_LaterChangeRefused_NothingChangesAndTheReasonNamesIt(string refusedJson, string reason)
    {
        var refused = ControlJson.FromNode<DaemonChange>(JsonNode.Parse(refusedJson))!;
        var before = await _net.Shape("h1");

        // A link and a rule that would each be accepted on their own come first.
        var result = await _net.Apply("h1", ExpectLink("h2"), AddRule(Vm5, "link:proxy"), refused);

        Assert.False(result.Applied);
        Assert.Equal(0, result.Changes);
        Assert.Contains("change 3", result.Error, StringComparison.Ordinal);
        Assert.Contains(reason, result.Error, StringComparison.Ordinal);
        Assert.Contains("nothing changed", result.Error, StringComparison.Ordinal);
        Assert.Equal(before, await _net.Shape("h1"));
    }

    [Fact]
    public async Task Apply_LinkAndARuleNamingIt_BothInOneSetAndTheLinkComesUp()
    {
        var dial = new DaemonChange { Op = DaemonChange.AddLink, Peer = "h2", Transport = "udp", Dial = _net.At("h2") };

        var atH1 = await _net.Apply("h1", dial, AddRule(Vm6, "link:h2"));
        var atH2 = await _net.Apply("h2", ExpectLink("h1", "udp"), AddRule(Vm5, "link:h1"));

        Assert.True(atH1.Applied, atH1.Error);
        Assert.Equal(2, atH1.Changes);
        Assert.True(atH2.Applied, atH2.Error);
        await DaemonNet.Until(() => _net["h1"].Links.Find("h2") is { IsUp: true } && _net["h2"].Links.Find("h1") is { IsUp: true },
            DaemonNet.UpTimeout, "link h1 - h2 up");
        var h1 = await _net.State("h1");
        var rule = Assert.Single(h1.Rules, r => r.Origin == "user");
        Assert.Equal((Vm6, "link:h2"), (rule.Destination, rule.Action));
        var link = Assert.Single(h1.Links, l => l.Peer == "h2");
        Assert.Equal(("udp", false, _net.At("h2")), (link.Transport, link.Star, link.Dial));
        Assert.Null(Assert.Single((await _net.State("h2")).Links, l => l.Peer == "h1").Dial);
    }

    [Fact]
    public async Task Apply_RuleBeforeTheLinkItNames_RefusedBecauseTheSetIsCheckedInOrder()
    {
        var result = await _net.Apply("h1", AddRule(Vm6, "link:h2"), ExpectLink("h2"));

        Assert.False(result.Applied);
        Assert.Contains("change 1", result.Error, StringComparison.Ordinal);
        Assert.Null(_net["h1"].Links.Find("h2"));
    }

    [Fact]
    public async Task Apply_RemoveALinkAUserRuleStillUses_RefusedUntilTheRuleGoesInTheSameSet()
    {
        Assert.True((await _net.Apply("h1", ExpectLink("h2"), AddRule(Vm6, "link:h2"), AddRule(Vm5, "link:proxy"))).Applied);
        var before = await _net.Shape("h1");

        var refused = await _net.Apply("h1", RemoveLink("h2"));

        Assert.False(refused.Applied);
        Assert.Contains("would name a port that no longer exists", refused.Error, StringComparison.Ordinal);
        Assert.Contains("link:h2", refused.Error, StringComparison.Ordinal);
        Assert.Equal(before, await _net.Shape("h1"));

        var applied = await _net.Apply("h1", RemoveRule(Vm6, "link:h2"), RemoveLink("h2"));

        Assert.True(applied.Applied, applied.Error);
        Assert.Null(_net["h1"].Links.Find("h2"));
        var left = Assert.Single((await _net.State("h1")).Rules, r => r.Origin == "user");
        Assert.Equal(Vm5, left.Destination);
    }

    [Fact]
    public async Task Apply_RemoveTheStarLinkAtTheHost_Refused()
    {
        var result = await _net.Apply("h1", RemoveLink("proxy"));

        Assert.False(result.Applied);
        Assert.Contains("star link", result.Error, StringComparison.Ordinal);
        Assert.True(_net["h1"].Links.Find("proxy")?.IsUp);
    }

    [Fact]
    public async Task Apply_RemoveAStarLinkAtTheProxy_Refused()
    {
        var sessions = _net.Proxy.Links.Find("h1")!.SessionsStarted;

        var result = await _net.Apply("proxy", RemoveLink("h1"));

        Assert.False(result.Applied);
        Assert.Contains("star link", result.Error, StringComparison.Ordinal);
        var port = _net.Proxy.Links.Find("h1");
        Assert.NotNull(port);
        Assert.Equal(sessions, port.SessionsStarted);
    }

    [Fact]
    public async Task Apply_InterfaceTheMachineCannotOpen_FailsWhileRunningAndUndoesTheEarlierChanges()
    {
        Assert.True((await _net.Apply("h1", AddRule(Vm6, "link:proxy"))).Applied);
        var before = await _net.Shape("h1");

        // Checked fine (a valid name and kind); only opening the device can tell it is not there.
        var result = await _net.Apply("h1",
            RemoveRule(Vm6, "link:proxy"),
            ExpectLink("h2"),
            AddRule(Vm5, "link:h2"),
            new DaemonChange { Op = DaemonChange.AddInterface, Name = "vnetnodev0", Kind = "pcap" });

        Assert.False(result.Applied);
        Assert.Contains("h1 could not add interface vnetnodev0 pcap", result.Error, StringComparison.Ordinal);
        Assert.Contains("the changes before it were undone", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("failed too", result.Error, StringComparison.Ordinal);
        Assert.Null(_net["h1"].Links.Find("h2"));
        Assert.Empty(_net["h1"].ListInterfaces());
        // The removed rule is back with its id, the added one is gone.
        Assert.Equal(before, await _net.Shape("h1"));
    }

    [Fact]
    public async Task Apply_EmptySet_AppliedWithNoChange()
    {
        var before = await _net.Shape("h1");

        var result = await _net.Apply("h1");

        Assert.True(result.Applied);
        Assert.Equal(0, result.Changes);
        Assert.Equal(before, await _net.Shape("h1"));
    }

    [Fact]
    public async Task CallAsync_ApplyThroughTheProxy_ReachesTheHostOverItsStarLink()
    {
        var args = new JsonObject { ["changes"] = ControlJson.ToNode(new List<DaemonChange> { AddRule(Vm5, "link:proxy") }) };

        var result = ControlJson.FromNode<ApplyResult>(await _net.Proxy.CallAsync("h2", "apply", args));

        Assert.True(result!.Applied, result.Error);
        Assert.Contains(_net["h2"].ListRules(), r => r.Origin == "user" && r.Destination == Vm5);
    }

    [Fact]
    public async Task CallAsync_FromAHost_RefusedOnlyTheProxyReachesOtherDaemons()
    {
        var e = await Assert.ThrowsAsync<DaemonCommandException>(() => _net["h1"].CallAsync("h2", "rule.list", null));

        Assert.Contains("only the Proxy", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Request_FromAnotherHostOverADirectLink_IgnoredHostsTakeCommandsOnlyFromTheProxy()
    {
        var dial = new DaemonChange { Op = DaemonChange.AddLink, Peer = "h1", Transport = "tcp", Dial = _net.At("h1") };
        Assert.True((await _net.Apply("h2", dial)).Applied);
        await DaemonNet.Until(() => _net["h2"].Links.Find("h1") is { IsUp: true }, DaemonNet.UpTimeout, "link h2 -> h1 up");
        var before = await _net.Shape("h1");

        // h2 speaks the Proxy's protocol to h1: a change set as a request.
        var request = new PeerMessage
        {
            Type = PeerMessage.Request,
            Id = 1,
            Command = "rule.add",
            Args = new JsonObject { ["src"] = "any", ["dst"] = Vm5, ["to"] = "link:h2" },
        };
        _net["h2"].Links.Find("h1")!.Session!.SendControl(MessageType.Control, request.Serialize());

        await DaemonNet.Until(() => _net.LogOf("h1").Contains("hosts take commands only from the Proxy"), DaemonNet.UpTimeout,
            "h1 to log the ignored request");
        Assert.Equal(before, await _net.Shape("h1"));
    }
}
