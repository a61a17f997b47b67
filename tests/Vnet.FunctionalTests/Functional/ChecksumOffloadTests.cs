using System.Net;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// Senders with checksum offload on (a veth's default, as for a container or a virtio-net VM) on
/// both ends of interface kind pcap: the host daemon opens the VM's veth itself (no TAP, no
/// bridge), and the Proxy opens the LAN, whose machine is a veth too. Their frames carry partial
/// checksums and TSO super-frames, which the packet sockets read with their virtio-net headers. TCP
/// both ways completes with every byte (SHA-256 on both ends).
/// </summary>
[Collection("Netns")]
public sealed class ChecksumOffloadTests(ITestOutputHelper output)
{
    private static readonly TimeSpan TransferTimeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task PcapOnHostAndProxy_SendersWithChecksumOffload_TcpBothWaysCompletes()
    {
        using var o = new OverlayBed(output, hosts: 1);
        try
        {
            o.StartProxy();
            o.AddVm(1, 1, bridge: false);
            o.StartHost(1, pcapInterface: "vm1");
            o.WaitStar(1);
            foreach (var ns in new[] { "vm1", "lanhost" })
            {
                var features = o.Bed.Run(ns, "ethtool -k eth0");
                Assert.Contains("tx-checksumming: on", features, StringComparison.Ordinal);
                Assert.Contains("tcp-segmentation-offload: on", features, StringComparison.Ordinal);
            }
            var unreached = Convergence.WaitMeshPing(o, [1], lan: true, TimeSpan.FromSeconds(20));
            Assert.True(unreached.Count == 0, $"vm1 does not reach the LAN: {string.Join("; ", unreached)}");

            // 16 MiB each way, unpaced: long enough for TSO super-frames on both ends.
            const long Bytes = 16L << 20;
            await Transfer(o, "vm1", "lanhost", OverlayBed.LanHostIp, 7101, Bytes);
            await Transfer(o, "lanhost", "vm1", OverlayBed.VmIp(1), 7102, Bytes);
        }
        catch
        {
            o.DumpAll();
            throw;
        }
    }

    private static async Task Transfer(OverlayBed o, string from, string to, string toIp, int port, long bytes)
    {
        var received = TcpTransfer.Receive(o.Bed.Prefix + "-" + to, port, TransferTimeout);
        var sent = TcpTransfer.Send(o.Bed.Prefix + "-" + from, new IPEndPoint(IPAddress.Parse(toIp), port), bytes, long.MaxValue / 2, TransferTimeout);
        var results = await Task.WhenAll(sent, received).WaitAsync(TransferTimeout + TimeSpan.FromSeconds(10));
        Assert.Equal(bytes, results[0].Bytes);
        Assert.Equal(results[0], results[1]);
    }
}
