using System.Net;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Language;

public enum TopologyKind
{
    /// <summary>Every host dials the Proxy: VNET's resilient star, all traffic through the Proxy.</summary>
    Star,

    /// <summary>The star, plus a link between every pair of hosts and rules that send each VM's traffic straight to its host.</summary>
    Mesh,

    /// <summary>The star, plus links h1 -> h2 -> ... -> hn -> h1 and rules for the VMs of each host's ring neighbours.</summary>
    Ring,
}

/// <summary>
/// Writes the usual overlays so nobody types them by hand: a description that passes the checker,
/// ready to format, diff or apply. Every host gets one TAP interface listing its VMs.
/// </summary>
public static class TopologyGenerator
{
    public static OverlayDescription Generate(
        TopologyKind kind,
        (string Name, IPEndPoint Address) proxy,
        IReadOnlyList<(string Name, IPEndPoint Address)> hosts,
        IReadOnlyList<(string Host, MacAddress Mac)> vms,
        LinkTransport transport = LinkTransport.Tcp,
        string interfaceName = "tap0",
        string? lanInterface = null)
    {
        ArgumentNullException.ThrowIfNull(hosts);
        ArgumentNullException.ThrowIfNull(vms);
        // The messages reach the user of 'vnet topo gen' as they are: no parameter names in them.
        var vmsOf = new Dictionary<string, List<MacAddress>>(StringComparer.Ordinal);
        foreach (var (name, _) in hosts)
        {
            if (!vmsOf.TryAdd(name, []))
                throw new ArgumentException($"host '{name}' is given twice: every host needs its own name");
        }
        foreach (var (host, mac) in vms)
        {
            if (!vmsOf.TryGetValue(host, out var list))
                throw new ArgumentException($"VM {mac} is on '{host}', which is not one of the hosts");
            list.Add(mac);
        }

        var links = hosts.Select(h => new LinkDecl(h.Name, proxy.Name, transport, null)).ToList();
        // Which hosts each host sends its neighbours' VMs to directly.
        var direct = hosts.ToDictionary(h => h.Name, _ => new List<string>(), StringComparer.Ordinal);
        void Join(string from, string to)
        {
            links.Add(new LinkDecl(from, to, transport, null));
            direct[from].Add(to);
            direct[to].Add(from);
        }

        var n = hosts.Count;
        if (kind == TopologyKind.Mesh)
        {
            for (var i = 0; i < n; i++)
            {
                for (var j = i + 1; j < n; j++)
                    Join(hosts[i].Name, hosts[j].Name);
            }
        }
        else if (kind == TopologyKind.Ring && n >= 2)
        {
            // Two hosts make one link, not a link each way.
            var count = n == 2 ? 1 : n;
            for (var i = 0; i < count; i++)
                Join(hosts[i].Name, hosts[(i + 1) % n].Name);
        }

        var daemons = new List<DaemonDecl>();
        InterfaceDecl[] lan = lanInterface is null ? [] : [new InterfaceDecl(lanInterface, InterfaceKind.Pcap, null, null, true, [])];
        daemons.Add(new DaemonDecl(proxy.Name, DaemonRole.Proxy, proxy.Address, lan, []));
        foreach (var (name, address) in hosts)
        {
            var rules = new List<RuleDecl>();
            foreach (var peer in direct[name])
            {
                foreach (var mac in vmsOf[peer])
                    rules.Add(new RuleDecl(MacMatch.Any, MacMatch.Exact(mac), null, RuleAction.To(PortRef.Link(peer))));
            }
            var tap = new InterfaceDecl(interfaceName, InterfaceKind.Tap, null, null, false, vmsOf[name]);
            daemons.Add(new DaemonDecl(name, DaemonRole.Host, address, [tap], rules));
        }

        var overlay = new OverlayDescription(daemons, links);
        var problems = OverlayChecker.Check(overlay);
        if (problems.Count > 0)
            throw new ArgumentException("the generated overlay is not valid: " + string.Join("; ", problems.Select(p => p.Message)));
        return overlay;
    }
}
