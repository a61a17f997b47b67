using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// A UDP star link of 4 streams (docs/links.md, "Streams of a UDP link") through the middleboxes that
/// the stream sockets' discovery was made for, with real kernels doing the NAT and the filtering:
/// <code>
///  vm1 ── br0 ── tap0 h1 wan0 10.99.0.2 ── h1 nat wan0 192.0.2.50, .51 ── [wan: br0] ── proxy 192.0.2.1 ── LAN
/// </code>
/// <list type="bullet">
/// <item>Behind a NAT that masquerades h1 (conntrack, TCP and UDP): every stream above 0 runs from
/// h1's stream socket to the Proxy's stream socket, each its own conntrack mapping; when the NAT
/// forgets its UDP mappings and makes new ones elsewhere, every stream carries on in the same session
/// within the dead timer; when it forgets everything, the link is whole again.</item>
/// <item>With the Proxy behind a firewall that admits UDP to its daemon's port only (h1 on the WAN
/// itself): the streams stay on that port (logged once each), and carry the traffic.</item>
/// </list>
/// Which stream carries a flow is its <see cref="FlowHash"/>: the test picks one UDP flow per stream
/// and checks each stream's own frame counters at both ends, so no stream is left untested by chance.
/// </summary>
[Collection("Netns")]
public sealed partial class UdpStreamsNatTests(ITestOutputHelper output)
{
    private const string ProxyIp = "192.0.2.1";
    private const string HostInside = OverlayBed.InsideHostIp;
    private const string NatFirst = "192.0.2.50";
    private const string NatSecond = "192.0.2.51";
    private const int LinkPort = 5500;
    private const int Streams = 4;
    private const int EchoPort = 9000;
    private const int EchoRounds = 20;

