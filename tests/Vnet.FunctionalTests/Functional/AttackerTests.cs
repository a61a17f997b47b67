using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Native;
using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// Issue 8's reproductions, replayed against encrypted links. An attacker, <c>eve</c> (192.0.2.66),
/// sits on the WAN bridge, which floods every frame (ageing time 0), so eve sees every datagram
/// between h1 and the Proxy, as a machine on the path would. Eve sniffs one datagram of h1's UDP
/// star link to learn the session id and sends spoofed datagrams as h1 (a raw socket, IP header
/// built here). Before encryption each attack worked: a KEEPALIVE of 200 bytes stopped the Proxy, a
/// DATA datagram put a frame from a made-up MAC on the home LAN, a replayed probe redirected a
/// session. Now each is refused and counted, the Proxy stays up, h1 keeps the same session and its
/// VM still reaches the LAN.
/// </summary>
[Collection("Netns")]
public sealed class AttackerTests(ITestOutputHelper output)
{
    private const string EveIp = "192.0.2.66";
    private const string ProxyIp = "192.0.2.1";
    private const int LinkPort = 5500;

    /// <summary>The made-up MAC of eve's forged frames: nothing on the LAN may ever see it.</summary>
    private const string ForgedMac = "02:66:66:66:66:66";

    private static readonly IPEndPoint Proxy = new(IPAddress.Parse(ProxyIp), LinkPort);
    private static readonly IPEndPoint H1 = new(IPAddress.Parse(OverlayBed.HostIp(1)), LinkPort);

    [Fact]
    public void UdpKeepAlive_SpoofedAsTheHostWithTheSniffedSession_RefusedCountedAndTheProxyStaysUp()
    {
        UnderAttackOnAUdpStar((o, eve) =>
        {
            var keepAlive = eve.SniffKeepAlive();
            output.WriteLine($"eve sniffed {keepAlive}");
            var before = StarOf(o);
            var rejected = Refused(o);

            // The issue's datagram: a plaintext KEEPALIVE of 200 bytes, which an 80-byte stack buffer
            // once echoed (and the Proxy exited). Then every length up to 300 bytes, plaintext and
            // claiming to be sealed (so that it reaches the AEAD), the largest that fits one frame,
            // and headers that claim 70,000 bytes over a short body.
            var attack = new List<byte[]> { Message(MessageType.KeepAlive, MessageFlags.None, keepAlive, new byte[200]) };
            foreach (var flags in new[] { MessageFlags.None, MessageFlags.Encrypted })
            {
                for (var length = 0; length <= 300; length++)
                    attack.Add(Message(MessageType.KeepAlive, flags, keepAlive, Garbage(length)));
                attack.Add(Message(MessageType.KeepAlive, flags, keepAlive, Garbage(1500 - 20 - 8 - Wire.HeaderSize)));
                attack.Add(Message(MessageType.KeepAlive, flags, keepAlive, Garbage(200), claimedLength: 70_000));
            }
            // In chunks, each counted before the next: a burst could overflow the Proxy's socket
            // buffer on a busy machine, and a datagram the kernel dropped proves nothing.
            var sent = 0;
            foreach (var chunk in attack.Chunk(50))
            {
                foreach (var datagram in chunk)
                    eve.Spoof(H1, Proxy, datagram);
                sent += chunk.Length;
                Wait.Until(() => Refused(o) - rejected >= sent, TimeSpan.FromSeconds(10),
                    $"the Proxy to count {sent} refused datagrams");
            }
            output.WriteLine($"sent {sent} spoofed keep-alives; the Proxy refused {Refused(o) - rejected}");
            AssertUnharmed(o, before);
        });
    }

