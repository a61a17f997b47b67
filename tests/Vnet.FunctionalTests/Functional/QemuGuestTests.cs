using System.Net;
using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// Real virtual machines on VNET: two QEMU guests (distribution kernel, virtio-net, busybox) on two
/// host daemons take DHCP leases from the home LAN's dnsmasq through the Proxy, and ping the LAN
/// machine and each other.
/// <code>
///  lanhost (dnsmasq) ── [lan] ── lan0 (pcap) Proxy ── [wan] ──┬── h1 ── vm1 (pcap) ── QEMU guest1
///                                                            └── h2 ── vm2 (pcap) ── QEMU guest2
/// </code>
/// Every NIC keeps its default offloads: the guests' virtio-net sends partial checksums and TSO
/// super-frames into QEMU's TAP, the LAN machine's veth sends partial checksums, and nothing runs
/// ethtool. This is the path that once lost DHCP answers (relayed with partial checksums) before
/// the packet sockets read virtio-net headers (docs/interfaces.md).
/// </summary>
/// <remarks>
/// Each host daemon opens its guest's TAP as interface kind <c>pcap</c> (a packet socket on the
/// TAP's kernel side), not a TAP of its own on a bridge with QEMU's: QEMU owns its TAP
/// (<c>ifname=</c>), and the packet socket is the attachment with one interface per VM and no
/// kernel bridge, so the daemon itself is the only switch between the VM and the overlay, and its
/// capture path (virtio-net headers both ways, PACKET_IGNORE_OUTGOING, the learning filter) is what
/// the guests' frames go through. The two guests boot at once, under TCG here (about 10-15 s).
/// </remarks>
[Collection("Netns")]
public sealed class QemuGuestTests(ITestOutputHelper output)
{
    private static readonly TimeSpan BootAndLease = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan Command = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan Transfer = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task QemuGuests_BehindPcapHosts_LeaseFromTheLanAndReachTheLanAndEachOther()
    {
        using var o = new OverlayBed(output, hosts: 2);
        var leases = Path.Combine(Path.GetTempPath(), $"vnet-leases-{Guid.NewGuid():N}");
        var guests = new List<QemuGuest>();
        try
        {
            // --no-ping: dnsmasq otherwise pings each address before offering it, and waits up to
            // 3 s for an answer without serving other clients, so two guests' leases took turns.
            o.Bed.Start("lanhost", "dnsmasq", "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
                "--interface=eth0", "--bind-interfaces", "--dhcp-range=10.50.0.100,10.50.0.150,255.255.255.0,1h", "--no-ping",
                $"--dhcp-leasefile={leases}", "--log-dhcp");
            o.StartProxy();
            // QEMU makes the TAP at once; the daemons open it while the guests boot.
            guests.Add(QemuGuest.Start(o.Bed, "h1", "guest1", "vm1", "52:54:00:50:00:01"));
            guests.Add(QemuGuest.Start(o.Bed, "h2", "guest2", "vm2", "52:54:00:50:00:02"));
            o.StartHost(1, pcapInterface: "vm1");
            o.StartHost(2, pcapInterface: "vm2");
            o.WaitStar(2);

            var addresses = guests.Select(g => g.WaitForLease(BootAndLease)).ToList();
            output.WriteLine($"leases: {string.Join(", ", addresses)} (accelerator {guests[0].Accelerator})");
            foreach (var address in addresses)
            {
                var last = IPAddress.Parse(address).GetAddressBytes()[3];
                Assert.True(address.StartsWith("10.50.0.", StringComparison.Ordinal) && last is >= 100 and <= 150,
                    $"lease {address} is not from the LAN's DHCP range");
            }

            AssertPings(guests[0], OverlayBed.LanHostIp, "guest1 -> LAN machine");
            AssertPings(guests[0], addresses[1], "guest1 -> guest2 (on the other host)");
            AssertPings(guests[1], OverlayBed.LanHostIp, "guest2 -> LAN machine");
            Assert.True(o.Bed.Ping("lanhost", addresses[0], count: 2, timeoutSeconds: 10), "LAN machine -> guest1");

            // TCP both ways between guest1 and the LAN machine, every byte checked (SHA-256): the
            // guest's partial checksums and TSO super-frames cross h1's packet socket, the link and
            // the Proxy's, and so do the LAN machine's the other way.
            await TcpFromGuest(o, guests[0], 7101);
            await TcpToGuest(o, guests[0], addresses[0], 7102);
            // And between the guests: h1's packet socket reads guest1's super-frames, h2's writes
            // them into guest2's TAP.
            TcpBetweenGuests(guests[0], guests[1], addresses[1], 7103);

            // The Proxy places each guest on its host, learned from the guest's own frames.
            var proxyView = o.Vms("proxy");
            Assert.Contains(proxyView, v => v.Mac.ToString() == guests[0].Mac && v.Daemon == "h1");
            Assert.Contains(proxyView, v => v.Mac.ToString() == guests[1].Mac && v.Daemon == "h2");
        }
        catch
        {
            o.DumpAll();
            throw;
        }
        finally
        {
            foreach (var g in guests)
                g.Dispose();
            File.Delete(leases);
        }
    }

