using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// Roaming on a UDP star link (issue 8: the peer's address is where its latest datagram that
/// authenticated came from; the probe no longer decides it). h1 sits behind a NAT router, as a host
/// at a site does:
/// <code>
///  vm1 ── br0 ── tap0 h1 wan0 10.99.0.2 ── h1 nat wan0 192.0.2.50, .51 ── [wan: br0] ── proxy 192.0.2.1 ── LAN
/// </code>
/// The router masquerades h1's TCP connection (conntrack, stays put) and maps h1's UDP port with
/// stateless nftables rules (rewrite the source on the way out, the destination on the way back), so
/// that one atomic <c>nft -f</c> moves the mapping, as a NAT that lost and re-made its UDP mapping
/// does (a NAT rebinding): h1's datagrams then reach the Proxy from another address and port, while
/// datagrams to the old mapping go nowhere (counted by the router).
/// </summary>
[Collection("Netns")]
public sealed class RoamingTests(ITestOutputHelper output)
{
    private const string ProxyIp = "192.0.2.1";
    private const string HostInside = OverlayBed.InsideHostIp;
    private const int LinkPort = 5500;

    /// <summary>h1's UDP port as the Proxy sees it, before and after the rebinding: another address and another port.</summary>
    private static readonly IPEndPoint First = new(IPAddress.Parse("192.0.2.50"), 40000);

    private static readonly IPEndPoint Second = new(IPAddress.Parse("192.0.2.51"), 40001);

    /// <summary>
    /// The LAN machine sends 16 MiB to vm1 (the Proxy → h1 direction: the side that must follow h1)
    /// and the NAT moves h1's mapping in the middle. The Proxy's link to h1 follows to the new
    /// address within the keep-alive interval and well before the dead timer, the old mapping gets
    /// nothing more, the star link stays the same session at both ends (no reconnect), and every byte
    /// arrives (SHA-256).
    /// </summary>
    [Fact]
    public void UdpStar_NatRebindsTheHostMidTransfer_TheProxyFollowsInTheSameSessionAndTheTransferCompletes()
    {
        const long Bytes = 16L << 20;
        BehindANat((o, star) =>
        {
            var received = TcpTransfer.Receive(o.Bed.Prefix + "-vm1", 7000, TimeSpan.FromSeconds(90));
            var sent = TcpTransfer.Send(o.Bed.Prefix + "-lanhost", new IPEndPoint(IPAddress.Parse(OverlayBed.VmIp(1)), 7000),
                Bytes, 2L << 20, TimeSpan.FromSeconds(90));
            // The flow is well under way (a few MiB reached h1 over the star) before the NAT moves.
            var startRx = HostStar(o).RxBytes;
            Wait.Until(() => HostStar(o).RxBytes - startRx >= 3L << 20 || sent.IsCompleted, TimeSpan.FromSeconds(20),
                "3 MiB of the transfer to reach h1 before the rebinding");
            Assert.False(sent.IsCompleted, $"the transfer ended before the rebinding: {sent.Exception?.GetBaseException().Message}");

            var clock = Stopwatch.StartNew();
            Rebind(o, Second, First);
            // h1 learns nothing of it: its next datagram (an ACK, or the keep-alive within 1 s) comes
            // from the new mapping, authenticates, and moves the Proxy's link there. Before the dead
            // timer (3 s), or h1, hearing nothing from the Proxy, would end the session.
            Wait.Until(() => ProxyStar(o).DatagramRemote == Second.ToString(), TimeSpan.FromSeconds(2.5),
                $"the Proxy's link to h1 to follow it to {Second}");
            var followed = clock.Elapsed;
            var rxAtFollow = HostStar(o).RxBytes;
            Wait.Until(() => HostStar(o).RxBytes - rxAtFollow >= 256 << 10, TimeSpan.FromSeconds(3),
                "the transfer to resume: 256 KiB more to reach h1 from the Proxy");
            var resumed = clock.Elapsed;
            Thread.Sleep(200);
            var staleAtFollow = OldMappingPackets(o);

            Assert.True(Task.WaitAll([sent, received], TimeSpan.FromSeconds(90)), "the transfer did not finish within 90 s");
            output.WriteLine($"rebinding at {First} -> {Second}: the Proxy followed after {followed.TotalMilliseconds:0} ms, " +
                $"data flowed again after {resumed.TotalMilliseconds:0} ms; the Proxy sent {staleAtFollow} datagrams to the old mapping; " +
                $"transfer done {clock.Elapsed.TotalSeconds:0.0} s after the rebinding");
            Assert.Equal(Bytes, sent.Result.Bytes);
            Assert.Equal(sent.Result, received.Result);

            // Nothing more went to the old mapping once the Proxy had followed; the link moved once,
            // the Proxy never moved at h1, and neither end made a new session.
            Assert.Equal(staleAtFollow, OldMappingPackets(o));
            var atProxy = ProxyStar(o);
            Assert.Equal(Second.ToString(), atProxy.DatagramRemote);
            Assert.Equal(1, atProxy.Roams);
            Assert.Equal(0, HostStar(o).Roams);
            Assert.Equal(star, StarOf(o));
            Assert.True(o.Bed.Ping("vm1", OverlayBed.LanHostIp, count: 3, timeoutSeconds: 10), "vm1 lost the LAN after the rebinding");
        });
    }