    [Fact]
    public void UdpData_SpoofedBroadcastFromAMadeUpMac_NeverReachesTheLan()
    {
        UnderAttackOnAUdpStar((o, eve) =>
        {
            var sniffed = eve.SniffKeepAlive();
            output.WriteLine($"eve sniffed {sniffed}");
            var before = StarOf(o);
            var rejected = Refused(o);

            // The LAN machine watches every frame it did not send: only vm1's may come (they show
            // that the capture works); a forged frame, or one that is garbled, must not.
            var lan = o.Bed.Start("lanhost", "tcpdump-lan", "tcpdump", "-i", "eth0", "-n", "-e", "-l",
                $"not ether src {OverlayBed.LanHostMac}");
            lan.WaitForOutput("listening on", TimeSpan.FromSeconds(10));

            // The issue's datagram (a plaintext frame), then the frame between a made-up counter and
            // tag: with the next counter (fresh, so only the tag refuses it), with counters far ahead
            // (a forgery that moved the replay window would shut h1's own datagrams out), and under
            // the next key epoch (which the Proxy derives to try).
            var frame = ForgedBroadcast();
            var counter = sniffed.Counter;
            var forged = new List<byte[]>
            {
                Message(MessageType.Data, MessageFlags.None, sniffed, frame),
                Message(MessageType.Data, MessageFlags.Encrypted, sniffed, Sealed(counter + 1, frame)),
                Message(MessageType.Data, MessageFlags.Encrypted, sniffed, Sealed(counter + 1_000_000, frame)),
                Message(MessageType.Data, MessageFlags.Encrypted, sniffed, Sealed(ulong.MaxValue, frame)),
                Message(MessageType.Data, MessageFlags.Encrypted, sniffed with { Epoch = (byte)(sniffed.Epoch + 1) }, Sealed(0, frame)),
            };
            for (var round = 0; round < 3; round++)
            {
                foreach (var datagram in forged)
                    eve.Spoof(H1, Proxy, datagram);
            }
            var sent = 3 * forged.Count;
            // tcpdump -e prints each frame as "time SRC > DST, ...".
            List<string> Foreign() => [.. lan.Lines.Where(l => l.Contains(" > ", StringComparison.Ordinal) && !l.Contains(OverlayBed.VmMac(1) + " >", StringComparison.Ordinal))];
            Wait.Until(() => Refused(o) - rejected >= sent || Foreign().Count > 0, TimeSpan.FromSeconds(10),
                $"the Proxy to refuse {sent} datagrams (or a frame to reach the LAN)");
            Assert.True(Foreign().Count == 0, $"frames not from vm1 reached the LAN:\n{string.Join('\n', Foreign())}");
            Assert.True(Refused(o) - rejected >= sent, "the Proxy did not count the datagrams it refused");

            // vm1's pings cross the link while the capture still runs: it would have seen a forged frame.
            AssertUnharmed(o, before);
            lan.Stop(TimeSpan.FromSeconds(3));
            var fromVm = lan.Lines.Count(l => l.Contains(OverlayBed.VmMac(1) + " >", StringComparison.Ordinal));
            output.WriteLine($"the LAN saw {fromVm} frames from vm1 and {Foreign().Count} others");
            Assert.True(fromVm > 0, "the LAN capture saw none of vm1's frames: it proves nothing");
            Assert.True(Foreign().Count == 0, $"frames not from vm1 reached the LAN:\n{string.Join('\n', Foreign())}");
            Assert.DoesNotContain(o.Vms("proxy"), v => v.Mac.ToString() == ForgedMac);
        });
    }

    [Fact]
    public void UdpKeepAlive_ReplayedFromAnotherAddressNowOrLater_RefusedAndTheSessionStaysWithTheHost()
    {
        UnderAttackOnAUdpStar((o, eve) =>
        {
            // Where the Proxy would send h1's traffic if a replay moved the session: eve's own port.
            using var trap = eve.Listen(new IPEndPoint(IPAddress.Parse(EveIp), LinkPort));
            using var sniffer = eve.OpenSniffer();
            var captured = sniffer.Datagram((h, _) => h.Type == MessageType.KeepAlive, "a KEEPALIVE of h1's star link");
            output.WriteLine($"eve sniffed {captured}");
            var before = StarOf(o);
            var rejected = Refused(o);

            // A genuine KEEPALIVE, byte for byte, from eve's address and from h1's: had one been taken
            // from eve's, the Proxy would answer there at once (and send h1's frames after it).
            // Replayed at once, and again once h1 has sent newer datagrams, as whoever recorded it
            // would replay it later (two, so that the Proxy surely took the first before the replay).
            void Replay()
            {
                trap.SendTo(captured.Bytes, Proxy);
                eve.Spoof(H1, Proxy, captured.Bytes);
            }
            Replay();
            WaitForNewer(sniffer, WaitForNewer(sniffer, captured));
            Replay();
            Wait.Until(() => trap.Available > 0 || Refused(o) - rejected >= 4, TimeSpan.FromSeconds(10),
                "the Proxy to refuse 4 replays (or to answer one at eve's address)");
            Assert.True(trap.Available == 0, $"the Proxy sent {trap.Available} bytes to eve's address: a replay from there moved h1's session");
            Assert.True(Refused(o) - rejected >= 4, "the Proxy did not count the replays it refused");

            AssertUnharmed(o, before);
            // Checked again after seconds of keep-alives and pings, which the Proxy sent to wherever it thought h1 was.
            Assert.True(trap.Available == 0, $"the Proxy sent {trap.Available} bytes to eve's address after a replay");
        });
    }