    /// <summary>
    /// h1 behind a masquerading NAT, `streams = 4` on its star link: all 4 streams come up at both
    /// ends, each carries its flow both ways, streams 1-3 each have their own conntrack mapping to
    /// one of the Proxy's 3 stream sockets (data there; nothing after the first probes to the
    /// Proxy's daemon port), and iperf3 -P 4 TCP puts a flow on each stream. Then, during a LAN → vm1
    /// transfer, the NAT forgets every UDP mapping and maps h1 from its other address: h1's data
    /// arrives again within the dead timer, no stream is made again, every stream carries its flow,
    /// and conntrack shows the 4 new mappings. Last, the NAT forgets everything (`conntrack -F`, TCP
    /// too): every stream carries its flow again within 10 s.
    /// </summary>
    [Fact]
    public void UdpStreams_BehindAMasqueradingNat_SocketToSocketPerStream_AndTheyOutliveTheNatForgettingItsMappings()
    {
        using var o = new OverlayBed(output, hosts: 1);
        try
        {
            BehindANat(o);
            o.StartProxy();
            o.StartHost(1, transport: "udp", listenIp: HostInside, streams: Streams);
            o.WaitStar(1);
            o.AddVm(1, 1);
            WaitStreamsUp(o);
            Wait.Until(() => o.Bed.Ping("vm1", OverlayBed.LanHostIp, count: 2, timeoutSeconds: 5), TimeSpan.FromSeconds(15),
                "vm1 to reach the LAN through h1 behind the NAT");
            Assert.Contains($"{Streams}/{Streams}", o.Cli("h1", "link list"), StringComparison.Ordinal);

            // The Proxy's and h1's stream sockets: 3 each, besides the daemons' own.
            var proxyPorts = StreamSocketPorts(o, "proxy", ProxyIp);
            var hostPorts = StreamSocketPorts(o, "h1", HostInside);
            output.WriteLine($"stream sockets: the Proxy's {string.Join(",", proxyPorts)}, h1's {string.Join(",", hostPorts)}");
            Assert.Equal(Streams - 1, proxyPorts.Count);
            Assert.Equal(Streams - 1, hostPorts.Count);

            // Each stream first probed the Proxy's daemon port (the only one it knew), from its own socket.
            var probes = ProbesToDaemonPort(o, hostPorts);
            output.WriteLine($"probes to the Proxy's daemon port per stream socket: {probes}");
            Assert.Equal(Streams - 1, probes.Split(',', StringSplitOptions.RemoveEmptyEntries).Length);
            EveryStreamCarries(o, "behind the NAT");
            EveryStreamCarriesAnIperfFlow(o, 5311);

            // Four mappings, one per stream: h1's daemon port to the Proxy's, and each of h1's stream
            // sockets to one of the Proxy's stream sockets, with traffic both ways; the first probes
            // of each stream to the Proxy's daemon port were all it sent there.
            var flows = Conntrack(o);
            output.WriteLine("conntrack after the traffic:\n" + string.Join('\n', flows));
            var mapped = SocketToSocket(flows, hostPorts, proxyPorts, NatFirst);
            Assert.Equal(Streams, mapped.Count);
            Assert.Equal(probes, ProbesToDaemonPort(o, hostPorts));

            // The NAT forgets its UDP mappings (as when they time out: UDP's do within minutes, an
            // established TCP connection's in days) and maps anew from its other address, with
            // random ports, while the LAN sends to vm1: the Proxy must find every stream again.
            var before = (Host: HostLink(o), Proxy: ProxyLink(o));
            ForgetMappingsDuringATransfer(o, hostPorts, proxyPorts);
            EveryStreamCarries(o, "after the NAT forgot");
            var after = (Host: HostLink(o), Proxy: ProxyLink(o));
            Assert.Equal(Streams, after.Host.StreamsUp);
            Assert.Equal(Streams, after.Proxy.StreamsUp);
            Assert.Equal(before.Host.StreamSessions, after.Host.StreamSessions);
            Assert.Equal(before.Proxy.StreamSessions, after.Proxy.StreamSessions);
            Assert.Equal(before.Host.Sessions, after.Host.Sessions);
            Assert.StartsWith(NatSecond + ":", after.Proxy.DatagramRemote, StringComparison.Ordinal);
            flows = Conntrack(o);
            output.WriteLine("conntrack after the NAT forgot:\n" + string.Join('\n', flows));
            Assert.Equal(Streams, SocketToSocket(flows, hostPorts, proxyPorts, NatSecond).Count);

            // Last, the NAT forgets everything at once, as when it restarts: the link's TCP
            // connections' mappings too. Whichever end sends first on such an idle connection decides
            // what follows: the host's segment makes a new mapping (conntrack picks the connection
            // up), while the Proxy's reaches the router itself, which answers with a reset, and that
            // stream is made again after its dead timer. Either way the link is whole again: all 4
            // streams up at both ends and each carrying its flow (tried until it does, within 10 s).
            var made = (Host: HostLink(o).StreamSessions, Proxy: ProxyLink(o).StreamSessions);
            o.Bed.Run("nat", "conntrack -F");
            var flushed = Stopwatch.StartNew();
            Wait.Until(() => HostLink(o).StreamsUp == Streams && ProxyLink(o).StreamsUp == Streams
                && StreamsCarry(o, "after conntrack -F", rounds: 5, lost: 0) is null, TimeSpan.FromSeconds(10),
                "every stream to carry its flow again after the NAT forgot everything");
            output.WriteLine($"after conntrack -F, every stream carried its flow again within {flushed.ElapsedMilliseconds} ms; streams made again: " +
                $"h1 {HostLink(o).StreamSessions - made.Host}, the Proxy {ProxyLink(o).StreamSessions - made.Proxy}");
            output.WriteLine("conntrack after -F:\n" + string.Join('\n', Conntrack(o)) + "\n" + o.Bed.Run("nat", "conntrack -L -p tcp 2>/dev/null"));
        }
        catch
        {
            output.WriteLine(o.Bed.Exec("nat", "nft list ruleset; conntrack -L -p udp").Stdout);
            o.DumpAll();
            throw;
        }
    }

