using System.CommandLine;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Links;

namespace Vnet.Cli;

/// <summary><c>vnet daemon</c>: runs a host daemon or the Proxy until SIGTERM/SIGINT.</summary>
internal static class DaemonCommand
{
    public static Command Create()
    {
        var config = new Option<FileInfo?>("--config", "-c") { Description = "TOML configuration file (see docs/daemon.md)" };
        var name = new Option<string?>("--name") { Description = "Daemon name (without --config)" };
        var role = new Option<string?>("--role") { Description = "host or proxy (without --config)" };
        role.AcceptOnlyFromAmong("host", "proxy");
        var listen = new Option<string?>("--listen") { Description = "TCP and UDP address:port to listen on (default 0.0.0.0:5500)" };
        var key = new Option<string?>("--key") { Description = "Network key, base64 (see 'vnet keygen')" };
        var keyFile = new Option<FileInfo?>("--key-file") { Description = "File holding the network key" };
        var proxy = new Option<string?>("--proxy") { Description = "Hosts: the Proxy's address:port" };
        var proxyName = new Option<string?>("--proxy-name") { Description = "Hosts: the Proxy's daemon name (default proxy)" };
        var transport = new Option<string?>("--transport") { Description = "Hosts: star link transport, tcp or udp (default tcp)" };
        transport.AcceptOnlyFromAmong("tcp", "udp");
        var taps = new Option<string[]>("--tap") { Description = "TAP interface to create or attach (repeatable)", Arity = ArgumentArity.ZeroOrMore };
        var pcaps = new Option<string[]>("--pcap") { Description = "Existing NIC to open through libpcap (repeatable)", Arity = ArgumentArity.ZeroOrMore };
        var lans = new Option<string[]>("--lan") { Description = "Proxy: interface that is the user's LAN (repeatable)", Arity = ArgumentArity.ZeroOrMore };
        var mtu = new Option<int?>("--mtu") { Description = "MTU of the interfaces (default 1500)" };
        var noOffloads = new Option<bool>("--no-offloads") { Description = "Open TAPs without IFF_VNET_HDR/TSO (for comparison)" };
        var socket = new Option<string?>("--control-socket") { Description = "Control socket path (default /run/vnet/NAME.sock)" };
        var logLevel = new Option<string>("--log-level") { Description = "trace, debug, information, warning, error", DefaultValueFactory = _ => "information" };
        logLevel.AcceptOnlyFromAmong("trace", "debug", "information", "warning", "error");

        var command = new Command("daemon", "Run a VNET daemon (a host, or the Proxy) until SIGTERM or SIGINT.")
        {
            config, name, role, listen, key, keyFile, proxy, proxyName, transport, taps, pcaps, lans, mtu, noOffloads, socket, logLevel,
        };
        command.SetAction(async (parse, ct) =>
        {
            DaemonConfig daemonConfig;
            try
            {
                var file = parse.GetValue(config);
                if (file is not null)
                {
                    if (parse.GetValue(name) is not null || parse.GetValue(role) is not null)
                        throw new ConfigException("--config", "give either a configuration file or --name/--role options, not both");
                    daemonConfig = DaemonConfig.Load(file.FullName);
                    if (parse.GetValue(socket) is { } s)
                        daemonConfig = daemonConfig with { ControlSocket = s };
                }
                else
                {
                    daemonConfig = FromOptions(parse, name, role, listen, key, keyFile, proxy, proxyName, transport, taps, pcaps, lans, mtu, noOffloads, socket);
                }
            }
            catch (ConfigException e)
            {
                await Console.Error.WriteLineAsync($"vnet: bad configuration: {e.Message}");
                return 2;
            }
            return await Run(daemonConfig, parse.GetValue(logLevel)!, ct);
        });
        return command;
    }

