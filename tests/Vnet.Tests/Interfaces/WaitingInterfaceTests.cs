using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Tests.Interfaces;

/// <summary>
/// A pcap interface whose device is missing waits for it, and one whose device goes away (a VM's
/// TAP when QEMU stops) waits to open it again: real daemons with in-memory devices, whose
/// existence the test switches (MemoryInterfaceFactory.Nics) as a VM's start and stop would.
/// </summary>
public sealed class WaitingInterfaceTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);
    private static readonly InterfaceConfig Vm = new() { Name = "vm9", Kind = InterfaceKind.Pcap };

    [Fact]
    public async Task MissingAtStart_DaemonStartsAndWaits_OpensWhenTheDeviceAppears()
    {
        await using var net = await DaemonNet.StartAsync([("h1", [Vm])], null);
        var h1 = net["h1"];
        Assert.Equal(["vm9"], await h1.Run(() => h1.Interfaces.Waiting.ToList()));
        var listed = Assert.Single(await h1.Run(() => h1.Interfaces.List(_ => 0)));
        Assert.True(listed.Waiting);
        Assert.False(listed.Up);
        Assert.Contains(net.LogOf("h1").Lines, l => l.Contains("vm9: no such device; waiting", StringComparison.Ordinal));

        net.DevicesOf("h1").Nics["vm9"] = true;
        await DaemonNet.UntilAsync(async () => await h1.Run(() => h1.Interfaces.Find("vm9") is { Port.IsUp: true }), Bound, "vm9 to open");
        Assert.Empty(await h1.Run(() => h1.Interfaces.Waiting.ToList()));
        Assert.False(Assert.Single(await h1.Run(() => h1.Interfaces.List(_ => 0))).Waiting);
    }

    [Fact]
    public async Task DeviceGoesAwayAndComesBack_ReopenedWithItsUserRule_AndFramesFlowAgain()
    {
        await using var net = await DaemonNet.StartAsync([("h1", [Vm])], null);
        var h1 = net["h1"];
        var devices = net.DevicesOf("h1");
        devices.Nics["vm9"] = true;
        await DaemonNet.UntilAsync(async () => await h1.Run(() => h1.Interfaces.Find("vm9") is { Port.IsUp: true }), Bound, "vm9 to open");
        var first = devices["vm9"];
        // A user rule that names the interface: it must outlive the device.
        var mac = new MacAddress(0x0200_0000_0a0aUL);
        await h1.Run(() => h1.Rules.Edit(e => e.Add(new Rule
        {
            Source = MacMatch.Any,
            Destination = MacMatch.Exact(mac),
            Action = RuleAction.To(PortRef.Interface("vm9")),
            Origin = RuleOrigin.User,
        })));

        devices.Nics.TryRemove("vm9", out _);
        first.Close();
        await DaemonNet.UntilAsync(async () => (await h1.Run(() => h1.Interfaces.Waiting.ToList())).Contains("vm9"), Bound, "vm9 to wait");
        Assert.Contains(net.LogOf("h1").Lines, l => l.Contains("vm9 closed: the device went away", StringComparison.Ordinal));

        devices.Nics["vm9"] = true;
        await DaemonNet.UntilAsync(async () => await h1.Run(() => h1.Interfaces.Find("vm9") is { Port.IsUp: true }), Bound, "vm9 to open again");
        var second = devices["vm9"];
        Assert.NotSame(first, second);
        Assert.Contains(net.LogOf("h1").Lines, l => l.Contains("vm9: its device is back", StringComparison.Ordinal));
        Assert.Contains(await h1.Run(() => h1.Rules.List()), r => r.Rule.Origin == RuleOrigin.User && r.Rule.Action.Port == PortRef.Interface("vm9"));

        // The rule is live again: a frame to that MAC, injected on the switch, reaches the new device.
        var frame = h1.Pool.TryRent()!;
        byte[] bytes = [0x02, 0, 0, 0, 0x0a, 0x0a, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xB5, 1, 2, 3, 4];
        bytes.CopyTo(frame.Buffer.AsSpan(frame.Offset));
        frame.Length = bytes.Length;
        frame.HopLimit = 8;
        frame.IngressPort = -1;
        h1.Switch.Forward(frame);
        await DaemonNet.Until(() => second.Writes > 0, Bound, "the frame to reach the reopened device");
    }

    [Fact]
    public async Task Remove_AWaitingInterface_StopsWaiting()
    {
        await using var net = await DaemonNet.StartAsync([("h1", [Vm])], null);
        var h1 = net["h1"];
        await h1.Run(() =>
        {
            h1.Interfaces.Remove("vm9");
            return 0;
        });
        Assert.Empty(await h1.Run(() => h1.Interfaces.Waiting.ToList()));
        net.DevicesOf("h1").Nics["vm9"] = true;
        await Task.Delay(TimeSpan.FromSeconds(2.5));
        Assert.Null(await h1.Run(() => h1.Interfaces.Find("vm9")));
    }
}