    /// <summary>
    /// The Proxy's namespace drops every inbound datagram but those to its daemon's port. h1 dials
    /// `streams = 4`: its probes to the Proxy's stream sockets are dropped, so each stream above 0
    /// falls back to the daemon's port (h1 logs it once per stream), all 4 come up, each carries its
    /// flow both ways, iperf3 -P 4 TCP completes with a flow on each stream, and nothing more is sent to
    /// the Proxy's stream sockets after the fallback.
    /// </summary>
    [Fact]
    public void UdpStreams_ProxyFirewallAdmitsOnlyTheDaemonPort_StreamsFallBackToItAndCarryTheTraffic()
    {
        using var o = new OverlayBed(output, hosts: 1);
        try
        {
            o.Bed.Run("proxy", $$"""
                nft -f - <<'EOF'
                table inet fw {
                  chain input {
                    type filter hook input priority filter; policy accept;
                    iifname "wan0" udp dport != {{LinkPort}} counter drop comment "stream ports"
                    iifname "wan0" udp sport != {{LinkPort}} udp dport {{LinkPort}} counter comment "streams on the daemon port"
                  }
                }
                EOF
                """);
            o.StartProxy();
            o.StartHost(1, transport: "udp", streams: Streams);
            o.WaitStar(1);
            o.AddVm(1, 1);
            WaitStreamsUp(o);
            Assert.True(o.Bed.Ping("vm1", OverlayBed.LanHostIp, count: 2, timeoutSeconds: 10), "vm1 does not reach the LAN");

            // Each stream above 0 said once that the Proxy's stream socket does not answer.
            var fallbacks = o.Daemon("h1").Lines.Where(l => l.Contains("does not answer", StringComparison.Ordinal)).ToList();
            output.WriteLine("h1's fallbacks:\n" + string.Join('\n', fallbacks));
            Assert.Equal(Streams - 1, fallbacks.Count);
            for (var stream = 1; stream < Streams; stream++)
                Assert.Single(fallbacks, l => l.Contains($"Link proxy stream {stream}: the peer's stream socket {ProxyIp}:", StringComparison.Ordinal));
            var dropped = Counted(o, "stream ports");
            Assert.True(dropped > 0, "the firewall dropped no probe to the Proxy's stream sockets");

            // Streams 1-3 send from h1's stream sockets to the Proxy's daemon port: their flows' 3 x 20 datagrams at least.
            var onDaemonPort = Counted(o, "streams on the daemon port");
            EveryStreamCarries(o, "through the firewall");
            var carried = Counted(o, "streams on the daemon port") - onDaemonPort;
            output.WriteLine($"datagrams from h1's stream sockets to the Proxy's daemon port during the echoes: {carried}");
            Assert.True(carried >= (Streams - 1) * (EchoRounds - 2), $"only {carried} datagrams of streams 1-3 reached the Proxy's daemon port");
            EveryStreamCarriesAnIperfFlow(o, 5312);
            Assert.Equal(dropped, Counted(o, "stream ports"));
            Assert.Equal(Streams - 1, o.Daemon("h1").Lines.Count(l => l.Contains("does not answer", StringComparison.Ordinal)));
            Assert.Equal(Streams, HostLink(o).StreamsUp);
        }
        catch
        {
            output.WriteLine(o.Bed.Exec("proxy", "nft list ruleset; ss -uanp").Stdout);
            o.DumpAll();
            throw;
        }
    }

