using System.Diagnostics;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>A VM keeps its MAC, IP and open connections when it moves to another host.</summary>
[Collection("Netns")]
public sealed class MigrationTests(ITestOutputHelper output)
{
    [Fact]
    public void Vm_MigratedToAnotherHost_KeepsItsAddressAndOpenTcpConnection()
    {
        using var o = new OverlayBed(output, hosts: 3);
        o.StartAll(lanNic: false);
        o.AddVm(1, 1);
        o.AddVm(2, 2);
        Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: 2, timeoutSeconds: 10));

        var server = o.Bed.Start("vm2", "iperf3-server", "iperf3", "-s", "-1", "--forceflush");
        server.WaitForOutput("Server listening", TimeSpan.FromSeconds(10));
        var client = o.Bed.Start("vm1", "iperf3-client", "iperf3", "-c", OverlayBed.VmIp(2), "-t", "8", "-b", "40M", "-i", "1", "-J");
        Thread.Sleep(2500);

        o.MoveVm(1, toHost: 3);
        var moved = Stopwatch.StartNew();
        var mac = OverlayBed.VmMac(1);
        foreach (var daemon in new[] { "proxy", "h1", "h2", "h3" })
        {
            Wait.Until(() => o.Vms(daemon).Any(v => v.Mac.ToString() == mac && v.Daemon == "h3"), TimeSpan.FromSeconds(5),
                $"{daemon} sees {mac} on h3");
            output.WriteLine($"{daemon} followed the move after {moved.ElapsedMilliseconds} ms");
        }
        Assert.DoesNotContain(o.Vms("h1"), v => v.Mac.ToString() == mac && v.Local);

        Assert.True(client.WaitForExit(TimeSpan.FromSeconds(40)), "iperf3 did not finish");
        Assert.Equal(0, client.ExitCode);
        var report = JsonNode.Parse(client.Stdout)!;
        var intervals = report["intervals"]!.AsArray();
        var last = intervals[^1]!["sum"]!["bytes"]!.GetValue<long>();
        output.WriteLine($"bytes in the last interval: {last}; received {report["end"]!["sum_received"]!["bytes"]}");
        Assert.True(last > 0, "the connection carried nothing after the migration");

        // Same address, same MAC, new host.
        Assert.True(o.Bed.Ping("vm2", OverlayBed.VmIp(1), count: 2, timeoutSeconds: 10));
        Assert.Equal(mac, o.Bed.Mac("vm1", "eth0"));
    }
}