    /// <summary>
    /// The adversarial counterpart, where the previous address is the attacker's best guess: after a
    /// NAT rebinding, datagrams h1 really sent from its old mapping are replayed from there (and from
    /// a third address and port), and forged ones with fresh counters are sent from both. None opens,
    /// so none moves the session: the Proxy keeps sending to h1's new mapping, nothing reaches the
    /// old one or the third, the refusals are counted, and vm1 still reaches the LAN in the same session.
    /// </summary>
    [Fact]
    public void UdpStar_OldDatagramsReplayedOrForgedFromOtherAddressesAfterARoam_RefusedAndTheSessionStays()
    {
        BehindANat((o, star) =>
        {
            // Datagrams h1 sent under the first mapping, captured on the router's WAN side (small
            // ones: keep-alives and vm1's pings, one message each, never a GSO run).
            var capture = Path.Combine(o.Bed.LogDirectory, "h1-first-mapping.pcap");
            var tcpdump = o.Bed.Start("nat", "tcpdump-wan", "tcpdump", "-i", "wan0", "-n", "-U", "-c", "8", "-w", capture,
                $"udp and src host {First.Address} and src port {First.Port} and dst host {ProxyIp} and less 300");
            tcpdump.WaitForOutput("listening on", TimeSpan.FromSeconds(10));
            o.Bed.Run("vm1", $"ping -n -q -c 8 -i 0.2 -W 5 {OverlayBed.LanHostIp}", timeoutSeconds: 20);
            Assert.True(tcpdump.WaitForExit(TimeSpan.FromSeconds(15)), "tcpdump did not capture 8 of h1's datagrams within 15 s");
            var captured = ReadMessages(capture);
            Assert.True(captured.Count >= 4, $"only {captured.Count} whole messages in the capture");
            output.WriteLine($"captured {captured.Count} of h1's datagrams from {First}");

            Rebind(o, Second, First);
            Wait.Until(() => ProxyStar(o).DatagramRemote == Second.ToString(), TimeSpan.FromSeconds(2.5),
                $"the Proxy's link to h1 to follow it to {Second}");
            Assert.Equal(1, ProxyStar(o).Roams);

            // The old mapping's address and port, and a third one: the Proxy would answer there (a
            // keep-alive's ACK at once, then everything for vm1) had a datagram from there moved h1's link.
            using var old = Bind(o, First);
            using var third = Bind(o, new IPEndPoint(Second.Address, 40002));
            var rejected = o.Status("proxy").UdpRejected;
            var forged = captured.Select(Forge).ToList();
            foreach (var socket in new[] { old, third })
            {
                foreach (var datagram in captured.Concat(forged))
                    socket.SendTo(datagram, new IPEndPoint(IPAddress.Parse(ProxyIp), LinkPort));
            }
            var sent = 2 * (captured.Count + forged.Count);
            Wait.Until(() => o.Status("proxy").UdpRejected - rejected >= sent || old.Available > 0 || third.Available > 0,
                TimeSpan.FromSeconds(10), $"the Proxy to refuse {sent} datagrams (or to answer at an address it should not)");
            Assert.True(old.Available == 0, $"the Proxy sent {old.Available} bytes to h1's old mapping: a replay moved the session back");
            Assert.True(third.Available == 0, $"the Proxy sent {third.Available} bytes to {third.LocalEndPoint}: a replay or forgery moved the session");
            Assert.True(o.Status("proxy").UdpRejected - rejected >= sent, "the Proxy did not count the datagrams it refused");

            // Once the dead timer has passed, with keep-alives and pings sent meanwhile to wherever
            // the Proxy thinks h1 is: still the new mapping, still the same session.
            Thread.Sleep(LinkSession.DeadAfter + TimeSpan.FromMilliseconds(500));
            Assert.True(o.Bed.Ping("vm1", OverlayBed.LanHostIp, count: 3, timeoutSeconds: 10), "vm1 lost the LAN after the replays");
            var atProxy = ProxyStar(o);
            Assert.Equal(Second.ToString(), atProxy.DatagramRemote);
            Assert.Equal(1, atProxy.Roams);
            Assert.True(old.Available == 0 && third.Available == 0,
                $"the Proxy sent {old.Available} bytes to the old mapping and {third.Available} to the third address after the replays");
            Assert.Equal(star, StarOf(o));
        });
    }