    [Fact]
    public void UdpData_ReplayedAfterNewerDatagrams_RefusedAndNoFrameReachesTheLanTwice()
    {
        UnderAttackOnAUdpStar((o, eve) =>
        {
            var lan = o.Bed.Start("lanhost", "tcpdump-lan", "tcpdump", "-i", "eth0", "-n", "-e", "-l",
                $"icmp[icmptype] == icmp-echo and ether src {OverlayBed.VmMac(1)}");
            lan.WaitForOutput("listening on", TimeSpan.FromSeconds(10));
            int EchoRequests() => lan.Lines.Count(l => l.Contains("ICMP echo request", StringComparison.Ordinal));

            // One echo request of 1000 bytes from vm1: the one large DATA datagram h1 sends the Proxy.
            using var sniffer = eve.OpenSniffer();
            o.Bed.Run("vm1", $"ping -n -q -c 1 -s 1000 -W 5 {OverlayBed.LanHostIp}", timeoutSeconds: 15);
            var data = sniffer.Datagram((h, s) => h.Type == MessageType.Data && s.Bytes.Length > 1000, "h1's DATA datagram with vm1's echo request");
            output.WriteLine($"eve sniffed {data}");
            WaitForNewer(sniffer, WaitForNewer(sniffer, data));
            Wait.Until(() => EchoRequests() >= 1, TimeSpan.FromSeconds(5), "the LAN capture to show vm1's echo request");
            var before = StarOf(o);
            var rejected = Refused(o);

            // Sealed and genuine, replayed after newer ones: a window that forgot it would hand the
            // frame to the LAN again.
            for (var i = 0; i < 3; i++)
            {
                eve.Spoof(H1, Proxy, data.Bytes);
                eve.Spoof(new IPEndPoint(IPAddress.Parse(EveIp), LinkPort), Proxy, data.Bytes);
            }
            Wait.Until(() => EchoRequests() > 1 || Refused(o) - rejected >= 6, TimeSpan.FromSeconds(10),
                "the Proxy to refuse 6 replays (or the LAN to see the frame again)");
            lan.Stop(TimeSpan.FromSeconds(3));
            Assert.True(EchoRequests() == 1, $"vm1's one echo request reached the LAN {EchoRequests()} times:\n{string.Join('\n', lan.Lines)}");
            Assert.True(Refused(o) - rejected >= 6, "the Proxy did not count the replays it refused");
            AssertUnharmed(o, before);
        });
    }

    [Fact]
    public void TcpHandshake_GarbageOrReplayedInitFromAStranger_ClosedAndTheStarKeepsItsSession()
    {
        using var o = new OverlayBed(output, hosts: 1);
        try
        {
            using var eve = Eve.Join(o);
            o.StartProxy();
            // Opened before h1 dials, so that the capture holds h1's HandshakeInit.
            using var sniffer = eve.OpenSniffer();
            o.StartHost(1, transport: "udp");
            o.WaitStar(1);
            var init = SniffInit(sniffer);
            output.WriteLine($"eve captured h1's HandshakeInit ({init.Length} bytes)");
            o.AddVm(1, 1);
            AssertVmReachesTheLan(o);
            var before = StarOf(o);
            var proxy = o.Daemon("proxy");

            // A stranger's INIT: the right header, random bytes where mac1 and the keys go.
            AssertClosedWithoutAWord(eve.Connect(Proxy), BadInit(), "a garbage INIT");
            proxy.WaitForOutput($"Rejected peer {EveIp}:", TimeSpan.FromSeconds(5));
            Assert.Contains(proxy.Lines, l => l.Contains($"Rejected peer {EveIp}:", StringComparison.Ordinal) && l.Contains("bad mac1", StringComparison.Ordinal));

            // The Proxy logs at most one refusal a second; the replay's must not be swallowed.
            Thread.Sleep(1100);
            // h1's own INIT, replayed from eve: admitted key, stale timestamp. It gets a REJECT (what
            // a host whose clock jumped back needs to hear, and nothing a replayer can use), never a
            // RESPONSE, and the connection is closed.
            AssertRejectedOnly(eve.Connect(Proxy), init, "h1's replayed INIT");
            Wait.Until(() => proxy.Lines.Any(l => l.Contains($"Rejected peer {EveIp}:", StringComparison.Ordinal) && l.Contains("a replay", StringComparison.Ordinal)),
                TimeSpan.FromSeconds(5), "the Proxy to log the replayed INIT");

            AssertUnharmed(o, before);
        }
        catch
        {
            o.DumpAll();
            throw;
        }
    }