    /// <summary>
    /// The LAN sends 12 MiB to vm1; 2 MiB in, the NAT maps UDP from its other address with random
    /// ports and forgets every UDP mapping it had. h1 must receive again within the dead timer (the
    /// Proxy follows each stream to its new mapping once h1 sends there), and every byte arrives.
    /// </summary>
    private void ForgetMappingsDuringATransfer(OverlayBed o, List<int> hostPorts, List<int> proxyPorts)
    {
        var received = TcpTransfer.Receive(o.Bed.Prefix + "-vm1", 7000, TimeSpan.FromSeconds(30));
        var sent = TcpTransfer.Send(o.Bed.Prefix + "-lanhost", new IPEndPoint(IPAddress.Parse(OverlayBed.VmIp(1)), 7000),
            12L << 20, 3L << 20, TimeSpan.FromSeconds(30));
        var startRx = HostLink(o).RxBytes;
        Wait.Until(() => HostLink(o).RxBytes - startRx >= 2L << 20 || sent.IsCompleted, TimeSpan.FromSeconds(10),
            "2 MiB of the transfer to reach h1 before the NAT forgets");
        Assert.False(sent.IsCompleted, $"the transfer ended before the NAT forgot: {sent.Exception?.GetBaseException().Message}");
        Nat(o, udp: $"snat to {NatSecond} fully-random");
        var clock = Stopwatch.StartNew();
        o.Bed.Run("nat", "conntrack -D -p udp");
        var forgotten = clock.Elapsed;
        // The link is back once the Proxy sends on each stream's new mapping (an answer through it
        // in conntrack). That is within the dead timer, or a stream's session would have ended (the
        // caller checks that none did); the wait allows a second more for its own polling.
        Wait.Until(() => Mapped(Conntrack(o), hostPorts, proxyPorts, NatSecond).Count(f => f.ReplyPackets > 0) == Streams,
            LinkSession.DeadAfter + TimeSpan.FromSeconds(1), "the Proxy to send on every stream's new mapping within the dead timer");
        var followed = clock.Elapsed;
        // The transfer then resumes as soon as its sender retransmits (TCP's timer, backed off while the NAT dropped).
        var rxAtFollow = HostLink(o).RxBytes;
        Wait.Until(() => HostLink(o).RxBytes - rxAtFollow >= 256 << 10, LinkSession.DeadAfter,
            "the transfer to resume: 256 KiB more to reach h1");
        var resumed = clock.Elapsed;
        Assert.True(Task.WaitAll([sent, received], TimeSpan.FromSeconds(30)), "the transfer did not finish within 30 s");
        Assert.Equal(sent.Result, received.Result);
        output.WriteLine($"the NAT forgot in {forgotten.TotalMilliseconds:0} ms; the Proxy sent on every new mapping {followed.TotalMilliseconds:0} ms " +
            $"and the transfer resumed {resumed.TotalMilliseconds:0} ms after it began; " +
            $"the Proxy now sees h1's stream 0 at {ProxyLink(o).DatagramRemote}");
    }

    // ---------------------------------------------------------------- the bed

    /// <summary>h1's WAN veth ends in a router that masquerades it (conntrack, with per-entry counters) instead of on the WAN bridge.</summary>
    private static void BehindANat(OverlayBed o)
    {
        o.BehindARouter(1, NatFirst, NatSecond);
        Nat(o, udp: "masquerade");
        // After the ruleset, which brings conntrack into the namespace; before any flow, as it
        // applies to entries made from then on.
        o.Bed.Run("nat", "sysctl -qw net.netfilter.nf_conntrack_acct=1");
    }

    /// <summary>
    /// The router's NAT in one nftables transaction: TCP masqueraded (from 192.0.2.50), UDP as
    /// <paramref name="udp"/> says. A new rule applies to connections conntrack has not seen yet.
    /// </summary>
    private static void Nat(OverlayBed o, string udp)
    {
        var ruleset = $$"""
            table ip vnat
            delete table ip vnat
            table ip vnat {
              chain outbound {
                type nat hook postrouting priority srcnat; policy accept;
                oifname "wan0" meta l4proto tcp masquerade
                oifname "wan0" meta l4proto udp {{udp}}
              }
            }
            """;
        var file = Path.Combine(o.Bed.LogDirectory, $"nat-{udp.Split(' ')[0]}.nft");
        File.WriteAllText(file, ruleset);
        o.Bed.Run("nat", $"nft -f {Sh.Quote(file)}");
    }

    private static void WaitStreamsUp(OverlayBed o) =>
        Wait.Until(() => o.Links("h1").SingleOrDefault(l => l.Peer == "proxy") is { StreamsUp: Streams }
            && o.Links("proxy").SingleOrDefault(l => l.Peer == "h1") is { StreamsUp: Streams }, TimeSpan.FromSeconds(20),
            $"{Streams} streams up at both ends");

    private static LinkStatus ProxyLink(OverlayBed o) => o.Links("proxy").Single(l => l.Peer == "h1");

    private static LinkStatus HostLink(OverlayBed o) => o.Links("h1").Single(l => l.Peer == "proxy");

