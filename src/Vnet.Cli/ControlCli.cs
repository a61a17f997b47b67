using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Vnet.Configuration;
using Vnet.Json;
using Vnet.Links.Security;
using Vnet.Overlay;
using Vnet.Control;
using Vnet.Daemon;

namespace Vnet.Cli;

/// <summary>The commands that talk to a running daemon through its control socket.</summary>
internal static class ControlCli
{
    private static readonly Option<string?> SocketOption = new("--socket", "-s")
    {
        Description = "Daemon control socket (default: $VNET_SOCKET, or the only socket in /run/vnet)",
        Recursive = true,
    };

    private static readonly Option<bool> JsonOption = new("--json") { Description = "Print JSON instead of a table", Recursive = true };

    private static readonly Option<string?> AtOption = new("--at")
    {
        Description = "Run the command on this daemon, through the Proxy (talk to the Proxy with --socket or --remote)",
        Recursive = true,
    };

    private static readonly Option<string?> RemoteOption = new("--remote")
    {
        Description = "Control a daemon over TCP at ADDRESS:PORT with an administrator's key (needs --remote-key and --admin-key-file)",
        Recursive = true,
    };

    private static readonly Option<string?> RemoteKeyOption = new("--remote-key")
    {
        Description = "The public key of the daemon named by --remote (default: $VNET_REMOTE_KEY)",
        Recursive = true,
    };

    private static readonly Option<string?> AdminKeyFileOption = new("--admin-key-file")
    {
        Description = "An administrator's private key file for --remote, mode 0600 (default: $VNET_ADMIN_KEY_FILE)",
        Recursive = true,
    };

    private static readonly Option<string?> PskFileOption = new("--psk-file")
    {
        Description = "The overlay's preshared key file, when it has one (default: $VNET_PSK_FILE)",
        Recursive = true,
    };

    internal static Option<bool> JsonFlag => JsonOption;

    /// <summary>Options every daemon-facing command takes.</summary>
    internal static IEnumerable<Option> CommonOptions => [SocketOption, JsonOption, AtOption, RemoteOption, RemoteKeyOption, AdminKeyFileOption, PskFileOption];

    private static readonly JsonSerializerOptions Pretty = new() { WriteIndented = true };

    public static IEnumerable<Command> Create()
    {
        foreach (var command in Commands())
        {
            foreach (var option in CommonOptions)
                command.Add(option);
            yield return command;
        }
    }

    private static IEnumerable<Command> Commands()
    {
        var status = new Command("status", "Show the daemon: role, links up, rules, VMs, counters.") { };
        status.SetAction((p, ct) => Call(p, "status", null, PrintStatus, ct));
        yield return status;

        var reload = new Command("reload",
            "Read the daemon's configuration again and take its keys: admin_keys, [[host]], [[link]] public_key, the hosts file " +
            "(as SIGHUP does); sessions of removed keys end. Other settings need a restart.") { };
        reload.SetAction((p, ct) => Call(p, "reload", null, d => Console.WriteLine($"reloaded: {d?["keys"]} daemon keys, {d?["administrators"]} administrators"), ct));
        yield return reload;

        yield return LinkCommands();
        yield return HostCommands();
        yield return RuleCommands();
        yield return InterfaceCommands();

        var vms = new Command("vms", "List the VMs this daemon knows, where they live and the address each was seen using.") { };
        vms.SetAction((p, ct) => Call(p, "vm.list", null, PrintVms, ct));
        yield return vms;
        yield return VmCommands();

        var directory = new Command("directory", "Show the VM directory's versions, the replicas this daemon keeps and its self-repairs.") { };
        directory.SetAction((p, ct) => Call(p, "directory", null, PrintDirectory, ct));
        yield return directory;

        var at = new Option<string>("--from") { Description = "The daemon where the frame enters", Required = true };
        var src = new Option<string>("--src") { Description = "Source MAC", Required = true };
        var dst = new Option<string>("--dst") { Description = "Destination MAC", Required = true };
        var trace = new Command("trace", "Show which rule matches at each daemon and where a frame ends, without sending it (ask the Proxy).")
        {
            at, src, dst,
        };
        trace.SetAction((p, ct) => Call(p, "overlay.trace",
            new JsonObject { ["at"] = p.GetValue(at), ["src"] = p.GetValue(src), ["dst"] = p.GetValue(dst) }, PrintTrace, ct));
        yield return trace;

        var show = new Command("show", "Show links, rules, interfaces or VMs with their counters.");
        foreach (var (what, command, printer) in new (string, string, Action<JsonNode?>)[]
        {
            ("links", "link.list", PrintLinks), ("rules", "rule.list", PrintRules),
            ("interfaces", "interface.list", PrintInterfaces), ("vms", "vm.list", PrintVms),
        })
        {
            var sub = new Command(what, $"Show {what}.") { };
            sub.SetAction((p, ct) => Call(p, command, null, printer, ct));
            show.Add(sub);
        }
        yield return show;
    }

