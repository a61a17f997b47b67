using Vnet.Vms.Providers.Qemu;
using System.Globalization;
using Xunit.Abstractions;

namespace Vnet.Tests.TestBed;

/// <summary>The test bed's own smoke tests: if these fail, no end-to-end result means anything.</summary>
[Collection("Netns")]
public sealed class TestBedTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Short = TimeSpan.FromSeconds(10);

    [Fact]
    public void Veth_TwoNamespaces_PingEachOther()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        bed.Namespace("b");
        bed.Veth("a", "eth0", "b", "eth0");
        bed.Address("a", "eth0", "10.9.0.1/24");
        bed.Address("b", "eth0", "10.9.0.2/24");

        Assert.True(bed.Ping("a", "10.9.0.2", count: 2), "a cannot ping b");
        Assert.True(bed.Ping("b", "10.9.0.1", count: 2), "b cannot ping a");
    }

    [Fact]
    public void Bridge_ThreeNamespacesOnAFourth_AllPingEachOther()
    {
        using var bed = new TestBed(output);
        bed.Namespace("sw");
        bed.Bridge("sw", "br0");
        string[] hosts = ["h1", "h2", "h3"];
        for (var i = 0; i < hosts.Length; i++)
        {
            bed.Namespace(hosts[i]);
            bed.Veth(hosts[i], "eth0", "sw", $"p{i + 1}");
            bed.Attach("sw", $"p{i + 1}", "br0");
            bed.Address(hosts[i], "eth0", $"10.9.1.{i + 1}/24");
        }

        for (var from = 0; from < hosts.Length; from++)
        {
            for (var to = 0; to < hosts.Length; to++)
            {
                if (from != to)
                    Assert.True(bed.Ping(hosts[from], $"10.9.1.{to + 1}"), $"{hosts[from]} cannot ping {hosts[to]}");
            }
        }
    }

    [Fact]
    public void Veth_WithMtuAndMac_InterfacesHaveThem()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        bed.Namespace("b");
        bed.Veth("a", "x", "b", "y", mtu: 9000);
        bed.SetMac("a", "x", "02:00:00:00:00:0a");

        Assert.Equal("02:00:00:00:00:0a", bed.Mac("a", "x"));
        Assert.Contains("mtu 9000", bed.Run("b", "ip link show dev y"), StringComparison.Ordinal);
    }

    [Fact]
    public void Namespace_Ipv6Requested_AddressUsableAtOnce()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a", ipv6: true);
        bed.Namespace("b", ipv6: true);
        bed.Veth("a", "eth0", "b", "eth0");
        bed.Address("a", "eth0", "fd00:9::1/64");
        bed.Address("b", "eth0", "fd00:9::2/64");

        Assert.True(bed.Ping("a", "fd00:9::2"), "a cannot ping b over IPv6");
        Assert.DoesNotContain("tentative", bed.Run("a", "ip -6 addr show dev eth0"), StringComparison.Ordinal);
    }

    [Fact]
    public void Namespace_Default_HasNoIpv6()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        bed.Namespace("b");
        bed.Veth("a", "eth0", "b", "eth0");

        Assert.Equal("", bed.Run("a", "ip -6 addr show dev eth0").Trim());
        Assert.Throws<InvalidOperationException>(() => bed.Address("a", "eth0", "fd00:9::1/64"));
    }

    [Fact]
    public void Start_ProcessPrints_OutputCapturedAndLogged()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");

        var p = bed.Start("a", "talker", "/bin/sh", "-c", "echo hello out; echo hello err >&2; exec sleep 60");
        p.WaitForOutput("hello out", Short);
        p.WaitForOutput("hello err", Short);

        Assert.Contains("hello out", p.Stdout, StringComparison.Ordinal);
        Assert.Contains("hello err", p.Stderr, StringComparison.Ordinal);
        Assert.Null(p.ExitCode);
        Assert.StartsWith(bed.LogDirectory, p.LogPath, StringComparison.Ordinal);
        var log = File.ReadAllText(p.LogPath);
        Assert.Contains("out hello out", log, StringComparison.Ordinal);
        Assert.Contains("err hello err", log, StringComparison.Ordinal);
    }

    [Fact]
    public void Start_InNamespace_SeesOnlyThatNamespacesInterfaces()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        bed.Namespace("b");
        bed.Veth("a", "only_in_a", "b", "only_in_b");

        var p = bed.Start("a", "links", "ip", "-o", "link", "show");
        Assert.True(p.WaitForExit(Short), "ip link show did not end");

        Assert.Equal(0, p.ExitCode);
        Assert.Contains("only_in_a", p.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("only_in_b", p.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Start_WithInput_ProgramReadsWhatTheTestWrites()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        var p = bed.Start("a", "reader", "/bin/sh", ["-c", "while read -r line; do echo \"got $line\"; done"], environment: null, input: true);

        Assert.True(p.WriteLine("one"));
        Assert.True(p.WriteLine("two"));

        p.WaitForOutput("got two", Short);
        Assert.Equal(["got one", "got two"], p.Lines);
    }

    /// <summary>
    /// The QEMU guest helper on its own, without VNET: the guest boots, gets a lease from dnsmasq
    /// on its TAP's side, answers commands on its console, and nothing of it is left after Dispose.
    /// </summary>
    [Fact]
    public void QemuGuest_BootsOnATap_TakesALeaseAndRunsCommands()
    {
        using var bed = new TestBed(output);
        bed.Namespace("h");
        var guest = QemuGuest.Start(bed, "h", "guest", "vm1", "52:54:00:09:05:02");
        var leases = Path.Combine(Path.GetTempPath(), $"vnet-leases-{Guid.NewGuid():N}");
        try
        {
            bed.Address("h", "vm1", "10.9.5.1/24");
            bed.Start("h", "dnsmasq", "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
                "--interface=vm1", "--bind-interfaces", "--dhcp-range=10.9.5.100,10.9.5.150,255.255.255.0,1h",
                $"--dhcp-leasefile={leases}", "--log-dhcp");

            var lease = guest.WaitForLease(TimeSpan.FromSeconds(90));
            output.WriteLine($"lease {lease} ({guest.Accelerator})");
            Assert.StartsWith("10.9.5.1", lease, StringComparison.Ordinal);
            Assert.Equal(QemuGuestImage.Get().KernelVersion, guest.Run("uname -r", Short).Output.Trim());
            Assert.Contains(guest.Mac, guest.Run("cat /sys/class/net/eth0/address", Short).Output, StringComparison.Ordinal);
            Assert.True(guest.Run("ping -c 2 -W 2 10.9.5.1", Short).Ok, "the guest cannot ping its TAP's side");
            Assert.Equal(3, guest.Run("echo about to fail; exit 3", Short).ExitCode);
            Assert.Equal("about to fail", guest.Run("echo about to fail", Short).Output);

            guest.Dispose();
            Assert.True(guest.Process.HasExited);
            Assert.False(bed.HasInterface("h", "vm1"), "QEMU's TAP outlived it");
        }
        finally
        {
            guest.Dispose();
            File.Delete(leases);
        }
    }

    [Fact]
    public void Stop_ProcessWithChild_EndsWholeTree()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        var p = bed.Start("a", "parent", "/bin/sh", "-c", "sleep 60 & echo child $!; wait");
        var child = int.Parse(p.WaitForOutput("child ", Short)["child ".Length..], CultureInfo.InvariantCulture);
        Assert.True(IsAlive(child), "the child should run before Stop");

        var code = p.Stop(TimeSpan.FromSeconds(5));

        Assert.True(p.HasExited);
        Assert.Equal(128 + 15, code);
        Wait.Until(() => !IsAlive(child), Short, $"child {child} to end after Stop");
    }

    [Fact]
    public void Stop_ProcessIgnoresSigterm_KilledAfterGrace()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        var p = bed.Start("a", "stubborn", "/bin/sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.1; done");
        p.WaitForOutput("armed", Short);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var code = p.Stop(TimeSpan.FromMilliseconds(500));

        Assert.Equal(128 + 9, code);
        Assert.InRange(clock.Elapsed, TimeSpan.FromMilliseconds(400), Short);
    }

    [Fact]
    public void Kill_RunningProcess_EndsWithSigkill()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        var p = bed.Start("a", "sleeper", "sleep", "60");

        Assert.Equal(128 + 9, p.Kill());
    }

    [Fact]
    public void WaitForOutput_ProcessExitsWithoutIt_ThrowsAtOnce()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        var p = bed.Start("a", "quitter", "/bin/sh", "-c", "echo something else; exit 3");

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var e = Assert.Throws<InvalidOperationException>(() => p.WaitForOutput("never printed", TimeSpan.FromSeconds(30)));

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed}");
        Assert.Contains("something else", e.Message, StringComparison.Ordinal);
        Assert.Equal(3, p.ExitCode);
    }

    [Fact]
    public void WaitForOutput_NotPrintedInTime_TimeoutNamesIt()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        var p = bed.Start("a", "silent", "sleep", "60");

        var e = Assert.Throws<TimeoutException>(() => p.WaitForOutput("never printed", TimeSpan.FromMilliseconds(300)));

        Assert.Contains("never printed", e.Message, StringComparison.Ordinal);
        Assert.Contains("silent", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Dispose_AfterSetUp_RemovesNamespacesAndProcesses()
    {
        IReadOnlyList<string> made;
        BackgroundProcess p;
        using (var bed = new TestBed(output))
        {
            bed.Namespace("a");
            bed.Namespace("b");
            bed.Veth("a", "eth0", "b", "eth0");
            p = bed.Start("a", "sleeper", "sleep", "60");
            made = bed.Namespaces;
            Assert.Subset(TestBed.ListNamespaces().ToHashSet(), made.ToHashSet());
        }

        var left = TestBed.ListNamespaces();
        Assert.All(made, ns => Assert.DoesNotContain(ns, left));
        Assert.True(p.HasExited);
    }

    [Fact]
    public void Dispose_ProcessLeftInBackgroundByExec_IsKilled()
    {
        int pid;
        using (var bed = new TestBed(output))
        {
            bed.Namespace("a");
            var r = bed.Exec("a", "sleep 60 >/dev/null 2>&1 & echo $!");
            Assert.True(r.Ok, r.Stderr);
            pid = int.Parse(r.Stdout.Trim(), CultureInfo.InvariantCulture);
            Assert.True(IsAlive(pid));
        }

        Wait.Until(() => !IsAlive(pid), Short, $"pid {pid} left by Exec to be killed");
    }

    [Fact]
    public void Create_SetUpThrowsHalfWay_RemovesWhatWasMade()
    {
        var made = new List<string>();

        Assert.Throws<InvalidOperationException>(() => TestBed.Create(
            bed =>
            {
                made.Add(bed.Namespace("a"));
                made.Add(bed.Namespace("b"));
                bed.Veth("a", "eth0", "b", "eth0");
                // The kernel refuses this MTU: set-up fails after the veth exists.
                bed.SetMtu("a", "eth0", 1_000_000);
            },
            output));

        Assert.Equal(2, made.Count);
        var left = TestBed.ListNamespaces();
        Assert.All(made, ns => Assert.DoesNotContain(ns, left));
    }

    [Fact]
    public void Dispose_AfterFailedStep_RemovesWhatWasMade()
    {
        string made;
        var bed = new TestBed(output);
        try
        {
            made = bed.Namespace("a");
            Assert.Throws<ArgumentException>(() => bed.Veth("a", "eth0", "missing", "eth0"));
            Assert.Throws<ArgumentException>(() => bed.Veth("a", "name_longer_than_15", "a", "eth1"));
        }
        finally
        {
            bed.Dispose();
        }

        Assert.DoesNotContain(made, TestBed.ListNamespaces());
    }

    [Fact]
    public void Methods_NamespaceNotMadeByBed_Refused()
    {
        using var other = new TestBed(output);
        var foreign = other.Namespace("a");
        using var bed = new TestBed(output);

        Assert.NotEqual(other.Prefix, bed.Prefix);
        Assert.Throws<ArgumentException>(() => bed.Exec(foreign, "true"));
        Assert.Throws<ArgumentException>(() => bed.Bridge(foreign, "br0"));
        Assert.Throws<ArgumentException>(() => bed.Start(foreign, "x", "true"));
    }

    [Fact]
    public void Ping_UnreachableAddress_FalseWithinTimeout()
    {
        using var bed = new TestBed(output);
        bed.Namespace("a");
        bed.Namespace("b");
        bed.Veth("a", "eth0", "b", "eth0");
        bed.Address("a", "eth0", "10.9.2.1/24");

        var clock = System.Diagnostics.Stopwatch.StartNew();
        Assert.False(bed.Ping("a", "10.9.2.99", count: 1, timeoutSeconds: 1));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(8), $"took {clock.Elapsed}");
    }

    [Fact]
    public void Until_ConditionNeverHolds_TimeoutSaysWhat()
    {
        var e = Assert.Throws<TimeoutException>(() => Wait.Until(() => false, TimeSpan.FromMilliseconds(100), "the moon to turn blue"));

        Assert.Contains("the moon to turn blue", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Until_ConditionHoldsLater_Returns()
    {
        var calls = 0;

        Wait.Until(() => ++calls >= 3, Short, "the third call");

        Assert.Equal(3, calls);
    }

    private static bool IsAlive(int pid)
    {
        // A zombie has ended; only its parent's reaping is pending.
        var stat = $"/proc/{pid}/stat";
        try
        {
            var text = File.ReadAllText(stat);
            return text[(text.LastIndexOf(')') + 2)] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }
}
