using System.Text.Json.Nodes;
using Vnet.Daemon;
using Vnet.Inference;
using Vnet.Language;
using Vnet.Links;

namespace Vnet.Control;

/// <summary>The VTTIF commands of the Proxy: the matrix, the topology, its changes.</summary>
internal static class Vttif
{
    public static VttifMatrix Matrix(VnetDaemon proxy)
    {
        RequireProxy(proxy);
        var where = proxy.Locations;
        var cells = proxy.SmoothedMatrix
            .OrderByDescending(p => p.BytesPerSecond)
            .Select(p => new MatrixCell(p.Source.ToString(), p.Destination.ToString(), p.BytesPerSecond,
                where.GetValueOrDefault(p.Source), where.GetValueOrDefault(p.Destination)))
            .ToList();
        return new VttifMatrix(proxy.Vttif.ReportPeriod.TotalSeconds, proxy.Vttif.TimeConstant.TotalSeconds, cells);
    }

    public static async Task<JsonNode?> TopologyAsync(VnetDaemon proxy)
    {
        RequireProxy(proxy);
        var topology = await proxy.Run(() => proxy.InferredTopology);
        var live = OverlayModel.FromStates(await proxy.GatherStates());
        var pairs = TopologyOverlay.HostPairs(topology, proxy.Locations, proxy.Name);
        var described = TopologyOverlay.With(live, pairs, LinkTransport.Udp);
        var notes = string.Concat(topology.Edges.Select(e =>
            $"# {e.Pair.A} <-> {e.Pair.B}: {RateFormat.BytesPerSecond(e.BytesPerSecond)} ({e.Normalized:0.00} of the strongest)\n"));
        var text = $"# inferred topology since {topology.Since:u}: {topology.Edges.Count} communicating VM pairs\n" + notes +
            OverlayFormatter.Format(described);
        return ControlJson.ToNode(new VttifTopology(topology.Since, Edges(topology), text));
    }

    public static List<VttifEvent> Events(VnetDaemon proxy, long since)
    {
        RequireProxy(proxy);
        return proxy.TopologyEvents(since).Select(e => new VttifEvent(e.Id, e.At,
            e.Added.Select(p => p.ToString()).ToList(), e.Removed.Select(p => p.ToString()).ToList(), Edges(e.Topology))).ToList();
    }

    private static List<TopologyEdge> Edges(InferredTopology t) =>
        t.Edges.Select(e => new TopologyEdge(e.Pair.A.ToString(), e.Pair.B.ToString(), e.BytesPerSecond, e.Normalized)).ToList();

    private static void RequireProxy(VnetDaemon d)
    {
        if (!d.IsProxy)
            throw new DaemonCommandException($"{d.Name} is a host; traffic inference runs on the Proxy (use --socket of the Proxy)");
    }
}
