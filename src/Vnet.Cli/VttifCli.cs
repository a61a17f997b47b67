using System.CommandLine;
using System.Text.Json.Nodes;
using Vnet.Json;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Inference;

namespace Vnet.Cli;

/// <summary><c>vnet vttif</c>: the Proxy's traffic matrix, the inferred topology, its changes.</summary>
internal static class VttifCli
{
    public static Command Create()
    {
        var vttif = new Command("vttif", "Virtual topology and traffic inference: what the VMs' application does, seen from the Proxy.");
        foreach (var o in ControlCli.CommonOptions)
            vttif.Add(o);

        var matrix = new Command("matrix", "The smoothed VM×VM traffic matrix (bytes/s per source and destination).");
        matrix.SetAction((p, ct) => ControlCli.Call(p, "vttif.matrix", null, d =>
        {
            var m = DaemonJson.FromNode<VttifMatrix>(d)!;
            Console.WriteLine($"report period {m.PeriodSeconds:0.###} s, smoothing time constant {m.TimeConstantSeconds:0.###} s");
            var t = new TableWriter("SOURCE", "AT", "DESTINATION", "AT", "RATE");
            foreach (var c in m.Cells)
                t.Add(c.Src, c.SrcDaemon, c.Dst, c.DstDaemon, RateFormat.BytesPerSecond(c.BytesPerSecond));
            Console.Write(t);
        }, ct));

        var topology = new Command("topology", "The inferred application topology, as a description that serves it (apply it with vnet topo apply).");
        topology.SetAction((p, ct) => ControlCli.Call(p, "vttif.topology", null, d => Console.Write(DaemonJson.FromNode<VttifTopology>(d)!.Description), ct));

        var count = new Option<int?>("--count") { Description = "Stop after this many changes" };
        var timeout = new Option<double?>("--timeout") { Description = "Stop after this many seconds" };
        var watch = new Command("watch", "Print each change of the inferred topology as it happens.") { count, timeout };
        watch.SetAction(async (p, ct) =>
        {
            var limit = p.GetValue(count);
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            if (p.GetValue(timeout) is { } s)
                cts.CancelAfter(TimeSpan.FromSeconds(s));
            long since = 0;
            var seen = 0;
            var first = true;
            try
            {
                while (!cts.IsCancellationRequested)
                {
                    var events = DaemonJson.FromNode<List<VttifEvent>>(await ControlCli.Send(p, "vttif.events", new JsonObject { ["since"] = since }, cts.Token)) ?? [];
                    foreach (var e in events)
                    {
                        since = Math.Max(since, e.Id);
                        if (first)
                            continue;
                        Console.WriteLine($"{e.At:HH:mm:ss} change {e.Id}: {e.Edges.Count} edges; +[{string.Join(" ", e.Added)}] -[{string.Join(" ", e.Removed)}]");
                        if (++seen >= limit)
                            return 0;
                    }
                    first = false;
                    await Task.Delay(TimeSpan.FromSeconds(1), cts.Token);
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (ControlException e)
            {
                await Console.Error.WriteLineAsync($"vnet: {e.Message}");
                return ControlCli.ExitCodeOf(e);
            }
            return 0;
        });

        vttif.Add(matrix);
        vttif.Add(topology);
        vttif.Add(watch);
        return vttif;
    }
}
