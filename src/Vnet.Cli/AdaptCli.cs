using System.CommandLine;
using System.Text.Json.Nodes;
using Vnet.Json;
using Vnet.Adaptation;
using Vnet.Inference;

namespace Vnet.Cli;

/// <summary><c>vnet adapt</c>: the Proxy reshapes the overlay to fit the inferred traffic.</summary>
internal static class AdaptCli
{
    public static Command Create()
    {
        var adapt = new Command("adapt", "Topology adaptation: direct links and rules for the hosts whose VMs talk most; VM placement advice.");
        foreach (var o in ControlCli.CommonOptions)
            adapt.Add(o);

        var status = new Command("status", "Policy, budget, the current plan, adaptation's links and what it did (with reasons).");
        status.SetAction((p, ct) => ControlCli.Call(p, "adapt.status", null, PrintStatus, ct));

        var policy = new Argument<string>("policy") { Description = "off, advise (log what it would do) or auto" };
        policy.AcceptOnlyFromAmong("off", "advise", "auto");
        var budget = new Option<int?>("--budget") { Description = "Most links adaptation adds per daemon" };
        var set = new Command("policy", "Set the adaptation policy.") { policy, budget };
        set.SetAction((p, ct) =>
        {
            var args = new JsonObject { ["policy"] = p.GetValue(policy) };
            if (p.GetValue(budget) is { } b)
                args["budget"] = b;
            return ControlCli.Call(p, "adapt.policy", args, PrintStatus, ct);
        });

        var capacity = new Option<string?>("--capacity") { Description = "VMs each host may have, as h1=4,h2=4 (default: one more than it has)" };
        var plan = new Command("plan", "Advice: which VMs to co-locate or migrate to cut the heaviest inter-host traffic (nothing is moved).") { capacity };
        plan.SetAction((p, ct) =>
        {
            var args = new JsonObject();
            if (p.GetValue(capacity) is { } c)
                args["capacity"] = c;
            return ControlCli.Call(p, "adapt.plan", args, d =>
            {
                var plan = DaemonJson.FromNode<PlacementPlan>(d)!;
                Console.WriteLine($"inter-host traffic {RateFormat.BytesPerSecond(plan.InterHostBefore)} -> {RateFormat.BytesPerSecond(plan.InterHostAfter)} after {plan.Moves.Count} move(s)");
                foreach (var m in plan.Moves)
                    Console.WriteLine($"  move {m.Vm} from {m.From} to {m.To}: saves {RateFormat.BytesPerSecond(m.Saved)} ({m.Reason})");
            }, ct);
        });

        adapt.Add(status);
        adapt.Add(set);
        adapt.Add(plan);
        return adapt;
    }

    private static void PrintStatus(JsonNode? data)
    {
        var s = DaemonJson.FromNode<AdaptationStatus>(data)!;
        Console.WriteLine($"policy {EnumText.Of(s.Policy)}, at most {s.Budget} extra link(s) per daemon");
        Console.WriteLine(s.Plan.Count == 0 ? "plan: nothing to add" : "plan:");
        foreach (var p in s.Plan)
            Console.WriteLine($"  {p}");
        if (s.Links.Count > 0)
            Console.WriteLine($"links made by adaptation: {string.Join(", ", s.Links)}");
        foreach (var a in s.Log.TakeLast(20))
            Console.WriteLine($"{a.At:HH:mm:ss} {(a.Applied ? "applied" : "advised")} at {a.Daemon}: {a.Change} ({a.Reason})");
    }
}
