using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>Links beyond the star, added and removed while traffic flows, through the CLI.</summary>
[Collection("Netns")]
public sealed class DirectLinkTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("tcp")]
    [InlineData("udp")]
    public void DirectLink_WithRules_MovesTrafficOffTheProxyAndBackWhenRemoved(string transport)
    {
        using var o = new OverlayBed(output, hosts: 2);
        o.StartAll(lanNic: false);
        o.AddVm(1, 1);
        o.AddVm(2, 2);
        Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: 2, timeoutSeconds: 10));

        var added = o.Cli("h1", $"link add h2 {OverlayBed.HostIp(2)}:5500 --transport {transport}");
        output.WriteLine(added);
        Wait.Until(() => o.Links("h2").Any(l => l.Peer == "h1" && l.Up), TimeSpan.FromSeconds(10), "h2 sees the link from h1");
        o.Cli("h1", $"rule add --src any --dst {OverlayBed.VmMac(2)} --to link:h2");
        o.Cli("h2", $"rule add --src any --dst {OverlayBed.VmMac(1)} --to link:h1");

        var proxyBefore = ProxyFrames(o);
        Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: 20, timeoutSeconds: 15), "ping over the direct link");
        var proxyAfter = ProxyFrames(o);
        output.WriteLine($"proxy frames from hosts: {proxyBefore} -> {proxyAfter}");
        Assert.True(proxyAfter - proxyBefore <= 2, $"the Proxy still carried {proxyAfter - proxyBefore} frames");
        var direct = o.Rules("h1").Single(r => r.Action.ToString() == "link:h2");
        Assert.True(direct.Frames >= 20, $"the direct rule matched {direct.Frames} frames");
        Assert.Contains("link:h2", o.Cli("h1", "rule list"), StringComparison.Ordinal);

        // Removing the rules and the link puts the traffic back on the star.
        o.Cli("h1", $"rule del {direct.Id}");
        o.Cli("h2", $"rule del {o.Rules("h2").Single(r => r.Action.ToString() == "link:h1").Id}");
        o.Cli("h1", "link del h2");
        Assert.DoesNotContain(o.Links("h1"), l => l.Peer == "h2");
        proxyBefore = ProxyFrames(o);
        Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: 10, timeoutSeconds: 15), "ping over the star again");
        Assert.True(ProxyFrames(o) - proxyBefore >= 20, "the Proxy does not carry the traffic again");
    }

    [Fact]
    public void LinkDel_WhileAUserRuleUsesIt_IsRefusedWithTheRuleIds()
    {
        using var o = new OverlayBed(output, hosts: 2);
        o.StartAll(lanNic: false);
        o.Cli("h1", $"link add h2 {OverlayBed.HostIp(2)}:5500");
        o.Cli("h1", $"rule add --src any --dst {OverlayBed.VmMac(2)} --to link:h2");
        var refused = Sh.TryRun($"dotnet {Sh.Quote(OverlayBed.VnetDll)} link del h2 --socket {Sh.Quote(o.SocketOf("h1"))}");
        Assert.False(refused.Ok);
        Assert.Contains("is used by rule", refused.Stderr, StringComparison.Ordinal);
        Assert.Contains(o.Links("h1"), l => l.Peer == "h2");
    }

    private static long ProxyFrames(OverlayBed o) =>
        o.Links("proxy").Where(l => l.Peer is "h1" or "h2").Sum(l => l.RxFrames);
}