    /// <summary>The ports of the UDP sockets bound to <paramref name="address"/> in <paramref name="ns"/> other than the daemon's: its streams' own.</summary>
    private static List<int> StreamSocketPorts(OverlayBed o, string ns, string address) =>
        [.. o.Bed.Run(ns, "ss -uanpH").Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[3])
            .Where(local => local.StartsWith(address + ":", StringComparison.Ordinal))
            .Select(local => int.Parse(local[(address.Length + 1)..], CultureInfo.InvariantCulture))
            .Where(port => port != LinkPort)
            .Order()];

    /// <summary>Datagrams counted by the Proxy's firewall rule of that comment.</summary>
    private static long Counted(OverlayBed o, string rule) => o.NftPackets("proxy", "inet fw input", rule);

    // ---------------------------------------------------------------- conntrack

    /// <summary>A UDP conntrack entry: the original direction (inside to outside) and the address and port the NAT mapped it to, with packets each way.</summary>
    private sealed record Flow(string Source, int SourcePort, string Destination, int DestinationPort, long Packets,
        string MappedAddress, int MappedPort, long ReplyPackets)
    {
        public override string ToString() =>
            $"{Source}:{SourcePort} -> {Destination}:{DestinationPort} as {MappedAddress}:{MappedPort}, {Packets} out, {ReplyPackets} back";
    }

    [GeneratedRegex(@"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) packets=(\d+) bytes=\d+ .*?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) packets=(\d+)")]
    private static partial Regex ConntrackPattern();

    /// <summary>The router's UDP conntrack entries from h1 to the Proxy.</summary>
    private static List<Flow> Conntrack(OverlayBed o)
    {
        var flows = new List<Flow>();
        foreach (var line in o.Bed.Run("nat", $"conntrack -L -p udp -s {HostInside} -d {ProxyIp} 2>/dev/null").Split('\n'))
        {
            var m = ConntrackPattern().Match(line);
            if (!m.Success)
                continue;
            long L(int g) => long.Parse(m.Groups[g].Value, CultureInfo.InvariantCulture);
            flows.Add(new Flow(m.Groups[1].Value, (int)L(3), m.Groups[2].Value, (int)L(4), L(5), m.Groups[7].Value, (int)L(9), L(10)));
        }
        return flows;
    }

    /// <summary>
    /// The mappings that carry the link, asserted one per stream: h1's daemon port to the Proxy's,
    /// and each of h1's stream sockets to a distinct one of the Proxy's, all through
    /// <paramref name="nat"/> and with traffic both ways (at least the echo rounds).
    /// </summary>
    private List<Flow> SocketToSocket(List<Flow> flows, List<int> hostPorts, List<int> proxyPorts, string nat)
    {
        var mapped = Mapped(flows, hostPorts, proxyPorts, nat);
        output.WriteLine($"mappings through {nat}:\n" + string.Join('\n', mapped));
        Assert.Single(mapped, f => f.SourcePort == LinkPort);
        Assert.Equal(hostPorts, mapped.Where(f => f.SourcePort != LinkPort).Select(f => f.SourcePort).Order());
        Assert.Equal(proxyPorts, mapped.Where(f => f.SourcePort != LinkPort).Select(f => f.DestinationPort).Order());
        Assert.Equal(mapped.Count, mapped.Select(f => (f.MappedAddress, f.MappedPort)).Distinct().Count());
        Assert.All(mapped, f => Assert.True(f.Packets >= EchoRounds && f.ReplyPackets >= EchoRounds, $"a mapping carried little: {f}"));
        return mapped;
    }

    /// <summary>The entries through <paramref name="nat"/> from h1's daemon port to the Proxy's, and from h1's stream sockets to the Proxy's.</summary>
    private static List<Flow> Mapped(List<Flow> flows, List<int> hostPorts, List<int> proxyPorts, string nat) =>
        [.. flows.Where(f => f.MappedAddress == nat &&
            ((f.SourcePort == LinkPort && f.DestinationPort == LinkPort) || (hostPorts.Contains(f.SourcePort) && proxyPorts.Contains(f.DestinationPort))))];

    /// <summary>What h1's stream sockets sent to the Proxy's daemon port (their first probes), per entry.</summary>
    private static string ProbesToDaemonPort(OverlayBed o, List<int> hostPorts) =>
        string.Join(",", Conntrack(o).Where(f => hostPorts.Contains(f.SourcePort) && f.DestinationPort == LinkPort)
            .OrderBy(f => f.SourcePort).Select(f => $"{f.SourcePort}:{f.Packets}"));

    // ---------------------------------------------------------------- traffic

    /// <summary>
    /// One UDP flow per stream, vm1 to the LAN host and back (an echo, <see cref="EchoRounds"/>
    /// rounds): each stream's frame counters grow by the echoes, sent and received, at both ends.
    /// </summary>
    private void EveryStreamCarries(OverlayBed o, string when)
    {
        var failure = StreamsCarry(o, when, EchoRounds, lost: 2);
        Assert.True(failure is null, failure);
    }

    /// <summary>
    /// The echo of <see cref="EveryStreamCarries"/>, <paramref name="rounds"/> rounds; null when
    /// every stream carried its flow both ways at both ends with at most <paramref name="lost"/>
    /// echoes lost each (the first loss beyond that ends the run), else what went wrong.
    /// </summary>
    private string? StreamsCarry(OverlayBed o, string when, int rounds, int lost)
    {
        var ports = new int[Streams];
        for (var stream = 0; stream < Streams; stream++)
            ports[stream] = PortOf(stream);
        var host = HostLink(o);
        var proxy = ProxyLink(o);
        using var lan = Bound(o, "lanhost", OverlayBed.LanHostIp, EchoPort);
        var vms = new Socket[Streams];
        var echoes = new int[Streams];
        try
        {
            for (var stream = 0; stream < Streams; stream++)
                vms[stream] = Bound(o, "vm1", OverlayBed.VmIp(1), ports[stream]);
            var to = new IPEndPoint(IPAddress.Parse(OverlayBed.LanHostIp), EchoPort);
            var buffer = new byte[256];
            for (var round = 0; round < rounds; round++)
            {
                for (var stream = 0; stream < Streams; stream++)
                {
                    if (round + 1 - echoes[stream] > lost + 1)
                        return $"{when}: stream {stream}'s flow lost more than {lost} echoes of {round}";
                    vms[stream].SendTo(buffer.AsSpan(0, 200), to);
                    // A datagram lost on the way is not waited for past a second; the count shows it.
                    if (!lan.Poll(TimeSpan.FromSeconds(1), SelectMode.SelectRead))
                        continue;
                    EndPoint from = new IPEndPoint(IPAddress.Any, 0);
                    var n = lan.ReceiveFrom(buffer, ref from);
                    lan.SendTo(buffer.AsSpan(0, n), from);
                    var back = Array.IndexOf(ports, ((IPEndPoint)from).Port);
                    if (back >= 0 && vms[back].Poll(TimeSpan.FromSeconds(1), SelectMode.SelectRead))
                    {
                        vms[back].Receive(buffer);
                        echoes[back]++;
                    }
                }
            }
        }
        finally
        {
            foreach (var s in vms)
                s?.Dispose();
        }
        var hostAfter = HostLink(o);
        var proxyAfter = ProxyLink(o);
        var grew = Enumerable.Range(0, Streams).Select(i =>
            $"stream {i} (port {ports[i]}): {echoes[i]} echoes; h1 tx +{hostAfter.StreamTxFrames![i] - host.StreamTxFrames![i]} rx +{hostAfter.StreamRxFrames![i] - host.StreamRxFrames![i]}, " +
            $"the Proxy rx +{proxyAfter.StreamRxFrames![i] - proxy.StreamRxFrames![i]} tx +{proxyAfter.StreamTxFrames![i] - proxy.StreamTxFrames![i]}");
        output.WriteLine($"{when}:\n" + string.Join('\n', grew));
        for (var i = 0; i < Streams; i++)
        {
            if (echoes[i] < rounds - lost)
                return $"{when}: stream {i}'s flow lost {rounds - echoes[i]} of {rounds} echoes";
            if (hostAfter.StreamTxFrames![i] - host.StreamTxFrames![i] < echoes[i])
                return $"{when}: h1 did not send stream {i}'s flow on stream {i}";
            if (hostAfter.StreamRxFrames![i] - host.StreamRxFrames![i] < echoes[i])
                return $"{when}: h1 did not receive stream {i}'s echoes on stream {i}";
            if (proxyAfter.StreamRxFrames![i] - proxy.StreamRxFrames![i] < echoes[i])
                return $"{when}: the Proxy did not receive stream {i}'s flow on stream {i}";
            if (proxyAfter.StreamTxFrames![i] - proxy.StreamTxFrames![i] < echoes[i])
                return $"{when}: the Proxy did not send stream {i}'s echoes on stream {i}";
        }
        return null;
    }

    /// <summary>The first source port from 20000 whose UDP flow vm1 → LAN host:<see cref="EchoPort"/> hashes to <paramref name="stream"/>.</summary>
    private static int PortOf(int stream)
    {
        for (var port = 20000; port < 21000; port++)
        {
            if (StreamOf(ProtocolType.Udp, port, EchoPort) == stream)
                return port;
        }
        throw new InvalidOperationException($"no source port from 20000 to 20999 hashes to stream {stream}");
    }

    /// <summary>
    /// The first client port from 30000 such that iperf3 -P 4 --cport (its flows from that port and
    /// the 3 next, TCP to the LAN host's <paramref name="serverPort"/>) puts one flow on each stream.
    /// </summary>
    private static int IperfClientPort(int serverPort)
    {
        Span<bool> taken = stackalloc bool[Streams];
        for (var first = 30000; first < 31000; first++)
        {
            taken.Clear();
            var each = true;
            for (var i = 0; i < Streams && each; i++)
            {
                var stream = StreamOf(ProtocolType.Tcp, first + i, serverPort);
                each = !taken[stream];
                taken[stream] = true;
            }
            if (each)
                return first;
        }
        throw new InvalidOperationException($"no 4 client ports from 30000 to 31003 take one stream each to port {serverPort}");
    }

    /// <summary>The stream that carries vm1's flow to the LAN host: the link's own <see cref="FlowHash"/> of such a frame's headers.</summary>
    private static int StreamOf(ProtocolType protocol, int sourcePort, int destinationPort)
    {
        var frame = new byte[14 + 20 + 8];
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), 0x0800);
        frame[14] = 0x45;
        frame[23] = (byte)protocol;
        IPAddress.Parse(OverlayBed.VmIp(1)).GetAddressBytes().CopyTo(frame, 26);
        IPAddress.Parse(OverlayBed.LanHostIp).GetAddressBytes().CopyTo(frame, 30);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(34), (ushort)sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(36), (ushort)destinationPort);
        return FlowHash.StreamOf(frame, Streams);
    }

    private static Socket Bound(OverlayBed o, string ns, string address, int port) =>
        Netns.Run(o.Bed.Prefix + "-" + ns, () =>
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            s.Bind(new IPEndPoint(IPAddress.Parse(address), port));
            return s;
        }, $"a UDP socket at {address}:{port} in {ns}");

    /// <summary>
    /// iperf3 -P 4 TCP from vm1 to the LAN host, its 4 flows from client ports that the flow hash
    /// puts on 4 different streams: every flow completes, and every stream carries one (frames
    /// h1 sent, and the Proxy received, on each during the run).
    /// </summary>
    private void EveryStreamCarriesAnIperfFlow(OverlayBed o, int serverPort)
    {
        var host = HostLink(o);
        var proxy = ProxyLink(o);
        var client = IperfClientPort(serverPort);
        var iperf = o.Iperf("vm1", "lanhost", OverlayBed.LanHostIp, serverPort, "-P", "4", "-t", "3",
            "--cport", client.ToString(CultureInfo.InvariantCulture));
        foreach (var s in iperf["end"]!["streams"]!.AsArray())
            Assert.True(s!["receiver"]!["bytes"]!.GetValue<long>() > 0, "an iperf3 flow carried nothing");
        var sent = HostLink(o).StreamTxFrames!.Select((n, i) => n - host.StreamTxFrames![i]).ToArray();
        var received = ProxyLink(o).StreamRxFrames!.Select((n, i) => n - proxy.StreamRxFrames![i]).ToArray();
        output.WriteLine($"iperf3 -P 4 --cport {client}: {iperf["end"]!["sum_received"]!["bytes"]} bytes; frames per stream " +
            $"sent by h1 {string.Join("/", sent)}, received by the Proxy {string.Join("/", received)}");
        Assert.True(sent.All(n => n > 1000), $"a stream carried no iperf3 flow from h1: {string.Join("/", sent)}");
        Assert.True(received.All(n => n > 1000), $"a stream carried no iperf3 flow to the Proxy: {string.Join("/", received)}");
    }
}
