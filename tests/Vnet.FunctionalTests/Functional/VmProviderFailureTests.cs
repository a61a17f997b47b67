using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using Vnet.Control;
using Vnet.Tests.TestBed;
using Vnet.Vms.Providers;
using Vnet.Vms.Providers.Qemu;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// The failure paths of <c>vm.move</c> and of a host's crash (docs/vms.md), made to happen for real:
/// a target that cannot take the VM (refused before the VM leaves: it stays and works), a target
/// that dies after the source let go (the VM is lost; <c>vm.remove</c> cleans both hosts), a target
/// QEMU that dies during the live migration (the move falls back to stop and restart), a host
/// daemon killed while it runs a QEMU VM (taken in again when it restarts), and a target killed
/// during a QEMU migration (the VM is lost, then found again when the target comes back).
/// <code>
///  lanhost (dnsmasq) ── [lan] ── Proxy ── [wan] ──┬── h1 (vm_provider) ── vm-NAME
///                                                └── h2 (vm_provider)
/// </code>
/// </summary>
[Collection("Netns")]
public sealed class VmProviderFailureTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Boot = TimeSpan.FromSeconds(120);

    /// <summary>
    /// The target of a move has a device named like the VM's (a leftover): its prepare refuses, so
    /// the VM never leaves h1, where it keeps running and reaching the LAN, and the device on h2 is
    /// left as it was. Once it is gone, the same move works.
    /// </summary>
    [Fact]
    public void NetnsVm_MoveRefusedBeforeItLeaves_StaysRunningAndReachable()
    {
        using var o = new OverlayBed(output, hosts: 2);
        var leases = Path.Combine(Path.GetTempPath(), $"vnet-leases-{Guid.NewGuid():N}");
        var name = o.Bed.Prefix + "-a";
        var device = "vm-" + name;
        try
        {
            VmProviderTests.StartDnsmasq(o, leases);
            o.StartProxy();
            o.StartHost(1, vmProvider: "netns");
            o.StartHost(2, vmProvider: "netns");
            o.WaitStar(2);
            o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "small", ["name"] = name });
            var address = VmProviderTests.WaitForAddress(o, name, "h1", null);
            var holder = NetnsVmProvider.HolderOf(name) ?? throw new InvalidOperationException("no namespace holder");

            o.Bed.Veth("h2", device, "h2", "squat0");
            var e = Assert.Throws<ControlException>(() => o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" }));
            output.WriteLine($"vm.move refused: {e.Message}");
            Assert.Contains($"a device named {device} exists on this host already", e.Message, StringComparison.Ordinal);

            Assert.Contains(o.Vms("proxy"), v => v.Name == name && v.Site == "h1" && v.State == "running");
            Assert.True(o.Bed.HasInterface("h1", device), $"{device} left h1");
            Assert.Contains(o.Control("h1", "interface.list")!.AsArray(), i => i!["name"]!.GetValue<string>() == device);
            Assert.Equal(holder, NetnsVmProvider.HolderOf(name));
            VmProviderTests.AssertPings(output, holder, OverlayBed.LanHostIp);
            Assert.True(o.Bed.HasInterface("h2", device), "the refused move removed h2's device of that name");
            Assert.DoesNotContain(o.Control("h2", "vm.host")!["vms"]!.AsArray(), v => v!["name"]!.GetValue<string>() == name);

            // The leftover gone, the move goes through, the VM keeping its address.
            o.Bed.Exec("h2", $"ip link del {device}");
            var moved = o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" })!.AsObject();
            Assert.Equal("live", moved["mode"]!.GetValue<string>());
            Assert.Equal(address, VmProviderTests.WaitForAddress(o, name, "h2", address));
            VmProviderTests.AssertPings(output, holder, OverlayBed.LanHostIp);
            o.Control("proxy", "vm.remove", new JsonObject { ["name"] = name });
            Assert.Null(NetnsVmProvider.HolderOf(name));
            Assert.False(o.Bed.HasInterface("h2", device), "vm.remove left the device on h2");
        }
        catch
        {
            o.DumpAll();
            throw;
        }
        finally
        {
            VmProviderTests.RemoveNamespace(name);
            File.Delete(leases);
        }
    }

    /// <summary>
    /// The target of a move dies after it prepared and before it took the VM in, while the source
    /// lets go of it: h1 is held (SIGSTOP) while h2 prepares, h2's process is killed, h1 resumes and
    /// releases the VM. The move answers that the VM is lost, vm.list shows it lost on h2; the VM's
    /// namespace is left with no device on either host. h2 restarted does not run it (it stays
    /// lost; registry entries writable by others or garbled are ignored with a log line), and
    /// vm.remove leaves nothing on either host: no holder, no registry entry, no device.
    /// </summary>
    [Fact]
    public async Task NetnsVm_TargetDiesAfterTheSourceLetGo_IsLost_AndRemoveCleansBothHosts()
    {
        using var o = new OverlayBed(output, hosts: 2);
        var name = o.Bed.Prefix + "-l";
        var device = "vm-" + name;
        var registry = Path.Combine(NetnsVmProvider.Registry, name + ".netns");
        var hostile = Path.Combine(NetnsVmProvider.Registry, o.Bed.Prefix + "-w.netns");
        var garbled = Path.Combine(NetnsVmProvider.Registry, o.Bed.Prefix + "-g.netns");
        var h1 = 0;
        try
        {
            o.StartProxy();
            o.StartHost(1, vmProvider: "netns");
            o.StartHost(2, vmProvider: "netns");
            o.WaitStar(2);
            o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "small", ["name"] = name });
            var holder = NetnsVmProvider.HolderOf(name) ?? throw new InvalidOperationException("no namespace holder");

            h1 = o.Daemon("h1").Pid;
            var move = CutOffTarget(o, name, h1);
            var e = await Assert.ThrowsAsync<ControlException>(() => move);
            output.WriteLine($"vm.move: {e.Message}");
            Assert.Contains("marked lost", e.Message, StringComparison.Ordinal);
            Assert.Contains(o.Vms("proxy"), v => v.Name == name && v.Site == "h2" && v.State == "lost");
            Assert.Equal(holder, NetnsVmProvider.HolderOf(name));
            Assert.False(o.Bed.HasInterface("h1", device), $"{device} is still on h1 after the release");
            Assert.False(o.Bed.HasInterface("h2", device), $"{device} is on h2, which died before it took the VM in");

            // h2 back: it does not run the VM (no device here), so the VM stays lost. Beside the
            // VM's entry, one writable by others (a copy of the real one) and a garbled one are
            // ignored with a log line.
            File.WriteAllText(hostile, File.ReadAllText(registry));
            File.SetUnixFileMode(hostile, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite);
            File.WriteAllText(garbled, "not an entry\n");
            File.SetUnixFileMode(garbled, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            o.StartHost(2, vmProvider: "netns");
            o.WaitStar(2);
            o.Daemon("h2").WaitForOutput($"{hostile} ignored: writable by others", TimeSpan.FromSeconds(5));
            o.Daemon("h2").WaitForOutput($"{garbled} ignored: it does not parse", TimeSpan.FromSeconds(5));
            Assert.DoesNotContain(o.Control("h2", "vm.host")!["vms"]!.AsArray(), v => v!["name"]!.GetValue<string>() == name);
            Thread.Sleep(1000);
            Assert.Contains(o.Vms("proxy"), v => v.Name == name && v.State == "lost");

            o.Control("proxy", "vm.remove", new JsonObject { ["name"] = name });
            Wait.Until(() => !Directory.Exists($"/proc/{holder}"), TimeSpan.FromSeconds(5), "the namespace holder of the lost VM ends");
            Assert.Null(NetnsVmProvider.HolderOf(name));
            Assert.False(File.Exists(registry), "vm.remove left the lost VM's registry entry");
            Assert.False(o.Bed.HasInterface("h1", device) || o.Bed.HasInterface("h2", device), "vm.remove left a device");
            Assert.DoesNotContain(o.Vms("proxy"), v => v.Name == name);
            o.Daemon("h1").WaitForOutput($"VM {name}, lost in a move: what was left of it here is removed", TimeSpan.FromSeconds(5));
            Assert.DoesNotContain("could not remove what it may have", o.Daemon("proxy").Output, StringComparison.Ordinal);
        }
        catch
        {
            o.DumpAll();
            throw;
        }
        finally
        {
            if (h1 != 0)
                TestNative.Kill(h1, TestNative.SIGCONT);
            VmProviderTests.RemoveNamespace(name);
            File.Delete(hostile);
            File.Delete(garbled);
        }
    }

    /// <summary>
    /// A move whose target dies between its prepare and the source's release: h1 (the source) is
    /// held with SIGSTOP before the move, so the Proxy's release waits in its socket; once h2 says it
    /// is ready, h2's process alone is killed (what it started lives on), and h1 resumes at once
    /// (within the link's dead time). Returns the move's call, which ends when the Proxy answers.
    /// </summary>
    private Task<JsonNode?> CutOffTarget(OverlayBed o, string name, int source)
    {
        // Held at most about 2 s: the Proxy takes a link for dead after 3 s without a keepalive,
        // and one may have been due up to 1 s before the stop.
        var held = Stopwatch.StartNew();
        TestNative.Kill(source, TestNative.SIGSTOP);
        try
        {
            var move = Task.Run(() => o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" }));
            o.Daemon("proxy").WaitForOutput($"VM {name} moving: h2 prepared", TimeSpan.FromSeconds(1.5));
            o.Daemon("h2").KillOnly();
            Wait.Until(() => !o.Links("proxy").Any(l => l.Peer == "h2" && l.Up), TimeSpan.FromSeconds(0.8), "the Proxy sees h2 gone");
            return move;
        }
        finally
        {
            TestNative.Kill(source, TestNative.SIGCONT);
            output.WriteLine($"h1 resumed after {held.ElapsedMilliseconds} ms");
        }
    }

    /// <summary>
    /// The target's QEMU dies just after it got ready for the incoming migration (killed as a crash
    /// would end it): the live migration fails, and the move falls back to stop and restart with
    /// the same MAC (mode "restart"). The guest boots afresh on h2, leases the same address from
    /// the LAN's dnsmasq, reaches the LAN through h2's daemon (its interface reopened on the new
    /// TAP), and is removed with nothing left on either host.
    /// </summary>
    [Fact]
    public Task QemuVm_LiveMigrationFails_MovesByStopAndRestart() => WithQemuVm(hosts: 2, "r", async (o, name, address, _) =>
    {
        var device = "vm-" + name;
        var source = QemuPidOf(o, "h1", name);

        var clock = Stopwatch.StartNew();
        var move = Task.Run(() => o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" }));
        o.Daemon("proxy").WaitForOutput($"VM {name} moving: h2 prepared", TimeSpan.FromSeconds(30));
        var target = QemuPidOf(o, "h2", name);
        TestNative.Kill(target, TestNative.SIGKILL);
        var moved = (await move)!.AsObject();
        output.WriteLine($"vm.move: {moved.ToJsonString()} in {clock.ElapsedMilliseconds} ms");
        Assert.Equal("restart", moved["mode"]!.GetValue<string>());
        o.Daemon("h1").WaitForOutput($"VM {name}: live migration failed", TimeSpan.FromSeconds(5));
        Wait.Until(() => !Directory.Exists($"/proc/{source}"), TimeSpan.FromSeconds(10), "h1's QEMU ends");
        Assert.False(o.Bed.HasInterface("h1", device), $"{device} is still on h1");
        Assert.NotEqual(target, QemuPidOf(o, "h2", name));

        // A fresh boot: the guest leases again (the same address, dnsmasq keys leases by MAC),
        // and reads commands only once it is ready.
        using (var console = GuestConsole.Connect(Path.Combine(o.VmDirOf("h2"), name + ".console")))
        {
            console.WaitForLine($"{QemuGuestImage.Marker} dhcp lease {address}", Boot);
            console.WaitForLine($"{QemuGuestImage.Marker} ready", TimeSpan.FromSeconds(10));
            VmProviderTests.AssertGuestPings(output, console, OverlayBed.LanHostIp, "on h2 after a restart move");
        }
        Assert.Equal(address, VmProviderTests.WaitForAddress(o, name, "h2", address, Boot));
        Assert.Contains(o.Vms("proxy"), v => v.Name == name && v.Site == "h2" && v.State == "running");

        o.Control("proxy", "vm.remove", new JsonObject { ["name"] = name });
        AssertNothingLeft(o, name, "h1", "h2");
    });

    /// <summary>
    /// A host daemon killed (SIGKILL to its process alone) while it runs a QEMU VM: its QEMU lives on,
    /// and the daemon restarted takes it in again from its registry entry (the pid is that QEMU, its
    /// monitor says running, its TAP is here), reattaches its TAP; the Proxy lists it running, the
    /// guest still reaches the LAN, and vm.remove leaves nothing. Entries not to be trusted are
    /// ignored with a log line (one writable by others, one that does not parse), and one whose QEMU
    /// is gone is removed.
    /// </summary>
    [Fact]
    public Task QemuVm_HostKilled_TakesItsVmInAgain() => WithQemuVm(hosts: 1, "k", (o, name, _, mac) =>
    {
        var device = "vm-" + name;
        var dir = o.VmDirOf("h1");
        var qemu = QemuPidOf(o, "h1", name);

        o.Daemon("h1").KillOnly();
        Assert.True(Directory.Exists($"/proc/{qemu}"), "QEMU died with its daemon");
        // Beside the real entry: a hostile one (writable by others, naming the real QEMU), a
        // garbled one, and a stale one (its pid gone).
        var hostile = Entry(dir, o.Bed.Prefix + "-x", $"{qemu} {mac} small vm-{o.Bed.Prefix}-x {Path.Combine(dir, o.Bed.Prefix + "-x.qmp")}",
            UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite);
        var garbled = Entry(dir, o.Bed.Prefix + "-y", "1234 not-a-mac huge", UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var stale = Entry(dir, o.Bed.Prefix + "-s", $"{DeadPid()} 02:56:00:00:00:09 small vm-{o.Bed.Prefix}-s {Path.Combine(dir, o.Bed.Prefix + "-s.qmp")}",
            UnixFileMode.UserRead | UnixFileMode.UserWrite);

        o.StartHost(1, vmProvider: "qemu");
        o.WaitStar(1);
        var h1 = o.Daemon("h1");
        h1.WaitForOutput($"VM {name} ({mac}) still runs from before this daemon started", TimeSpan.FromSeconds(10));
        h1.WaitForOutput($"{hostile} ignored: writable by others", TimeSpan.FromSeconds(5));
        h1.WaitForOutput($"{garbled} ignored: it does not parse", TimeSpan.FromSeconds(5));
        h1.WaitForOutput($"VM {o.Bed.Prefix}-s: its QEMU", TimeSpan.FromSeconds(5));
        Assert.True(File.Exists(hostile) && File.Exists(garbled), "an entry not trusted was acted on (removed)");
        Assert.False(File.Exists(stale), "the stale entry was not removed");
        Assert.Single(o.Control("h1", "vm.host")!["vms"]!.AsArray());
        Assert.Contains(o.Control("h1", "interface.list")!.AsArray(), i => i!["name"]!.GetValue<string>() == device);
        Wait.Until(() => o.Vms("proxy").Any(v => v.Name == name && v.Site == "h1" && v.State == "running"), TimeSpan.FromSeconds(10),
            "the Proxy lists the VM running on h1");
        Assert.Equal(qemu, QemuPidOf(o, "h1", name));
        using (var console = GuestConsole.Connect(Path.Combine(dir, name + ".console")))
            VmProviderTests.AssertGuestPings(output, console, OverlayBed.LanHostIp, "after its host's restart");

        o.Control("proxy", "vm.remove", new JsonObject { ["name"] = name });
        Wait.Until(() => !Directory.Exists($"/proc/{qemu}"), TimeSpan.FromSeconds(10), "the recovered QEMU ends at vm.remove");
        AssertNothingLeft(o, name, "h1");
        return Task.CompletedTask;
    });

    /// <summary>
    /// A QEMU move whose target daemon is killed while the live migration runs (its QEMU, which the
    /// migration goes to, lives on): the migration completes, the source lets go, the Proxy cannot
    /// reach the target and marks the VM lost. Restarted, the target takes in the QEMU it finds
    /// running; the Proxy's reconciliation finds the lost VM running again there, and the guest
    /// reaches the LAN with its address. vm.remove then leaves nothing on either host.
    /// </summary>
    [Fact]
    public Task QemuVm_TargetKilledDuringMigration_IsLost_ThenFoundAgain() => WithQemuVm(hosts: 2, "f", async (o, name, address, _) =>
    {
        var move = Task.Run(() => o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" }));
        o.Daemon("proxy").WaitForOutput($"VM {name} moving: h2 prepared", TimeSpan.FromSeconds(30));
        o.Daemon("h2").KillOnly();
        var target = QemuPidOf(o, "h2", name);
        var e = await Assert.ThrowsAsync<ControlException>(() => move);
        output.WriteLine($"vm.move: {e.Message}");
        Assert.Contains("marked lost", e.Message, StringComparison.Ordinal);
        Assert.Contains(o.Vms("proxy"), v => v.Name == name && v.Site == "h2" && v.State == "lost");

        o.StartHost(2, vmProvider: "qemu");
        o.WaitStar(2);
        o.Daemon("h2").WaitForOutput("still runs from before this daemon started", TimeSpan.FromSeconds(10));
        Wait.Until(() => o.Vms("proxy").Any(v => v.Name == name && v.Site == "h2" && v.State == "running"), TimeSpan.FromSeconds(10),
            "the Proxy finds the lost VM running on h2");
        o.Daemon("proxy").WaitForOutput($"VM {name}, marked lost, runs on h2: running again", TimeSpan.FromSeconds(5));
        Assert.Equal(target, QemuPidOf(o, "h2", name));
        using (var console = GuestConsole.Connect(Path.Combine(o.VmDirOf("h2"), name + ".console")))
        {
            Assert.Contains(address + "/", console.Run("ip -4 addr show dev eth0", Boot).Output, StringComparison.Ordinal);
            VmProviderTests.AssertGuestPings(output, console, OverlayBed.LanHostIp, "found again on h2");
        }

        o.Control("proxy", "vm.remove", new JsonObject { ["name"] = name });
        Wait.Until(() => !Directory.Exists($"/proc/{target}"), TimeSpan.FromSeconds(10), "the found VM's QEMU ends at vm.remove");
        AssertNothingLeft(o, name, "h1", "h2");
    });

    /// <summary>
    /// A bed with the LAN's dnsmasq, the Proxy and QEMU hosts h1..hN, and QEMU VM PREFIX-SUFFIX ordered
    /// on h1 and leased: runs <paramref name="body"/> (bed, name, address, MAC), dumping every log if it fails.
    /// </summary>
    private async Task WithQemuVm(int hosts, string suffix, Func<OverlayBed, string, string, string, Task> body, [CallerMemberName] string test = "")
    {
        using var o = new OverlayBed(output, hosts, testName: test);
        var leases = Path.Combine(Path.GetTempPath(), $"vnet-leases-{Guid.NewGuid():N}");
        var name = o.Bed.Prefix + "-" + suffix;
        try
        {
            VmProviderTests.StartDnsmasq(o, leases);
            o.StartProxy();
            for (var i = 1; i <= hosts; i++)
                o.StartHost(i, vmProvider: "qemu");
            o.WaitStar(hosts);
            var mac = o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "small", ["name"] = name })!["mac"]!.GetValue<string>();
            var address = VmProviderTests.WaitForAddress(o, name, "h1", null, Boot);
            await body(o, name, address, mac);
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

    /// <summary>The pid a host's registry entry gives VM <paramref name="name"/>'s QEMU.</summary>
    private static int QemuPidOf(OverlayBed o, string host, string name)
    {
        var text = File.ReadAllText(Path.Combine(o.VmDirOf(host), name + ".qemu"));
        return int.Parse(text.Split(' ')[0], CultureInfo.InvariantCulture);
    }

    private static string Entry(string dir, string name, string text, UnixFileMode mode)
    {
        var path = Path.Combine(dir, name + ".qemu");
        File.WriteAllText(path, text + "\n");
        File.SetUnixFileMode(path, mode);
        return path;
    }

    /// <summary>The pid of a process that has ended (and been reaped).</summary>
    private static int DeadPid()
    {
        using var p = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        p.WaitForExit();
        return p.Id;
    }

    /// <summary>No VM row at the Proxy, and on each host no VM, TAP, monitor socket or registry entry.</summary>
    private static void AssertNothingLeft(OverlayBed o, string name, params string[] hosts)
    {
        Assert.DoesNotContain(o.Vms("proxy"), v => v.Name == name);
        foreach (var host in hosts)
        {
            Wait.Until(() => !o.Bed.HasInterface(host, "vm-" + name), TimeSpan.FromSeconds(10), $"vm-{name} gone from {host}");
            Assert.DoesNotContain(o.Control(host, "vm.host")!["vms"]!.AsArray(), v => v!["name"]!.GetValue<string>() == name);
            foreach (var file in new[] { ".qemu", ".qmp", ".console", ".migrate" })
                Assert.False(File.Exists(Path.Combine(o.VmDirOf(host), name + file)), $"{host} left {name}{file}");
        }
    }
}
