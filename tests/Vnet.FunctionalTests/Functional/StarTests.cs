using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>The resilient star: a Proxy on a home LAN, three hosts, VMs in namespaces.</summary>
[Collection("Netns")]
public sealed class StarTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("tcp")]
    [InlineData("udp")]
    public void Star_VmsOnThreeHosts_PingEachOtherAndTheLan(string transport)
    {
        using var o = new OverlayBed(output);
        o.StartAll(transport);
        o.AddVm(1, 1);
        o.AddVm(2, 2);
        o.AddVm(3, 3);

        Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: 3, timeoutSeconds: 10), "vm1 -> vm2");
        Assert.True(o.Bed.Ping("vm2", OverlayBed.VmIp(3), count: 3, timeoutSeconds: 10), "vm2 -> vm3");
        Assert.True(o.Bed.Ping("vm3", OverlayBed.VmIp(1), count: 3, timeoutSeconds: 10), "vm3 -> vm1");
        Assert.True(o.Bed.Ping("vm1", OverlayBed.LanHostIp, count: 3, timeoutSeconds: 10), "vm1 -> LAN machine");
        Assert.True(o.Bed.Ping("lanhost", OverlayBed.VmIp(3), count: 3, timeoutSeconds: 10), "LAN machine -> vm3");

        // The Proxy knows where each VM lives, and so does every host.
        var proxyView = o.Vms("proxy");
        for (var n = 1; n <= 3; n++)
            Assert.Contains(proxyView, v => v.Mac.ToString() == OverlayBed.VmMac(n) && v.Daemon == $"h{n}");
        Assert.Contains(o.Vms("h1"), v => v.Mac.ToString() == OverlayBed.VmMac(3) && v.Daemon == "h3");
        Assert.All(o.Links("proxy"), l => Assert.Equal(transport, EnumText.Of(l.Transport)));
    }

    [Fact]
    public void Star_VmWithoutAddress_GetsALeaseFromDhcpOnTheLan()
    {
        using var o = new OverlayBed(output, hosts: 1);
        var leases = Path.Combine(Path.GetTempPath(), $"vnet-leases-{Guid.NewGuid():N}");
        o.Bed.Start("lanhost", "dnsmasq", "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
            "--interface=eth0", "--bind-interfaces", "--dhcp-range=10.50.0.100,10.50.0.150,255.255.255.0,1h",
            $"--dhcp-leasefile={leases}", "--log-dhcp");
        o.StartAll();
        o.AddVm(1, 1, address: false);

        var result = o.Bed.Exec("vm1", "udhcpc -i eth0 -n -q -f -t 6 -T 2 -s /bin/true 2>&1", timeoutSeconds: 30);
        output.WriteLine(result.Stdout);
        if (!result.Ok)
            o.DumpCounters();
        Assert.True(result.Ok, $"udhcpc failed: {result.Stdout} {result.Stderr}");
        var lease = System.Text.RegularExpressions.Regex.Match(result.Stdout, @"lease of (10\.50\.0\.\d+) obtained");
        Assert.True(lease.Success, "no lease in: " + result.Stdout);

        // The address works across the overlay.
        o.Bed.Address("vm1", "eth0", lease.Groups[1].Value + "/24");
        Assert.True(o.Bed.Ping("vm1", OverlayBed.LanHostIp, count: 2, timeoutSeconds: 10));
        File.Delete(leases);
    }

    [Fact]
    public void Broadcast_WithADirectLinkBesideTheStar_ReachesEveryVmAndTheLanOnce()
    {
        using var o = new OverlayBed(output);
        o.StartAll();
        for (var n = 1; n <= 3; n++)
            o.AddVm(n, n);
        Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: 1, timeoutSeconds: 10));
        Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(3), count: 1, timeoutSeconds: 10));

        // A link beyond the star (h1 <-> h2) must not duplicate or loop broadcasts.
        o.Control("h1", "link.add", new JsonObject { ["peer"] = "h2", ["address"] = OverlayBed.HostIp(2) + ":5500" });
        Wait.Until(() => o.Links("h2").Any(l => l.Peer == "h1" && l.Up), TimeSpan.FromSeconds(10), "direct link h1-h2 up");

        var receivers = new[] { "vm2", "vm3", "lanhost" };
        var sockets = receivers.ToDictionary(ns => ns, ns => OpenUdp(o.Bed.Prefix + "-" + ns, 9999));
        try
        {
            var payload = Encoding.ASCII.GetBytes("vnet-broadcast-" + Guid.NewGuid().ToString("N"));
            using (var sender = OpenUdp(o.Bed.Prefix + "-vm1", 0))
            {
                sender.EnableBroadcast = true;
                sender.SendTo(payload, new IPEndPoint(IPAddress.Parse("10.50.0.255"), 9999));
            }
            Thread.Sleep(1500);
            foreach (var (ns, socket) in sockets)
            {
                var copies = CountDatagrams(socket, payload);
                Assert.True(copies == 1, $"{ns} received the broadcast {copies} times");
            }
        }
        finally
        {
            foreach (var s in sockets.Values)
                s.Dispose();
        }
        var drops = o.Status("proxy").Drops;
        output.WriteLine("proxy drops: " + string.Join(", ", drops.Select(kv => $"{kv.Key}={kv.Value}")));
        Assert.Equal(0, drops["HopLimit"]);
    }

    internal static Socket OpenUdp(string netns, int port)
    {
        using var _ = Netns.Enter(netns);
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        s.Bind(new IPEndPoint(IPAddress.Any, port));
        return s;
    }

    private static int CountDatagrams(Socket socket, byte[] payload)
    {
        var count = 0;
        var buffer = new byte[2048];
        while (socket.Available > 0)
        {
            var n = socket.Receive(buffer);
            if (buffer.AsSpan(0, n).SequenceEqual(payload))
                count++;
        }
        return count;
    }
}
