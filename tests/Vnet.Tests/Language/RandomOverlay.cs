using System.Net;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Language;
using Vnet.Links;

namespace Vnet.Tests.Language;

/// <summary>
/// Random descriptions that pass the checker, from fixed seeds. <see cref="Wide"/> draws odd names
/// (keywords, the longest name), any address and edge values, for the round trip; <see cref="Narrow"/>
/// draws from small pools, so two models share most of their daemons, interfaces and rules and a diff
/// between them has a bit of everything.
/// </summary>
internal static class RandomOverlay
{
    private static readonly string[] OddNames =
    [
        "a", "H", "0", "h-1", "H_2.x", "0node", "x.y.z", "a-", "a_", "a.", new string('n', 32),
        "link", "tcp", "udp", "port", "vm", "any", "from", "to", "flood", "none", "multicast",
        "proxy", "host", "interface", "rule", "at", "tap", "pcap", "mtu", "bridge", "lan",
    ];

    private static readonly string[] OddDevices = ["tap0", "eth0", "lan", "link", "vm", "tap", "x-y_z.1", new string('d', 15), "if", "interface", "9"];

    private static readonly Pools WidePools = new(
        Daemons: OddNames,
        ProxyName: null,
        MaxHosts: 7,
        Devices: OddDevices,
        Bridges: OddDevices,
        Mtus: [null, 576, 65000, 1500, 9000, 1280],
        LinkPorts: [null, null, 1, 65535, 5501],
        Endpoint: rng => rng.Next(2) == 0
            ? new IPEndPoint(new IPAddress(Bytes(rng, 4)), Port(rng))
            : new IPEndPoint(new IPAddress(Bytes(rng, 16)), Port(rng)),
        Mac: rng => new MacAddress((ulong)rng.NextInt64()),
        AddressChance: 0.75);

    private static readonly Pools NarrowPools = new(
        Daemons: ["h1", "h2", "h3", "h4"],
        ProxyName: "p",
        MaxHosts: 4,
        Devices: ["tap0", "tap1", "eth0"],
        Bridges: ["br0"],
        Mtus: [null, null, 9000],
        LinkPorts: [null, null, 6000],
        Endpoint: rng => new IPEndPoint(IPAddress.Parse(rng.Next(2) == 0 ? "192.0.2.1" : "198.51.100.1"), rng.Next(2) == 0 ? 5500 : 5501),
        Mac: rng => new MacAddress(0x0200_0000_0000UL | (uint)rng.Next(1, 9) | (rng.Next(4) == 0 ? 0x0100_0000_0000UL : 0)),
        AddressChance: 0.9);

    public static OverlayDescription Wide(Random rng) => Build(rng, WidePools);

    public static OverlayDescription Narrow(Random rng) => Build(rng, NarrowPools);

    private sealed record Pools(
        string[] Daemons,
        string? ProxyName,
        int MaxHosts,
        string[] Devices,
        string[] Bridges,
        int?[] Mtus,
        int?[] LinkPorts,
        Func<Random, IPEndPoint> Endpoint,
        Func<Random, MacAddress> Mac,
        double AddressChance);

