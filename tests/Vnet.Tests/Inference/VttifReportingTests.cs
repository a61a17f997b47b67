using Vnet.Configuration;
using Vnet.Frames;
using Vnet.Tests.Vms;

namespace Vnet.Tests.Inference;

/// <summary>
/// VTTIF reports between real daemons in this process (<see cref="DaemonNet"/>): an idle host
/// sends none while nothing moves, and one at the next period once its VM sends.
/// </summary>
public sealed class VttifReportingTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);

    private static readonly MacAddress Vm = SimVms.Mac(1);

    [Fact]
    public async Task IdleHost_SendsNoReportWhileNothingMoves_AndOneAtOnceWhenItsVmSends()
    {
        await using var net = await DaemonNet.StartAsync([("h1", [new InterfaceConfig { Name = "vm1", Kind = InterfaceKind.Tap }])], null, lan: true);
        var h1 = net["h1"].Vttif;

        // The baseline and one quiet report, then silence (a heartbeat only every 10 periods).
        await DaemonNet.Until(() => h1.ReportsSkipped >= 1, Deadline, "an idle period without a report");
        var (sent, skipped) = (h1.ReportsSent, h1.ReportsSkipped);
        await Task.Delay(TimeSpan.FromSeconds(3.2));
        Assert.Equal(sent, h1.ReportsSent);
        Assert.InRange(h1.ReportsSkipped - skipped, 2, 4);

        // The VM sends to the LAN: reported at the next period, and the Proxy's matrix has the pair.
        var frame = SimVms.FrameToLan(Vm);
        var tap = net.DevicesOf("h1")["vm1"];
        for (var i = 0; i < 20; i++)
            await DaemonNet.Until(() => tap.Inject(frame), Deadline, "room in the memory TAP");
        await DaemonNet.Until(() => h1.ReportsSent > sent, TimeSpan.FromSeconds(2.5), "a report once the VM sent");
        await DaemonNet.Until(() => net.Proxy.Vttif.SmoothedMatrix.Any(p => p.Source == Vm), Deadline, "the VM's pair in the Proxy's matrix");
    }
}
