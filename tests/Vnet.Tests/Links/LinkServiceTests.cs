using Vnet.Daemon;
using Vnet.Links;

namespace Vnet.Tests.Links;

/// <summary>
/// <c>vnet link del</c> at the end of a link the peer dials: while the link is up it is refused,
/// naming the daemon to ask, since the peer would dial again at once and "removed" would have
/// changed nothing; at the dialing end it goes, and an expected link whose peer never came may go.
/// </summary>
public sealed class LinkServiceTests
{
    [Fact]
    public async Task Remove_LinkThePeerDialsWhileUp_RefusedNamingThePeerAndKept()
    {
        await using var net = await DaemonNet.StartAsync("h1", "h2");
        var dial = new DaemonChange { Op = ChangeOp.AddLink, Peer = "h2", Transport = LinkTransport.Tcp, Dial = net.At("h2") };
        Assert.True((await net.Apply("h1", dial)).Applied);
        await DaemonNet.Until(() => net["h1"].Links.Find("h2") is { IsUp: true } && net["h2"].Links.Find("h1") is { IsUp: true },
            DaemonNet.UpTimeout, "link h1 - h2 up at both ends");
        var h2 = net["h2"];

        var refused = await Assert.ThrowsAsync<DaemonCommandException>(() => h2.Run(() =>
        {
            h2.LinkCommands.Remove("h1");
            return 0;
        }));

        Assert.Equal("h1 dials the link to h2 and would dial it again at once: remove it at h1 ('vnet link del h2 --at h1')", refused.Message);
        Assert.NotNull(await h2.Run(() => h2.Links.Find("h1")));
        var h1 = net["h1"];
        await h1.Run(() =>
        {
            h1.LinkCommands.Remove("h2");
            return 0;
        });
        Assert.Null(await h1.Run(() => h1.Links.Find("h2")));
    }

    [Fact]
    public async Task Remove_ExpectedLinkThePeerNeverDialed_Removed()
    {
        await using var net = await DaemonNet.StartAsync("h1", "h2");
        var expect = new DaemonChange { Op = ChangeOp.AddLink, Peer = "h1", Transport = LinkTransport.Tcp };
        Assert.True((await net.Apply("h2", expect)).Applied);
        var h2 = net["h2"];

        await h2.Run(() =>
        {
            h2.LinkCommands.Remove("h1");
            return 0;
        });

        Assert.Null(await h2.Run(() => h2.Links.Find("h1")));
    }
}
