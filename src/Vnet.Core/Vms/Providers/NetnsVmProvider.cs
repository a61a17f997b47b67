using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Vnet.Daemon;

namespace Vnet.Vms.Providers;

/// <summary>
/// VMs as network namespaces, for demos and tests: VM <c>web1</c> is namespace <c>vnet-vm-web1</c>
/// whose <c>eth0</c> is one end of a veth pair (the VM's MAC); the other end, <c>vm-web1</c>, is in
/// the daemon's own namespace, where the daemon opens it as a pcap interface. The VM takes its
/// address by DHCP from the home LAN (one <c>udhcpc -q</c> run with a script written here).
/// <para>A move keeps the namespace, so its sockets (open TCP connections) survive: the source
/// reads eth0's IPv4 addresses and default route, deletes its veth (eth0 goes with it); the target
/// makes a new veth into the same namespace, eth0 again with the same MAC, restores the addresses and
/// route, and sends a gratuitous ARP. Namespaces are per machine: such a move works between hosts
/// running on one machine (the demo's, the tests'), not between machines.</para>
/// </summary>
public sealed partial class NetnsVmProvider : IVmProvider
{
    public const string NamespacePrefix = "vnet-vm-";
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

    public static string NamespaceOf(string vm) => NamespacePrefix + vm;

    private static bool NamespaceExists(string ns) => File.Exists(Path.Combine("/run/netns", ns));

    public async Task CreateAsync(VmSpec spec)
    {
        var ns = NamespaceOf(spec.Name);
        if (NamespaceExists(ns))
            throw new DaemonCommandException($"namespace {ns} exists already: a VM of that name lives on this machine");
        await Ip("netns", "add", ns).ConfigureAwait(false);
        try
        {
            await Ip("-n", ns, "link", "set", "lo", "up").ConfigureAwait(false);
            await MakeNic(spec, ns).ConfigureAwait(false);
        }
        catch
        {
            await DestroyAsync(spec).ConfigureAwait(false);
            throw;
        }
        StartDhcp(spec, ns);
    }

