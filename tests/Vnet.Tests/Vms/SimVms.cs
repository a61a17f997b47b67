using Vnet.Configuration;
using Vnet.Frames;

namespace Vnet.Tests.Vms;

/// <summary>
/// VMs for in-process daemons: each VM has a TAP of its own on its host (an in-memory interface,
/// as QEMU gives each guest a TAP), and a pump makes every VM send a frame every
/// <see cref="Period"/> from wherever it currently is. The test's own record of where each VM is
/// (<see cref="Truth"/>) is what every daemon must converge to.
/// </summary>
internal sealed class SimVms : IAsyncDisposable
{
    public static readonly TimeSpan Period = TimeSpan.FromMilliseconds(50);

    /// <summary>Where VM frames go when they go nowhere in particular: a machine on the home LAN.</summary>
    public static readonly MacAddress LanHost = MacAddress.Parse("02:aa:00:00:00:01");

    /// <summary>A minimal frame (60 bytes, a local experimental EtherType) from <paramref name="vm"/> to <see cref="LanHost"/>.</summary>
    public static byte[] FrameToLan(MacAddress vm)
    {
        var frame = new byte[60];
        LanHost.Write(frame);
        vm.Write(frame.AsSpan(6));
        frame[12] = 0x88;
        frame[13] = 0xb5;
        return frame;
    }

    private readonly DaemonNet _net;
    private readonly Lock _lock = new();
    private readonly Dictionary<MacAddress, string> _at = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _pump;
    private long _sent;

    public SimVms(DaemonNet net)
    {
        _net = net;
        _pump = Task.Run(Pump);
    }

    public long Sent => Interlocked.Read(ref _sent);

    /// <summary>The interface of a VM on its host.</summary>
    public static string InterfaceOf(MacAddress mac) => $"vm{mac.Value & 0xFFFF:x4}";

    public static MacAddress Mac(int n) => new(0x0200_0000_0000UL | (uint)n);

    /// <summary>Where each VM is now, as the test made it.</summary>
    public Dictionary<MacAddress, string> Truth()
    {
        lock (_lock)
            return new Dictionary<MacAddress, string>(_at);
    }

    public string? HostOf(MacAddress mac)
    {
        lock (_lock)
            return _at.GetValueOrDefault(mac);
    }

    /// <summary>A VM starts on <paramref name="host"/>: its TAP opens there and it starts sending.</summary>
    public async Task Start(MacAddress mac, string host)
    {
        await OpenTap(host, mac);
        lock (_lock)
            _at[mac] = host;
    }

    /// <summary>A VM stops: it sends no more and its TAP closes.</summary>
    public async Task Stop(MacAddress mac)
    {
        string? host;
        lock (_lock)
        {
            if (!_at.Remove(mac, out host))
                return;
        }
        await CloseTap(host, mac);
    }

    /// <summary>
    /// A VM migrates. Cold: its TAP closes at the old host before it opens at the new one. Live: it
    /// runs on the new host first and the old TAP closes a moment later, as QEMU's live migration
    /// leaves the source's TAP open until it is done.
    /// </summary>
    public async Task Move(MacAddress mac, string to, bool live, TimeSpan lingering)
    {
        var from = HostOf(mac);
        if (from is null || from == to)
            return;
        if (!live)
        {
            lock (_lock)
                _at.Remove(mac);
            await CloseTap(from, mac);
        }
        await OpenTap(to, mac);
        lock (_lock)
            _at[mac] = to;
        if (live)
        {
            await Task.Delay(lingering);
            await CloseTap(from, mac);
        }
    }

    /// <summary>After a host daemon restarts, it opens the TAPs of the VMs that run there (they never stopped sending).</summary>
    public async Task Reattach(string host)
    {
        List<MacAddress> here;
        lock (_lock)
            here = _at.Where(kv => kv.Value == host).Select(kv => kv.Key).ToList();
        foreach (var mac in here)
            await OpenTap(host, mac);
    }

    private async Task OpenTap(string host, MacAddress mac)
    {
        var d = _net[host];
        var config = new InterfaceConfig { Name = InterfaceOf(mac), Kind = InterfaceKind.Tap };
        await d.Run(() =>
        {
            if (d.Interfaces.Find(config.Name) is null)
                d.Interfaces.Add(config);
            return true;
        });
    }

    private async Task CloseTap(string host, MacAddress mac)
    {
        var d = _net.Daemons.FirstOrDefault(x => x.Name == host);
        if (d is null)
            return;
        var name = InterfaceOf(mac);
        await d.Run(() =>
        {
            d.Interfaces.RemoveForce(name, "the VM stopped");
            return true;
        });
    }

    private async Task Pump()
    {
        var frame = new byte[60];
        while (!_stop.IsCancellationRequested)
        {
            List<KeyValuePair<MacAddress, string>> now;
            lock (_lock)
                now = [.. _at];
            foreach (var (mac, host) in now)
            {
                if (!_net.DevicesOf(host).TryGet(InterfaceOf(mac), out var tap) || tap.IsClosed)
                    continue;
                LanHost.Write(frame);
                mac.Write(frame.AsSpan(6));
                frame[12] = 0x88;
                frame[13] = 0xb5;
                if (tap.Inject(frame))
                    Interlocked.Increment(ref _sent);
            }
            try
            {
                await Task.Delay(Period, _stop.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
    }

    /// <summary>Every running daemon's view (VM → daemon) that differs from the truth, one line each; empty when all agree.</summary>
    public async Task<List<string>> Disagreements()
    {
        var truth = Truth();
        var lines = new List<string>();
        foreach (var d in _net.Daemons)
        {
            var view = (await d.Run(d.Vms.List)).ToDictionary(v => v.Mac, v => v.Daemon);
            foreach (var (mac, host) in truth)
            {
                if (!view.TryGetValue(mac, out var seen))
                    lines.Add($"{d.Name} does not know {mac} (on {host})");
                else if (seen != host)
                    lines.Add($"{d.Name} places {mac} on {seen}, it is on {host}");
            }
            foreach (var (mac, seen) in view)
            {
                if (!truth.ContainsKey(mac))
                    lines.Add($"{d.Name} places {mac} on {seen}, it is gone");
            }
        }
        return lines;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _pump;
        _stop.Dispose();
    }
}
