using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Tests.Support;
using Xunit.Abstractions;

namespace Vnet.Tests.Links;

/// <summary>
/// Issue 8's handshake flood, on loopback: strangers (without the Proxy's public key) open hundreds
/// of connections that send nothing, half an INIT, or an INIT with a bad mac1, from 100 source
/// addresses (127.0.0.2 to 127.0.0.101, all on lo). Before the stateless first step each silent
/// connection held one of the 64 handshake slots for the 5 s handshake timeout (4 per address under
/// load, so 16 addresses were enough), and a host that re-dialed during the flood was refused until
/// they timed out. Now a connection waits for its INIT without a slot, and a host's re-dial attaches
/// at once.
/// </summary>
public sealed class HandshakeFloodTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Addresses = 100;
    private const int Idle = 500;
    private const int BadInits = 500;

    /// <summary>The bound for a re-dial during a flood.</summary>
    private static readonly TimeSpan ReDialBound = TimeSpan.FromSeconds(1);

    private readonly TestKeys _keys = new();
    private readonly List<LinkNode> _nodes = [];
    private readonly List<Socket> _flood = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var socket in _flood)
            socket.Dispose();
        foreach (var node in _nodes)
            await node.DisposeAsync();
        foreach (var node in _nodes)
            node.AssertPoolComplete();
    }

    [Fact]
    public async Task Accept_IdleConnectionsAndBadInitsFromManyAddresses_AReDialAttachesWithin1s_RefusalsCounted()
    {
        var (proxy, host) = Star();
        var refusedBefore = proxy.Links.HandshakesRefused;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));

        // Silent connections, every fifth with half an INIT (a header and part of its payload).
        var flood = Stopwatch.StartNew();
        await OpenIdle(proxy, Idle, timeout.Token);
        Wait.Until(() => proxy.Links.WaitingForInit + proxy.Links.ConnectionsWithoutInit >= Idle, TimeSpan.FromSeconds(5),
            $"the Proxy to accept {Idle} silent connections");
        output.WriteLine($"{Idle} silent connections open after {flood.ElapsedMilliseconds} ms");
        // INITs with a bad mac1 go on while the host re-dials.
        var badInits = Task.Run(() => SendBadInits(proxy, BadInits, timeout.Token));

        var attached = CutAndTimeReDial(proxy, host);
        output.WriteLine($"re-dial attached after {attached.TotalMilliseconds:0} ms; {proxy.Links.WaitingForInit} connections waiting for an INIT");
        await badInits;

        Assert.True(attached <= ReDialBound, $"the re-dial took {attached.TotalMilliseconds:0} ms during the flood (bound {ReDialBound.TotalMilliseconds} ms)");
        Wait.Until(() => proxy.Links.InitsRefused >= BadInits, TimeSpan.FromSeconds(5), $"the Proxy to refuse {BadInits} bad INITs (now {proxy.Links.InitsRefused})");
        // The silent ones are closed at the INIT deadline (within one tick of the 250 ms clock), not after the 5 s handshake timeout.
        Wait.Until(() => proxy.Links.ConnectionsWithoutInit >= Idle && proxy.Links.WaitingForInit == 0,
            InitWaitList.Deadline + TimeSpan.FromSeconds(3), $"the Proxy to close the {Idle} silent connections (closed {proxy.Links.ConnectionsWithoutInit})");
        output.WriteLine($"refused {proxy.Links.InitsRefused} INITs before any Diffie-Hellman, closed {proxy.Links.ConnectionsWithoutInit} without an INIT, " +
            $"{proxy.Links.HandshakesRefused - refusedBefore} refusals in all, {proxy.Links.HandshakesLimited} limited");
        Assert.Equal(BadInits, proxy.Links.InitsRefused);
        Assert.Equal(Idle, proxy.Links.ConnectionsWithoutInit);
        Assert.Equal(0, proxy.Links.HandshakesLimited);
        Assert.Equal(Idle + BadInits, proxy.Links.HandshakesRefused - refusedBefore);
        // A refusal costs a counter, not a log line: at most one line a second.
        var lines = proxy.Log.Lines.Count(l => l.Contains("Rejected peer 127.0.0.", StringComparison.Ordinal));
        Assert.InRange(lines, 1, (int)flood.Elapsed.TotalSeconds + 1);
        Assert.Equal(["host1"], proxy.Links.Links.Select(l => l.Peer));
        Assert.True(proxy.Links.Find("host1")!.IsUp);
    }

    [Fact]
    public async Task Accept_MoreSilentConnectionsThanTheBounds_OldestClosedFirst_AReDialStillAttaches()
    {
        var (proxy, host) = Star();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));

        // One address past its share, then many past the whole list's bound (which of them go is
        // InitWaitListTests' business: here some may also reach the deadline on a slow machine).
        await OpenIdle(proxy, InitWaitList.PerAddress + 36, timeout.Token, addresses: 1);
        Wait.Until(() => proxy.Links.ConnectionsWithoutInit >= 36, TimeSpan.FromSeconds(5), "the Proxy to close one address's oldest");
        Assert.InRange(proxy.Links.WaitingForInit, 0, InitWaitList.PerAddress);
        await OpenIdle(proxy, InitWaitList.MaxWaiting, timeout.Token);
        Wait.Until(() => proxy.Links.ConnectionsWithoutInit >= 36 + InitWaitList.PerAddress, TimeSpan.FromSeconds(5),
            $"the Proxy to keep at most {InitWaitList.MaxWaiting} waiting (closed {proxy.Links.ConnectionsWithoutInit})");
        Assert.InRange(proxy.Links.WaitingForInit, 0, InitWaitList.MaxWaiting);

        // The list is full: the re-dial's connection pushes out the oldest and sends its INIT at once.
        var attached = CutAndTimeReDial(proxy, host);
        output.WriteLine($"re-dial attached after {attached.TotalMilliseconds:0} ms with the list full");
        Assert.True(attached <= ReDialBound, $"the re-dial took {attached.TotalMilliseconds:0} ms (bound {ReDialBound.TotalMilliseconds} ms)");
        Assert.True(proxy.Links.WaitingForInit <= InitWaitList.MaxWaiting);
    }

    /// <summary>A Proxy and a host with its star link up.</summary>
    private (LinkNode Proxy, LinkNode Host) Star()
    {
        var proxy = Node("proxy", DaemonRole.Proxy);
        var host = Node("host1", DaemonRole.Host);
        host.Links.AddLink("proxy", LinkTransport.Tcp, star: true, proxy.EndPoint);
        proxy.WaitUp("host1");
        host.WaitUp("proxy");
        return (proxy, host);
    }

    /// <summary>
    /// Cuts the host's star session (its dialer re-dials at once) and polls tightly (the measurement)
    /// until both ends have a new session; returns how long that took.
    /// </summary>
    private static TimeSpan CutAndTimeReDial(LinkNode proxy, LinkNode host)
    {
        var limit = TimeSpan.FromSeconds(10);
        var sessionsBefore = proxy.Links.Find("host1")!.SessionsStarted;
        var clock = Stopwatch.StartNew();
        host.Links.Find("proxy")!.Session!.Close("cut by the test");
        while (clock.Elapsed < limit)
        {
            if (proxy.Links.Find("host1") is { IsUp: true } p && p.SessionsStarted > sessionsBefore && host.Links.Find("proxy") is { IsUp: true })
                return clock.Elapsed;
            Thread.Sleep(5);
        }
        throw new TimeoutException($"the re-dial did not attach within {limit.TotalSeconds} s:\n{host.Log}");
    }

    private static IPAddress Source(int i, int addresses) => IPAddress.Parse($"127.0.0.{2 + (i % addresses)}");

    private static async Task<Socket> ConnectFrom(IPAddress source, LinkNode node, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(source, 0));
        await socket.ConnectAsync(node.EndPoint, ct);
        return socket;
    }

    /// <summary>Opens <paramref name="count"/> connections that stay open (kept until the test ends), 50 at a time.</summary>
    private async Task OpenIdle(LinkNode node, int count, CancellationToken ct, int addresses = Addresses)
    {
        for (var first = 0; first < count; first += 50)
        {
            var batch = await Task.WhenAll(Enumerable.Range(first, Math.Min(50, count - first)).Select(async i =>
            {
                var socket = await ConnectFrom(Source(i, addresses), node, ct);
                if (i % 5 == 4)
                    await socket.SendAsync(PartialInit(), SocketFlags.None, ct);
                return socket;
            }));
            _flood.AddRange(batch);
        }
    }

    /// <summary>Connections that each send an INIT of the right shape whose mac1 is random, then close.</summary>
    private static async Task SendBadInits(LinkNode node, int count, CancellationToken ct)
    {
        for (var first = 0; first < count; first += 25)
        {
            await Task.WhenAll(Enumerable.Range(first, Math.Min(25, count - first)).Select(async i =>
            {
                using var socket = await ConnectFrom(Source(i, Addresses), node, ct);
                await socket.SendAsync(BadInit(), SocketFlags.None, ct);
                socket.Shutdown(SocketShutdown.Send);
                // Until the Proxy hangs up: it must not answer.
                var buffer = new byte[64];
                Assert.Equal(0, await socket.ReceiveAsync(buffer, SocketFlags.None, ct));
            }));
        }
    }

    private static byte[] BadInit()
    {
        var payload = new byte[200];
        Random.Shared.NextBytes(payload);
        var message = new byte[Wire.HeaderSize + payload.Length];
        Wire.Write(message, new LinkHeader(MessageType.HandshakeInit, MessageFlags.None, 0, 0, payload.Length));
        payload.CopyTo(message, Wire.HeaderSize);
        return message;
    }

    private static byte[] PartialInit() => BadInit()[..(Wire.HeaderSize + 40)];

    private LinkNode Node(string name, DaemonRole role)
    {
        var node = new LinkNode(name, role, _keys);
        _nodes.Add(node);
        return node;
    }
}
