using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Vnet.Daemon;
using Vnet.Frames;

namespace Vnet.Vms.Providers;

/// <summary>
/// VMs as network namespaces, for demos and tests: VM <c>web1</c> is a network namespace held by a
/// process of its own (<c>setsid unshare --net sleep infinity</c>), registered as
/// <c>/run/vnet-vms/web1.netns</c> (its pid and the namespace's identity, checked before each use, so
/// a reused pid is never taken for the VM). Its <c>eth0</c> is one end of a veth pair (the VM's MAC);
/// the other end, <c>vm-web1</c>, is in the daemon's own namespace, where the daemon opens it as a
/// pcap interface. The VM takes its address by DHCP from the home LAN (one <c>udhcpc -q</c> run with
/// a script written here). Run a program in it with <c>nsenter -t PID -n PROGRAM</c>.
/// <para>Why not a named namespace (<c>ip netns add</c>): a daemon started by <c>ip netns exec</c>
/// (the test bed's, the demo's) has a mount namespace of its own, a slave of the machine's, so the
/// name it would mount under /run/netns is seen by no other daemon: the VM could not move.</para>
/// <para>A move keeps the namespace, so its sockets (open TCP connections) survive: the source
/// reads eth0's IPv4 addresses and default route, deletes its veth (eth0 goes with it); the target
/// makes a new veth into the same namespace, eth0 again with the same MAC, restores the addresses and
/// route, and sends a gratuitous ARP. Namespaces are per machine: such a move works between hosts
/// running on one machine (the demo's, the tests'), not between machines.</para>
/// </summary>
public sealed partial class NetnsVmProvider : IVmProvider
{
    /// <summary>Where every daemon of the machine finds a netns VM's holder: NAME.netns holds "PID net:[INODE] MAC SIZE".</summary>
    public const string Registry = "/run/vnet-vms";
    private static readonly TimeSpan DhcpLimit = TimeSpan.FromSeconds(40);

    private readonly string _stateDir;
    private readonly ILogger _logger;
    private readonly string _ip;
    private readonly ConcurrentDictionary<string, Process> _dhcp = new(StringComparer.Ordinal);

    public NetnsVmProvider(string stateDir, ILogger logger)
    {
        _stateDir = stateDir;
        _logger = logger;
        _ip = ProcessRunner.Find("ip") ?? "ip";
    }

    public VmProviderKind Kind => VmProviderKind.Netns;

    private static string RegistryFile(string vm) => Path.Combine(Registry, vm + ".netns");

    /// <summary>The pid of the process holding VM <paramref name="vm"/>'s namespace, if it still holds the registered one.</summary>
    public static int? HolderOf(string vm) => Registered(vm, null) is { } entry && NetnsOf(entry.Pid) == entry.Namespace ? entry.Pid : null;

    /// <summary>One registry entry: "PID net:[INODE] MAC SIZE".</summary>
    private sealed record Registration(int Pid, string Namespace, MacAddress Mac, VmSize Size);