    // ---------------------------------------------------------------- the bed

    /// <summary>
    /// The Proxy and h1 behind the NAT router on a UDP star link, vm1 on h1 reaching the LAN, the
    /// Proxy's link to h1 at the first mapping; then <paramref name="test"/> with the star's state.
    /// Every daemon's log is dumped, and the router's rules written out, when it fails.
    /// </summary>
    private void BehindANat(Action<OverlayBed, StarState> test, [CallerMemberName] string testName = "")
    {
        using var o = new OverlayBed(output, hosts: 1, testName: testName);
        try
        {
            o.BehindARouter(1, First.Address.ToString(), Second.Address.ToString());
            Rebind(o, First, previous: null);

            o.StartProxy();
            o.StartHost(1, transport: "udp", listenIp: HostInside);
            o.WaitStar(1);
            o.AddVm(1, 1);
            Wait.Until(() => o.Bed.Ping("vm1", OverlayBed.LanHostIp, count: 2, timeoutSeconds: 5), TimeSpan.FromSeconds(20),
                "vm1 to reach the LAN through h1 behind the NAT");
            var atProxy = ProxyStar(o);
            var atHost = HostStar(o);
            output.WriteLine($"the Proxy sees h1's connection from {atProxy.Remote} and its datagrams from {atProxy.DatagramRemote}");
            Assert.Equal(First.ToString(), atProxy.DatagramRemote);
            Assert.StartsWith(First.Address + ":", atProxy.Remote, StringComparison.Ordinal);
            Assert.Equal(0, atProxy.Roams);
            Assert.Equal($"{ProxyIp}:{LinkPort}", atHost.DatagramRemote);
            Assert.Equal(0, atHost.Roams);
            test(o, StarOf(o));
        }
        catch
        {
            output.WriteLine(o.Bed.Exec("nat", "nft list ruleset").Stdout);
            o.DumpAll();
            throw;
        }
    }

    /// <summary>
    /// Maps h1's UDP port to <paramref name="mapping"/> in one nftables transaction; datagrams to
    /// <paramref name="previous"/> from then on are counted (and, being for no one, refused by the
    /// router). h1's traffic is not tracked, so no conntrack entry keeps the old mapping alive; its
    /// TCP connection is masqueraded and tracked, so it is never moved.
    /// </summary>
    private static void Rebind(OverlayBed o, IPEndPoint mapping, IPEndPoint? previous)
    {
        var stale = previous is null ? "" : $"iifname \"wan0\" ip daddr {previous.Address} udp dport {previous.Port} counter comment \"old mapping\"";
        var ruleset = $$"""
            table ip roam
            delete table ip roam
            table ip roam {
              chain inbound {
                type filter hook prerouting priority raw; policy accept;
                iifname "h1" ip saddr {{HostInside}} udp sport {{LinkPort}} notrack
                iifname "wan0" ip daddr {{mapping.Address}} udp dport {{mapping.Port}} notrack ip daddr set {{HostInside}} udp dport set {{LinkPort}}
                {{stale}}
              }
              chain outbound {
                type filter hook postrouting priority srcnat; policy accept;
                oifname "wan0" ip saddr {{HostInside}} udp sport {{LinkPort}} ip saddr set {{mapping.Address}} udp sport set {{mapping.Port}}
              }
              chain connections {
                type nat hook postrouting priority srcnat + 1; policy accept;
                oifname "wan0" meta l4proto tcp masquerade
              }
            }
            """;
        var file = Path.Combine(o.Bed.LogDirectory, $"nat-{mapping.Port}.nft");
        File.WriteAllText(file, ruleset);
        o.Bed.Run("nat", $"nft -f {Sh.Quote(file)}");
    }

