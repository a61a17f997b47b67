using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Vnet.Daemon;

namespace Vnet.Vms.Providers.Qemu;

/// <summary>
/// VMs as QEMU guests: the distribution kernel and the busybox initramfs of
/// <see cref="QemuGuestImage"/> (the guest takes a DHCP lease at boot), one virtio-net NIC on a TAP
/// that QEMU opens (<c>ifname=vm-NAME,script=no</c>; brought up here), which the daemon opens as a
/// pcap interface. Size: small 128 MiB/1 vCPU, medium 256/1, large 512/2. TCG, unless
/// <c>VNET_QEMU_ACCEL=kvm</c> (on these machines /dev/kvm exists but does not run guests).
/// Per VM in the state directory: <c>NAME.qmp</c> (QMP monitor), <c>NAME.console</c> (the
/// guest's serial console, a Unix socket; the guest runs "ID COMMAND" lines it reads there),
/// <c>NAME.log</c> (QEMU's own messages).
/// <para>Move: live migration. The target starts the same machine with <c>-incoming
/// unix:DIR/NAME.migrate</c>; the source's QMP <c>migrate</c>s to it and waits for
/// <c>completed</c>, then the daemon lets go of its TAP and the source QEMU quits; the guest keeps
/// its RAM, so its address and connections stay. The migration stream is a Unix socket: source and
/// target must share a file system (hosts of one machine, as in the demo). When the migration
/// fails, the move falls back to stop-and-restart with the same MAC (a new boot, a new DHCP lease,
/// the same address from a server that keys leases by MAC).</para>
/// </summary>
public sealed partial class QemuVmProvider : IVmProvider
{
    private static readonly TimeSpan TapLimit = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan MigrationLimit = TimeSpan.FromSeconds(120);

    private readonly string _stateDir;
    private readonly ILogger _logger;
    private readonly string _ip;
    private readonly ConcurrentDictionary<string, Process> _qemus = new(StringComparer.Ordinal);

    public QemuVmProvider(string stateDir, ILogger logger)
    {
        _stateDir = stateDir;
        _logger = logger;
        _ip = ProcessRunner.Find("ip") ?? "ip";
    }

    public VmProviderKind Kind => VmProviderKind.Qemu;

    public static string Accelerator => Environment.GetEnvironmentVariable("VNET_QEMU_ACCEL") == "kvm" ? "kvm" : "tcg";

    public string ConsolePath(string vm) => Path.Combine(_stateDir, vm + ".console");

    private string QmpPath(string vm) => Path.Combine(_stateDir, vm + ".qmp");

    private string MigratePath(string vm) => Path.Combine(_stateDir, vm + ".migrate");

    public static (int MemoryMb, int Cpus) Resources(VmSize size) => size switch
    {
        VmSize.Small => (128, 1),
        VmSize.Medium => (256, 1),
        _ => (512, 2),
    };

    public Task CreateAsync(VmSpec spec) => LaunchAsync(spec, incoming: null);

