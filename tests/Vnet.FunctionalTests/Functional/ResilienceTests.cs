using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Vnet.Links.Security;
using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>The star comes back by itself; strangers never get in.</summary>
[Collection("Netns")]
public sealed class ResilienceTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("tcp")]
    [InlineData("udp")]
    public async Task Proxy_KilledAndRestartedMidTransfer_TransferCompletesWithAllBytes(string transport)
    {
        using var o = new OverlayBed(output, hosts: 2);
        o.StartAll(transport, lanNic: false);
        o.AddVm(1, 1);
        o.AddVm(2, 2);
        Assert.True(o.Bed.Ping("vm1", OverlayBed.VmIp(2), count: 2, timeoutSeconds: 10));

        // 40 MiB at 10 MiB/s: the Proxy dies and comes back in the middle of it.
        const long Bytes = 40L << 20;
        var received = TcpTransfer.Receive(o.Bed.Prefix + "-vm2", 7000, TimeSpan.FromSeconds(90));
        var sent = TcpTransfer.Send(o.Bed.Prefix + "-vm1", new IPEndPoint(IPAddress.Parse(OverlayBed.VmIp(2)), 7000), Bytes, 10L << 20, TimeSpan.FromSeconds(90));
        await Task.Delay(1500);
        Assert.False(sent.IsCompleted, "the transfer ended before the Proxy was killed");

        o.Daemon("proxy").Kill();
        await Task.Delay(500);
        var restarted = Stopwatch.StartNew();
        o.StartProxy(lanNic: false);
        o.WaitStar(2, timeoutSeconds: 15);
        output.WriteLine($"star back {restarted.ElapsedMilliseconds} ms after the Proxy restart began");

        var results = await Task.WhenAll(sent, received).WaitAsync(TimeSpan.FromSeconds(90));
        output.WriteLine($"sent {results[0].Bytes} received {results[1].Bytes}");
        Assert.Equal(Bytes, results[0].Bytes);
        Assert.Equal(results[0], results[1]);
        Assert.All(o.Links("h1").Where(l => l.Peer == "proxy"), l => Assert.True(l.Sessions >= 2));
    }

    [Fact]
    public void Host_WithAKeyTheProxyDidNotAdmit_CannotJoinAndGetsNoFrameThrough()
    {
        using var o = new OverlayBed(output, hosts: 2);
        o.StartProxy(lanNic: false);
        o.StartHost(1);
        // h2's name, but not the key the Proxy admitted for h2.
        using var stranger = StaticKeyPair.Generate();
        var intruder = o.StartHost(2, identity: stranger);
        o.WaitStar(1);
        o.AddVm(1, 1);
        o.AddVm(2, 2);

        // Both sides log why: the Proxy names the key it does not admit, the intruder hears it is not admitted.
        o.Daemon("proxy").WaitForOutput($"'h2' with key {stranger.Public} is not admitted", TimeSpan.FromSeconds(15));
        intruder.WaitForOutput("refused by the peer: not admitted", TimeSpan.FromSeconds(15));
        Assert.False(o.Bed.Ping("vm2", OverlayBed.VmIp(1), count: 2, timeoutSeconds: 4), "a VM behind a host without the key reached the overlay");
        Assert.DoesNotContain(o.Links("proxy"), l => l.Peer == "h2" && l.Up);
        Assert.DoesNotContain(o.Vms("proxy"), v => v.Mac.ToString() == OverlayBed.VmMac(2));
    }

    [Fact]
    public void Peer_SpeakingGarbage_IsDroppedWithAReasonAndChangesNothing()
    {
        using var o = new OverlayBed(output, hosts: 1);
        o.StartAll(lanNic: false);
        var before = o.Links("proxy").Count;

        using (var socket = Connect(o.Bed.Prefix + "-h1", new IPEndPoint(IPAddress.Parse("192.0.2.1"), 5500)))
        {
            socket.Send("GET / HTTP/1.1\r\nHost: proxy\r\n\r\n"u8);
            socket.ReceiveTimeout = 8000;
            var buffer = new byte[64];
            // The Proxy closes the connection (or resets it: our bytes are unread) without a word.
            try
            {
                Assert.Equal(0, socket.Receive(buffer));
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
            }
        }
        o.Daemon("proxy").WaitForOutput("not a VNET message", TimeSpan.FromSeconds(5));
        Assert.Equal(before, o.Links("proxy").Count);
    }

    private static Socket Connect(string netns, IPEndPoint to)
    {
        using var _ = Netns.Enter(netns);
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Connect(to);
        return s;
    }
}