    /// <summary>The veth pair: eth0 (the VM's MAC) in the VM's namespace, the device here, both up.</summary>
    private async Task MakeNic(VmSpec spec, string ns)
    {
        await Ip("link", "add", spec.Device, "type", "veth", "peer", "name", "eth0", "address", spec.Mac.ToString(), "netns", ns).ConfigureAwait(false);
        try
        {
            // No IPv6 on the host side: its own solicitations are not the VM's traffic.
            await File.WriteAllTextAsync($"/proc/sys/net/ipv6/conf/{spec.Device}/disable_ipv6", "1").ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        await Ip("link", "set", spec.Device, "up").ConfigureAwait(false);
        await Ip("-n", ns, "link", "set", "eth0", "up").ConfigureAwait(false);
    }

    /// <summary>One DHCP run in the VM (in the background: the order returns before the lease).</summary>
    private void StartDhcp(VmSpec spec, string ns)
    {
        Directory.CreateDirectory(_stateDir);
        var script = Path.Combine(_stateDir, ns + ".udhcpc");
        File.WriteAllText(script, DhcpScript);
        File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string[] client = ProcessRunner.Find("udhcpc") is { } udhcpc ? [udhcpc] : [ProcessRunner.Find("busybox") ?? "busybox", "udhcpc"];
        // -q: quit once leased; -n: quit when no lease; -t/-T: 30 discovers a second apart, so the
        // first ones may go while the daemons learn the VM's MAC.
        var process = ProcessRunner.Start(_ip, ["netns", "exec", ns, .. client, "-i", "eth0", "-s", script, "-f", "-q", "-n", "-t", "30", "-T", "1"], redirectInput: false);
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
                var said = LogText.Safe(text.Trim().Replace('\n', ' '));
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
        var ns = NamespaceOf(spec.Name);
        StopDhcp(spec.Name);
        await Ip(ignoreFailure: true, "link", "del", spec.Device).ConfigureAwait(false);
        if (NamespaceExists(ns))
        {
            // The VM's programs end with it.
            var pids = await ProcessRunner.RunAsync(_ip, ["netns", "pids", ns]).ConfigureAwait(false);
            foreach (var line in pids.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                if (int.TryParse(line, System.Globalization.CultureInfo.InvariantCulture, out var pid))
                {
                    try
                    {
                        using var p = Process.GetProcessById(pid);
                        p.Kill();
                    }
                    catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
                    {
                    }
                }
            }
            await Ip(ignoreFailure: true, "netns", "del", ns).ConfigureAwait(false);
        }
        File.Delete(Path.Combine(_stateDir, ns + ".udhcpc"));
    }

    public Task<VmIncoming> PrepareIncomingAsync(VmSpec spec)
    {
        var ns = NamespaceOf(spec.Name);
        if (!NamespaceExists(ns))
            throw new DaemonCommandException($"VM namespace {ns} is not on this machine: a netns VM moves only between hosts of one machine");
        return Task.FromResult(new VmIncoming(null, DeviceReady: false));
    }

    public async Task<VmHandover> SendAsync(VmSpec spec, VmIncoming incoming, Func<Task> detach)
    {
        var ns = NamespaceOf(spec.Name);
        StopDhcp(spec.Name);
        var addresses = new List<string>();
        var addrJson = await ProcessRunner.CheckAsync(_ip, ["-j", "-n", ns, "-4", "addr", "show", "dev", "eth0"]).ConfigureAwait(false);
        foreach (var link in JsonNode.Parse(addrJson)?.AsArray() ?? [])
        {
            foreach (var a in link?["addr_info"]?.AsArray() ?? [])
            {
                if (a?["local"]?.GetValue<string>() is { } local && a["prefixlen"]?.GetValue<int>() is { } prefix)
                    addresses.Add($"{local}/{prefix}");
            }
        }
        string? gateway = null;
        var routeJson = await ProcessRunner.CheckAsync(_ip, ["-j", "-n", ns, "-4", "route", "show", "default"]).ConfigureAwait(false);
        foreach (var r in JsonNode.Parse(routeJson)?.AsArray() ?? [])
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
        var ns = NamespaceOf(spec.Name);
        await MakeNic(spec, ns).ConfigureAwait(false);
        foreach (var a in handover.Addresses)
        {
            if (!VmNames.IsIpv4WithPrefix(a))
                throw new DaemonCommandException($"'{a}' is not an address/prefix");
            await Ip("-n", ns, "addr", "add", a, "dev", "eth0").ConfigureAwait(false);
        }
        if (handover.Gateway is { } g)
        {
            if (!System.Net.IPAddress.TryParse(g, out _))
                throw new DaemonCommandException($"'{g}' is not an address");
            await Ip("-n", ns, "route", "replace", "default", "via", g, "dev", "eth0").ConfigureAwait(false);
        }
    }

    public async Task AnnounceAsync(VmSpec spec)
    {
        var ns = NamespaceOf(spec.Name);
        var addrJson = await ProcessRunner.CheckAsync(_ip, ["-j", "-n", ns, "-4", "addr", "show", "dev", "eth0"]).ConfigureAwait(false);
        var arping = ProcessRunner.Find("arping") ?? "arping";
        foreach (var link in JsonNode.Parse(addrJson)?.AsArray() ?? [])
        {
            foreach (var a in link?["addr_info"]?.AsArray() ?? [])
            {
                if (a?["local"]?.GetValue<string>() is { } local)
                    await ProcessRunner.RunAsync(_ip, ["netns", "exec", ns, arping, "-q", "-U", "-c", "1", "-w", "2", "-I", "eth0", local], TimeSpan.FromSeconds(5)).ConfigureAwait(false);
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
        [LoggerMessage(EventId = 400, Level = LogLevel.Information, Message = "VM {Vm}: DHCP client ended with {Code}: {Output}")]
        public static partial void Dhcp(ILogger logger, string vm, int code, string output);
    }
}