    /// <summary>VM <paramref name="vm"/>'s entry, read strictly (<see cref="VmRegistry"/>): four fields, each well formed, or none.</summary>
    private static Registration? Registered(string vm, ILogger? logger)
    {
        var path = RegistryFile(vm);
        if (VmRegistry.Read(path, logger) is not { } text)
            return null;
        var parts = text.Split(' ');
        if (parts.Length == 4 && int.TryParse(parts[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var pid) && pid > 1
            && IsNamespaceId(parts[1]) && MacAddress.TryParse(parts[2], out var mac) && !mac.IsGroup && mac != MacAddress.Zero
            && VmNames.TryParseSize(parts[3]) is { } size)
            return new Registration(pid, parts[1], mac, size);
        VmRegistry.Garbled(logger, path);
        return null;
    }

    /// <summary>"net:[DIGITS]", as /proc/PID/ns/net reads.</summary>
    private static bool IsNamespaceId(string text) =>
        text.Length is > 6 and < 32 && text.StartsWith("net:[", StringComparison.Ordinal) && text[^1] == ']' && text[5..^1].All(char.IsAsciiDigit);

    /// <summary>
    /// The registered VMs whose holder still holds their namespace and whose device is in this
    /// daemon's namespace (each host has its own): what a host killed before it could end its VMs
    /// left running.
    /// </summary>
    public Task<IReadOnlyList<VmSpec>> RecoverAsync()
    {
        var found = new List<VmSpec>();
        if (!Directory.Exists(Registry))
            return Task.FromResult<IReadOnlyList<VmSpec>>(found);
        foreach (var file in Directory.EnumerateFiles(Registry, "*.netns"))
        {
            var name = Path.GetFileNameWithoutExtension(file);
            if (VmNames.Problem(name) is not null || Registered(name, _logger) is not { } entry || NetnsOf(entry.Pid) != entry.Namespace)
                continue;
            var spec = new VmSpec(name, entry.Mac, entry.Size);
            if (Native.LibC.IfNameToIndex(spec.Device) != 0)
                found.Add(spec);
        }
        return Task.FromResult<IReadOnlyList<VmSpec>>(found);
    }

    /// <summary>"net:[INODE]" of a process, or null when it is gone.</summary>
    private static string? NetnsOf(int pid)
    {
        try
        {
            return new FileInfo($"/proc/{pid}/ns/net").LinkTarget;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string Holder(string vm) =>
        HolderOf(vm)?.ToString(System.Globalization.CultureInfo.InvariantCulture)
        ?? throw new DaemonCommandException($"the namespace of VM {vm} is not on this machine: a netns VM moves only between hosts of one machine");

    public async Task CreateAsync(VmSpec spec)
    {
        Directory.CreateDirectory(Registry);
        if (HolderOf(spec.Name) is not null)
            throw new DaemonCommandException($"a netns VM named {spec.Name} lives on this machine already");
        var mine = NetnsOf(Environment.ProcessId);
        // Its own session: the holder outlives this daemon's process group (the VM may move on).
        using var holder = ProcessRunner.Start(ProcessRunner.Find("setsid") ?? "setsid",
            [ProcessRunner.Find("unshare") ?? "unshare", "--net", ProcessRunner.Find("sleep") ?? "sleep", "infinity"], redirectInput: false);
        var clock = Stopwatch.StartNew();
        string? ns;
        while ((ns = NetnsOf(holder.Id)) == mine || ns is null)
        {
            if (holder.HasExited || clock.Elapsed > TimeSpan.FromSeconds(5))
            {
                ProcessRunner.Kill(holder);
                throw new DaemonCommandException($"could not make a network namespace for VM {spec.Name}");
            }
            await Task.Delay(10).ConfigureAwait(false);
        }
        VmRegistry.Write(RegistryFile(spec.Name), $"{holder.Id} {ns} {spec.Mac} {VmNames.Text(spec.Size)}");
        try
        {
            await In(spec.Name, "ip", "link", "set", "lo", "up").ConfigureAwait(false);
            await MakeNic(spec).ConfigureAwait(false);
        }
        catch
        {
            await DestroyAsync(spec).ConfigureAwait(false);
            throw;
        }
        StartDhcp(spec);
    }

    /// <summary>Runs a program in the VM's namespace and refuses when it fails.</summary>
    private static Task<string> In(string vm, string program, params string[] args) =>
        ProcessRunner.CheckAsync(ProcessRunner.Find("nsenter") ?? "nsenter", ["-t", Holder(vm), "-n", ProcessRunner.Find(program) ?? program, .. args]);

    /// <summary>The veth pair: eth0 (the VM's MAC) in the VM's namespace, the device here, both up.</summary>
    private async Task MakeNic(VmSpec spec)
    {
        await Ip("link", "add", spec.Device, "type", "veth", "peer", "name", "eth0", "address", spec.Mac.ToString(), "netns", Holder(spec.Name)).ConfigureAwait(false);
        try
        {
            // No IPv6 on the host side: its own solicitations are not the VM's traffic.
            await File.WriteAllTextAsync($"/proc/sys/net/ipv6/conf/{spec.Device}/disable_ipv6", "1").ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        await Ip("link", "set", spec.Device, "up").ConfigureAwait(false);
        await In(spec.Name, "ip", "link", "set", "eth0", "up").ConfigureAwait(false);
    }

    /// <summary>One DHCP run in the VM (in the background: the order returns before the lease).</summary>
    private void StartDhcp(VmSpec spec)
    {
        Directory.CreateDirectory(_stateDir);
        var script = Path.Combine(_stateDir, spec.Name + ".udhcpc");
        File.WriteAllText(script, DhcpScript);
        File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string[] client = ProcessRunner.Find("udhcpc") is { } udhcpc ? [udhcpc] : [ProcessRunner.Find("busybox") ?? "busybox", "udhcpc"];
        // -q: quit once leased; -n: quit when no lease; -t/-T: 30 discovers a second apart, so the
        // first ones may go while the daemons learn the VM's MAC.
        var process = ProcessRunner.Start(ProcessRunner.Find("nsenter") ?? "nsenter",
            ["-t", Holder(spec.Name), "-n", .. client, "-i", "eth0", "-s", script, "-f", "-q", "-n", "-t", "30", "-T", "1"], redirectInput: false);
        _dhcp[spec.Name] = process;
        _ = Task.Run(async () =>
        {
            var output = process.StandardOutput.ReadToEndAsync();
            var errors = process.StandardError.ReadToEndAsync();
            using var cts = new CancellationTokenSource(DhcpLimit);
            try
            {
                await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
                var text = (await output.ConfigureAwait(false)) + (await errors.ConfigureAwait(false));
                var said = LogText.Safe(text.Trim().Replace('\n', ' ').Replace("udhcpc: ", "", StringComparison.Ordinal));
                Log.Dhcp(_logger, spec.Name, process.ExitCode, said);
            }
            catch (OperationCanceledException)
            {
                ProcessRunner.Kill(process);
            }
            finally
            {
                _dhcp.TryRemove(new KeyValuePair<string, Process>(spec.Name, process));
                process.Dispose();
            }
        });
    }

    private const string DhcpScript = """
        #!/bin/sh
        # Written by the vnet netns VM provider: applies udhcpc's lease in the VM's namespace.
        case "$1" in
          deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
          bound|renew)
            ip -4 addr flush dev "$interface"
            ip addr add "$ip/${mask:-24}" dev "$interface"
            if [ -n "$router" ]; then set -- $router; ip route replace default via "$1" dev "$interface"; fi ;;
        esac
        exit 0

        """;

    private void StopDhcp(string name)
    {
        if (_dhcp.TryRemove(name, out var p))
            ProcessRunner.Kill(p);
    }

    public async Task DestroyAsync(VmSpec spec)
    {
        Log.Destroying(_logger, spec.Name);
        StopDhcp(spec.Name);
        await Ip(ignoreFailure: true, "link", "del", spec.Device).ConfigureAwait(false);
        var entry = Registered(spec.Name, _logger);
        if (entry is not null && entry.Mac != spec.Mac)
        {
            // The machine's registry is shared by its daemons: this name is another VM's now.
            Log.NotOurs(_logger, spec.Name, entry.Mac);
            VmRegistry.Delete(Path.Combine(_stateDir, spec.Name + ".udhcpc"));
            return;
        }
        if (entry is { Pid: var holder, Namespace: var ns } && NetnsOf(holder) == ns)
        {
            // The VM's programs end with it: every process in its namespace, the holder last.
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (int.TryParse(Path.GetFileName(dir), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var pid) &&
                    pid != holder && NetnsOf(pid) == ns)
                    KillProcess(pid);
            }
            KillProcess(holder);
            Log.Killed(_logger, spec.Name, holder);
        }
        VmRegistry.Delete(RegistryFile(spec.Name));
        VmRegistry.Delete(Path.Combine(_stateDir, spec.Name + ".udhcpc"));
    }

    /// <summary>SIGKILL, not waited for: a process of another daemon's making is not ours to reap.</summary>
    private static void KillProcess(int pid) => _ = Native.LibC.Kill(pid, 9);

    public Task<VmIncoming> PrepareIncomingAsync(VmSpec spec)
    {
        _ = Holder(spec.Name);
        // Refused now, while the VM still runs at its source: its device could not be made here later.
        if (Native.LibC.IfNameToIndex(spec.Device) != 0)
            throw new DaemonCommandException($"a device named {spec.Device} exists on this host already");
        return Task.FromResult(new VmIncoming(null, DeviceReady: false));
    }

    public async Task<VmHandover> SendAsync(VmSpec spec, VmIncoming incoming, Func<Task> detach)
    {
        StopDhcp(spec.Name);
        var addresses = new List<string>();
        var addrJson = await In(spec.Name, "ip", "-j", "-4", "addr", "show", "dev", "eth0").ConfigureAwait(false);
        foreach (var link in ParseArray(addrJson))
        {
            foreach (var a in link?["addr_info"]?.AsArray() ?? [])
            {
                if (a?["local"]?.GetValue<string>() is { } local && a["prefixlen"]?.GetValue<int>() is { } prefix)
                    addresses.Add($"{local}/{prefix}");
            }
        }
        string? gateway = null;
        var routeJson = await In(spec.Name, "ip", "-j", "-4", "route", "show", "default").ConfigureAwait(false);
        foreach (var r in ParseArray(routeJson))
        {
            if (r?["gateway"]?.GetValue<string>() is { } g && r["dev"]?.GetValue<string>() == "eth0")
                gateway = g;
        }
        await detach().ConfigureAwait(false);
        // eth0 goes with its peer; the namespace and its sockets stay.
        await Ip("link", "del", spec.Device).ConfigureAwait(false);
        return new VmHandover(VmMoveMode.Live, addresses, gateway);
    }

    public async Task ReceiveAsync(VmSpec spec, VmHandover handover)
    {
        await MakeNic(spec).ConfigureAwait(false);
        foreach (var a in handover.Addresses)
        {
            if (!VmNames.IsIpv4WithPrefix(a))
                throw new DaemonCommandException($"'{a}' is not an address/prefix");
            await In(spec.Name, "ip", "addr", "add", a, "dev", "eth0").ConfigureAwait(false);
        }
        if (handover.Gateway is { } g)
        {
            if (!System.Net.IPAddress.TryParse(g, out _))
                throw new DaemonCommandException($"'{g}' is not an address");
            await In(spec.Name, "ip", "route", "replace", "default", "via", g, "dev", "eth0").ConfigureAwait(false);
        }
    }

    public async Task AnnounceAsync(VmSpec spec)
    {
        var addrJson = await In(spec.Name, "ip", "-j", "-4", "addr", "show", "dev", "eth0").ConfigureAwait(false);
        var arping = ProcessRunner.Find("arping") ?? "arping";
        foreach (var link in ParseArray(addrJson))
        {
            foreach (var a in link?["addr_info"]?.AsArray() ?? [])
            {
                if (a?["local"]?.GetValue<string>() is { } local)
                    await ProcessRunner.RunAsync(ProcessRunner.Find("nsenter") ?? "nsenter", ["-t", Holder(spec.Name), "-n", arping, "-q", "-U", "-c", "1", "-w", "2", "-I", "eth0", local], TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
        }
    }

    public async Task AbortIncomingAsync(VmSpec spec) =>
        // Nothing was made at the prepare; a device made by a failed receive goes.
        await Ip(ignoreFailure: true, "link", "del", spec.Device).ConfigureAwait(false);

    public ValueTask DisposeAsync()
    {
        foreach (var name in _dhcp.Keys)
            StopDhcp(name);
        return ValueTask.CompletedTask;
    }

    /// <summary><c>ip -j</c> output: a JSON array, or nothing at all when there is nothing to show.</summary>
    private static JsonArray ParseArray(string json) =>
        json.Trim().Length == 0 ? [] : JsonNode.Parse(json) as JsonArray ?? throw new DaemonCommandException("ip -j printed no JSON array");

    private Task<string> Ip(params string[] args) => ProcessRunner.CheckAsync(_ip, args);

    private async Task Ip(bool ignoreFailure, params string[] args)
    {
        if (ignoreFailure)
            await ProcessRunner.RunAsync(_ip, args).ConfigureAwait(false);
        else
            await ProcessRunner.CheckAsync(_ip, args).ConfigureAwait(false);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 406, Level = LogLevel.Debug, Message = "VM {Vm}: destroying")]
        public static partial void Destroying(ILogger logger, string vm);

        [LoggerMessage(EventId = 407, Level = LogLevel.Debug, Message = "VM {Vm}: namespace holder {Pid} killed")]
        public static partial void Killed(ILogger logger, string vm, int pid);

        [LoggerMessage(EventId = 423, Level = LogLevel.Warning, Message = "VM {Vm}: the machine's registry has this name for another VM ({Mac}); its namespace is left alone")]
        public static partial void NotOurs(ILogger logger, string vm, MacAddress mac);

        [LoggerMessage(EventId = 400, Level = LogLevel.Information, Message = "VM {Vm}: DHCP client ended with {Code}: {Output}")]
        public static partial void Dhcp(ILogger logger, string vm, int code, string output);
    }
}