    private const int TransferBytes = 4 << 20;

    private async Task TcpFromGuest(OverlayBed o, QemuGuest guest, int port)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var received = TcpTransfer.Receive(o.Bed.Prefix + "-lanhost", port, Transfer);
        var sent = guest.Run($"dd if=/dev/urandom of=/tmp/out bs=64k count={TransferBytes >> 16} 2>/dev/null && nc {OverlayBed.LanHostIp} {port} < /tmp/out && sha256sum /tmp/out", Transfer);
        Assert.True(sent.Ok, $"{guest.Name} -> LAN machine, TCP: rc {sent.ExitCode}:\n{sent.Output}");
        var result = await received.WaitAsync(Transfer);
        Assert.Equal(TransferBytes, result.Bytes);
        Assert.Contains(result.Sha256.ToLowerInvariant(), sent.Output, StringComparison.Ordinal);
        output.WriteLine($"{guest.Name} -> LAN machine: {result.Bytes} bytes by TCP in {clock.Elapsed.TotalSeconds:0.0} s");
    }

    private async Task TcpToGuest(OverlayBed o, QemuGuest guest, string address, int port)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Listen(guest, port);
        var sent = await TcpTransfer.Send(o.Bed.Prefix + "-lanhost", new IPEndPoint(IPAddress.Parse(address), port), TransferBytes, long.MaxValue / 2, Transfer)
            .WaitAsync(Transfer + TimeSpan.FromSeconds(10));
        var got = Received(guest);
        Assert.True(got.Contains(sent.Sha256.ToLowerInvariant(), StringComparison.Ordinal),
            $"LAN machine -> {guest.Name}, TCP: {sent.Bytes} bytes sent ({sent.Sha256}), the guest has:\n{got}");
        output.WriteLine($"LAN machine -> {guest.Name}: {sent.Bytes} bytes by TCP in {clock.Elapsed.TotalSeconds:0.0} s");
    }

    private void TcpBetweenGuests(QemuGuest from, QemuGuest to, string toAddress, int port)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Listen(to, port);
        var sent = from.Run($"dd if=/dev/urandom of=/tmp/out bs=64k count={TransferBytes >> 16} 2>/dev/null && nc {toAddress} {port} < /tmp/out && sha256sum /tmp/out", Transfer);
        Assert.True(sent.Ok, $"{from.Name} -> {to.Name}, TCP: rc {sent.ExitCode}:\n{sent.Output}");
        var hash = sent.Output.Split('\n').Last(l => l.EndsWith("/tmp/out", StringComparison.Ordinal)).Split(' ')[0];
        var got = Received(to);
        Assert.True(got.Contains(hash, StringComparison.Ordinal), $"{from.Name} -> {to.Name}, TCP: {from.Name} sent {hash}, {to.Name} has:\n{got}");
        output.WriteLine($"{from.Name} -> {to.Name}: {TransferBytes} bytes by TCP in {clock.Elapsed.TotalSeconds:0.0} s");
    }

    /// <summary>Starts nc listening in the guest, writing what it receives to /tmp/in, and returns once it listens.</summary>
    private static void Listen(QemuGuest guest, int port)
    {
        // busybox nc half-closes when its stdin ends, and a busybox nc at the other end then quits
        // before it sent everything: the stdin here is a pipe that stays open (sleep) instead.
        var r = guest.Run($"rm -f /tmp/in; sleep {(int)Transfer.TotalSeconds} | nc -l -p {port} > /tmp/in & i=0; while ! netstat -ltn | grep -q ':{port} ' && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done", Command);
        Assert.True(r.Ok, $"{guest.Name}: nc -l: {r.Output}");
    }

    /// <summary>Waits (at most 30 s) for the guest's nc to end and returns the size and SHA-256 of what it received.</summary>
    private static string Received(QemuGuest guest) =>
        guest.Run("i=0; while pidof nc > /dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; ls -l /tmp/in; sha256sum /tmp/in", Command).Output;

    private void AssertPings(QemuGuest guest, string address, string what)
    {
        var r = guest.Run($"ping -c 3 -i 0.2 -W 2 {address}", Command);
        output.WriteLine($"{what}:\n{r.Output}");
        // busybox ping succeeds on one answer of three; every one must come back.
        Assert.True(r.Ok && r.Output.Contains(" 0% packet loss", StringComparison.Ordinal), $"{what}: ping failed (rc {r.ExitCode}):\n{r.Output}");
    }
}
