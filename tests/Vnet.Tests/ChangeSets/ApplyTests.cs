using System.Text.Json.Nodes;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Peers;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Links.Security;

namespace Vnet.Tests.ChangeSets;

/// <summary>
/// <see cref="ChangeSetService.Apply"/> on real daemons linked over loopback: a change set is taken whole
/// or not at all, whether a change is refused while the set is checked or fails while it runs.
/// </summary>
public sealed class ApplyTests : IAsyncLifetime
{
    private const string Vm5 = "02:00:00:00:00:05";
    private const string Vm6 = "02:00:00:00:00:06";

    private DaemonNet _net = null!;

    public async Task InitializeAsync() => _net = await DaemonNet.StartAsync("h1", "h2");

    public async Task DisposeAsync() => await _net.DisposeAsync();

    /// <summary>A rule change as the CLI would write it, read through the same JSON as on the wire.</summary>
    private static DaemonChange Rule(string op, string dst, string to, string src = "any") =>
        DaemonJson.FromNode<DaemonChange>(new JsonObject { ["op"] = op, ["src"] = src, ["dst"] = dst, ["to"] = to })!;

    private static DaemonChange AddRule(string dst, string to) => Rule("addRule", dst, to);

    private static DaemonChange RemoveRule(string dst, string to) => Rule("removeRule", dst, to);

    private static DaemonChange ExpectLink(string peer, LinkTransport transport = LinkTransport.Tcp) =>
        new() { Op = ChangeOp.AddLink, Peer = peer, Transport = transport };

