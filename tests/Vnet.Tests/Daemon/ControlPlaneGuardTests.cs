using System.Text.Json.Nodes;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Frames;
using Vnet.Links.Security;
using Vnet.Peers;

namespace Vnet.Tests.Daemon;

/// <summary>
/// Nothing from outside grows a daemon's control plane without bound, on real daemons over loopback:
/// a peer that sends faster than the control loop handles is cut off (the daemon and its other
/// peers carry on), the Proxy's requests at a host and remote CLI sessions run a bounded number at
/// once and the rest are answered "busy" at once; a peer's text cannot forge log lines, and lines
/// about its faults are rate-limited. A test holds a daemon's control loop with a gate to be
/// "slower than the peer" deterministically.
/// </summary>
public sealed class ControlPlaneGuardTests
{
    private static readonly TimeSpan Quick = TimeSpan.FromSeconds(10);

    /// <summary>Other items a held loop may collect meanwhile: link events, timers, the host's own digests.</summary>
    private const int LoopSlack = 64;

    [Theory]
    [InlineData(0)] // small messages: the count bound cuts
    [InlineData(64 << 10)] // 64 KiB each: the byte bound cuts long before the count does
    public async Task PeerFasterThanTheLoop_CutOff_BacklogBounded_DaemonAndOtherPeersUnaffected(int padding)
    {
        await using var net = await DaemonNet.StartAsync("h1", "h2");
        var proxy = net.Proxy;
        var h1 = net["h1"];
        var h2Session = proxy.Links.Find("h2")!.Session!;
        var h1Session = h1.Links.Find("proxy")!.Session!;
        // A well-formed message the Proxy takes from a host; the padding rides in a field a digest ignores.
        var digest = new PeerMessage
        {
            Type = PeerMessageType.Digest, Topic = MapTopic.Vms, Epoch = 1, Seq = 0, Count = 0, Hash = 0,
            Reason = padding > 0 ? new string('r', padding) : null,
        };
        var size = digest.Serialize().Length;
        var bound = (int)Math.Min(PeerChannel.MaxBacklogMessages, PeerChannel.MaxBacklogBytes / size);
        // Bursts of at most 1 MiB, and at most four times the bound in all: a regression fails the test, not the machine.
        var burst = Math.Clamp((1 << 20) / size, 1, 256);
        var sent = 0;

        using (HoldLoop(proxy))
        {
            await DaemonNet.Until(() =>
            {
                if (proxy.Peers.Floods > 0 || sent >= 4 * bound)
                    return true;
                if (h1.Links.Find("proxy")?.Session is { IsClosed: false } session)
                {
                    for (var i = 0; i < burst; i++, sent++)
                        h1.Peers.Send(session, digest);
                }
                return false;
            }, Quick, $"the Proxy to cut h1 off or h1 to send {4 * bound} messages");

            Assert.True(proxy.Peers.Floods > 0,
                $"h1 sent {sent} messages of {size} bytes to a held loop and was not cut; the Proxy's loop holds {proxy.Loop.Pending}");
            // What the loop holds is the backlog the link was allowed, not what h1 sent.
            Assert.InRange(proxy.Loop.Pending, bound - 1, bound + LoopSlack);
        }

        // The loop catches up: what h1 had queued is dropped as stale, and everything else carries on.
        var status = await proxy.Run(proxy.Status);
        // At least h1's first session; a session it re-dialed while the loop was still held starts
        // with the link's backlog still full, so it may be cut too (the budget is per link).
        Assert.InRange(status.PeersCutForFlooding, 1, 4);
        Assert.InRange(proxy.Peers.StaleDropped, bound - 1, bound + LoopSlack);
        await DaemonNet.Until(() => net.LogOf("proxy").Contains("flooding the control plane"), Quick, "the Proxy to log the flood");
        // h1's session ends (the reason goes in a best-effort BYE, which a flooded connection may not carry in time).
        await DaemonNet.Until(() => h1Session.IsClosed, Quick, "h1's session to end");
        Assert.False(h2Session.IsClosed);
        Assert.Same(h2Session, proxy.Links.Find("h2")!.Session);
        Assert.Equal("h2", (await proxy.Peers.CallAsync("h2", "status", null))!["name"]!.GetValue<string>());
        // h1 is back once it behaves.
        await net.WaitStar("h1");
        await DaemonNet.UntilAsync(async () =>
        {
            try
            {
                return (await proxy.Peers.CallAsync("h1", "status", null))!["name"]!.GetValue<string>() == "h1";
            }
            catch (DaemonCommandException)
            {
                return false;
            }
        }, Quick, "h1 to answer the Proxy again");
        Assert.Same(h2Session, proxy.Links.Find("h2")!.Session);
        Assert.InRange(proxy.Loop.Pending, 0, LoopSlack);
    }