    /// <summary><c>vnet vm order|move|remove|sites</c>: the Proxy's VM commands (docs/vms.md).</summary>
    private static Command VmCommands()
    {
        var vm = new Command("vm", "Order VMs on sites that offer a provider, move and remove them (ask the Proxy).");

        var sites = new Command("sites", "List the hosts up now that make VMs, with their provider and VM count.") { };
        sites.SetAction((p, ct) => Call(p, "vm.sites", null, PrintSites, ct));
        vm.Add(sites);

        var site = new Option<string>("--site") { Description = "The host to make the VM on ('vnet vm sites' lists them)", Required = true };
        var size = new Option<string>("--size") { Description = "small, medium or large (QEMU: 128, 256, 512 MiB)", DefaultValueFactory = _ => "small" };
        size.AcceptOnlyFromAmong("small", "medium", "large");
        var orderName = new Option<string?>("--name") { Description = $"The VM's name: a-z, 0-9 and '-', at most {Vms.Providers.VmSpec.MaxNameLength} (default: vm-XXXX)" };
        var order = new Command("order", "Make a VM on a site; it joins the LAN and takes its address from the LAN's DHCP server.") { site, size, orderName };
        order.Validators.Add(r =>
        {
            if (r.GetValue(orderName) is { } n && Vms.Providers.VmNames.Problem(n) is { } problem)
                r.AddError(problem);
        });
        order.SetAction((p, ct) =>
        {
            var args = new JsonObject { ["site"] = p.GetValue(site), ["size"] = p.GetValue(size) };
            if (p.GetValue(orderName) is { } n)
                args["name"] = n;
            return Call(p, "vm.order", args, d => Console.WriteLine($"ordered {d?["name"]} ({d?["mac"]}, {d?["size"]}, {d?["kind"]}) on {d?["site"]}"), ct);
        });
        vm.Add(order);

        var moveName = new Argument<string>("name") { Description = "The VM" };
        var to = new Option<string>("--to") { Description = "The site to move it to", Required = true };
        var move = new Command("move", "Move a VM to another site; it keeps its MAC, address and (live) its connections.") { moveName, to };
        move.SetAction((p, ct) => Call(p, "vm.move", new JsonObject { ["name"] = p.GetValue(moveName), ["to"] = p.GetValue(to) },
            d => Console.WriteLine($"moved {d?["name"]} from {d?["from"]} to {d?["to"]} ({d?["mode"]})"), ct));
        vm.Add(move);

        var removeName = new Argument<string>("name") { Description = "The VM" };
        var remove = new Command("remove", "End a VM and remove everything it had on its site.") { removeName };
        remove.SetAction((p, ct) => Call(p, "vm.remove", new JsonObject { ["name"] = p.GetValue(removeName) },
            d => Console.WriteLine($"removed {d?["name"]}"), ct));
        vm.Add(remove);
        return vm;
    }

