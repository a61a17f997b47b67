using System.Diagnostics;

namespace Vnet.Tests.Functional;

/// <summary>
/// What "the overlay has converged" means after a fault, checked without any manual step: the
/// Proxy places every VM on the host that has it, and every VM pings every other VM and the LAN
/// machine. Both are polled until they hold or a deadline passes.
/// </summary>
internal static class Convergence
{
    /// <summary>
    /// Waits until the Proxy and each VM's host agree that the VM lives there; returns what still
    /// disagrees at the deadline (empty when they agree). A host knows a VM once the VM has sent a
    /// frame since the host started.
    /// </summary>
    public static List<string> WaitProxyView(OverlayBed o, IReadOnlyList<int> vms, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var problems = ProxyViewProblems(o, vms);
            if (problems.Count == 0 || clock.Elapsed > timeout)
                return problems;
            Thread.Sleep(200);
        }
    }

    private static List<string> ProxyViewProblems(OverlayBed o, IReadOnlyList<int> vms)
    {
        var problems = new List<string>();
        var proxy = o.Vms("proxy").ToDictionary(v => v.Mac.ToString(), v => v.Daemon);
        var hosts = new Dictionary<string, HashSet<string>>();
        foreach (var n in vms)
        {
            var mac = OverlayBed.VmMac(n);
            var host = o.HostOf(n);
            if (!hosts.TryGetValue(host, out var local))
                hosts[host] = local = o.Vms(host).Where(v => v.Local).Select(v => v.Mac.ToString()).ToHashSet();
            if (!local.Contains(mac))
                problems.Add($"vm{n} ({mac}) is not a local VM of {host}");
            if (!proxy.TryGetValue(mac, out var where))
                problems.Add($"the Proxy does not know vm{n} ({mac}), a VM of {host}");
            else if (where != host)
                problems.Add($"the Proxy places vm{n} ({mac}) on {where}, not on {host}");
        }
        return problems;
    }

    /// <summary>
    /// Pings from every VM to every other VM (and to the LAN machine with <paramref name="lan"/>)
    /// until each pair has answered once since the call; returns the pairs that never answered by
    /// the deadline (empty when all did). An attempt sends one ICMP echo to each pending target from
    /// inside each VM's namespace, all at once, and gives the answers 1 s: spawning a ping process
    /// per pair would cost seconds on this kind of machine.
    /// </summary>
    /// <remarks>
    /// With <paramref name="betweenVms"/> false only the LAN machine is pinged: the kernel's ARP
    /// table is shared by all namespaces (1024 entries), so a full mesh of more than about 25 VMs
    /// overflows it and fails for reasons of the test bed.
    /// </remarks>
    public static List<string> WaitMeshPing(OverlayBed o, IReadOnlyList<int> vms, bool lan, TimeSpan timeout, bool betweenVms = true)
    {
        var pending = vms.ToDictionary(
            n => n,
            n => vms.Where(m => betweenVms && m != n).Select(OverlayBed.VmIp).Concat(lan ? new[] { OverlayBed.LanHostIp } : []).ToHashSet());
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var asking = pending.Where(kv => kv.Value.Count > 0).ToDictionary(kv => o.Bed.Prefix + "-vm" + kv.Key, kv => (IReadOnlyCollection<string>)kv.Value);
            var answered = IcmpEcho.Probe(asking, TimeSpan.FromSeconds(1));
            foreach (var (vm, targets) in pending)
            {
                if (answered.TryGetValue(o.Bed.Prefix + "-vm" + vm, out var got))
                    targets.ExceptWith(got);
            }
            var unanswered = pending.Sum(kv => kv.Value.Count);
            o.Output.WriteLine($"mesh ping after {clock.ElapsedMilliseconds} ms: {unanswered} pairs unanswered");
            if (unanswered == 0)
                return [];
            if (clock.Elapsed > timeout)
            {
                return pending.Where(kv => kv.Value.Count > 0)
                    .Select(kv => $"vm{kv.Key} -> {string.Join(", ", kv.Value.Order(StringComparer.Ordinal))}").ToList();
            }
            Thread.Sleep(200);
        }
    }

    /// <summary>
    /// Asserts both: every VM reaches every other VM and the LAN (which also makes every VM send, so
    /// that its host knows it), and then the Proxy's view agrees with the hosts'. A failure names
    /// the unanswered pairs and the disagreements.
    /// </summary>
    public static void AssertConverged(OverlayBed o, IReadOnlyList<int> vms, bool lan, TimeSpan timeout, string when, bool betweenVms = true)
    {
        var clock = Stopwatch.StartNew();
        var unreachable = WaitMeshPing(o, vms, lan, timeout, betweenVms);
        var view = WaitProxyView(o, vms, unreachable.Count == 0 ? TimeSpan.FromSeconds(5) : TimeSpan.Zero);
        if (unreachable.Count > 0 || view.Count > 0)
        {
            Assert.Fail($"{when}: the overlay did not converge within {timeout.TotalSeconds:0} s. " +
                $"Pings never answered: {(unreachable.Count == 0 ? "none" : string.Join("; ", unreachable))}. " +
                $"The Proxy's view: {(view.Count == 0 ? "agrees with the hosts'" : string.Join("; ", view))}.");
        }
        o.Output.WriteLine($"{when}: converged ({vms.Count} VMs{(betweenVms ? "" : " to")}{(lan ? " and the LAN" : "")}) in {clock.ElapsedMilliseconds} ms");
    }
}