    /// <summary>
    /// Issue 8's handshake flood: eve, from its one address and without the Proxy's public key,
    /// holds hundreds of connections idle, sends half INITs and INITs with a bad mac1, and keeps on
    /// while h1's star link is cut (its TCP connection destroyed with ss -K). A connection waits for
    /// its INIT without a handshake slot, so h1's re-dial gets in at once: the star is back within
    /// 1 s of the cut. Every connection of eve's is closed and counted, none gets a word.
    /// </summary>
    [Fact]
    public void TcpHandshakeFlood_IdlePartialAndBadInitsFromOneAddress_AStarCutDuringItIsBackWithin1s()
    {
        using var o = new OverlayBed(output, hosts: 1);
        var flood = new List<Socket>();
        try
        {
            using var eve = Eve.Join(o);
            o.StartAll();
            o.AddVm(1, 1);
            AssertVmReachesTheLan(o);
            var proxy = o.Daemon("proxy");
            var before = o.Status("proxy");
            var sessions = o.Links("h1").Single(l => l.Peer == "proxy").Sessions;
            var clock = Stopwatch.StartNew();

            // Hundreds held idle and half INITs first (more than the Proxy keeps from one address).
            var made = 0;
            void Flood(int count)
            {
                for (var i = 0; i < count; i++, made++)
                {
                    var socket = eve.Connect(Proxy);
                    switch (made % 3)
                    {
                        case 0:
                            flood.Add(socket);
                            break;
                        case 1:
                            socket.Send(PartialInit());
                            flood.Add(socket);
                            break;
                        default:
                            socket.Send(BadInit());
                            socket.Dispose();
                            break;
                    }
                }
            }
            Flood(450);
            output.WriteLine($"eve made {made} connections in {clock.ElapsedMilliseconds} ms");

            // The flood goes on while h1's star link is cut.
            using var stop = new CancellationTokenSource();
            var during = new Thread(() =>
            {
                while (!stop.IsCancellationRequested)
                    Flood(10);
            }) { IsBackground = true };
            during.Start();
            var cut = Stopwatch.StartNew();
            o.Bed.Run("h1", $"ss -K -t dst {ProxyIp} dport = {LinkPort}");
            var ss = cut.Elapsed;
            TimeSpan? polled = null;
            while (cut.Elapsed < TimeSpan.FromSeconds(10))
            {
                if (o.Links("h1").Single(l => l.Peer == "proxy") is { Up: true } star && star.Sessions > sessions)
                {
                    polled = cut.Elapsed;
                    break;
                }
                Thread.Sleep(10);
            }
            stop.Cancel();
            Assert.True(during.Join(TimeSpan.FromSeconds(10)), "eve's flood did not stop");
            Assert.True(polled is not null, "h1's star link did not come back within 10 s of the cut");
            // The cut as the Proxy saw it (h1's reset, within microseconds of ss -K) to the new
            // session, both on the Proxy's clock; the poll's time also holds starting ss (a process).
            var down = LoggedAt(proxy, "Link h1 down", TimeSpan.Zero);
            var back = LoggedAt(proxy, "Link h1 up", down) - down;
            output.WriteLine($"h1's star back {back.TotalMilliseconds:0} ms after the cut in the Proxy's log; polled: up {polled!.Value.TotalMilliseconds:0} ms " +
                $"after starting ss -K, which took {ss.TotalMilliseconds:0} ms; eve made {made} connections in {clock.ElapsedMilliseconds} ms");
            Assert.True(back <= TimeSpan.FromSeconds(1), $"h1's star link came back {back.TotalMilliseconds:0} ms after the cut, during the flood (bound 1000 ms)");

            // Every connection of eve's is closed by the Proxy (a bad INIT at once, the rest at the
            // INIT deadline or to make room) and counted once; none got a handshake slot.
            long Closed(DaemonStatus s) => s.Security!.InitsRefused + s.Security.ConnectionsWithoutInit;
            Wait.Until(() => Closed(o.Status("proxy")) - Closed(before) >= made, InitWaitList.Deadline + TimeSpan.FromSeconds(5),
                $"the Proxy to close and count eve's {made} connections");
            var after = o.Status("proxy");
            output.WriteLine(o.Cli("proxy", "status").Split('\n').First(l => l.StartsWith("handshakes", StringComparison.Ordinal)));
            Assert.Equal(made, Closed(after) - Closed(before));
            Assert.InRange(after.Security!.InitsRefused - before.Security!.InitsRefused, 1, made);
            Assert.Equal(before.Security!.HandshakesRateLimited, after.Security!.HandshakesRateLimited);
            Assert.Equal(0, flood.Count(s => Answered(s)));
            // Counted, not written out: at most one line a second about eve.
            var lines = proxy.Lines.Count(l => l.Contains($"Rejected peer {EveIp}", StringComparison.Ordinal));
            Assert.InRange(lines, 1, (int)clock.Elapsed.TotalSeconds + 1);

            Assert.False(proxy.HasExited, $"the Proxy exited ({proxy.ExitCode})");
            Assert.True(o.Bed.Ping("vm1", OverlayBed.LanHostIp, count: 3, timeoutSeconds: 10), "vm1 lost the LAN after the flood");
        }
        catch
        {
            o.DumpAll();
            throw;
        }
        finally
        {
            foreach (var socket in flood)
                socket.Dispose();
        }
    }