    private static DaemonConfig FromOptions(ParseResult p, Option<string?> name, Option<string?> role, Option<string?> listen,
        Option<string?> key, Option<FileInfo?> keyFile, Option<string?> proxy, Option<string?> proxyName, Option<string?> transport,
        Option<string[]> taps, Option<string[]> pcaps, Option<string[]> lans, Option<int?> mtu, Option<bool> noOffloads, Option<string?> socket)
    {
        var n = p.GetValue(name) ?? throw new ConfigException("--name", "missing (or give --config)");
        var r = p.GetValue(role) switch
        {
            "proxy" => DaemonRole.Proxy,
            "host" => DaemonRole.Host,
            _ => throw new ConfigException("--role", "missing: host or proxy"),
        };
        var listenText = p.GetValue(listen) ?? "0.0.0.0:5500";
        if (!IPEndPoint.TryParse(listenText, out var listenEp) || listenEp.Port == 0)
            throw new ConfigException("--listen", $"'{listenText}' is not an address:port");
        string keyText;
        if (p.GetValue(key) is { } k)
            keyText = k;
        else if (p.GetValue(keyFile) is { } f)
            keyText = File.Exists(f.FullName) ? File.ReadAllText(f.FullName) : throw new ConfigException("--key-file", $"{f.FullName} does not exist");
        else
            throw new ConfigException("--key", "missing (--key or --key-file; make one with 'vnet keygen')");
        if (!NetworkKey.TryParse(keyText, out var networkKey, out var keyError))
            throw new ConfigException("--key", keyError!);
        IPEndPoint? proxyEp = null;
        if (p.GetValue(proxy) is { } proxyText && (!IPEndPoint.TryParse(proxyText, out proxyEp) || proxyEp.Port == 0))
            throw new ConfigException("--proxy", $"'{proxyText}' is not an address:port");
        var lanSet = new HashSet<string>(p.GetValue(lans) ?? [], StringComparer.Ordinal);
        var interfaces = new List<InterfaceConfig>();
        var m = p.GetValue(mtu) ?? 1500;
        foreach (var t in p.GetValue(taps) ?? [])
            interfaces.Add(new InterfaceConfig { Name = t, Kind = InterfaceKind.Tap, Mtu = m, Lan = lanSet.Contains(t), Learn = !lanSet.Contains(t), Offloads = !p.GetValue(noOffloads) });
        foreach (var c in p.GetValue(pcaps) ?? [])
        {
            var lan = lanSet.Contains(c) || r == DaemonRole.Proxy;
            interfaces.Add(new InterfaceConfig { Name = c, Kind = InterfaceKind.Pcap, Mtu = m, Lan = lan, Learn = !lan });
        }
        foreach (var l in lanSet)
        {
            if (!interfaces.Exists(i => i.Name == l))
                throw new ConfigException("--lan", $"'{l}' is not one of the --tap or --pcap interfaces");
        }
        return new DaemonConfig
        {
            Name = n,
            Role = r,
            Listen = listenEp,
            Key = networkKey!,
            ProxyAddress = proxyEp,
            ProxyName = p.GetValue(proxyName) ?? "proxy",
            ProxyTransport = p.GetValue(transport) == "udp" ? LinkTransport.Udp : LinkTransport.Tcp,
            Interfaces = interfaces,
            ControlSocket = p.GetValue(socket),
        }.Validated();
    }

    private static async Task<int> Run(DaemonConfig config, string logLevel, CancellationToken ct)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, Args = [] });
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(Enum.Parse<LogLevel>(logLevel, ignoreCase: true));
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
        });
        builder.Services.AddSingleton(config);
        builder.Services.AddHostedService<DaemonService>();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5));
        using var host = builder.Build();
        try
        {
            await host.RunAsync(ct);
            return 0;
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidOperationException or ArgumentException or UnauthorizedAccessException or DllNotFoundException)
        {
            await Console.Error.WriteLineAsync($"vnet: cannot start daemon {config.Name}: {e.Message}");
            return 1;
        }
    }
}

/// <summary>Runs the daemon and its control socket inside the generic host (clean stop on SIGTERM/SIGINT).</summary>
internal sealed class DaemonService(DaemonConfig config, ILoggerFactory loggers) : IHostedService, IAsyncDisposable
{
    private VnetDaemon? _daemon;
    private ControlServer? _control;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _daemon = new VnetDaemon(config, loggers);
        try
        {
            var commands = DaemonControl.Attach(_daemon);
            await _daemon.StartAsync();
            _control = new ControlServer(config.ControlSocketPath, commands, loggers.CreateLogger("vnet.control"));
            _control.Start();
        }
        catch
        {
            await DisposeAsync();
            throw;
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken) => await DisposeAsync();

    public async ValueTask DisposeAsync()
    {
        if (_control is not null)
        {
            await _control.DisposeAsync();
            _control = null;
        }
        if (_daemon is not null)
        {
            await _daemon.DisposeAsync();
            _daemon = null;
        }
    }
}