    private static void PrintSites(JsonNode? data)
    {
        var t = new TableWriter("SITE", "PROVIDER", "VMS");
        foreach (var s in data?.AsArray() ?? [])
            t.Add(s?["site"]?.GetValue<string>(), s?["provider"]?.GetValue<string>(), s?["vms"]?.GetValue<int>());
        Console.Write(t);
    }

    private static Command HostCommands()
    {
        var host = new Command("host", "Admit, revoke and list the hosts of the overlay, by public key (ask the Proxy).");
        var list = new Command("list", "List the admitted hosts and their public keys.") { };
        list.SetAction((p, ct) => Call(p, "host.list", null, PrintHosts, ct));
        var name = new Argument<string>("name") { Description = "The host daemon's name" };
        var key = new Argument<string>("public-key") { Description = "Its public key ('vnet pubkey' on its key file prints it)" };
        var admit = new Command("admit", "Admit a host (or give it a new key; its old key's sessions end).") { name, key };
        admit.Validators.Add(r =>
        {
            // A typo is a usage error (exit 2), found before anything is sent.
            if (r.GetValue(key) is { } text && !PublicKeyId.TryParse(text, out _))
                r.AddError($"'{text}' is not a public key (32 bytes in base64; 'vnet pubkey < KEYFILE' prints one)");
        });
        admit.SetAction((p, ct) => Call(p, "host.admit", new JsonObject { ["name"] = p.GetValue(name), ["publicKey"] = p.GetValue(key) },
            d => Console.WriteLine($"admitted {d?["name"]} {d?["publicKey"]}"), ct));
        var revokeName = new Argument<string>("name") { Description = "The host daemon's name" };
        var revoke = new Command("revoke", "Revoke a host: its sessions end and it is refused from now on.") { revokeName };
        revoke.SetAction((p, ct) => Call(p, "host.revoke", new JsonObject { ["name"] = p.GetValue(revokeName) }, _ => Console.WriteLine("revoked"), ct));
        var pubkey = new Command("pubkey", "Print this daemon's public key.") { };
        pubkey.SetAction((p, ct) => Call(p, "pubkey", null, d => Console.WriteLine(d?.GetValue<string>()), ct));
        host.Add(list);
        host.Add(admit);
        host.Add(revoke);
        host.Add(pubkey);
        return host;
    }

    private static void PrintHosts(JsonNode? data)
    {
        var t = new TableWriter("NAME", "PUBLIC KEY");
        foreach (var h in data?.AsArray() ?? [])
            t.Add(h?["name"]?.GetValue<string>(), h?["publicKey"]?.GetValue<string>());
        Console.Write(t);
    }

    private static Command LinkCommands()
    {
        var link = new Command("link", "List, add and remove links to other daemons.");
        var list = new Command("list", "List links with state, RTT and counters.") { };
        list.SetAction((p, ct) => Call(p, "link.list", null, PrintLinks, ct));

        var peer = new Argument<string>("peer") { Description = "The other daemon's name" };
        var address = new Argument<string>("address") { Description = "Its address:port" };
        var transport = new Option<string>("--transport", "-t") { Description = "tcp or udp", DefaultValueFactory = _ => "tcp" };
        transport.AcceptOnlyFromAmong("tcp", "udp");
        var streams = new Option<int>("--streams") { Description = "Parallel sessions of the link (on UDP each with its own socket), 1 to 8, frames spread over them by flow", DefaultValueFactory = _ => 1 };
        var add = new Command("add", "Add a link this daemon dials and keeps up.") { peer, address, transport, streams };
        add.SetAction((p, ct) =>
        {
            var args = new JsonObject { ["peer"] = p.GetValue(peer), ["address"] = p.GetValue(address), ["transport"] = p.GetValue(transport) };
            if (p.GetValue(streams) != 1)
                args["streams"] = p.GetValue(streams);
            return Call(p, "link.add", args, d => PrintLinks(new JsonArray(d?.DeepClone())), ct);
        });

        var delPeer = new Argument<string>("peer") { Description = "The other daemon's name" };
        var del = new Command("del", "Remove a link (refused while user rules use it).") { delPeer };
        del.SetAction((p, ct) => Call(p, "link.del", new JsonObject { ["peer"] = p.GetValue(delPeer) }, _ => Console.WriteLine("removed"), ct));

        var emuPeer = new Argument<string>("peer") { Description = "The peer daemon, or * for every link without its own setting" };
        var emuSettings = new Argument<string>("settings") { Description = "delay=20ms,jitter=2ms,loss=1%,rate=50mbit,queue=100ms, or none" };
        var emulate = new Command("emulate", "Impose delay, jitter, loss and a rate limit on what this daemon sends over a link (like VDE's wirefilter).")
        {
            emuPeer, emuSettings,
        };
        emulate.SetAction((p, ct) => Call(p, "link.emulate", new JsonObject { ["peer"] = p.GetValue(emuPeer), ["link"] = p.GetValue(emuSettings) },
            d => Console.WriteLine($"links to {d?["peer"]}: {d?["emulation"]}"), ct));

        link.Add(list);
        link.Add(add);
        link.Add(del);
        link.Add(emulate);
        return link;
    }