    /// <summary>
    /// A Proxy and h1 on a UDP star link, eve on the WAN, vm1 already reaching the LAN: then
    /// <paramref name="attack"/>. Every daemon's log is dumped when it fails.
    /// </summary>
    private void UnderAttackOnAUdpStar(Action<OverlayBed, Eve> attack)
    {
        using var o = new OverlayBed(output, hosts: 1);
        try
        {
            using var eve = Eve.Join(o);
            o.StartAll(transport: "udp");
            o.AddVm(1, 1);
            AssertVmReachesTheLan(o);
            attack(o, eve);
        }
        catch
        {
            o.DumpAll();
            throw;
        }
    }

    // ---------------------------------------------------------------- assertions

    /// <summary>Datagrams the Proxy refused so far; a Proxy that no longer answers fails the test saying whether it exited.</summary>
    private static long Refused(OverlayBed o)
    {
        try
        {
            return o.Status("proxy").UdpRejected;
        }
        catch (Exception e) when (e is IOException or SocketException)
        {
            var proxy = o.Daemon("proxy");
            proxy.WaitForExit(TimeSpan.FromSeconds(5));
            throw new InvalidOperationException(proxy.HasExited
                ? $"the Proxy exited ({proxy.ExitCode}) during the attack"
                : $"the Proxy stopped answering its control socket during the attack ({e.Message})", e);
        }
    }

    /// <summary>What identifies h1's star session at the Proxy and at h1: a new session would change it.</summary>
    private sealed record StarState(long ProxySessions, DateTimeOffset? ProxySince, long HostSessions, DateTimeOffset? HostSince);

    private static StarState StarOf(OverlayBed o)
    {
        var atProxy = o.Links("proxy").Single(l => l.Peer == "h1");
        var atHost = o.Links("h1").Single(l => l.Peer == "proxy");
        Assert.True(atProxy.Up && atHost.Up, "h1's star link is down before the attack");
        return new StarState(atProxy.Sessions, atProxy.Since, atHost.Sessions, atHost.Since);
    }

    /// <summary>
    /// Once the dead timer has passed (a session the attack broke, e.g. by shutting h1's datagrams
    /// out, would have been declared dead and made anew by then): both daemons run, vm1 still
    /// reaches the LAN, and h1's star link is the same session at both ends.
    /// </summary>
    private static void AssertUnharmed(OverlayBed o, StarState before)
    {
        // Waiting out the dead timer is the point: what did not happen is only shown by time.
        Thread.Sleep(LinkSession.DeadAfter + TimeSpan.FromMilliseconds(500));
        Assert.False(o.Daemon("proxy").HasExited, $"the Proxy exited ({o.Daemon("proxy").ExitCode})");
        Assert.False(o.Daemon("h1").HasExited, $"h1 exited ({o.Daemon("h1").ExitCode})");
        Assert.True(o.Bed.Ping("vm1", OverlayBed.LanHostIp, count: 3, timeoutSeconds: 10), "vm1 lost the LAN after the attack");
        Assert.Equal(before, StarOf(o));
    }

    /// <summary>When the daemon logged its first line containing <paramref name="text"/> at or after <paramref name="after"/> (its "HH:mm:ss.fff" prefix).</summary>
    private static TimeSpan LoggedAt(BackgroundProcess daemon, string text, TimeSpan after)
    {
        TimeSpan? found = null;
        Wait.Until(() =>
        {
            found = daemon.Lines
                .Where(l => l.Contains(text, StringComparison.Ordinal) && l.Length > 12)
                .Select(l => TimeSpan.TryParseExact(l[..12], @"hh\:mm\:ss\.fff", CultureInfo.InvariantCulture, out var at) ? at : (TimeSpan?)null)
                .FirstOrDefault(at => at >= after);
            return found is not null;
        }, TimeSpan.FromSeconds(5), $"the line '{text}' in {daemon.Name}'s log");
        return found!.Value;
    }

    /// <summary>Before the attack: the path works (the first pings also wait for the VM to be placed and ARP to settle).</summary>
    private static void AssertVmReachesTheLan(OverlayBed o) =>
        Wait.Until(() => o.Bed.Ping("vm1", OverlayBed.LanHostIp, count: 2, timeoutSeconds: 5), TimeSpan.FromSeconds(20),
            "vm1 to reach the LAN before the attack");

    /// <summary>Sends <paramref name="message"/> and expects the Proxy to close (or reset) the connection without sending a byte.</summary>
    private static void AssertClosedWithoutAWord(Socket socket, byte[] message, string what)
    {
        using (socket)
        {
            socket.Send(message);
            socket.ReceiveTimeout = 8000;
            var buffer = new byte[256];
            try
            {
                var n = socket.Receive(buffer);
                Assert.True(n == 0, $"the Proxy answered {what} with {n} bytes");
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
            }
        }
    }

