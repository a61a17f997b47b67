using System.CommandLine;
using System.Net;
using System.Text.Json.Nodes;
using Vnet.Json;
using Vnet.Overlay;
using Vnet.Control;
using Vnet.Frames;
using Vnet.Language;
using Vnet.Links;

namespace Vnet.Cli;

/// <summary><c>vnet topo</c>: generate, check, format, diff, apply and dump overlay descriptions.</summary>
internal static class TopoCli
{
    public static Command Create()
    {
        var topo = new Command("topo", "Describe an overlay in the VNET language: generate, check, format, diff, apply, dump.");
        topo.Add(Gen());
        topo.Add(Check());
        topo.Add(Fmt());
        topo.Add(Diff());
        topo.Add(Apply());
        topo.Add(Dump());
        return topo;
    }

    private static Command Gen()
    {
        var kind = new Argument<string>("kind") { Description = "star, mesh or ring" };
        kind.AcceptOnlyFromAmong("star", "mesh", "ring");
        var proxy = new Option<string>("--proxy") { Description = "The Proxy as NAME@ADDRESS:PORT", Required = true };
        var hosts = new Option<string[]>("--host") { Description = "A host as NAME@ADDRESS:PORT (repeatable)", Arity = ArgumentArity.OneOrMore, Required = true };
        var vms = new Option<string[]>("--vm") { Description = "A VM as HOST=MAC (repeatable)", Arity = ArgumentArity.ZeroOrMore };
        var transport = new Option<string>("--transport") { Description = "tcp or udp", DefaultValueFactory = _ => "tcp" };
        transport.AcceptOnlyFromAmong("tcp", "udp");
        var iface = new Option<string>("--interface") { Description = "The hosts' VM interface", DefaultValueFactory = _ => "tap0" };
        var lan = new Option<string?>("--lan") { Description = "The Proxy's LAN NIC (a pcap interface)" };
        var bridge = new Option<string?>("--bridge") { Description = "The Linux bridge the hosts' TAP interface joins" };
        var gen = new Command("gen", "Print a description: star (every host dials the Proxy), mesh (plus every host pair, with rules), ring (plus a ring of hosts).")
        {
            kind, proxy, hosts, vms, transport, iface, lan, bridge,
        };
        gen.SetAction(p =>
        {
            try
            {
                var overlay = TopologyGenerator.Generate(
                    p.GetValue(kind) switch { "mesh" => TopologyKind.Mesh, "ring" => TopologyKind.Ring, _ => TopologyKind.Star },
                    Daemon(p.GetValue(proxy)!), [.. p.GetValue(hosts)!.Select(Daemon)], [.. (p.GetValue(vms) ?? []).Select(Vm)],
                    p.GetValue(transport) == "udp" ? LinkTransport.Udp : LinkTransport.Tcp, p.GetValue(iface)!, p.GetValue(lan));
                if (p.GetValue(bridge) is { } br)
                {
                    overlay = overlay with
                    {
                        Daemons = [.. overlay.Daemons.Select(d => d.Role == DaemonRole.Proxy ? d : d with
                        {
                            Interfaces = [.. d.Interfaces.Select(i => i.Kind == Configuration.InterfaceKind.Tap ? i with { Bridge = br } : i)],
                        })],
                    };
                }
                Console.Write(OverlayFormatter.Format(overlay));
                return 0;
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"vnet: {e.Message}");
                return 2;
            }
        });
        return gen;
    }

    private static (string, IPEndPoint) Daemon(string text)
    {
        var at = text.IndexOf('@', StringComparison.Ordinal);
        if (at <= 0 || !OverlayParser.TryParseEndpoint(text[(at + 1)..], out var ep, out var problem))
            throw new ArgumentException($"'{text}' is not NAME@ADDRESS:PORT");
        return (text[..at], ep);
    }

    private static (string, MacAddress) Vm(string text)
    {
        var eq = text.IndexOf('=', StringComparison.Ordinal);
        if (eq <= 0 || !MacAddress.TryParse(text.AsSpan(eq + 1), out var mac))
            throw new ArgumentException($"'{text}' is not HOST=MAC");
        return (text[..eq], mac);
    }

    private static Command Check()
    {
        var files = new Argument<FileInfo[]>("file") { Description = "Description files", Arity = ArgumentArity.OneOrMore };
        var check = new Command("check", "Parse and validate descriptions; errors name file, line and column.") { files };
        check.SetAction(p =>
        {
            var failed = false;
            foreach (var file in p.GetValue(files)!)
            {
                if (Load(file) is { } overlay)
                {
                    var rules = overlay.Daemons.Sum(d => d.Rules.Count);
                    Console.WriteLine($"{file.Name}: ok ({overlay.Daemons.Count} daemons, {overlay.Links.Count} links, {rules} rules)");
                }
                else
                {
                    failed = true;
                }
            }
            return failed ? 1 : 0;
        });
        return check;
    }

    private static Command Fmt()
    {
        var file = new Argument<FileInfo>("file") { Description = "A description file" };
        var write = new Option<bool>("--write", "-w") { Description = "Rewrite the file in place" };
        var fmt = new Command("fmt", "Print a description in canonical form (comments are not kept).") { file, write };
        fmt.SetAction(p =>
        {
            var f = p.GetValue(file)!;
            if (Load(f) is not { } overlay)
                return 1;
            var text = OverlayFormatter.Format(overlay);
            if (!p.GetValue(write))
            {
                Console.Write(text);
                return 0;
            }
            if (File.ReadAllText(f.FullName).Contains('#', StringComparison.Ordinal))
                Console.Error.WriteLine($"vnet: {f.Name}: comments are not kept by the formatter");
            File.WriteAllText(f.FullName, text);
            return 0;
        });
        return fmt;
    }

    private static Command Diff()
    {
        var a = new Argument<string>("from") { Description = "A description file, or 'live' (the running overlay, from the Proxy)" };
        var b = new Argument<string>("to") { Description = "A description file, or 'live'" };
        var diff = new Command("diff", "Show the changes that turn one description into another.") { a, b };
        foreach (var o in ControlCli.CommonOptions)
            diff.Add(o);
        diff.SetAction(async (p, ct) =>
        {
            try
            {
                var from = await LoadOrLive(p, p.GetValue(a)!, ct);
                var to = await LoadOrLive(p, p.GetValue(b)!, ct);
                if (from is null || to is null)
                    return 1;
                Console.Write(OverlayDiff.Compute(OverlayModel.Normalize(from), OverlayModel.Normalize(to)).ToString());
                return 0;
            }
            catch (ControlException e)
            {
                await Console.Error.WriteLineAsync($"vnet: {e.Message}");
                return ControlCli.ExitCodeOf(e);
            }
            catch (ArgumentException e)
            {
                await Console.Error.WriteLineAsync($"vnet: {e.Message}");
                return 1;
            }
        });
        return diff;
    }

    private static Command Apply()
    {
        var file = new Argument<FileInfo>("file") { Description = "The desired overlay" };
        var dry = new Option<bool>("--dry-run", "-n") { Description = "Show the changes, change nothing" };
        var apply = new Command("apply", "Make the running overlay match a description: each daemon takes all of its changes or none; on a failure the changed ones are rolled back.")
        {
            file, dry,
        };
        foreach (var o in ControlCli.CommonOptions)
            apply.Add(o);
        apply.SetAction(async (p, ct) =>
        {
            var f = p.GetValue(file)!;
            if (Load(f) is null)
                return 1;
            try
            {
                var args = new JsonObject { ["text"] = await File.ReadAllTextAsync(f.FullName, ct), ["file"] = f.Name, ["dryRun"] = p.GetValue(dry) };
                var report = DaemonJson.FromNode<OverlayApplyReport>(await ControlCli.Send(p, "overlay.apply", args, ct))!;
                if (p.GetValue(ControlCli.JsonFlag))
                {
                    Console.WriteLine(DaemonJson.ToNode(report)?.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
                }
                else
                {
                    Console.Write(report.Diff);
                    if (report.Error is not null)
                        Console.Error.WriteLine($"vnet: {report.Error}");
                    if (report.Rollback is not null)
                        Console.Error.WriteLine($"vnet: {report.Rollback}");
                    if (report.Applied)
                        Console.WriteLine($"applied ({string.Join(", ", report.Daemons)})");
                    else if (report.DryRun && report.Error is null)
                        Console.WriteLine("dry run: nothing changed");
                }
                return report.Error is null ? 0 : 1;
            }
            catch (ControlException e)
            {
                await Console.Error.WriteLineAsync($"vnet: {e.Message}");
                return ControlCli.ExitCodeOf(e);
            }
        });
        return apply;
    }

    private static Command Dump()
    {
        var dump = new Command("dump", "Print the running overlay as a description (ask the Proxy); dump then apply changes nothing.");
        foreach (var o in ControlCli.CommonOptions)
            dump.Add(o);
        dump.SetAction(async (p, ct) =>
        {
            try
            {
                var data = await ControlCli.Send(p, "overlay.dump", null, ct);
                Console.Write(data?["text"]?.GetValue<string>() ?? "");
                return 0;
            }
            catch (ControlException e)
            {
                await Console.Error.WriteLineAsync($"vnet: {e.Message}");
                return ControlCli.ExitCodeOf(e);
            }
        });
        return dump;
    }

    /// <summary>Parses and checks a file; prints every error (file:line:col: message) and returns null on any.</summary>
    private static OverlayDescription? Load(FileInfo file)
    {
        string text;
        try
        {
            text = File.ReadAllText(file.FullName);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"vnet: {file.Name}: {e.Message}");
            return null;
        }
        var result = OverlayParser.Parse(text, file.Name);
        if (result.Success)
            return result.Overlay;
        foreach (var d in result.Diagnostics)
            Console.Error.WriteLine(d);
        return null;
    }

    private static async Task<OverlayDescription?> LoadOrLive(System.CommandLine.ParseResult p, string what, CancellationToken ct)
    {
        if (what != "live")
            return Load(new FileInfo(what));
        var data = await ControlCli.Send(p, "overlay.dump", null, ct);
        return OverlayParser.Parse(data?["text"]?.GetValue<string>() ?? "", "live").OrThrow();
    }
}