    private static Command RuleCommands()
    {
        var rule = new Command("rule", "List, add and remove forwarding rules.");
        var list = new Command("list", "List rules with priorities and hit counters.") { };
        list.SetAction((p, ct) => Call(p, "rule.list", null, PrintRules, ct));

        var src = new Option<string>("--src") { Description = "Source MAC or any", Required = true };
        var dst = new Option<string>("--dst") { Description = "Destination MAC, any, multicast or none", Required = true };
        var arrival = new Option<string?>("--in") { Description = "Only frames arriving on this port (link:NAME or if:NAME)" };
        var to = new Option<string>("--to") { Description = "Action: link:NAME, if:NAME or flood", Required = true };
        var add = new Command("add", "Add a rule.") { src, dst, arrival, to };
        add.SetAction((p, ct) =>
        {
            var args = new JsonObject { ["src"] = p.GetValue(src), ["dst"] = p.GetValue(dst), ["to"] = p.GetValue(to) };
            if (p.GetValue(arrival) is { } i)
                args["in"] = i;
            return Call(p, "rule.add", args, d => PrintRules(new JsonArray(d?.DeepClone())), ct);
        });

        var id = new Argument<long>("id") { Description = "Rule id (see 'vnet rule list')" };
        var del = new Command("del", "Remove a rule.") { id };
        del.SetAction((p, ct) => Call(p, "rule.del", new JsonObject { ["id"] = p.GetValue(id) }, _ => Console.WriteLine("removed"), ct));

        rule.Add(list);
        rule.Add(add);
        rule.Add(del);
        return rule;
    }

    private static Command InterfaceCommands()
    {
        var iface = new Command("interface", "List, add and remove local interfaces (TAPs, pcap NICs).");
        var list = new Command("list", "List interfaces with counters.") { };
        list.SetAction((p, ct) => Call(p, "interface.list", null, PrintInterfaces, ct));

        var name = new Argument<string>("name") { Description = "Device name" };
        var kind = new Option<string>("--kind") { Description = "tap or pcap", DefaultValueFactory = _ => "tap" };
        kind.AcceptOnlyFromAmong("tap", "pcap");
        var mtu = new Option<int>("--mtu") { Description = "MTU", DefaultValueFactory = _ => 1500 };
        var bridge = new Option<string?>("--bridge") { Description = "Add the TAP to this Linux bridge" };
        var lan = new Option<bool>("--lan") { Description = "Proxy: this interface is the user's LAN" };
        var queues = new Option<int>("--queues") { Description = "TAP receive queues, 1 to 16 (IFF_MULTI_QUEUE above 1)", DefaultValueFactory = _ => 1 };
        var add = new Command("add", "Open an interface (a VM's TAP appears here).") { name, kind, mtu, bridge, lan, queues };
        add.SetAction((p, ct) =>
        {
            var args = new JsonObject { ["name"] = p.GetValue(name), ["kind"] = p.GetValue(kind), ["mtu"] = p.GetValue(mtu), ["lan"] = p.GetValue(lan) };
            if (p.GetValue(queues) != 1)
                args["queues"] = p.GetValue(queues);
            if (p.GetValue(bridge) is { } b)
                args["bridge"] = b;
            return Call(p, "interface.add", args, d => PrintInterfaces(new JsonArray(d?.DeepClone())), ct);
        });

        var delName = new Argument<string>("name") { Description = "Device name" };
        var del = new Command("del", "Close an interface; its VMs leave this daemon.") { delName };
        del.SetAction((p, ct) => Call(p, "interface.del", new JsonObject { ["name"] = p.GetValue(delName) }, _ => Console.WriteLine("removed"), ct));

        iface.Add(list);
        iface.Add(add);
        iface.Add(del);
        return iface;
    }