    private static DaemonChange RemoveLink(string peer) => new() { Op = ChangeOp.RemoveLink, Peer = peer };

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
        { """{"op":"addInterface","name":"eth0","kind":"vde"}""", "'vde' is not one of tap, pcap" },
        { """{"op":"removeInterface","name":"eth0"}""", "no interface eth0" },
        { """{"op":"addLink","peer":"h1","transport":"tcp"}""", "cannot be a peer" },
        { """{"op":"addLink","peer":"h2","transport":"sctp"}""", "'sctp' is not one of tcp, udp" },
        { """{"op":"addLink","peer":"h2","dial":"127.0.0.1"}""", "not an address:port" },
        { """{"op":"removeLink","peer":"h3"}""", "no link h3" },
        { """{"op":"addLink","peer":"h9","dial":"127.0.0.1:9"}""", "no public key is known for h9" },
        { """{"op":"removeLink","peer":"proxy"}""", "star link" },
        { """{"op":"addRule","dst":"any","to":"flood"}""", "missing 'src'" },
        { """{"op":"reboot"}""", "'reboot' is not one of addInterface" },
        { """{"op":"addRule","src":"any","dst":"02:00:00:00:00:0g","to":"flood"}""", "expected a MAC address, \"any\"" },
        { """{"op":"addVm","name":"tap9","mac":7}""", "expected a MAC address" },
    };

    [Theory]
    [MemberData(nameof(RefusedChanges))]
    public async Task Apply_LaterChangeRefused_NothingChangesAndTheReasonNamesIt(string refusedJson, string reason)
    {
        var before = await _net.Shape("h1");
        // A link and a rule that would each be accepted on their own come first; the set travels
        // as the Proxy sends it, so a change that does not even read is refused like the rest.
        var changes = new JsonArray(DaemonJson.ToNode(ExpectLink("h2")), DaemonJson.ToNode(AddRule(Vm5, "link:proxy")), JsonNode.Parse(refusedJson));

        var answer = await new CommandDispatcher(_net["h1"]).HandleAsync("apply", new JsonObject { ["changes"] = changes });
        var result = DaemonJson.FromNode<ApplyResult>(answer.Data)!;

        Assert.True(answer.Ok, answer.Error);
        Assert.False(result.Applied);
        Assert.Equal(0, result.Changes);
        Assert.Contains("change 3", result.Error, StringComparison.Ordinal);
        Assert.Contains(reason, result.Error, StringComparison.Ordinal);
        Assert.Contains("nothing changed", result.Error, StringComparison.Ordinal);
        Assert.Equal(before, await _net.Shape("h1"));
    }

    [Fact]
    public async Task OverlayTrace_GroupSourceMac_RefusedWithTheReason()
    {
        // No frame has a group address as its source: every switch drops one as malformed.
        var answer = await new CommandDispatcher(_net.Proxy).HandleAsync("overlay.trace",
            new JsonObject { ["at"] = "h1", ["src"] = "01:00:5e:00:00:01", ["dst"] = "02:00:00:00:00:05" });

        Assert.False(answer.Ok);
        Assert.Contains("'01:00:5e:00:00:01' is a group (multicast) address", answer.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task LinkAdd_PeerThatCanNeverComplete_RefusedWithTheReasonAndNoDialer()
    {
        var unknown = await new CommandDispatcher(_net["h1"]).HandleAsync("link.add", new JsonObject { ["peer"] = "h9", ["address"] = "127.0.0.1:9" });
        // Admitted, so the Proxy knows its key: a host still refuses every INIT from a Proxy.
        await _net.Proxy.Run(() => _net.Proxy.Keys.AdmitHost("h3", StaticKeyPair.Generate().Public.ToString()));
        var fromProxy = await new CommandDispatcher(_net.Proxy).HandleAsync("link.add", new JsonObject { ["peer"] = "h3", ["address"] = "127.0.0.1:9" });

        Assert.False(unknown.Ok);
        Assert.Contains("no public key is known for h9", unknown.Error, StringComparison.Ordinal);
        Assert.False(fromProxy.Ok);
        Assert.Contains("the Proxy dials no daemon", fromProxy.Error, StringComparison.Ordinal);
        Assert.Null(_net["h1"].Links.Find("h9"));
        Assert.Null(_net.Proxy.Links.Find("h3"));
    }

    [Fact]
    public async Task Apply_StateChangedSinceItWasRead_RefusedWithBothVersions()
    {
        var read = await _net.State("h1");
        Assert.True((await _net.Apply("h1", AddRule(Vm6, "link:proxy"))).Applied);

        var result = await _net["h1"].Run(() => _net["h1"].ChangeSets.Apply([AddRule(Vm5, "link:proxy")], read.Version));

        Assert.False(result.Applied);
        Assert.Contains($"version {read.Version}, now", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain(_net["h1"].RuleCommands.List(), r => r.Destination == MacMatch.Exact(MacAddress.Parse(Vm5)));
    }

    [Fact]
    public async Task State_VmsAndCountersChange_VersionStaysTheSame()
    {
        var before = await _net.State("h1");
        Assert.True((await _net.Apply("h1", AddRule(Vm6, "link:proxy"))).Applied);
        var after = await _net.State("h1");
        Assert.True((await _net.Apply("h1", RemoveRule(Vm6, "link:proxy"))).Applied);

        Assert.NotEqual(before.Version, after.Version);
        Assert.Equal(before.Version, (await _net.State("h1")).Version);
    }

    [Fact]
    public async Task Apply_LinkAndARuleNamingIt_BothInOneSetAndTheLinkComesUp()
    {
        var dial = new DaemonChange { Op = ChangeOp.AddLink, Peer = "h2", Transport = LinkTransport.Udp, Dial = _net.At("h2") };

        var atH1 = await _net.Apply("h1", dial, AddRule(Vm6, "link:h2"));
        var atH2 = await _net.Apply("h2", ExpectLink("h1", LinkTransport.Udp), AddRule(Vm5, "link:h1"));

        Assert.True(atH1.Applied, atH1.Error);
        Assert.Equal(2, atH1.Changes);
        Assert.True(atH2.Applied, atH2.Error);
        await DaemonNet.Until(() => _net["h1"].Links.Find("h2") is { IsUp: true } && _net["h2"].Links.Find("h1") is { IsUp: true },
            DaemonNet.UpTimeout, "link h1 - h2 up");
        var h1 = await _net.State("h1");
        var rule = Assert.Single(h1.Rules, r => r.Origin == RuleOrigin.User);
        Assert.Equal((Vm6, "link:h2"), (rule.Destination.ToString(), rule.Action.ToString()));
        var link = Assert.Single(h1.Links, l => l.Peer == "h2");
        Assert.Equal((LinkTransport.Udp, false, _net.At("h2")), (link.Transport, link.Star, link.Dial));
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
        var left = Assert.Single((await _net.State("h1")).Rules, r => r.Origin == RuleOrigin.User);
        Assert.Equal(Vm5, left.Destination.ToString());
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
            new DaemonChange { Op = ChangeOp.AddInterface, Name = "vnetnodev0", Kind = InterfaceKind.Pcap });

        Assert.False(result.Applied);
        Assert.Contains("h1 could not add interface vnetnodev0 pcap", result.Error, StringComparison.Ordinal);
        Assert.Contains("the changes before it were undone", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("failed too", result.Error, StringComparison.Ordinal);
        Assert.Null(_net["h1"].Links.Find("h2"));
        Assert.Empty(_net["h1"].Interfaces.All);
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
        var args = new JsonObject { ["changes"] = DaemonJson.ToNode(new List<DaemonChange> { AddRule(Vm5, "link:proxy") }) };

        var result = DaemonJson.FromNode<ApplyResult>(await _net.Proxy.Peers.CallAsync("h2", "apply", args));

        Assert.True(result!.Applied, result.Error);
        Assert.Contains(_net["h2"].RuleCommands.List(), r => r.Origin == RuleOrigin.User && r.Destination.ToString() == Vm5);
    }

    [Fact]
    public async Task CallAsync_FromAHost_RefusedOnlyTheProxyReachesOtherDaemons()
    {
        var e = await Assert.ThrowsAsync<DaemonCommandException>(() => _net["h1"].Peers.CallAsync("h2", "rule.list", null));

        Assert.Contains("only the Proxy", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Request_FromAnotherHostOverADirectLink_IgnoredHostsTakeCommandsOnlyFromTheProxy()
    {
        var dial = new DaemonChange { Op = ChangeOp.AddLink, Peer = "h1", Transport = LinkTransport.Tcp, Dial = _net.At("h1") };
        var applied = await _net.Apply("h2", dial);
        Assert.True(applied.Applied, applied.Error);
        // Up at both ends before h1's shape is taken: h1 attaches its end when it accepts, which can
        // come after h2 sees the link up (a loaded machine showed it).
        await DaemonNet.Until(() => _net["h2"].Links.Find("h1") is { IsUp: true } && _net["h1"].Links.Find("h2") is { IsUp: true },
            DaemonNet.UpTimeout, "link h2 - h1 up at both ends");
        var before = await _net.Shape("h1");

        // h2 speaks the Proxy's protocol to h1: a change set as a request.
        var request = new PeerMessage
        {
            Type = PeerMessageType.Request,
            Id = 1,
            Command = "rule.add",
            Args = new JsonObject { ["src"] = "any", ["dst"] = Vm5, ["to"] = "link:h2" },
        };
        _net["h2"].Links.Find("h1")!.Session!.SendControl(MessageType.Control, request.Serialize());

        await DaemonNet.Until(() => _net.LogOf("h1").Contains("only the Proxy sends this, over the star"), DaemonNet.UpTimeout,
            "h1 to log the ignored request");
        Assert.Equal(before, await _net.Shape("h1"));
    }
}