    /// <summary>Starts QEMU (optionally waiting for an incoming migration) and returns once its TAP is up.</summary>
    private async Task LaunchAsync(VmSpec spec, string? incoming)
    {
        if (_qemus.ContainsKey(spec.Name))
            throw new DaemonCommandException($"QEMU of VM {spec.Name} runs already");
        QemuGuestImage image;
        try
        {
            image = await Task.Run(QemuGuestImage.Get).ConfigureAwait(false);
        }
        catch (InvalidOperationException e)
        {
            throw new DaemonCommandException(e.Message);
        }
        Directory.CreateDirectory(_stateDir);
        foreach (var stale in new[] { QmpPath(spec.Name), ConsolePath(spec.Name) })
            File.Delete(stale);
        var (memory, cpus) = Resources(spec.Size);
        List<string> args =
        [
            "-name", spec.Name,
            "-accel", Accelerator,
            "-m", memory.ToString(CultureInfo.InvariantCulture),
            "-smp", cpus.ToString(CultureInfo.InvariantCulture),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-qmp", $"unix:{QmpPath(spec.Name)},server=on,wait=off",
            "-chardev", $"socket,id=console,path={ConsolePath(spec.Name)},server=on,wait=off",
            "-serial", "chardev:console",
            "-no-reboot",
            "-kernel", image.Kernel,
            "-initrd", image.Initramfs,
            "-append", "console=ttyS0 panic=-1 ipv6.disable=1",
            "-netdev", $"tap,id=n0,ifname={spec.Device},script=no,downscript=no",
            "-device", $"virtio-net-pci,netdev=n0,mac={spec.Mac}",
        ];
        if (incoming is not null)
            args.AddRange(["-incoming", incoming]);
        var process = ProcessRunner.Start(image.Qemu, args, redirectInput: false);
        _qemus[spec.Name] = process;
        var log = Path.Combine(_stateDir, spec.Name + ".log");
        _ = DrainAsync(process, log);
        try
        {
            var deadline = DateTime.UtcNow + TapLimit;
            while (!File.Exists($"/sys/class/net/{spec.Device}/address"))
            {
                if (process.HasExited)
                    throw new DaemonCommandException($"QEMU of VM {spec.Name} exited ({process.ExitCode}); see {log}");
                if (DateTime.UtcNow > deadline)
                    throw new DaemonCommandException($"QEMU of VM {spec.Name} made no TAP {spec.Device} within {TapLimit.TotalSeconds:0} s");
                await Task.Delay(50).ConfigureAwait(false);
            }
            try
            {
                await File.WriteAllTextAsync($"/proc/sys/net/ipv6/conf/{spec.Device}/disable_ipv6", "1").ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
            await ProcessRunner.CheckAsync(_ip, ["link", "set", spec.Device, "up"]).ConfigureAwait(false);
        }
        catch
        {
            await StopAsync(spec.Name).ConfigureAwait(false);
            throw;
        }
    }

    private static async Task DrainAsync(Process process, string log)
    {
        try
        {
            await using var file = new FileStream(log, FileMode.Create, FileAccess.Write, FileShare.Read);
            var stdout = process.StandardOutput.BaseStream.CopyToAsync(Stream.Null);
            await process.StandardError.BaseStream.CopyToAsync(file).ConfigureAwait(false);
            await stdout.ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException)
        {
        }
    }

    /// <summary>Ends a VM's QEMU: a QMP quit, then a kill if it lingers.</summary>
    private async Task StopAsync(string name)
    {
        if (!_qemus.TryRemove(name, out var process))
            return;
        try
        {
            if (!process.HasExited)
            {
                try
                {
                    await using var qmp = await QmpClient.ConnectAsync(QmpPath(name), TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                    await qmp.ExecuteAsync("quit").ConfigureAwait(false);
                }
                catch (Exception e) when (e is DaemonCommandException or IOException)
                {
                }
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                try
                {
                    await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    ProcessRunner.Kill(process);
                    await process.WaitForExitAsync().ConfigureAwait(false);
                }
            }
        }
        finally
        {
            process.Dispose();
            foreach (var path in new[] { QmpPath(name), ConsolePath(name), MigratePath(name) })
            {
                try
                {
                    File.Delete(path);
                }
                catch (DirectoryNotFoundException)
                {
                }
            }
        }
    }

    public Task DestroyAsync(VmSpec spec) => StopAsync(spec.Name);

    public async Task<VmIncoming> PrepareIncomingAsync(VmSpec spec)
    {
        Directory.CreateDirectory(_stateDir);
        File.Delete(MigratePath(spec.Name));
        var address = "unix:" + MigratePath(spec.Name);
        await LaunchAsync(spec, address).ConfigureAwait(false);
        return new VmIncoming(address, DeviceReady: true);
    }

    public async Task<VmHandover> SendAsync(VmSpec spec, VmIncoming incoming, Func<Task> detach)
    {
        if (!_qemus.ContainsKey(spec.Name))
            throw new DaemonCommandException($"QEMU of VM {spec.Name} does not run here");
        var why = incoming.Address is null ? "the target offered no incoming migration" : await MigrateAsync(spec, incoming.Address).ConfigureAwait(false);
        if (why is null)
        {
            await detach().ConfigureAwait(false);
            await StopAsync(spec.Name).ConfigureAwait(false);
            return new VmHandover(VmMoveMode.Live, [], null);
        }
        Log.MigrationFailed(_logger, spec.Name, why);
        await detach().ConfigureAwait(false);
        await StopAsync(spec.Name).ConfigureAwait(false);
        return new VmHandover(VmMoveMode.Restart, [], null);
    }

    /// <summary>Live migration to <paramref name="uri"/>; null when completed, else why not (the guest then still runs here).</summary>
    private async Task<string?> MigrateAsync(VmSpec spec, string uri)
    {
        if (!uri.StartsWith("unix:", StringComparison.Ordinal) || !Path.IsPathFullyQualified(uri[5..]))
            return $"'{uri}' is not unix:/absolute/path";
        try
        {
            await using var qmp = await QmpClient.ConnectAsync(QmpPath(spec.Name), TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            // The target made its socket when it started; wait for it (bounded), as QEMU does not.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (!File.Exists(uri[5..]) && DateTime.UtcNow < deadline)
                await Task.Delay(50).ConfigureAwait(false);
            await qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = uri }).ConfigureAwait(false);
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed < MigrationLimit)
            {
                var state = await qmp.ExecuteAsync("query-migrate").ConfigureAwait(false);
                switch (state?["status"]?.GetValue<string>())
                {
                    case "completed":
                        return null;
                    case "failed" or "cancelled":
                        return $"migration {state["status"]}: {state["error-desc"]?.GetValue<string>() ?? "no reason given"}";
                }
                await Task.Delay(100).ConfigureAwait(false);
            }
            await qmp.ExecuteAsync("migrate_cancel").ConfigureAwait(false);
            return $"migration did not complete within {MigrationLimit.TotalSeconds:0} s";
        }
        catch (Exception e) when (e is DaemonCommandException or IOException)
        {
            return e.Message;
        }
    }

