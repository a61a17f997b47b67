using System.Diagnostics;
using Vnet.Configuration;
using Vnet.Frames;
using Vnet.Inference;
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

        // The baseline and one quiet report, then silence: a heartbeat only where the time crosses
        // a multiple of the heartbeat (30 s, the digests' grid), which 3.2 s may or may not do.
        await DaemonNet.Until(() => h1.ReportsSkipped >= 1, Deadline, "an idle period without a report");
        var (sent, skipped) = (h1.ReportsSent, h1.ReportsSkipped);
        var from = Stopwatch.GetTimestamp();
        await Task.Delay(TimeSpan.FromSeconds(3.2));
        var beat = (long)(ReportGate.DefaultHeartbeat.TotalSeconds * Stopwatch.Frequency);
        var beats = (int)((Stopwatch.GetTimestamp() / beat) - (from / beat));
        Assert.InRange(h1.ReportsSent - sent, 0, beats);
        Assert.InRange(h1.ReportsSkipped - skipped, 2 - beats, 4);

        // The VM sends to the LAN: reported at the next period, and the Proxy's matrix has the pair.
        var frame = SimVms.FrameToLan(Vm);
        var tap = net.DevicesOf("h1")["vm1"];
        for (var i = 0; i < 20; i++)
            await DaemonNet.Until(() => tap.Inject(frame), Deadline, "room in the memory TAP");
        await DaemonNet.Until(() => h1.ReportsSent > sent, TimeSpan.FromSeconds(2.5), "a report once the VM sent");
        await DaemonNet.Until(() => net.Proxy.Vttif.SmoothedMatrix.Any(p => p.Source == Vm), Deadline, "the VM's pair in the Proxy's matrix");
    }

    /// <summary>
    /// The Proxy of an idle overlay folds and infers nothing at its ticks (the matrix decayed to
    /// nothing, no report with traffic); a report with traffic is folded at the next tick (the
    /// pair in its matrix), and while the pair is there no tick rests.
    /// </summary>
    [Fact]
    public async Task IdleProxy_RestsAtItsTicks_AndFoldsAReportWithTrafficAtTheNextOne()
    {
        await using var net = await DaemonNet.StartAsync([("h1", [new InterfaceConfig { Name = "vm1", Kind = InterfaceKind.Tap }])], null, lan: true);
        var proxy = net.Proxy.Vttif;
        await DaemonNet.Until(() => proxy.RestingTicks >= 2, Deadline, "idle ticks at the Proxy");
        Assert.Empty(proxy.SmoothedMatrix);
        Assert.Empty(proxy.Topology.Edges);

        var frame = SimVms.FrameToLan(Vm);
        var tap = net.DevicesOf("h1")["vm1"];
        for (var i = 0; i < 20; i++)
            await DaemonNet.Until(() => tap.Inject(frame), Deadline, "room in the memory TAP");
        // The host reports at its next period, the Proxy folds it in at its next tick: two periods and slack.
        await DaemonNet.Until(() => proxy.SmoothedMatrix.Any(p => p.Source == Vm), TimeSpan.FromSeconds(4), "the VM's pair in the Proxy's matrix");
        var resting = proxy.RestingTicks;
        await Task.Delay(TimeSpan.FromSeconds(2.2));
        Assert.Contains(proxy.SmoothedMatrix, p => p.Source == Vm);
        Assert.Equal(resting, proxy.RestingTicks);
    }
}