    internal static async Task<int> Call(ParseResult p, string command, JsonObject? args, Action<JsonNode?> print, CancellationToken ct)
    {
        try
        {
            var data = await Send(p, command, args, ct);
            if (p.GetValue(JsonOption))
                Console.WriteLine(data?.ToJsonString(Pretty) ?? "null");
            else
                print(data);
            return 0;
        }
        catch (ControlException e)
        {
            await Console.Error.WriteLineAsync($"vnet: {e.Message}");
            return ExitCodeOf(e);
        }
    }

    /// <summary>Exit status of a failed command (docs/cli.md): 2 for a wrong command line, else 1.</summary>
    internal static int ExitCodeOf(ControlException e) => e.BadArguments ? 2 : 1;

    /// <summary>Sends a command to the daemon the options name: local socket or TCP, here or --at another daemon.</summary>
    internal static async Task<JsonNode?> Send(ParseResult p, string command, JsonObject? args, CancellationToken ct)
    {
        if (p.GetValue(AtOption) is { } at)
        {
            var inner = new JsonObject { ["at"] = at, ["command"] = command };
            if (args is not null)
                inner["args"] = args;
            (command, args) = ("remote", inner);
        }
        if (p.GetValue(RemoteOption) is { } remote)
        {
            if (!System.Net.IPEndPoint.TryParse(remote, out var endPoint) || endPoint.Port == 0)
                throw new ControlException($"--remote: '{remote}' is not an address:port") { BadArguments = true };
            var daemonKeyText = p.GetValue(RemoteKeyOption) ?? Environment.GetEnvironmentVariable("VNET_REMOTE_KEY")
                ?? throw new ControlException("--remote needs the daemon's public key: --remote-key KEY or $VNET_REMOTE_KEY") { BadArguments = true };
            if (!PublicKeyId.TryParse(daemonKeyText, out var daemonKey))
                throw new ControlException($"--remote-key: '{daemonKeyText}' is not a public key (32 bytes in base64; 'vnet pubkey' on the daemon's key file prints it)") { BadArguments = true };
            var adminFile = p.GetValue(AdminKeyFileOption) ?? Environment.GetEnvironmentVariable("VNET_ADMIN_KEY_FILE")
                ?? throw new ControlException("--remote needs an administrator's key: --admin-key-file FILE or $VNET_ADMIN_KEY_FILE") { BadArguments = true };
            StaticKeyPair admin;
            PresharedKey psk;
            try
            {
                admin = StaticKeyPair.TryParse(KeyFiles.Read(adminFile, "--admin-key-file"), out var error)
                    ?? throw new ControlException($"{adminFile}: {error}") { BadArguments = true };
                var pskFile = p.GetValue(PskFileOption) ?? Environment.GetEnvironmentVariable("VNET_PSK_FILE");
                psk = pskFile is null ? PresharedKey.None
                    : PresharedKey.TryParse(KeyFiles.Read(pskFile, "--psk-file"), out error) ?? throw new ControlException($"{pskFile}: {error}") { BadArguments = true };
            }
            catch (ConfigException e)
            {
                throw new ControlException(e.Message) { BadArguments = true };
            }
            using (admin)
                return await RemoteControlClient.SendAsync(endPoint, admin, daemonKey, psk, command, args, ct);
        }
        var socket = ControlClient.ResolveSocket(p.GetValue(SocketOption));
        return await ControlClient.SendAsync(socket, command, args, ct);
    }