    /// <summary>Sends <paramref name="message"/>; the only answer may be one REJECT, then the connection closes.</summary>
    private static void AssertRejectedOnly(Socket socket, byte[] message, string what)
    {
        using (socket)
        {
            socket.Send(message);
            socket.ReceiveTimeout = 8000;
            var answer = new List<byte>();
            var buffer = new byte[512];
            try
            {
                for (var reads = 0; reads < 64; reads++)
                {
                    var n = socket.Receive(buffer);
                    if (n == 0)
                        break;
                    answer.AddRange(buffer.AsSpan(0, n));
                }
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
            }
            var bytes = answer.ToArray();
            Assert.True(bytes.Length >= Wire.HeaderSize, $"the Proxy answered {what} with {bytes.Length} bytes, not a REJECT");
            Assert.Equal(WireError.None, Wire.TryRead(bytes, out var header));
            Assert.Equal(MessageType.Reject, header.Type);
            Assert.Equal(Wire.HeaderSize + header.PayloadLength, bytes.Length);
        }
    }

    // ---------------------------------------------------------------- messages

    /// <summary>An INIT of the right shape from a stranger: random where mac1 and the Noise message go.</summary>
    private static byte[] BadInit() =>
        Message(MessageType.HandshakeInit, MessageFlags.None, new Sniffed([], 0, 0, 0), Garbage(200));

    /// <summary>An INIT's header and its first 40 bytes, the rest never sent.</summary>
    private static byte[] PartialInit() => BadInit()[..(Wire.HeaderSize + 40)];

    /// <summary>Whether the Proxy sent anything on a connection of eve's (it must close them without a word).</summary>
    private static bool Answered(Socket socket)
    {
        try
        {
            return socket.Available > 0;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>A datagram of h1's star link as eve saw it: its bytes and the header fields eve reuses.</summary>
    private sealed record Sniffed(byte[] Bytes, uint Session, byte Epoch, ulong Counter)
    {
        public override string ToString() => $"{Bytes.Length} bytes, session {Session:x8}, epoch {Epoch}, counter {Counter}";

        public static Sniffed Of(byte[] message) => new(message, BinaryPrimitives.ReadUInt32BigEndian(message.AsSpan(8)), message[6],
            BinaryPrimitives.ReadUInt64BigEndian(message.AsSpan(Wire.HeaderSize)));
    }

    /// <summary>Waits for a datagram h1 sealed after <paramref name="earlier"/> (same key, higher counter) and returns it.</summary>
    private static Sniffed WaitForNewer(Sniffer sniffer, Sniffed earlier) =>
        sniffer.Datagram((_, s) => s.Session == earlier.Session && s.Epoch == earlier.Epoch && s.Counter > earlier.Counter,
            $"a datagram from h1 newer than counter {earlier.Counter}");

    /// <summary>A link message with the sniffed session and epoch; the header claims <paramref name="claimedLength"/> (the payload's length by default).</summary>
    private static byte[] Message(MessageType type, MessageFlags flags, Sniffed sniffed, ReadOnlySpan<byte> payload, int? claimedLength = null)
    {
        var message = new byte[Wire.HeaderSize + payload.Length];
        // A handshake message carries no epoch (the Proxy would refuse the header before anything else).
        var epoch = Wire.IsHandshake(type) ? (byte)0 : sniffed.Epoch;
        Wire.Write(message, new LinkHeader(type, flags, 8, sniffed.Session, claimedLength ?? payload.Length, epoch));
        payload.CopyTo(message.AsSpan(Wire.HeaderSize));
        return message;
    }

    /// <summary>A payload laid out as a sealed one (counter, "ciphertext", tag) around a plaintext frame and a made-up tag.</summary>
    private static byte[] Sealed(ulong counter, byte[] frame)
    {
        var payload = new byte[Wire.CounterSize + frame.Length + Wire.TagSize];
        BinaryPrimitives.WriteUInt64BigEndian(payload, counter);
        frame.CopyTo(payload.AsSpan(Wire.CounterSize));
        Random.Shared.NextBytes(payload.AsSpan(Wire.CounterSize + frame.Length));
        return payload;
    }

    /// <summary>An ARP request from <see cref="ForgedMac"/> to everyone: who has the LAN machine's address.</summary>
    private static byte[] ForgedBroadcast()
    {
        var frame = new byte[60];
        var forged = Convert.FromHexString(ForgedMac.Replace(":", "", StringComparison.Ordinal));
        frame.AsSpan(0, 6).Fill(0xff);
        forged.CopyTo(frame, 6);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), 0x0806);
        // Ethernet, IPv4, 6-byte MACs, 4-byte addresses, request.
        Convert.FromHexString("0001080006040001").CopyTo(frame, 14);
        forged.CopyTo(frame, 22);
        IPAddress.Parse("10.50.0.66").GetAddressBytes().CopyTo(frame, 28);
        IPAddress.Parse(OverlayBed.LanHostIp).GetAddressBytes().CopyTo(frame, 38);
        return frame;
    }