    /// <summary>Datagrams the router got for the old mapping since the rebinding.</summary>
    private static long OldMappingPackets(OverlayBed o) => o.NftPackets("nat", "ip roam inbound", "old mapping");

    /// <summary>A UDP socket in the router, bound to one of its WAN addresses.</summary>
    private static Socket Bind(OverlayBed o, IPEndPoint at)
    {
        using var _ = Netns.Enter(o.Bed.Prefix + "-nat");
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        s.Bind(at);
        return s;
    }

    private static LinkStatus ProxyStar(OverlayBed o) => o.Links("proxy").Single(l => l.Peer == "h1");

    private static LinkStatus HostStar(OverlayBed o) => o.Links("h1").Single(l => l.Peer == "proxy");

    /// <summary>What identifies h1's star session at both ends: a reconnect would change it.</summary>
    private sealed record StarState(long ProxySessions, DateTimeOffset? ProxySince, long HostSessions, DateTimeOffset? HostSince);

    private static StarState StarOf(OverlayBed o)
    {
        var atProxy = ProxyStar(o);
        var atHost = HostStar(o);
        Assert.True(atProxy.Up && atHost.Up, "h1's star link is down");
        return new StarState(atProxy.Sessions, atProxy.Since, atHost.Sessions, atHost.Since);
    }

    // ---------------------------------------------------------------- messages

    /// <summary>
    /// The link messages in a pcap file of Ethernet frames (IPv4, UDP): each datagram's payload when
    /// it is one whole sealed message.
    /// </summary>
    private static List<byte[]> ReadMessages(string path)
    {
        var file = File.ReadAllBytes(path);
        Assert.True(file.Length >= 24 && BinaryPrimitives.ReadUInt32LittleEndian(file) == 0xa1b2c3d4, $"{path} is not a pcap file tcpdump wrote");
        var messages = new List<byte[]>();
        for (var at = 24; at + 16 <= file.Length;)
        {
            var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(at + 8));
            var frame = file.AsSpan(at + 16, Math.Min(length, file.Length - at - 16));
            at += 16 + length;
            if (frame.Length < 14 + 20 + 8 || BinaryPrimitives.ReadUInt16BigEndian(frame[12..]) != 0x0800)
                continue;
            var ip = frame[14..];
            var udp = ip[((ip[0] & 0x0f) * 4)..];
            var payload = udp[8..Math.Min(udp.Length, BinaryPrimitives.ReadUInt16BigEndian(udp[4..]))];
            if (Wire.TryRead(payload, out var header) == WireError.None && payload.Length == Wire.HeaderSize + header.PayloadLength
                && header.PayloadLength >= Wire.CounterSize + Wire.TagSize)
                messages.Add(payload.ToArray());
        }
        return messages;
    }

    /// <summary>
    /// A forgery made from a genuine datagram: a counter far ahead (fresh for the replay window) and
    /// a tag that does not match, as someone without the key must send.
    /// </summary>
    private static byte[] Forge(byte[] genuine)
    {
        var forged = (byte[])genuine.Clone();
        var counter = forged.AsSpan(Wire.HeaderSize, Wire.CounterSize);
        BinaryPrimitives.WriteUInt64BigEndian(counter, BinaryPrimitives.ReadUInt64BigEndian(counter) + 1_000_000);
        forged[^1] ^= 0x5a;
        return forged;
    }
}
