using Vnet.Control;
using Vnet.Links.Security;

namespace Vnet.Tests.Control;

/// <summary>
/// <c>vnet --remote</c> with a <c>--remote-key</c> that is not the daemon's: the daemon answers
/// nothing (its mac1 check fails), and the CLI's error says which setting to check instead of only
/// that the connection closed.
/// </summary>
public sealed class RemoteControlClientTests
{
    [Fact]
    public async Task Send_WrongDaemonKey_ErrorNamesRemoteKey()
    {
        await using var net = await DaemonNet.StartAsync("h1");
        var at = net.Proxy.Links.LocalEndPoint!;

        var refused = await Assert.ThrowsAsync<ControlException>(() =>
            RemoteControlClient.SendAsync(at, net.Admin, net.IdentityOf("h1").Public, PresharedKey.None, "status"));

        Assert.Contains("check --remote-key", refused.Message, StringComparison.Ordinal);
        Assert.StartsWith($"{at}: ", refused.Message, StringComparison.Ordinal);
    }
}