    private static void PrintStatus(JsonNode? data)
    {
        var s = DaemonJson.FromNode<DaemonStatus>(data)!;
        Console.WriteLine($"daemon    {s.Name} ({EnumText.Of(s.Role)}) on {s.Listen}, version {s.Version}, up {TimeSpan.FromSeconds(Math.Round(s.UptimeSeconds))}");
        Console.WriteLine($"links     {s.LinksUp}/{s.Links} up");
        Console.WriteLine($"rules     {s.Rules}");
        Console.WriteLine($"vms       {s.LocalVms} local, {s.KnownVms} known");
        Console.WriteLine($"frames    {s.ForwardedFrames} forwarded");
        Console.WriteLine($"drops     {string.Join(", ", s.Drops.Select(kv => $"{kv.Key} {kv.Value}"))}");
        Console.WriteLine($"buffers   {s.BuffersCreated} created, {s.BuffersInPool} free; udp rejected {s.UdpRejected}");
        Console.WriteLine($"memory    {TableWriter.Bytes(s.AllocatedBytes)} allocated since start, {s.Gen0Collections} gen0 collections");
        Console.WriteLine($"directory {s.DirectoryRepairs} repairs; {s.BadPeerMessages} bad peer messages; {s.LearnRefused} VMs over an interface's limit");
        Console.WriteLine($"control   {TableWriter.Bytes(s.PeerBytesSent)} sent to peers, {TableWriter.Bytes(s.PeerBytesReceived)} received; loop busy {s.ControlLoopBusySeconds:0.###} s, {s.ControlLoopPending} waiting");
        Console.WriteLine($"guards    {s.PeersCutForFlooding} sessions cut for flooding; {s.PeerRequestsRefused} Proxy requests and {s.ToolSessionsRefused} remote CLI sessions refused as busy");
        if (s.Security is { } k)
        {
            Console.WriteLine($"handshakes {k.HandshakesRefused} refused (bad mac1, not admitted, stale or replayed, malformed), {k.HandshakesRateLimited} rate-limited; " +
                $"of the refused {k.InitsRefused} before any Diffie-Hellman, {k.ConnectionsWithoutInit} connections closed without an INIT");
            Console.WriteLine($"sessions  {k.AuthenticationFailures} messages failed authentication (forged, replayed or too old), {k.Rekeys} rekeys; udp {k.UdpReceiveFaults} receive faults");
        }
        if (s.OffloadFaults is { Count: > 0 } faults)
            Console.WriteLine($"offloads  refused from links: {string.Join(", ", faults.Select(kv => $"{kv.Key} {kv.Value}"))}");
    }

    private static void PrintDirectory(JsonNode? data)
    {
        var d = DaemonJson.FromNode<Vms.DirectoryStatus>(data)!;
        Console.WriteLine($"daemon     {d.Daemon}");
        Console.WriteLine($"own VMs    {d.LocalVms} at version {d.LocalVersion}");
        Console.WriteLine($"locations  {d.Locations} at version {d.LocationsVersion}");
        Console.WriteLine($"repairs    {d.Repairs}");
        var t = new TableWriter("PEER", "MAP", "VERSION", "ENTRIES", "HELD BACK");
        foreach (var r in d.Replicas)
            t.Add(r.Peer, r.Topic, r.Version, r.Entries, r.Buffered);
        Console.Write(t);
        foreach (var r in d.RecentRepairs)
            Console.WriteLine($"repair     {r.At:u} {EnumText.Of(r.Topic)} from {r.Peer}: {EnumText.Of(r.Kind)}");
    }

