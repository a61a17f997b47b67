using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Vnet.Daemon;
using Vnet.Frames;

namespace Vnet.Vms.Providers.Qemu;

/// <summary>
/// VMs as QEMU guests: the distribution kernel and the busybox initramfs of
/// <see cref="QemuGuestImage"/> (the guest takes a DHCP lease at boot), one virtio-net NIC on a TAP
/// that QEMU opens (<c>ifname=vm-NAME,script=no</c>; brought up here), which the daemon opens as a
/// pcap interface. Size: small 128 MiB/1 vCPU, medium 256/1, large 512/2. TCG, unless
/// <c>VNET_QEMU_ACCEL=kvm</c> (on these machines /dev/kvm exists but does not run guests).
/// Per VM in the state directory: <c>NAME.qmp</c> (QMP monitor), <c>NAME.console</c> (the
/// guest's serial console, a Unix socket; the guest runs "ID COMMAND" lines it reads there),
/// <c>NAME.log</c> (QEMU's own messages), <c>NAME.qemu</c> (its registry entry, "PID MAC SIZE
/// DEVICE QMP-PATH", so a daemon killed before it could end its VMs finds them again when it starts:
/// <see cref="RecoverAsync"/>).
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
    private readonly ConcurrentDictionary<string, Machine> _qemus = new(StringComparer.Ordinal);

    /// <summary>A running QEMU: its process when this daemon started it, or only its pid when it was taken in from a daemon before.</summary>
    private sealed record Machine(int Pid, Process? Child);

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

    private string RegistryPath(string vm) => Path.Combine(_stateDir, vm + ".qemu");

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
        // Its own session (setsid execs QEMU in place: the pid is QEMU's): signals to the daemon's
        // process group (a terminal's Ctrl-C, a supervisor killing the group) do not reach the VM,
        // which the daemon ends in order, or leaves running when it crashes (RecoverAsync).
        var process = ProcessRunner.Start(ProcessRunner.Find("setsid") ?? "setsid", [image.Qemu, .. args], redirectInput: false);
        _qemus[spec.Name] = new Machine(process.Id, process);
        var log = Path.Combine(_stateDir, spec.Name + ".log");
        _ = DrainAsync(process, log);
        try
        {
            VmRegistry.Write(RegistryPath(spec.Name), $"{process.Id} {spec.Mac} {VmNames.Text(spec.Size)} {spec.Device} {QmpPath(spec.Name)}");
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

    /// <summary>Ends a VM's QEMU: a QMP quit, then a kill if it lingers; its files go.</summary>
    private async Task StopAsync(string name)
    {
        if (!_qemus.TryRemove(name, out var machine))
            return;
        try
        {
            if (!Gone(machine))
            {
                try
                {
                    await using var qmp = await QmpClient.ConnectAsync(QmpPath(name), TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                    await qmp.ExecuteAsync("quit").ConfigureAwait(false);
                }
                catch (Exception e) when (e is DaemonCommandException or IOException)
                {
                }
                if (!await ExitedAsync(machine, TimeSpan.FromSeconds(5)).ConfigureAwait(false))
                {
                    // A QEMU taken in from before is no child of ours: killed only while it still is that QEMU.
                    if (machine.Child is { } child)
                        ProcessRunner.Kill(child);
                    else if (IsQemuOf(machine.Pid, name))
                        _ = Native.LibC.Kill(machine.Pid, 9);
                    await ExitedAsync(machine, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            machine.Child?.Dispose();
            DeleteFiles(name);
        }
    }

    /// <summary>A VM's files but its log: sockets, the migration's socket, the registry entry.</summary>
    private void DeleteFiles(string name)
    {
        foreach (var path in new[] { QmpPath(name), ConsolePath(name), MigratePath(name), RegistryPath(name) })
            VmRegistry.Delete(path);
    }

    /// <summary>Whether a QEMU has ended (a process of another parent counts as ended once a zombie).</summary>
    private static bool Gone(Machine machine)
    {
        if (machine.Child is { } child)
            return child.HasExited;
        try
        {
            var stat = File.ReadAllText($"/proc/{machine.Pid}/stat");
            var end = stat.LastIndexOf(')');
            return end < 0 || end + 2 >= stat.Length || stat[end + 2] is 'Z' or 'X';
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return true;
        }
    }

    /// <summary>Waits (at most <paramref name="limit"/>) for a QEMU to end; whether it did.</summary>
    private static async Task<bool> ExitedAsync(Machine machine, TimeSpan limit)
    {
        if (machine.Child is { } child)
        {
            using var cts = new CancellationTokenSource(limit);
            try
            {
                await child.WaitForExitAsync(cts.Token).ConfigureAwait(false);
                return true;
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }
        var clock = Stopwatch.StartNew();
        while (!Gone(machine))
        {
            if (clock.Elapsed > limit)
                return false;
            await Task.Delay(50).ConfigureAwait(false);
        }
        return true;
    }

    public Task DestroyAsync(VmSpec spec)
    {
        // Not one of ours now, but its entry names a QEMU that still is this VM's (a move cut off by
        // a crash left it): it ends too.
        if (!_qemus.ContainsKey(spec.Name) && Registered(spec.Name) is { } entry && entry.Mac == spec.Mac && IsQemuOf(entry.Pid, spec.Name))
            _qemus.TryAdd(spec.Name, new Machine(entry.Pid, null));
        return StopAsync(spec.Name);
    }

    public async Task<VmIncoming> PrepareIncomingAsync(VmSpec spec)
    {
        Directory.CreateDirectory(_stateDir);
        File.Delete(MigratePath(spec.Name));
        var address = "unix:" + MigratePath(spec.Name);
        await LaunchAsync(spec, address).ConfigureAwait(false);
        // Ready means listening: a QEMU that cannot take the stream is refused now, while the VM
        // still runs at its source, and the source need not wait for the socket.
        var clock = Stopwatch.StartNew();
        while (!File.Exists(MigratePath(spec.Name)))
        {
            if (clock.Elapsed > TapLimit || !_qemus.TryGetValue(spec.Name, out var machine) || Gone(machine))
            {
                await StopAsync(spec.Name).ConfigureAwait(false);
                throw new DaemonCommandException($"QEMU of VM {spec.Name} did not listen for the incoming migration within {TapLimit.TotalSeconds:0} s");
            }
            await Task.Delay(20).ConfigureAwait(false);
        }
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

    /// <summary>One registry entry: "PID MAC SIZE DEVICE QMP-PATH"; the device and monitor must be the ones this provider gives the VM.</summary>
    private sealed record Registration(int Pid, MacAddress Mac, VmSize Size);

    private Registration? Registered(string name)
    {
        var path = RegistryPath(name);
        if (VmRegistry.Read(path, _logger) is not { } text)
            return null;
        var parts = text.Split(' ', 5);
        if (parts.Length == 5 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid > 1
            && MacAddress.TryParse(parts[1], out var mac) && !mac.IsGroup && mac != MacAddress.Zero
            && VmNames.TryParseSize(parts[2]) is { } size && parts[3] == VmSpec.DeviceOf(name) && parts[4] == QmpPath(name))
            return new Registration(pid, mac, size);
        VmRegistry.Garbled(_logger, path);
        return null;
    }

    /// <summary>Whether process <paramref name="pid"/> is the QEMU this provider started for VM <paramref name="name"/> (its command line names the VM and its monitor), not a process that reuses the pid.</summary>
    private bool IsQemuOf(int pid, string name)
    {
        string[] argv;
        try
        {
            argv = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0');
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
        var named = false;
        var monitor = false;
        for (var i = 0; i + 1 < argv.Length; i++)
        {
            named |= argv[i] == "-name" && argv[i + 1] == name;
            monitor |= argv[i] == "-qmp" && argv[i + 1] == $"unix:{QmpPath(name)},server=on,wait=off";
        }
        return named && monitor && Path.GetFileName(argv[0]).StartsWith("qemu-system-", StringComparison.Ordinal);
    }

    /// <summary>
    /// At start: the QEMUs of this host's state directory that outlived the daemon before (killed,
    /// crashed). An entry is taken when its pid is still that VM's QEMU (command line), its monitor
    /// answers <c>query-status</c> "running", and its TAP is in this daemon's namespace. An entry
    /// whose QEMU is gone is removed, as is a QEMU that holds no running guest (an incoming
    /// migration that never came, or the source of one that completed); others are left with a log line.
    /// </summary>
    public async Task<IReadOnlyList<VmSpec>> RecoverAsync()
    {
        var found = new List<VmSpec>();
        if (!Directory.Exists(_stateDir))
            return found;
        foreach (var file in Directory.EnumerateFiles(_stateDir, "*.qemu"))
        {
            var name = Path.GetFileNameWithoutExtension(file);
            if (VmNames.Problem(name) is not null || Registered(name) is not { } entry)
                continue;
            var spec = new VmSpec(name, entry.Mac, entry.Size);
            var machine = new Machine(entry.Pid, null);
            if (Gone(machine) || !IsQemuOf(entry.Pid, name))
            {
                Log.Stale(_logger, name, entry.Pid);
                DeleteFiles(name);
                continue;
            }
            string status;
            try
            {
                await using var qmp = await QmpClient.ConnectAsync(QmpPath(name), TimeSpan.FromSeconds(1)).ConfigureAwait(false);
                status = (await qmp.ExecuteAsync("query-status").ConfigureAwait(false))?["status"]?.GetValue<string>() ?? "unknown";
            }
            catch (Exception e) when (e is DaemonCommandException or IOException or InvalidOperationException or System.Text.Json.JsonException)
            {
                status = $"no answer from its monitor ({e.Message})";
            }
            if (status is "inmigrate" or "postmigrate")
            {
                // No guest runs in it: the half of a move that a crash cut off.
                Log.EndedHalfMove(_logger, name, entry.Pid, status);
                _qemus[name] = machine;
                await StopAsync(name).ConfigureAwait(false);
                continue;
            }
            if (status != "running" || Native.LibC.IfNameToIndex(spec.Device) == 0)
            {
                Log.NotTaken(_logger, name, entry.Pid, status == "running" ? $"no device {spec.Device} here" : LogText.Safe(status));
                continue;
            }
            _qemus[name] = machine;
            found.Add(spec);
        }
        return found;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var name in _qemus.Keys)
            await StopAsync(name).ConfigureAwait(false);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 420, Level = LogLevel.Warning, Message = "VM {Name}: live migration failed ({Reason}); moving it by stop and restart")]
        public static partial void MigrationFailed(ILogger logger, string name, string reason);

        [LoggerMessage(EventId = 424, Level = LogLevel.Information, Message = "VM {Name}: its QEMU (pid {Pid}) is gone; registry entry removed")]
        public static partial void Stale(ILogger logger, string name, int pid);

        [LoggerMessage(EventId = 425, Level = LogLevel.Warning, Message = "VM {Name}: QEMU {Pid} from before this daemon started is not taken in: {Reason}")]
        public static partial void NotTaken(ILogger logger, string name, int pid, string reason);

        [LoggerMessage(EventId = 426, Level = LogLevel.Warning, Message = "VM {Name}: QEMU {Pid} from before this daemon started holds no running guest ({Status}): ended")]
        public static partial void EndedHalfMove(ILogger logger, string name, int pid, string status);

        [LoggerMessage(EventId = 421, Level = LogLevel.Warning, Message = "VM {Name}: announce-self failed: {Reason}")]
        public static partial void AnnounceFailed(ILogger logger, string name, string reason);
    }
}
