using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Tests.Forwarding;

/// <summary>Addresses, ports and rule builders shared by the forwarding tests.</summary>
internal static class Fwd
{
    public static readonly PortRef Vm0 = PortRef.Interface("vm0");
    public static readonly PortRef Vm1 = PortRef.Interface("vm1");
    public static readonly PortRef Proxy = PortRef.Link("proxy");
    public static readonly PortRef Peer = PortRef.Link("peer");

    /// <summary>A port name no table resolves: rules naming it must compile, not throw.</summary>
    public static readonly PortRef Ghost = PortRef.Link("ghost");

    /// <summary>The fixed port map of table tests: vm0=0, vm1=1, proxy=2, peer=3.</summary>
    public static readonly PortRef[] Ports = [Vm0, Vm1, Proxy, Peer];

    /// <summary>A locally administered unicast address, as VNET's VMs have.</summary>
    public static MacAddress Mac(int n) => new(0x0200_0000_0000UL | (uint)n);

    /// <summary>An IPv4 multicast group address (group bit set, not broadcast).</summary>
    public static MacAddress Group(int n) => new(0x0100_5e00_0000UL | (uint)n);

    public static int Resolve(PortRef port) => Array.IndexOf(Ports, port);

    public static Rule NewRule(long id, MacMatch source, MacMatch destination, PortRef? action = null, PortRef? ingress = null) => new()
    {
        Id = id,
        Source = source,
        Destination = destination,
        Ingress = ingress,
        Action = action is { } a ? RuleAction.To(a) : RuleAction.To(Vm1),
    };

    public static Rule NewFlood(long id, MacMatch source, MacMatch destination, PortRef? ingress = null) => new()
    {
        Id = id,
        Source = source,
        Destination = destination,
        Ingress = ingress,
        Action = RuleAction.Flood,
    };

    public static ForwardingTable Table(params Rule[] rules) =>
        new(rules, Resolve, static _ => new RuleStats());

    /// <summary>Ids of the rules a lookup returned, sorted, so that tests compare sets.</summary>
    public static long[] Ids(LookupResult result)
    {
        var ids = new long[result.Count];
        for (var i = 0; i < ids.Length; i++)
            ids[i] = result[i].Rule.Id;
        Array.Sort(ids);
        return ids;
    }

    public static long[] Lookup(ForwardingTable table, MacAddress source, MacAddress destination, int ingress = -1) =>
        Ids(table.Lookup(source, destination, ingress));
}