    private static OverlayDescription Build(Random rng, Pools pools)
    {
        // Daemons: distinct names, one of them the proxy at a random place.
        var names = Shuffle(rng, pools.Daemons).Take(rng.Next(pools.ProxyName is null ? 1 : 0, pools.MaxHosts + 1)).ToList();
        int proxyIndex;
        if (pools.ProxyName is null)
        {
            proxyIndex = rng.Next(names.Count);
        }
        else
        {
            proxyIndex = rng.Next(names.Count + 1);
            names.Insert(proxyIndex, pools.ProxyName);
        }
        var addresses = names.Select(_ => rng.NextDouble() < pools.AddressChance ? pools.Endpoint(rng) : null).ToArray();

        // Links: a random spanning tree (every daemon reaches the proxy), then a few more.
        var links = new List<LinkDecl>();
        var order = Shuffle(rng, Enumerable.Range(0, names.Count).Where(i => i != proxyIndex)).Prepend(proxyIndex).ToList();
        for (var k = 1; k < order.Count; k++)
            AddLink(order[k], order[rng.Next(k)]);
        for (var extra = rng.Next(4); extra > 0 && names.Count > 1; extra--)
        {
            var a = rng.Next(names.Count);
            var b = rng.Next(names.Count);
            if (a != b && !links.Any(l => l.Joins(names[a], names[b])))
                AddLink(a, b);
        }
        links = Shuffle(rng, links);

        void AddLink(int a, int b)
        {
            if (rng.Next(2) == 0)
                (a, b) = (b, a);
            if (addresses[b] is null)
                (a, b) = (b, a);
            // Whoever is dialed needs an address.
            addresses[b] ??= pools.Endpoint(rng);
            var transport = rng.Next(2) == 0 ? LinkTransport.Tcp : LinkTransport.Udp;
            links.Add(new LinkDecl(names[a], names[b], transport, Pick(rng, pools.LinkPorts)));
        }

        var vmsTaken = new HashSet<MacAddress>();
        var daemons = new List<DaemonDecl>();
        for (var d = 0; d < names.Count; d++)
        {
            var name = names[d];
            var role = d == proxyIndex ? DaemonRole.Proxy : DaemonRole.Host;
            var interfaces = Shuffle(rng, pools.Devices).Take(rng.Next(4)).Select(device =>
            {
                var kind = rng.Next(3) == 0 ? InterfaceKind.Pcap : InterfaceKind.Tap;
                var bridge = kind == InterfaceKind.Tap && rng.Next(3) == 0 ? Pick(rng, pools.Bridges) : null;
                var lan = role == DaemonRole.Proxy && rng.Next(3) == 0;
                var vms = new List<MacAddress>();
                for (var v = rng.Next(4); v > 0; v--)
                {
                    var mac = new MacAddress(pools.Mac(rng).Value & ~0x0100_0000_0000UL);
                    if (vmsTaken.Add(mac))
                        vms.Add(mac);
                }
                return new InterfaceDecl(device, kind, Pick(rng, pools.Mtus), bridge, lan, vms);
            }).ToList();

            var ports = interfaces.Select(i => PortRef.Interface(i.Name))
                .Concat(links.Where(l => l.Involves(name)).Select(l => PortRef.Link(l.PeerOf(name))))
                .ToArray();
            var rules = new List<RuleDecl>();
            for (var r = rng.Next(5); r > 0; r--)
            {
                var source = rng.Next(2) == 0 ? MacMatch.Any : MacMatch.Exact(new MacAddress(pools.Mac(rng).Value & ~0x0100_0000_0000UL));
                var destination = rng.Next(5) switch
                {
                    0 => MacMatch.Any,
                    1 => MacMatch.Multicast,
                    2 => MacMatch.None,
                    _ => MacMatch.Exact(pools.Mac(rng)),
                };
                PortRef? ingress = ports.Length > 0 && rng.Next(3) == 0 ? Pick(rng, ports) : null;
                var action = ports.Length == 0 || rng.Next(4) == 0 ? RuleAction.Flood : RuleAction.To(Pick(rng, ports));
                var rule = new RuleDecl(source, destination, ingress, action);
                if (!rules.Contains(rule))
                    rules.Add(rule);
            }
            daemons.Add(new DaemonDecl(name, role, addresses[d], interfaces, rules));
        }

        var overlay = new OverlayDescription(daemons, links);
        var problems = OverlayChecker.Check(overlay);
        Assert.True(problems.Count == 0, $"the random model is not valid:\n{string.Join('\n', problems)}\n{overlay}");
        return overlay;
    }

    private static int Port(Random rng) => rng.Next(4) switch
    {
        0 => 1,
        1 => 65535,
        _ => rng.Next(1, 65536),
    };

    private static byte[] Bytes(Random rng, int count)
    {
        var bytes = new byte[count];
        rng.NextBytes(bytes);
        return bytes;
    }

    private static T Pick<T>(Random rng, IReadOnlyList<T> items) => items[rng.Next(items.Count)];

    private static List<T> Shuffle<T>(Random rng, IEnumerable<T> items)
    {
        var list = items.ToList();
        for (var i = list.Count - 1; i > 0; i--)
        {
            var j = rng.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
        return list;
    }
}
