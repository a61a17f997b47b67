using System.Diagnostics;
using System.Text.Json.Nodes;
using Vnet.Control;
using Vnet.Tests.TestBed;
using Vnet.Vms.Providers;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// A move whose star link to the source or to the target is replaced by a new session between
/// the move's steps, made to happen for real: the host is held (SIGSTOP) while the Proxy's request
/// reaches its socket, its link is cut (<c>ip link set wan0 down</c>), and it resumes: it does what
/// it was asked, and its answer is lost with the session. The Proxy then knows only that it does not
/// know; the end state must still be what the user expects (every VM known once, at the right host,
/// nothing left on a host that the Proxy does not know of).
/// <code>
///  Proxy ── [wan] ──┬── h1 (vm_provider netns) ── vm-NAME
///                   └── h2 (vm_provider netns)
/// </code>
/// </summary>
[Collection("Netns")]
public sealed class VmMoveInterleavingTests(ITestOutputHelper output)
{
    /// <summary>
    /// The source's link goes down after the release reached it: h1 lets the VM go (its namespace
    /// stays, with no device), and its answer never comes. Before, the Proxy took that for a
    /// refusal and kept the VM as running on h1; when h1 came back, reconciliation found no VM
    /// there and forgot it: the user's VM vanished from vm.list, its namespace left on the machine
    /// for good. Now it is marked lost at h1 (found running there again had h1 not let go of it),
    /// stays listed, and vm.remove leaves nothing on either host, even when h1 is cut off again as
    /// the VM is removed (h1 is asked again once it is back).
    /// </summary>
    [Fact]
    public async Task NetnsVm_SourceLinkReplacedDuringItsRelease_VmStaysKnown_AndRemoveLeavesNothing()
    {
        using var o = new OverlayBed(output, hosts: 2);
        var name = o.Bed.Prefix + "-s";
        var device = "vm-" + name;
        var h1 = 0;
        try
        {
            StartBed(o);
            o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "small", ["name"] = name });
            var holder = NetnsVmProvider.HolderOf(name) ?? throw new InvalidOperationException("no namespace holder");

            h1 = o.Daemon("h1").Pid;
            var move = CutDuringStep(o, name, h1, "h1", () => o.Daemon("proxy").WaitForOutput($"VM {name} moving: h2 prepared", TimeSpan.FromSeconds(1.5)));
            h1 = 0;
            o.Daemon("h1").WaitForOutput($"VM {name} left this host", TimeSpan.FromSeconds(5));
            var e = await Assert.ThrowsAsync<ControlException>(() => move);
            output.WriteLine($"vm.move: {e.Message}");

            // The link back, h1 reconciled: the VM is still listed (lost, where it was), never forgotten.
            o.Bed.Up("h1", "wan0");
            o.WaitStar(2);
            Thread.Sleep(2000);
            Assert.DoesNotContain($"VM {name} no longer runs on h1", o.Daemon("proxy").Output, StringComparison.Ordinal);
            var row = Assert.Single(o.Vms("proxy"), v => v.Name == name);
            Assert.Equal(("h1", "lost"), (row.Site, row.State));
            Assert.Contains("marked lost", e.Message, StringComparison.Ordinal);
            Assert.Equal(holder, NetnsVmProvider.HolderOf(name));
            Assert.False(o.Bed.HasInterface("h1", device) || o.Bed.HasInterface("h2", device), "the VM's device is on a host");
            // h2 still waits for it (a QEMU target would hold the VM, sent before the answer was lost).
            Assert.Contains(o.Control("h2", "vm.host")!["vms"]!.AsArray(), v => v!["name"]!.GetValue<string>() == name && v["state"]!.GetValue<string>() == "arriving");

