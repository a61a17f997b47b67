using System.Diagnostics;
using Vnet.Configuration;
using Vnet.Links;
using Vnet.Peers;
using Vnet.Vms;
using Xunit.Abstractions;

namespace Vnet.Tests.Vms;

/// <summary>
/// Randomized storms on real daemons in this process: VMs appear, migrate (cold and live) and
/// stop while star links flap, directory messages are delayed, reordered and lost, and hosts and
/// the Proxy restart. Once the storm is over, within a bounded time, every daemon's view of every
/// VM's location must equal the truth the test computed from its own actions.
/// </summary>
public sealed class ConvergenceTests(ITestOutputHelper output)
{
    /// <summary>
    /// After the last fault, how long the overlay may take to agree again: star links coming back
    /// (a dialer's back-off reaches 10 s), then a divergence nothing else revealed is found by the
    /// digest heartbeat (a lost delta and the digest after it, a lost snapshot answer).
    /// </summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(25);

    private static readonly DirectoryOptions Options = new()
    {
        AntiEntropyInterval = TimeSpan.FromSeconds(1),
        // Digests go only after a change and at this heartbeat: the storm's losses must still heal.
        DigestHeartbeat = TimeSpan.FromSeconds(5),
        MoveHoldDown = TimeSpan.FromSeconds(1),
    };

    private static readonly string[] Hosts = ["h1", "h2", "h3"];

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    [InlineData(14)]
    [InlineData(15)]
    [InlineData(16)]
    public async Task Storm_VmsMoveWhileLinksFlapMessagesReorderAndDaemonsRestart_EveryViewEqualsTheTruthAfterward(int seed)
    {
        var random = new Random(seed);
        var transport = random.Next(2) == 0 ? LinkTransport.Tcp : LinkTransport.Udp;
        await using var net = await DaemonNet.StartAsync(Hosts.Select(h => (h, (IReadOnlyList<InterfaceConfig>)[])).ToArray(), Options, transport, lan: true);
        await using var vms = new SimVms(net);
        var faults = new Faults(seed);
        var next = 1;
        for (; next <= 8; next++)
            await vms.Start(SimVms.Mac(next), Hosts[random.Next(Hosts.Length)]);

        var log = new List<string>();
        var proxyRestarted = false;
        faults.Install(net);
        for (var step = 0; step < 40; step++)
        {
            var alive = vms.Truth().Keys.ToList();
            var host = Hosts[random.Next(Hosts.Length)];
            var roll = random.Next(100);
            if (roll < 15 || alive.Count < 3)
            {
                var mac = SimVms.Mac(next++);
                log.Add($"start {mac} on {host}");
                await vms.Start(mac, host);
            }
            else if (roll < 25)
            {
                var mac = alive[random.Next(alive.Count)];
                log.Add($"stop {mac}");
                await vms.Stop(mac);
            }
            else if (roll < 55)
            {
                var mac = alive[random.Next(alive.Count)];
                var live = random.Next(2) == 0;
                log.Add($"move {mac} to {host} ({(live ? "live" : "cold")})");
                await vms.Move(mac, host, live, TimeSpan.FromMilliseconds(random.Next(50, 400)));
            }
            else if (roll < 75)
            {
                log.Add($"flap the star of {host}");
                net[host].Links.Find("proxy")?.Session?.Close("a storm cut it");
            }
            else if (roll < 90)
            {
                log.Add($"restart {host}");
                await net.Stop(host);
                await net.Restart(host);
                faults.Install(net[host]);
                await vms.Reattach(host);
            }
            else if (!proxyRestarted)
            {
                proxyRestarted = true;
                log.Add("restart the Proxy");
                await net.Stop("proxy");
                await net.Restart("proxy");
                faults.Install(net.Proxy);
            }
            await Task.Delay(random.Next(0, 150));
        }

        Faults.Stop(net);
        var calm = Stopwatch.StartNew();
        List<string> wrong = [];
        await DaemonNet.UntilAsync(async () => (wrong = await vms.Disagreements()).Count == 0, Bound,
            $"every daemon to agree with the truth after the storm (seed {seed}, {transport})",
            async () => string.Join('\n', wrong) + "\nstorm:\n" + string.Join('\n', log) + "\nrepairs:\n" + await net.Repairs() +
                "\ndaemons:\n" + await Describe(net));
        output.WriteLine($"seed {seed} ({transport}): {log.Count} actions, {faults.Delayed} messages delayed, {faults.Lost} lost; " +
            $"converged {calm.Elapsed.TotalSeconds:0.0} s after the storm; {vms.Truth().Count} VMs");
        output.WriteLine(await net.Repairs());
    }

    /// <summary>What each daemon has, for a failure's message.</summary>
    private static async Task<string> Describe(DaemonNet net)
    {
        var lines = new List<string>();
        foreach (var d in net.Daemons)
        {
            var (interfaces, local, refused, tracked) = await d.Run(() => (
                string.Join(",", d.Interfaces.All.Select(i => $"{i.Name}#{i.Port.Id}{(i.Port.IsUp ? "" : "(down)")} rx={i.Port.Counters.RxFrames}")),
                string.Join(",", d.Vms.List().Where(v => v.Local).Select(v => $"{v.Mac}@{v.Interface}")),
                d.Vms.LearnRefused,
                d.Vms.Gate.Tracked));
            lines.Add($"{d.Name}: interfaces [{interfaces}] local [{local}] refused {refused} gate {tracked}");
        }
        return string.Join('\n', lines);
    }

    /// <summary>Delays a quarter of the directory messages by up to 300 ms (reordering them) and loses a few.</summary>
    private sealed class Faults(int seed)
    {
        private readonly Random _random = new(seed * 7919);
        private readonly Lock _lock = new();
        private long _delayed;
        private long _lost;

        public long Delayed => Interlocked.Read(ref _delayed);

        public long Lost => Interlocked.Read(ref _lost);

        public void Install(DaemonNet net)
        {
            foreach (var d in net.Daemons)
                Install(d);
        }

        public void Install(Vnet.Daemon.VnetDaemon daemon) => daemon.Peers.InboundDelay = Delay;

        public static void Stop(DaemonNet net)
        {
            foreach (var d in net.Daemons)
                d.Peers.InboundDelay = null;
        }

        private TimeSpan Delay(LinkPort port, PeerMessage message)
        {
            if (message.Type is not (PeerMessageType.Vms or PeerMessageType.Locations or PeerMessageType.Digest or PeerMessageType.Sync))
                return TimeSpan.Zero;
            int roll, ms;
            lock (_lock)
            {
                roll = _random.Next(100);
                ms = _random.Next(5, 300);
            }
            if (roll < 3)
            {
                Interlocked.Increment(ref _lost);
                return TimeSpan.FromMilliseconds(-1);
            }
            if (roll < 28)
            {
                Interlocked.Increment(ref _delayed);
                return TimeSpan.FromMilliseconds(ms);
            }
            return TimeSpan.Zero;
        }
    }
}
