using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Tests.TestBed;
using Vnet.Vms.Providers;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// VMs ordered at the Proxy and made by the hosts' providers (docs/vms.md): a netns VM leases its
/// address from the home LAN's dnsmasq, reaches the LAN machine, keeps an open TCP connection and
/// its address across <c>vm.move</c>, and <c>vm.remove</c> leaves nothing.
/// <code>
///  lanhost (dnsmasq) ── [lan] ── lan0 (pcap) Proxy ── [wan] ──┬── h1 (vm_provider = netns) ── vm-NAME (pcap) ══ eth0 (the VM's namespace)
///                                                            └── h2 (vm_provider = netns)
/// </code>
/// </summary>
[Collection("Netns")]
public sealed class VmProviderTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(45);

    [Fact]
    public async Task NetnsVm_OrderedLeasedMovedWithItsConnectionAndRemoved()
    {
        using var o = new OverlayBed(output, hosts: 3);
        var leases = Path.Combine(Path.GetTempPath(), $"vnet-leases-{Guid.NewGuid():N}");
        var name = o.Bed.Prefix + "-a";
        var registry = Path.Combine(NetnsVmProvider.Registry, name + ".netns");
        var device = "vm-" + name;
        Process? client = null;
        try
        {
            StartDnsmasq(o, leases);
            o.StartProxy();
            o.StartHost(1, vmProvider: "netns");
            o.StartHost(2, vmProvider: "netns");
            o.StartHost(3); // no provider: never makes a VM
            o.WaitStar(3);

            var sites = o.Control("proxy", "vm.sites")!.AsArray();
            Assert.Equal(["h1", "h2"], sites.Select(s => s!["site"]!.GetValue<string>()).Order(StringComparer.Ordinal));
            Assert.All(sites, s => Assert.Equal("netns", s!["provider"]!.GetValue<string>()));

            // Refused whole, nothing made: an unknown site, a bad name, a bad size.
            AssertRefused(o, "vm.order", new JsonObject { ["site"] = "h9", ["size"] = "small", ["name"] = name }, "h9");
            AssertRefused(o, "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "small", ["name"] = "Bad_Name" }, "Bad_Name");
            AssertRefused(o, "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "huge", ["name"] = name }, "huge");
            AssertRefused(o, "vm.order", new JsonObject { ["site"] = "proxy", ["size"] = "small", ["name"] = name }, "proxy");
            AssertRefused(o, "vm.order", new JsonObject { ["site"] = "h3", ["size"] = "small", ["name"] = name }, "no VM provider");
            Assert.Empty(o.Vms("proxy"));
            Assert.False(File.Exists(registry), "a refused order made a namespace");

            var ordered = o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "small", ["name"] = name })!.AsObject();
            output.WriteLine($"vm.order: {ordered.ToJsonString()}");
            Assert.Equal(name, ordered["name"]!.GetValue<string>());
            Assert.Equal("h1", ordered["site"]!.GetValue<string>());
            Assert.Equal("small", ordered["size"]!.GetValue<string>());
            Assert.Equal("netns", ordered["kind"]!.GetValue<string>());
            var mac = ordered["mac"]!.GetValue<string>();
            Assert.StartsWith("02:", mac, StringComparison.Ordinal);
            // It exists on h1 with its interface attached when the order returns.
            var holder = NetnsVmProvider.HolderOf(name);
            Assert.True(holder is not null, $"no namespace holder registered in {registry}");
            var ns = holder.Value;
            Assert.True(o.Bed.HasInterface("h1", device), $"h1 has no {device}");
            Assert.Contains(o.Control("h1", "interface.list")!.AsArray(), i => i!["name"]!.GetValue<string>() == device);
            AssertRefused(o, "vm.order", new JsonObject { ["site"] = "h2", ["size"] = "small", ["name"] = name }, "exists");
            // Its interface is the VM's: closed by hand it would leave the VM cut off and listed running.
            var byHand = Assert.Throws<ControlException>(() => o.Control("h1", "interface.del", new JsonObject { ["name"] = device }));
            Assert.Contains($"interface {device} is VM {name}'s", byHand.Message, StringComparison.Ordinal);
            // Nor by a change set sent to the host itself (what topo apply and adaptation send).
            var bySet = o.Control("h1", "apply", new JsonObject { ["changes"] = new JsonArray(new JsonObject { ["op"] = "removeInterface", ["name"] = device }) })!.AsObject();
            Assert.False(bySet["applied"]!.GetValue<bool>());
            Assert.Contains($"interface {device} is VM {name}'s", bySet["error"]!.GetValue<string>(), StringComparison.Ordinal);
            Assert.Contains(o.Control("h1", "interface.list")!.AsArray(), i => i!["name"]!.GetValue<string>() == device);
            // Nor is it a description's: the dump leaves it out, so a description without it (as a
            // user writes one by hand) applied changes nothing, and one that declares it is refused.
            var dump = o.Control("proxy", "overlay.dump")!["text"]!.GetValue<string>();
            Assert.DoesNotContain(device, dump, StringComparison.Ordinal);
            var same = o.Control("proxy", "overlay.apply", new JsonObject { ["text"] = dump })!.AsObject();
            Assert.True(same["error"] is null, $"applying the dump: {same["error"]}");
            Assert.Equal("no changes\n", same["diff"]!.GetValue<string>());
            var h1Header = Regex.Match(dump, @"^host h1\b.*$", RegexOptions.Multiline);
            Assert.True(h1Header.Success, $"no h1 in the dump:\n{dump}");
            var claim = h1Header.Value.EndsWith('{')
                ? dump.Insert(h1Header.Index + h1Header.Length, $"\n  interface {device} tap")
                : dump.Insert(h1Header.Index + h1Header.Length, $" {{\n  interface {device} tap\n}}");
            var claimed = o.Control("proxy", "overlay.apply", new JsonObject { ["text"] = claim })!.AsObject();
            Assert.False(claimed["applied"]!.GetValue<bool>());
            Assert.Contains($"interface {device} at h1 is VM {name}'s", claimed["error"]?.GetValue<string>() ?? "", StringComparison.Ordinal);
            Assert.True(o.Bed.HasInterface("h1", device), $"{device} is gone from h1 after the refused description");

            var address = WaitForAddress(o, name, "h1", null);
            output.WriteLine($"{name} ({mac}) leased {address} on h1");
            var last = IPAddress.Parse(address).GetAddressBytes()[3];
            Assert.True(address.StartsWith("10.50.0.", StringComparison.Ordinal) && last is >= 100 and <= 150, $"{address} is not from the LAN's DHCP range");
            // The Proxy saw the DHCPACK; udhcpc's script applies it a moment later.
            Wait.Until(() => AddressIn(ns) == address, TimeSpan.FromSeconds(10), $"the VM has {address} on eth0");
            AssertPings(ns, OverlayBed.LanHostIp);
            var table = o.Cli("proxy", "vms");
            Assert.Contains(name, table, StringComparison.Ordinal);
            Assert.Contains(address, table, StringComparison.Ordinal);
            Assert.Contains("netns", o.Cli("proxy", "vm sites"), StringComparison.Ordinal);

            // An open TCP connection from the VM to the LAN machine, carrying data across the move.
            var server = o.Bed.Start("lanhost", "iperf3-server", "iperf3", "-s", "-1", "--forceflush");
            server.WaitForOutput("Server listening", TimeSpan.FromSeconds(10));
            client = Process.Start(new ProcessStartInfo("nsenter", ["-t", ns.ToString(CultureInfo.InvariantCulture), "-n", "iperf3", "-c", OverlayBed.LanHostIp, "-t", "10", "-b", "20M", "-i", "1", "-J"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            })!;
            var stdout = client.StandardOutput.ReadToEndAsync();
            Thread.Sleep(2500);

            var clock = Stopwatch.StartNew();
            var moved = o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" })!.AsObject();
            output.WriteLine($"vm.move: {moved.ToJsonString()} in {clock.ElapsedMilliseconds} ms");
            Assert.Equal("h1", moved["from"]!.GetValue<string>());
            Assert.Equal("h2", moved["to"]!.GetValue<string>());
            Assert.Equal("live", moved["mode"]!.GetValue<string>());
            Assert.False(o.Bed.HasInterface("h1", device), $"{device} is still on h1");
            Assert.True(o.Bed.HasInterface("h2", device), $"h2 has no {device}");
            Assert.Equal(address, WaitForAddress(o, name, "h2", address));
            Assert.Equal(mac, MacIn(ns));
            Assert.Equal(ns, NetnsVmProvider.HolderOf(name));

            Assert.True(client.WaitForExit(TimeSpan.FromSeconds(40)), "iperf3 did not finish");
            var report = JsonNode.Parse(await stdout)!;
            Assert.True(client.ExitCode == 0, $"iperf3 failed: {report["error"]}");
            var intervals = report["intervals"]!.AsArray();
            var lastBytes = intervals[^1]!["sum"]!["bytes"]!.GetValue<long>();
            output.WriteLine($"iperf3: {intervals.Count} intervals, {lastBytes} bytes in the last; received {report["end"]!["sum_received"]!["bytes"]}");
            Assert.True(lastBytes > 0, "the connection carried nothing after the move");
            AssertPings(ns, OverlayBed.LanHostIp);

            AssertRefused(o, "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" }, "already");
            AssertRefused(o, "vm.move", new JsonObject { ["name"] = name, ["to"] = "h3" }, "no VM provider");
            Assert.Contains(o.Vms("proxy"), v => v.Name == name && v.Site == "h2" && v.State == "running");
            var removed = o.Control("proxy", "vm.remove", new JsonObject { ["name"] = name })!.AsObject();
            Assert.Equal(name, removed["name"]!.GetValue<string>());
            Assert.False(File.Exists(registry), "vm.remove left the namespace's registration");
            Assert.False(Directory.Exists($"/proc/{ns}"), "vm.remove left the namespace's holder running");
            Assert.False(o.Bed.HasInterface("h2", device), "vm.remove left the host interface");
            Assert.DoesNotContain(o.Control("h2", "interface.list")!.AsArray(), i => i!["name"]!.GetValue<string>() == device);
            Assert.DoesNotContain(o.Vms("proxy"), v => v.Name == name);
            AssertRefused(o, "vm.remove", new JsonObject { ["name"] = name }, "no VM");
        }
        catch
        {
            o.DumpAll();
            if (NetnsVmProvider.HolderOf(name) is { } pid)
                output.WriteLine($"--- VM {name}: {InVm(pid, "ip", "addr").Stdout}{InVm(pid, "ip", "route").Stdout}");
            throw;
        }
        finally
        {
            if (client is { HasExited: false })
                client.Kill(entireProcessTree: true);
            client?.Dispose();
            RemoveNamespace(name);
            File.Delete(leases);
        }
    }

    /// <summary>
    /// The hosts are the authority on which VMs run: a Proxy restarted (its inventory empty) learns
    /// the VMs of each host again as its star link comes back, with their names, sites and sizes;
    /// a host killed before it could end its VM finds it again when it restarts (the VM is not
    /// orphaned: its interface is attached, it can be removed through the Proxy); a host stopped
    /// (ending its VM) and restarted has its VM forgotten by the Proxy.
    /// </summary>
    [Fact]
    public void NetnsVms_ProxyRestarted_LearnsThemFromHosts_HostKilled_FindsItsVm_HostStopped_Forgotten()
    {
        using var o = new OverlayBed(output, hosts: 2);
        var a = o.Bed.Prefix + "-a";
        var b = o.Bed.Prefix + "-b";
        try
        {
            o.StartProxy();
            o.StartHost(1, vmProvider: "netns");
            o.StartHost(2, vmProvider: "netns");
            o.WaitStar(2);
            o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "medium", ["name"] = a });
            o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h2", ["size"] = "small", ["name"] = b });
            var macA = o.Vms("proxy").Single(v => v.Name == a).Mac;

            o.Daemon("proxy").Kill();
            o.StartProxy();
            o.WaitStar(2);
            Wait.Until(() =>
            {
                var vms = o.Vms("proxy");
                return vms.Any(v => v.Name == a && v.Site == "h1" && v.State == "running" && v.Size == "medium" && v.Mac == macA)
                    && vms.Any(v => v.Name == b && v.Site == "h2" && v.State == "running" && v.Size == "small");
            }, TimeSpan.FromSeconds(20), "the restarted Proxy lists both VMs by name on their hosts");
            o.Daemon("proxy").WaitForOutput($"VM {a} ({macA}) runs on h1: taken into the inventory", TimeSpan.FromSeconds(5));

            // h1's process killed (a crash): its VM's namespace lives on; restarted, h1 takes it in again.
            var holder = NetnsVmProvider.HolderOf(a);
            Assert.NotNull(holder);
            o.Daemon("h1").KillOnly();
            Assert.Equal(holder, NetnsVmProvider.HolderOf(a));
            o.StartHost(1, vmProvider: "netns");
            o.WaitStar(2);
            o.Daemon("h1").WaitForOutput($"VM {a} ({macA}) still runs from before this daemon started", TimeSpan.FromSeconds(10));
            Wait.Until(() => o.Control("h1", "interface.list")!.AsArray().Any(i => i!["name"]!.GetValue<string>() == "vm-" + a),
                TimeSpan.FromSeconds(10), $"h1 reads vm-{a} again");
            Assert.Contains(o.Vms("proxy"), v => v.Name == a && v.Site == "h1" && v.State == "running");
            // A full entry at both ends: removed through the Proxy, the host destroys it.
            o.Control("proxy", "vm.remove", new JsonObject { ["name"] = a });
            Assert.Null(NetnsVmProvider.HolderOf(a));
            Assert.DoesNotContain(o.Vms("proxy"), v => v.Name == a);

            // h2 stops (ending its VM) and comes back without it: the Proxy forgets b.
            Assert.Equal(0, o.Daemon("h2").Stop(TimeSpan.FromSeconds(10)));
            Assert.Null(NetnsVmProvider.HolderOf(b));
            o.StartHost(2, vmProvider: "netns");
            o.WaitStar(2);
            Wait.Until(() => !o.Vms("proxy").Any(v => v.Name == b), TimeSpan.FromSeconds(20), "the Proxy forgets the VM of the restarted host");
            o.Daemon("proxy").WaitForOutput($"VM {b} no longer runs on h2", TimeSpan.FromSeconds(5));
            AssertRefused(o, "vm.remove", new JsonObject { ["name"] = b }, "no VM");
        }
        catch
        {
            o.DumpAll();
            throw;
        }
        finally
        {
            RemoveNamespace(a);
            RemoveNamespace(b);
        }
    }

    /// <summary>
    /// A QEMU guest ordered on h1 boots (TCG), leases its address from the LAN through the Proxy and
    /// pings the LAN machine; moved to h2 (live migration when it works here, else stop and restart
    /// with the same MAC), it keeps its address and still reaches the LAN; removed, its QEMU and TAP go.
    /// </summary>
    [Fact]
    public async Task QemuVm_OrderedLeasedPingsTheLanAndKeepsItsAddressAcrossAMove()
    {
        using var o = new OverlayBed(output, hosts: 2);
        var leases = Path.Combine(Path.GetTempPath(), $"vnet-leases-{Guid.NewGuid():N}");
        var name = o.Bed.Prefix + "-q";
        var device = "vm-" + name;
        var boot = TimeSpan.FromSeconds(120);
        try
        {
            StartDnsmasq(o, leases);
            o.StartProxy();
            o.StartHost(1, vmProvider: "qemu");
            o.StartHost(2, vmProvider: "qemu");
            o.WaitStar(2);
            Assert.All(o.Control("proxy", "vm.sites")!.AsArray(), s => Assert.Equal("qemu", s!["provider"]!.GetValue<string>()));

            var clock = Stopwatch.StartNew();
            var ordered = o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "small", ["name"] = name })!.AsObject();
            output.WriteLine($"vm.order: {ordered.ToJsonString()} in {clock.ElapsedMilliseconds} ms");
            Assert.Equal("qemu", ordered["kind"]!.GetValue<string>());
            Assert.True(o.Bed.HasInterface("h1", device), $"h1 has no TAP {device}");

            var address = WaitForAddress(o, name, "h1", null, boot);
            output.WriteLine($"{name} leased {address} {clock.Elapsed.TotalSeconds:0.0} s after the order");
            // A TCP connection from the guest to the LAN machine: 1 MiB before the move, 1 MiB after.
            var received = TcpTransfer.Receive(o.Bed.Prefix + "-lanhost", 7201, boot);
            using (var console = GuestConsole.Connect(Path.Combine(o.VmDirOf("h1"), name + ".console")))
            {
                AssertGuestPings(console, OverlayBed.LanHostIp, "on h1");
                var started = console.Run($"(head -c 1048576 /dev/zero; sleep 8; head -c 1048576 /dev/zero) | nc {OverlayBed.LanHostIp} 7201 > /dev/null 2>&1 &", TimeSpan.FromSeconds(30));
                Assert.True(started.Ok, started.Output);
            }
            Thread.Sleep(1500);

            clock.Restart();
            var moved = o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" })!.AsObject();
            output.WriteLine($"vm.move: {moved.ToJsonString()} in {clock.ElapsedMilliseconds} ms");
            Assert.Equal("h2", moved["to"]!.GetValue<string>());
            var mode = moved["mode"]!.GetValue<string>();
            Assert.Contains(mode, new[] { "live", "restart" });
            Assert.False(o.Bed.HasInterface("h1", device), $"{device} is still on h1");
            Assert.True(o.Bed.HasInterface("h2", device), $"h2 has no TAP {device}");
            Assert.Equal(address, WaitForAddress(o, name, "h2", address, boot));
            using (var console = GuestConsole.Connect(Path.Combine(o.VmDirOf("h2"), name + ".console")))
            {
                var shown = console.Run("ip -4 addr show dev eth0", boot);
                Assert.Contains(address + "/", shown.Output, StringComparison.Ordinal);
                AssertGuestPings(console, OverlayBed.LanHostIp, $"on h2 after a {mode} move");
            }
            Assert.True(o.Bed.Ping("lanhost", address, count: 2, timeoutSeconds: 10), "LAN machine -> the moved guest");
            var transfer = await received.WaitAsync(boot);
            output.WriteLine($"TCP across the {mode} move: {transfer.Bytes} bytes");
            if (mode == "live")
                Assert.Equal(2L << 20, transfer.Bytes);

            o.Control("proxy", "vm.remove", new JsonObject { ["name"] = name });
            Wait.Until(() => !o.Bed.HasInterface("h2", device), TimeSpan.FromSeconds(10), $"{device} gone from h2");
            Assert.False(File.Exists(Path.Combine(o.VmDirOf("h2"), name + ".qmp")), "vm.remove left QEMU's monitor socket");
        }
        catch
        {
            o.DumpAll();
            throw;
        }
        finally
        {
            File.Delete(leases);
        }
    }

    private void AssertGuestPings(GuestConsole console, string address, string what) => AssertGuestPings(output, console, address, what);

    internal static void AssertGuestPings(ITestOutputHelper output, GuestConsole console, string address, string what)
    {
        var r = console.Run($"ping -c 3 -i 0.2 -W 2 {address}", TimeSpan.FromSeconds(120));
        output.WriteLine($"guest {what} -> {address}:\n{r.Output}");
        Assert.True(r.Ok && r.Output.Contains(" 0% packet loss", StringComparison.Ordinal), $"guest {what}: ping {address} failed (rc {r.ExitCode}):\n{r.Output}");
    }

    internal static void StartDnsmasq(OverlayBed o, string leases) =>
        o.Bed.Start("lanhost", "dnsmasq", "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
            "--interface=eth0", "--bind-interfaces", "--dhcp-range=10.50.0.100,10.50.0.150,255.255.255.0,1h", "--no-ping",
            $"--dhcp-leasefile={leases}", "--log-dhcp", "--dhcp-option=3,10.50.0.1");

    internal static void AssertRefused(OverlayBed o, string command, JsonObject args, string reason)
    {
        var e = Assert.Throws<ControlException>(() => o.Control("proxy", command, args));
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }

    /// <summary>Waits (bounded) until the Proxy's vm.list shows the VM on <paramref name="site"/> with an address (other than none) and returns it.</summary>
    internal static string WaitForAddress(OverlayBed o, string name, string site, string? expected, TimeSpan? timeout = null)
    {
        VmStatus? row = null;
        try
        {
            Wait.Until(() =>
            {
                row = o.Vms("proxy").FirstOrDefault(v => v.Name == name);
                return row is { Address: not null } && row.Site == site && (expected is null || row.Address == expected);
            }, timeout ?? Lease, $"vm.list at the Proxy shows {name} on {site} with an address");
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"vm.list at the Proxy: {(row is null ? "no row" : DaemonJson.ToNode(row)!.ToJsonString())}");
        }
        return row!.Address!;
    }

    internal static Sh.Result InVm(int holder, params string[] command) =>
        Sh.TryExec("nsenter", ["-t", holder.ToString(CultureInfo.InvariantCulture), "-n", .. command], 20);

    private static string? AddressIn(int ns)
    {
        var r = InVm(ns, "ip", "-j", "-4", "addr", "show", "dev", "eth0");
        // No IPv4 address yet: ip prints nothing, an empty list (udhcpc's script flushes the
        // address before it adds the leased one), or a link without addr_info entries.
        return r.Stdout.Trim().Length == 0 || JsonNode.Parse(r.Stdout) is not JsonArray { Count: > 0 } links
            ? null
            : links[0]?["addr_info"]?.AsArray().FirstOrDefault()?["local"]?.GetValue<string>();
    }

    private static string MacIn(int ns) =>
        JsonNode.Parse(InVm(ns, "ip", "-j", "link", "show", "dev", "eth0").Stdout)![0]!["address"]!.GetValue<string>();

    private void AssertPings(int ns, string address) => AssertPings(output, ns, address);

    internal static void AssertPings(ITestOutputHelper output, int ns, string address)
    {
        var r = InVm(ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", address);
        output.WriteLine($"{ns} -> {address}: {r.Stdout.Trim().Split('\n').LastOrDefault()}");
        Assert.True(r.Ok && r.Stdout.Contains(" 0% packet loss", StringComparison.Ordinal), $"ping {address} from {ns} failed:\n{r.Stdout}{r.Stderr}");
    }

    /// <summary>The test's netns VM, if the daemons left it (they should not): its holder ends, its registration goes.</summary>
    internal static void RemoveNamespace(string name)
    {
        if (NetnsVmProvider.HolderOf(name) is { } pid)
            Sh.TryExec("kill", ["-9", pid.ToString(CultureInfo.InvariantCulture)], 10);
        File.Delete(Path.Combine(NetnsVmProvider.Registry, name + ".netns"));
    }
}