    private static byte[] Garbage(int length)
    {
        var bytes = new byte[length];
        Random.Shared.NextBytes(bytes);
        return bytes;
    }

    /// <summary>h1's HandshakeInit (header and payload), from the first TCP segment h1 sent to the Proxy's port with data.</summary>
    private static byte[] SniffInit(Sniffer sniffer)
    {
        var segment = sniffer.Next(p => p.Protocol == ProtocolType.Tcp && p.Source.Address.Equals(H1.Address) && p.Destination.Equals(Proxy)
            && p.Payload.Length > 0, TimeSpan.FromSeconds(10), "h1's HandshakeInit");
        var payload = segment.Payload;
        Assert.True(Wire.TryRead(payload, out var header) == WireError.None && header.Type == MessageType.HandshakeInit,
            "h1's first segment to the Proxy is not a HandshakeInit");
        Assert.True(payload.Length == Wire.HeaderSize + header.PayloadLength, $"h1's INIT came in a segment of {payload.Length} bytes, not whole");
        return payload;
    }

    // ---------------------------------------------------------------- the attacker

    /// <summary>
    /// The attacker's namespace on the WAN bridge. The bridge floods every frame (ageing time 0),
    /// so eve sees all WAN traffic; eve knows the Proxy's and h1's MACs beforehand, so it never
    /// sends an ARP request with an address it spoofs.
    /// </summary>
    private sealed class Eve : IDisposable
    {
        private readonly OverlayBed _o;
        private readonly Socket _raw;

        private Eve(OverlayBed o, Socket raw)
        {
            _o = o;
            _raw = raw;
        }

        private string NetnsName => _o.Bed.Prefix + "-eve";

        public static Eve Join(OverlayBed o)
        {
            var bed = o.Bed;
            bed.Namespace("eve");
            bed.Veth("eve", "wan0", "wan", "eve");
            bed.Attach("wan", "eve", "br0");
            bed.Address("eve", "wan0", EveIp + "/24");
            bed.Run("wan", "ip link set br0 type bridge ageing_time 0");
            bed.Run("eve", $"ip neigh replace {ProxyIp} lladdr {bed.Mac("proxy", "wan0")} dev wan0 nud permanent");
            bed.Run("eve", $"ip neigh replace {H1.Address} lladdr {bed.Mac("h1", "wan0")} dev wan0 nud permanent");
            Socket raw;
            using (Netns.Enter(bed.Prefix + "-eve"))
                raw = new Socket(AddressFamily.InterNetwork, SocketType.Raw, ProtocolType.Udp);
            // Eve writes the IPv4 header itself, with the source address it pretends to have.
            raw.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.HeaderIncluded, true);
            return new Eve(o, raw);
        }

