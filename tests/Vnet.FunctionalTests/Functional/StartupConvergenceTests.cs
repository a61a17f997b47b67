using System.Diagnostics;
using System.Globalization;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// Hosts that start while their VMs already send, as after a host reboot or a site's power cut:
/// each daemon learns its VMs in the same moments as its star link comes up and announces its
/// complete VM set. Whatever the interleaving, the Proxy must end up placing every VM on its host.
/// </summary>
[Collection("Netns")]
public sealed class StartupConvergenceTests(ITestOutputHelper output)
{
    private const int Hosts = 3;
    private const int VmsPerHost = 5;
    private const int Rounds = 10;

    [Fact]
    public void Hosts_RestartedWhileVmsSend_EveryRoundEveryVmReachesEveryOtherAndTheLan()
    {
        using var o = new OverlayBed(output, hosts: Hosts);
        var vms = Enumerable.Range(1, Hosts * VmsPerHost).ToArray();
        var random = new Random(7);
        var round = 0;
        try
        {
            o.StartAll();
            foreach (var n in vms)
                o.AddVm(n, host: ((n - 1) / VmsPerHost) + 1);
            Convergence.AssertConverged(o, vms, lan: true, TimeSpan.FromSeconds(30), "at the start");

            // Every VM sends all the time, each at its own pace (0.50 s to 1.34 s between frames), so
            // that after a restart the host learns its VMs one by one over the first second or so:
            // before, while and after its star link comes up (0.3 to 0.9 s after its TAP opens, on
            // this kind of machine). Each pings a VM of the next host.
            foreach (var n in vms)
            {
                var target = ((n - 1 + VmsPerHost) % vms.Length) + 1;
                var interval = (0.50 + (0.06 * (n % 15))).ToString("0.00", CultureInfo.InvariantCulture);
                o.Bed.Start($"vm{n}", $"vm{n}-chatter", "ping", "-n", "-q", "-i", interval, OverlayBed.VmIp(target));
            }

            var hosts = Enumerable.Range(1, Hosts).ToArray();
            for (round = 1; round <= Rounds; round++)
            {
                var clock = Stopwatch.StartNew();
                // Odd rounds: a crash (SIGKILL); even rounds: a clean stop (SIGTERM). All hosts at once.
                var crash = round % 2 == 1;
                Parallel.ForEach(hosts, i =>
                {
                    var daemon = o.Daemon($"h{i}");
                    if (crash)
                        daemon.Kill();
                    else
                        daemon.Stop(TimeSpan.FromSeconds(5));
                });
                // The VMs keep sending into the void for a while, then the hosts boot together.
                Thread.Sleep(random.Next(200, 800));
                o.StartHosts(hosts);
                o.WaitStar(Hosts);
                var started = clock.ElapsedMilliseconds;
                Convergence.AssertConverged(o, vms, lan: true, TimeSpan.FromSeconds(15),
                    $"round {round} of {Rounds} ({(crash ? "SIGKILL" : "SIGTERM")})");
                output.WriteLine($"round {round}: hosts up after {started} ms, converged after {clock.ElapsedMilliseconds} ms");
            }
        }
        catch
        {
            output.WriteLine($"failed in round {round} of {Rounds}");
            o.DumpAll();
            throw;
        }
    }

    /// <summary>
    /// VMs that appear at the same moment (their first frames within milliseconds of each other),
    /// as when a site boots: the Proxy learns them one announcement after the other, and its LAN
    /// NIC must capture the frames to every one of them in the end. Ten new VMs per round, four
    /// rounds; every VM pings the LAN machine (a full mesh of 40 VMs would overflow the kernel's
    /// ARP table, which all namespaces share).
    /// </summary>
    [Fact]
    public void Vms_AppearingTogether_EveryVmReachesTheLan()
    {
        using var o = new OverlayBed(output, hosts: 2);
        var all = new List<int>();
        var round = 0;
        try
        {
            o.StartAll();
            for (round = 1; round <= 4; round++)
            {
                var fresh = Enumerable.Range(all.Count + 1, 10).ToList();
                foreach (var n in fresh)
                    o.AddVm(n, host: (n % 2) + 1);
                all.AddRange(fresh);
                // The check itself is the burst: every new VM sends its first frames at once.
                Convergence.AssertConverged(o, all, lan: true, TimeSpan.FromSeconds(15),
                    $"round {round}: vm{fresh[0]}-vm{fresh[^1]} appeared together", betweenVms: false);
            }
        }
        catch
        {
            output.WriteLine($"failed in round {round}");
            o.DumpAll();
            throw;
        }
    }
}