    public async Task ReceiveAsync(VmSpec spec, VmHandover handover)
    {
        if (handover.Mode == VmMoveMode.Restart)
        {
            // The incoming machine waits for a stream that will not come: boot afresh, same MAC.
            await StopAsync(spec.Name).ConfigureAwait(false);
            await LaunchAsync(spec, incoming: null).ConfigureAwait(false);
            return;
        }
        await using var qmp = await QmpClient.ConnectAsync(QmpPath(spec.Name), TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            var status = await qmp.ExecuteAsync("query-status").ConfigureAwait(false);
            if (status?["status"]?.GetValue<string>() == "running")
                return;
            await Task.Delay(100).ConfigureAwait(false);
        }
        throw new DaemonCommandException($"VM {spec.Name} did not run after its migration within 30 s");
    }

    public async Task AnnounceAsync(VmSpec spec)
    {
        // QEMU announces a migrated guest by itself; once more, now that the daemon has its TAP.
        try
        {
            await using var qmp = await QmpClient.ConnectAsync(QmpPath(spec.Name), TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            await qmp.ExecuteAsync("announce-self", new JsonObject { ["initial"] = 50, ["max"] = 550, ["rounds"] = 3, ["step"] = 100 }).ConfigureAwait(false);
        }
        catch (Exception e) when (e is DaemonCommandException or IOException)
        {
            Log.AnnounceFailed(_logger, spec.Name, e.Message);
        }
    }

    public Task AbortIncomingAsync(VmSpec spec) => StopAsync(spec.Name);

    /// <summary>Nothing: a QEMU's monitor socket and state live with the daemon that started it (a limit, docs/vms.md).</summary>
    public Task<IReadOnlyList<VmSpec>> RecoverAsync() => Task.FromResult<IReadOnlyList<VmSpec>>([]);

    public async ValueTask DisposeAsync()
    {
        foreach (var name in _qemus.Keys)
            await StopAsync(name).ConfigureAwait(false);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 420, Level = LogLevel.Warning, Message = "VM {Name}: live migration failed ({Reason}); moving it by stop and restart")]
        public static partial void MigrationFailed(ILogger logger, string name, string reason);

        [LoggerMessage(EventId = 421, Level = LogLevel.Warning, Message = "VM {Name}: announce-self failed: {Reason}")]
        public static partial void AnnounceFailed(ILogger logger, string name, string reason);
    }
}