            // Removed while h1, which holds what is left of it, is cut off again: the VM is forgotten,
            // and h1 is asked to remove its namespace once its star link is back (before, never:
            // a namespace without its device runs no VM, so no reconciliation would find it).
            o.Bed.Down("h1", "wan0");
            Wait.Until(() => !o.Links("proxy").Any(l => l.Peer == "h1" && l.Up), TimeSpan.FromSeconds(5), "the Proxy sees h1 gone");
            o.Control("proxy", "vm.remove", new JsonObject { ["name"] = name });
            Assert.DoesNotContain(o.Vms("proxy"), v => v.Name == name);
            Assert.Empty(o.Control("h2", "vm.host")!["vms"]!.AsArray());
            Assert.Equal(holder, NetnsVmProvider.HolderOf(name));
            o.Bed.Up("h1", "wan0");
            o.WaitStar(2);
            Wait.Until(() => !Directory.Exists($"/proc/{holder}"), TimeSpan.FromSeconds(5), "the namespace holder of the lost VM ends once h1 is back");
            o.Daemon("proxy").WaitForOutput($"VM {name} (lost, removed): h1, back, removed what it had of it", TimeSpan.FromSeconds(1));
            Assert.Null(NetnsVmProvider.HolderOf(name));
            Assert.False(File.Exists(Path.Combine(NetnsVmProvider.Registry, name + ".netns")), "vm.remove left the VM's registry entry");
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
        }
    }

    /// <summary>
    /// The source's daemon dies (its process alone, as a crash) with the release in its socket, not
    /// yet read: the VM never left. The Proxy cannot know that, and marks it lost at h1 (h2 keeps
    /// waiting for it: had it left, h2 might hold it); h1 restarted takes its VM in again (its
    /// namespace and device are still there), reconciliation finds it running on h1 and has h2 stop
    /// waiting, and it reaches the LAN. The VM is known once, where it is.
    /// </summary>
    [Fact]
    public async Task NetnsVm_SourceKilledWithItsReleaseUnread_LostThenFoundWhereItRuns()
    {
        using var o = new OverlayBed(output, hosts: 2);
        var leases = Path.Combine(Path.GetTempPath(), $"vnet-leases-{Guid.NewGuid():N}");
        var name = o.Bed.Prefix + "-k";
        var device = "vm-" + name;
        var h1 = 0;
        try
        {
            VmProviderTests.StartDnsmasq(o, leases);
            StartBed(o);
            o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "small", ["name"] = name });
            var address = VmProviderTests.WaitForAddress(o, name, "h1", null);
            var holder = NetnsVmProvider.HolderOf(name) ?? throw new InvalidOperationException("no namespace holder");

            h1 = o.Daemon("h1").Pid;
            TestNative.Kill(h1, TestNative.SIGSTOP);
            Task<JsonNode?> move;
            try
            {
                move = Task.Run(() => o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" }));
                o.Daemon("proxy").WaitForOutput($"VM {name} moving: h2 prepared", TimeSpan.FromSeconds(1.5));
                Thread.Sleep(200);
                o.Daemon("h1").KillOnly();
            }
            finally
            {
                TestNative.Kill(h1, TestNative.SIGCONT);
                h1 = 0;
            }
            var e = await Assert.ThrowsAsync<ControlException>(() => move);
            output.WriteLine($"vm.move: {e.Message}");
            Assert.Contains("marked lost", e.Message, StringComparison.Ordinal);
            Assert.Contains(o.Vms("proxy"), v => v.Name == name && v.Site == "h1" && v.State == "lost");
            Assert.Contains(o.Control("h2", "vm.host")!["vms"]!.AsArray(), v => v!["name"]!.GetValue<string>() == name && v["state"]!.GetValue<string>() == "arriving");

            o.StartHost(1, vmProvider: "netns");
            o.WaitStar(2);
            Wait.Until(() => o.Vms("proxy").Any(v => v.Name == name && v.Site == "h1" && v.State == "running"), TimeSpan.FromSeconds(10),
                "reconciliation finds the VM running on h1");
            o.Daemon("proxy").WaitForOutput($"VM {name}, marked lost, runs on h1: running again", TimeSpan.FromSeconds(1));
            // h2 stops waiting for it at once (not at the next 30 s reconciliation), so a move there works.
            Wait.Until(() => o.Control("h2", "vm.host")!["vms"]!.AsArray().Count == 0, TimeSpan.FromSeconds(5), "h2 stops waiting for the VM found on h1");
            Assert.Equal(holder, NetnsVmProvider.HolderOf(name));
            Assert.True(o.Bed.HasInterface("h1", device) && !o.Bed.HasInterface("h2", device), $"{device} is not on h1 alone");
            Assert.Equal(address, VmProviderTests.WaitForAddress(o, name, "h1", address));
            VmProviderTests.AssertPings(output, holder, OverlayBed.LanHostIp);

            o.Control("proxy", "vm.remove", new JsonObject { ["name"] = name });
            Assert.Null(NetnsVmProvider.HolderOf(name));
            Assert.False(o.Bed.HasInterface("h1", device), "vm.remove left the device on h1");
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
            File.Delete(leases);
        }
    }

    /// <summary>
    /// The target's link goes down after the prepare reached it: h2 gets ready for the VM, and its
    /// answer never comes, so the move fails with the VM still on h1 (right). Before, h2 kept
    /// waiting for the VM for good (a QEMU target keeps its incoming QEMU and TAP) and refused every
    /// later move of it to h2 ("a VM named ... is already on this host"). Now the Proxy's
    /// reconciliation, once h2 is back, sees it waiting for a VM that runs on h1 and has it abort,
    /// and the same move then works.
    /// </summary>
    [Fact]
    public async Task NetnsVm_TargetLinkReplacedAfterItsPrepare_StaleArrivalAborted_AndTheMoveWorksAgain()
    {
        using var o = new OverlayBed(output, hosts: 2);
        var name = o.Bed.Prefix + "-t";
        var device = "vm-" + name;
        var h2 = 0;
        try
        {
            StartBed(o);
            o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "small", ["name"] = name });
            var holder = NetnsVmProvider.HolderOf(name) ?? throw new InvalidOperationException("no namespace holder");

            h2 = o.Daemon("h2").Pid;
            // No line tells when the Proxy sent the prepare: it goes as the command arrives; h2 logging
            // that it got ready, below, shows it was in h2's socket before the cut.
            var move = CutDuringStep(o, name, h2, "h2", () => Thread.Sleep(500));
            h2 = 0;
            o.Daemon("h2").WaitForOutput($"VM {name}: ready to take it in", TimeSpan.FromSeconds(5));
            var e = await Assert.ThrowsAsync<ControlException>(() => move);
            output.WriteLine($"vm.move: {e.Message}");
            Assert.Contains(o.Vms("proxy"), v => v.Name == name && v.Site == "h1" && v.State == "running");

            o.Bed.Up("h2", "wan0");
            o.WaitStar(2);
            Wait.Until(() => !o.Control("h2", "vm.host")!["vms"]!.AsArray().Any(v => v!["name"]!.GetValue<string>() == name),
                TimeSpan.FromSeconds(5), "h2 stops waiting for a VM that runs on h1");
            o.Daemon("proxy").WaitForOutput($"VM {name} runs elsewhere but h2 still waits to take it in", TimeSpan.FromSeconds(1));

            var moved = o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" })!.AsObject();
            Assert.Equal("live", moved["mode"]!.GetValue<string>());
            var row = Assert.Single(o.Vms("proxy"), v => v.Name == name);
            Assert.Equal(("h2", "running"), (row.Site, row.State));
            Assert.True(o.Bed.HasInterface("h2", device), $"{device} is not on h2 after the move");
            Assert.False(o.Bed.HasInterface("h1", device), $"{device} is still on h1 after the move");
            Assert.Equal(holder, NetnsVmProvider.HolderOf(name));

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
            if (h2 != 0)
                TestNative.Kill(h2, TestNative.SIGCONT);
            VmProviderTests.RemoveNamespace(name);
        }
    }

    /// <summary>
    /// Two orders about one VM at once, in either order: while a move to h2 is under way (h1 held in
    /// its release), a move to h3 and a removal are refused with the reason, and the move ends with
    /// the VM on h2 alone (h3 never prepared for it); while its removal is under way (h2 held), a
    /// move is refused, and the removal leaves nothing on any host.
    /// </summary>
    [Fact]
    public async Task NetnsVm_TwoOrdersAtOnce_TheSecondIsRefused_AndTheFirstEndsAsIfAlone()
    {
        using var o = new OverlayBed(output, hosts: 3);
        var name = o.Bed.Prefix + "-c";
        var device = "vm-" + name;
        var held = 0;
        try
        {
            StartBed(o, hosts: 3);
            o.Control("proxy", "vm.order", new JsonObject { ["site"] = "h1", ["size"] = "small", ["name"] = name });
            var holder = NetnsVmProvider.HolderOf(name) ?? throw new InvalidOperationException("no namespace holder");

            // Move first: h1 is held while the Proxy waits for its release (at most about 2 s: the link's dead time).
            held = o.Daemon("h1").Pid;
            TestNative.Kill(held, TestNative.SIGSTOP);
            Task<JsonNode?> move;
            try
            {
                move = Task.Run(() => o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" }));
                o.Daemon("proxy").WaitForOutput($"VM {name} moving: h2 prepared", TimeSpan.FromSeconds(1));
                VmProviderTests.AssertRefused(o, "vm.move", new JsonObject { ["name"] = name, ["to"] = "h3" }, $"VM {name} is moving; try again when it is running");
                VmProviderTests.AssertRefused(o, "vm.remove", new JsonObject { ["name"] = name }, $"VM {name} is moving; try again when it is running");
            }
            finally
            {
                TestNative.Kill(held, TestNative.SIGCONT);
                held = 0;
            }
            Assert.Equal("h2", (await move)!["to"]!.GetValue<string>());
            var row = Assert.Single(o.Vms("proxy"), v => v.Name == name);
            Assert.Equal(("h2", "running"), (row.Site, row.State));
            Assert.DoesNotContain(o.Control("h3", "vm.host")!["vms"]!.AsArray(), v => v!["name"]!.GetValue<string>() == name);
            Assert.DoesNotContain($"VM {name}: ready to take it in", o.Daemon("h3").Output, StringComparison.Ordinal);
            Assert.True(o.Bed.HasInterface("h2", device) && !o.Bed.HasInterface("h1", device) && !o.Bed.HasInterface("h3", device), $"{device} is not on h2 alone");

            // Removal first: h2 is held while the Proxy waits for its destroy.
            held = o.Daemon("h2").Pid;
            TestNative.Kill(held, TestNative.SIGSTOP);
            Task<JsonNode?> remove;
            try
            {
                remove = Task.Run(() => o.Control("proxy", "vm.remove", new JsonObject { ["name"] = name }));
                Wait.Until(() => o.Vms("proxy").Any(v => v.Name == name && v.State == "removing"), TimeSpan.FromSeconds(1), "the removal under way");
                VmProviderTests.AssertRefused(o, "vm.move", new JsonObject { ["name"] = name, ["to"] = "h1" }, $"VM {name} is removing; try again when it is running");
            }
            finally
            {
                TestNative.Kill(held, TestNative.SIGCONT);
                held = 0;
            }
            await remove;
            Assert.DoesNotContain(o.Vms("proxy"), v => v.Name == name);
            Wait.Until(() => !Directory.Exists($"/proc/{holder}"), TimeSpan.FromSeconds(5), "the VM's namespace holder ends");
            Assert.Null(NetnsVmProvider.HolderOf(name));
            foreach (var h in new[] { "h1", "h2", "h3" })
            {
                Assert.False(o.Bed.HasInterface(h, device), $"{device} left on {h}");
                Assert.Empty(o.Control(h, "vm.host")!["vms"]!.AsArray());
            }
        }
        catch
        {
            o.DumpAll();
            throw;
        }
        finally
        {
            if (held != 0)
                TestNative.Kill(held, TestNative.SIGCONT);
            VmProviderTests.RemoveNamespace(name);
        }
    }

    private static void StartBed(OverlayBed o, int hosts = 2)
    {
        o.StartProxy();
        for (var i = 1; i <= hosts; i++)
            o.StartHost(i, vmProvider: "netns");
        o.WaitStar(hosts);
    }

    /// <summary>
    /// Starts the move of <paramref name="name"/> to h2 with <paramref name="host"/> held (SIGSTOP),
    /// waits until the request of the step to cut is in the host's socket (<paramref name="sent"/>),
    /// cuts the host's link and resumes the host (held well within the link's dead time, so the
    /// host's own session is still up when it reads the request). Returns the move's call.
    /// </summary>
    private Task<JsonNode?> CutDuringStep(OverlayBed o, string name, int pid, string host, Action sent)
    {
        var held = Stopwatch.StartNew();
        TestNative.Kill(pid, TestNative.SIGSTOP);
        try
        {
            var move = Task.Run(() => o.Control("proxy", "vm.move", new JsonObject { ["name"] = name, ["to"] = "h2" }));
            sent();
            // The request leaves on the session's sender thread: let it reach the host's socket.
            Thread.Sleep(200);
            o.Bed.Down(host, "wan0");
            return move;
        }
        finally
        {
            TestNative.Kill(pid, TestNative.SIGCONT);
            output.WriteLine($"{host} resumed after {held.ElapsedMilliseconds} ms, its link down");
        }
    }
}
