using System.Text.Json.Nodes;
using Vnet.Daemon;
using Vnet.Inference;
using Vnet.Json;
using Vnet.Language;
using Vnet.Links;
using Vnet.Overlay;

namespace Vnet.Control;

/// <summary>The VTTIF commands of the Proxy: the matrix, the topology, its changes.</summary>
internal static class VttifCommands
{
    /// <summary>Control loop.</summary>
    public static VttifMatrix Matrix(VnetDaemon proxy)
    {
        RequireProxy(proxy);
        var where = proxy.Vms.Locations;
        var cells = proxy.Vttif.SmoothedMatrix
            .OrderByDescending(p => p.BytesPerSecond)
            .Select(p => new MatrixCell(p.Source, p.Destination, p.BytesPerSecond, where.GetValueOrDefault(p.Source), where.GetValueOrDefault(p.Destination)))
            .ToList();
        return new VttifMatrix(proxy.Vttif.Options.ReportPeriod.TotalSeconds, proxy.Vttif.Options.TimeConstant.TotalSeconds, cells);
    }

    public static async Task<JsonNode?> TopologyAsync(VnetDaemon proxy)
    {
        RequireProxy(proxy);
        var (topology, where) = await proxy.Run(() => (proxy.Vttif.Topology, proxy.Vms.Locations.ToDictionary())).ConfigureAwait(false);
        var live = OverlayModel.FromStates(await proxy.Overlay.GatherStates().ConfigureAwait(false));
        var pairs = TopologyOverlay.HostPairs(topology, where, proxy.Name);
        var described = TopologyOverlay.With(live, pairs, LinkTransport.Udp);
        var notes = string.Concat(topology.Edges.Select(e =>
            $"# {e.Pair.A} <-> {e.Pair.B}: {RateFormat.BytesPerSecond(e.BytesPerSecond)} ({e.Normalized:0.00} of the strongest)\n"));
        var text = $"# inferred topology since {topology.Since:u}: {topology.Edges.Count} communicating VM pairs\n" + notes +
            OverlayFormatter.Format(described);
        return DaemonJson.ToNode(new VttifTopology(topology.Since, Edges(topology), text));
    }

    /// <summary>Control loop.</summary>
    public static List<VttifEvent> Events(VnetDaemon proxy, long since)
    {
        RequireProxy(proxy);
        return proxy.Vttif.EventsSince(since).Select(e => new VttifEvent(e.Id, e.At,
            e.Added.Select(p => p.ToString()).ToList(), e.Removed.Select(p => p.ToString()).ToList(), Edges(e.Topology))).ToList();
    }

    private static List<TopologyEdge> Edges(InferredTopology t) =>
        t.Edges.Select(e => new TopologyEdge(e.Pair.A, e.Pair.B, e.BytesPerSecond, e.Normalized)).ToList();

    private static void RequireProxy(VnetDaemon d)
    {
        if (!d.IsProxy)
            throw new DaemonCommandException($"{d.Name} is a host; traffic inference runs on the Proxy (use --socket of the Proxy)");
    }
}