    private static void PrintLinks(JsonNode? data)
    {
        var t = new TableWriter("PEER", "TRANSPORT", "STAR", "STATE", "STREAMS", "REMOTE", "UDP PEER", "ROAMS", "RTT ms", "TX", "RX", "DROPS", "SESSIONS",
            "AUTH FAIL", "REKEYS", "EMULATION", "LAST DOWN");
        foreach (var l in DaemonJson.FromNode<List<LinkStatus>>(data) ?? [])
        {
            // Streams up of those the link spreads over; a link of one stream shows 1/1 or 0/1.
            t.Add(l.Peer, l.Transport, l.Star, l.Up ? "up" : "down", $"{l.StreamsUp}/{l.Streams}", l.Remote ?? l.Dial, l.DatagramRemote, l.Roams, l.RttMs,
                $"{l.TxFrames}/{TableWriter.Bytes(l.TxBytes)}", $"{l.RxFrames}/{TableWriter.Bytes(l.RxBytes)}", l.TxDrops, l.Sessions,
                l.AuthenticationFailures, l.Rekeys, l.Emulation, l.LastDownReason);
        }
        Console.Write(t);
    }

    private static void PrintRules(JsonNode? data)
    {
        var t = new TableWriter("ID", "SRC", "DST", "IN", "ACTION", "ORIGIN", "PRIO", "FRAMES", "BYTES");
        foreach (var r in DaemonJson.FromNode<List<RuleStatus>>(data) ?? [])
            t.Add(r.Id, r.Source, r.Destination, r.Ingress, r.Action, r.Origin, r.Priority, r.Frames, TableWriter.Bytes(r.Bytes));
        Console.Write(t);
    }

    private static void PrintInterfaces(JsonNode? data)
    {
        var t = new TableWriter("NAME", "KIND", "MTU", "STATE", "OFFLOADS", "LAN", "VMS", "TX", "RX", "DROPS", "QUEUES");
        foreach (var i in DaemonJson.FromNode<List<InterfaceStatus>>(data) ?? [])
        {
            // A multi-queue TAP: how many, and the frames each has read ("4: 120/98/0/77").
            var queues = i.Queues > 1 && i.QueueRxFrames is { } q ? $"{i.Queues}: {string.Join('/', q)}" : i.Queues.ToString(CultureInfo.InvariantCulture);
            t.Add(i.Name, i.Kind, i.Mtu, i.Waiting ? "waiting" : i.Up ? "up" : "down", i.Offloads, i.Lan, i.Vms,
                $"{i.TxFrames}/{TableWriter.Bytes(i.TxBytes)}", $"{i.RxFrames}/{TableWriter.Bytes(i.RxBytes)}", i.TxDrops, queues);
        }
        Console.Write(t);
    }

    private static void PrintTrace(JsonNode? data)
    {
        var t = DaemonJson.FromNode<TraceResult>(data)!;
        Console.WriteLine($"frame {t.Source} -> {t.Destination}");
        foreach (var hop in t.Hops)
        {
            Console.WriteLine($"{hop.Daemon}{(hop.Ingress is null ? "" : $" (arrived on {hop.Ingress})")}");
            foreach (var r in hop.Rules)
                Console.WriteLine($"  matches {r}");
            foreach (var o in hop.Outputs)
                Console.WriteLine($"  -> {o}");
        }
        foreach (var e in t.Endings)
            Console.WriteLine($"result: {e}");
    }

    private static void PrintVms(JsonNode? data)
    {
        var t = new TableWriter("MAC", "DAEMON", "INTERFACE", "LOCAL", "ADDRESS", "NAME", "STATE");
        foreach (var v in DaemonJson.FromNode<List<VmStatus>>(data) ?? [])
            t.Add(v.Mac, v.Daemon, v.Interface, v.Local, v.Address, v.Name, v.State);
        Console.Write(t);
    }

}