        /// <summary>One UDP datagram from <paramref name="from"/> (any address) to <paramref name="to"/>, UDP checksum 0 (none).</summary>
        public void Spoof(IPEndPoint from, IPEndPoint to, ReadOnlySpan<byte> payload)
        {
            var packet = new byte[20 + 8 + payload.Length];
            packet[0] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(2), (ushort)packet.Length);
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(4), (ushort)Random.Shared.Next(1, 65536));
            packet[8] = 64;
            packet[9] = (byte)ProtocolType.Udp;
            from.Address.GetAddressBytes().CopyTo(packet, 12);
            to.Address.GetAddressBytes().CopyTo(packet, 16);
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(10), Checksum(packet.AsSpan(0, 20)));
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(20), (ushort)from.Port);
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(22), (ushort)to.Port);
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(24), (ushort)(8 + payload.Length));
            payload.CopyTo(packet.AsSpan(28));
            var sent = _raw.SendTo(packet, new IPEndPoint(to.Address, 0));
            Assert.Equal(packet.Length, sent);
        }

        /// <summary>A KEEPALIVE of h1's star link, seen on the wire (h1 sends one a second).</summary>
        public Sniffed SniffKeepAlive()
        {
            using var sniffer = OpenSniffer();
            return sniffer.Datagram((h, _) => h.Type == MessageType.KeepAlive, "a KEEPALIVE of h1's star link");
        }

        public Sniffer OpenSniffer()
        {
            using (Netns.Enter(NetnsName))
                return new Sniffer();
        }

        /// <summary>A UDP socket of eve's own, bound in its namespace.</summary>
        public Socket Listen(IPEndPoint at)
        {
            using var _ = Netns.Enter(NetnsName);
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            s.Bind(at);
            return s;
        }

        public Socket Connect(IPEndPoint to)
        {
            Socket s;
            using (Netns.Enter(NetnsName))
                s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            if (!s.ConnectAsync(to).Wait(TimeSpan.FromSeconds(5)))
            {
                s.Dispose();
                throw new TimeoutException($"eve could not connect to {to} within 5 s");
            }
            return s;
        }

        private static ushort Checksum(ReadOnlySpan<byte> header)
        {
            uint sum = 0;
            for (var i = 0; i < header.Length; i += 2)
                sum += BinaryPrimitives.ReadUInt16BigEndian(header[i..]);
            while (sum > 0xffff)
                sum = (sum & 0xffff) + (sum >> 16);
            return (ushort)~sum;
        }

        public void Dispose() => _raw.Dispose();
    }

    /// <summary>An IPv4 packet as the sniffer saw it, with its transport ports and payload.</summary>
    private sealed record Packet(ProtocolType Protocol, IPEndPoint Source, IPEndPoint Destination, byte[] Payload);

    /// <summary>
    /// Every IPv4 packet on eve's interface, including those flooded to it for other machines: an
    /// AF_PACKET socket (cooked: the IP packet without its Ethernet header), opened in eve's namespace.
    /// It also sees what eve sends; the callers match only what eve never sent (a newer counter).
    /// </summary>
    private sealed unsafe class Sniffer : IDisposable
    {
        private const int AfPacket = 17;
        private const int SockDgram = 2;
        private const int EthPIpNetworkOrder = 0x0008;
        private const int MsgDontWait = 0x40;

        private readonly int _fd;
        private readonly byte[] _buffer = new byte[65536];

        public Sniffer()
        {
            _fd = LibC.Socket(AfPacket, SockDgram | LibC.SOCK_CLOEXEC, EthPIpNetworkOrder);
            if (_fd < 0)
                throw new IOException($"AF_PACKET socket: {LibC.ErrorText(LibC.LastError)}");
        }

        /// <summary>The next datagram from h1 to the Proxy (its star link) that <paramref name="match"/> accepts.</summary>
        public Sniffed Datagram(Func<LinkHeader, Sniffed, bool> match, string what)
        {
            var packet = Next(p => p.Protocol == ProtocolType.Udp && p.Source.Equals(H1) && p.Destination.Equals(Proxy)
                && p.Payload.Length >= Wire.HeaderSize + Wire.CounterSize && Wire.TryRead(p.Payload, out var h) == WireError.None
                && match(h, Sniffed.Of(p.Payload)), TimeSpan.FromSeconds(10), what);
            return Sniffed.Of(packet.Payload);
        }

        /// <summary>The first packet that matches, waiting at most <paramref name="timeout"/>.</summary>
        public Packet Next(Func<Packet, bool> match, TimeSpan timeout, string what)
        {
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed < timeout)
            {
                var pfd = new LibC.PollFd { Fd = _fd, Events = LibC.POLLIN };
                LibC.Poll(&pfd, 1, (int)Math.Max(1, (timeout - clock.Elapsed).TotalMilliseconds));
                nint n;
                fixed (byte* b = _buffer)
                    n = LibC.Recv(_fd, b, (nuint)_buffer.Length, MsgDontWait);
                if (n > 0 && Parse(_buffer.AsSpan(0, (int)n)) is { } packet && match(packet))
                    return packet;
            }
            throw new TimeoutException($"eve saw no {what} within {timeout.TotalSeconds} s");
        }

        private static Packet? Parse(ReadOnlySpan<byte> ip)
        {
            if (ip.Length < 20 || ip[0] >> 4 != 4)
                return null;
            var headerLength = (ip[0] & 0x0f) * 4;
            var total = Math.Min(ip.Length, BinaryPrimitives.ReadUInt16BigEndian(ip[2..]));
            var protocol = (ProtocolType)ip[9];
            int dataAt;
            if (protocol == ProtocolType.Udp && total >= headerLength + 8)
                dataAt = headerLength + 8;
            else if (protocol == ProtocolType.Tcp && total >= headerLength + 20)
                dataAt = headerLength + ((ip[headerLength + 12] >> 4) * 4);
            else
                return null;
            if (dataAt > total)
                return null;
            var source = new IPEndPoint(new IPAddress(ip.Slice(12, 4)), BinaryPrimitives.ReadUInt16BigEndian(ip[headerLength..]));
            var destination = new IPEndPoint(new IPAddress(ip.Slice(16, 4)), BinaryPrimitives.ReadUInt16BigEndian(ip[(headerLength + 2)..]));
            return new Packet(protocol, source, destination, ip[dataAt..total].ToArray());
        }

        public void Dispose() => LibC.Close(_fd);
    }
}