    [Fact]
    public async Task PeerTextInLogLines_CannotForgeLines_AndFaultLinesAreRateLimited()
    {
        await using var net = await DaemonNet.StartAsync("h1");
        var proxy = net.Proxy;
        var h1 = net["h1"];
        const int Sent = 30;
        // A VM "name" that would end the log line and start a forged one, clearing the terminal first.
        const string Evil = "evil\n\u001b[2JFORGED: proxy stopped\r\u2028";
        var bad = new PeerMessage
        {
            Type = PeerMessageType.Vms, Epoch = 1, Seq = 0, Full = true,
            Entries = [new MapEntry(MacAddress.Parse("52:54:00:00:00:01"), Evil)],
        };
        var session = h1.Links.Find("proxy")!.Session!;

        for (var i = 0; i < Sent; i++)
            Assert.True(h1.Peers.Send(session, bad));
        await DaemonNet.Until(() => proxy.Peers.BadMessages == Sent, Quick, $"{Sent} bad messages at the Proxy (saw {proxy.Peers.BadMessages})");

        var log = net.LogOf("proxy").Lines;
        var lines = log.Where(l => l.Contains("Bad control message from h1", StringComparison.Ordinal)).ToList();
        Assert.Equal(LogLimiter.DefaultLinesPerWindow, lines.Count);
        Assert.All(lines, l => Assert.Contains("'evil??[2JFORGED: proxy stopped??' is not a name", l, StringComparison.Ordinal));
        Assert.All(log, l => Assert.DoesNotMatch(@"[\u0000-\u001f\u007f-\u009f\u2028\u2029]", l));
        Assert.DoesNotContain(log, l => l.StartsWith("FORGED", StringComparison.Ordinal));
        Assert.Equal(Sent - LogLimiter.DefaultLinesPerWindow, proxy.Peers.LogLinesSuppressed);
        // Bad messages are refused one by one; they do not cost the session.
        Assert.Same(session, h1.Links.Find("proxy")!.Session);
        Assert.False(session.IsClosed);
    }

    [Fact]
    public async Task ProxyRequestsBeyondTheLimit_AnsweredBusyAtOnce_TheOthersRun()
    {
        await using var net = await DaemonNet.StartAsync("h1");
        var h1 = net["h1"];
        const int Extra = 4;
        List<Task<JsonNode?>> calls;

        using (HoldLoop(h1))
        {
            calls = [.. Enumerable.Range(0, PeerChannel.MaxConcurrentRequests + Extra).Select(_ => net.Proxy.Peers.CallAsync("h1", "status", null))];

            await DaemonNet.Until(() => calls.Count(c => c.IsFaulted) == Extra, Quick, $"{Extra} requests refused as busy");
            foreach (var refused in calls.Where(c => c.IsFaulted))
                Assert.Contains("busy", refused.Exception!.InnerException!.Message, StringComparison.Ordinal);
            Assert.Equal(PeerChannel.MaxConcurrentRequests, calls.Count(c => !c.IsCompleted));
        }

        foreach (var ran in calls.Where(c => !c.IsFaulted))
            Assert.Equal("h1", (await ran)!["name"]!.GetValue<string>());
        Assert.Equal(Extra, h1.Peers.RequestsRefused);
        Assert.Equal(Extra, (await h1.Run(h1.Status)).PeerRequestsRefused);
    }

    [Fact]
    public async Task RemoteCliSessionsBeyondTheLimit_RefusedWithAnError_FreedSlotsServeAgain()
    {
        await using var net = await DaemonNet.StartAsync("h1");
        var proxy = net.Proxy;
        var at = proxy.Links.LocalEndPoint!;
        List<Task<JsonNode?>> sessions;

        using (HoldLoop(proxy))
        {
            // Each session waits for the held loop with its one request: all slots taken.
            sessions = [.. Enumerable.Range(0, VnetDaemon.MaxToolSessions).Select(_ => RemoteControlClient.SendAsync(at, net.Admin, net.IdentityOf("proxy").Public, PresharedKey.None, "status"))];
            await DaemonNet.Until(() => proxy.ToolSessions.Active == VnetDaemon.MaxToolSessions, Quick, "every remote session slot taken");

            var refused = await Assert.ThrowsAsync<ControlException>(() => RemoteControlClient.SendAsync(at, net.Admin, net.IdentityOf("proxy").Public, PresharedKey.None, "status"));
            Assert.Contains("busy", refused.Message, StringComparison.Ordinal);
            Assert.Equal(1, proxy.ToolSessions.Refused);
        }

        foreach (var served in sessions)
            Assert.Equal("proxy", (await served)!["name"]!.GetValue<string>());
        await DaemonNet.Until(() => proxy.ToolSessions.Active == 0, Quick, "the sessions to end");
        Assert.Equal("proxy", (await RemoteControlClient.SendAsync(at, net.Admin, net.IdentityOf("proxy").Public, PresharedKey.None, "status"))!["name"]!.GetValue<string>());
        Assert.Equal(1, (await proxy.Run(proxy.Status)).ToolSessionsRefused);
    }

    /// <summary>Holds the daemon's control loop (as a long command would) until disposed.</summary>
    private static Gate HoldLoop(VnetDaemon daemon)
    {
        var gate = new Gate();
        daemon.Loop.Post(() => gate.Wait());
        return gate;
    }

    private sealed class Gate : IDisposable
    {
        private readonly ManualResetEventSlim _open = new();

        // Bounded: a failing test must not leave a loop held for ever.
        public void Wait() => _open.Wait(TimeSpan.FromSeconds(60));

        // Set only: the loop may still be inside Wait.
        public void Dispose() => _open.Set();
    }
}
