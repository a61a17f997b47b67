using System.CommandLine;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Links.Security;

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
        var keyFile = new Option<string?>("--key-file") { Description = "This daemon's private key file, mode 0600 ('vnet keygen'); - reads it from standard input" };
        var pskFile = new Option<string?>("--psk-file") { Description = "The overlay's preshared key file, if it has one (mode 0600)" };
        var proxy = new Option<string?>("--proxy") { Description = "Hosts: the Proxy's address:port" };
        var proxyKey = new Option<string?>("--proxy-key") { Description = "Hosts: the Proxy's public key" };
        var admit = new Option<string[]>("--admit") { Description = "Proxy: admit a host, NAME=PUBLIC_KEY (repeatable)", Arity = ArgumentArity.ZeroOrMore };
        var hostsFile = new Option<string?>("--hosts-file") { Description = "Proxy: keep run-time admissions in this file" };
        var adminKeys = new Option<string[]>("--admin-key") { Description = "An administrator's public key for 'vnet --remote' (repeatable)", Arity = ArgumentArity.ZeroOrMore };
        var acceptTools = new Option<bool?>("--accept-tools") { Description = "Serve 'vnet --remote' (default: on the Proxy when it has administrators)" };
        var proxyName = new Option<string?>("--proxy-name") { Description = "Hosts: the Proxy's daemon name (default proxy)" };
        var transport = new Option<string?>("--transport") { Description = "Hosts: star link transport, tcp or udp (default tcp)" };
        transport.AcceptOnlyFromAmong("tcp", "udp");
        var streams = new Option<int?>("--streams") { Description = "Hosts: parallel sessions of the star link (TCP or UDP), 1 to 8, frames spread over them by flow (default 1)" };
        var taps = new Option<string[]>("--tap") { Description = "TAP interface to create or attach (repeatable)", Arity = ArgumentArity.ZeroOrMore };
        var pcaps = new Option<string[]>("--pcap") { Description = "Existing NIC to open as a packet socket, interface kind pcap (repeatable)", Arity = ArgumentArity.ZeroOrMore };
        var lans = new Option<string[]>("--lan") { Description = "Proxy: interface that is the user's LAN (repeatable)", Arity = ArgumentArity.ZeroOrMore };
        var mtu = new Option<int?>("--mtu") { Description = "MTU of the interfaces (default 1500)" };
        var noOffloads = new Option<bool>("--no-offloads") { Description = "Open TAPs without IFF_VNET_HDR/TSO, and leave pcap devices' GRO as it is (for comparison)" };
        var tapQueues = new Option<int?>("--tap-queues") { Description = $"Receive queues of the --tap interfaces, 1 to {InterfaceConfig.MaxQueues} (IFF_MULTI_QUEUE above 1; default 1)" };
        var socket = new Option<string?>("--control-socket") { Description = "Control socket path (default /run/vnet/NAME.sock)" };
        var metrics = new Option<string?>("--metrics") { Description = "Serve Prometheus metrics at http://ADDR:PORT/metrics, e.g. 127.0.0.1:9464 (no authentication; default: off)" };
        var web = new Option<string?>("--web") { Description = "Proxy: serve the web front at http://ADDR:PORT/ (PORT alone: 127.0.0.1; default: off; docs/web.md)" };
        var webTokenFile = new Option<string?>("--web-token-file") { Description = "The web front's token file, mode 0600 (required when --web is not a loopback address)" };
        var webTlsCert = new Option<string?>("--web-tls-cert") { Description = "The web front's TLS certificate (PEM): it serves HTTPS (with --web-tls-key)" };
        var webTlsKey = new Option<string?>("--web-tls-key") { Description = "The web front's TLS private key (PEM), mode 0600" };
        var vmProvider = new Option<string?>("--vm-provider") { Description = "Hosts: make VMs on the Proxy's order with netns (namespaces, demos) or qemu (default: none)" };
        vmProvider.AcceptOnlyFromAmong("none", "netns", "qemu");
        var forwardingNice = new Option<int?>("--forwarding-nice") { Description = "Nice value of the threads that forward frames, -20 to 19 (default -10, ahead of ordinary processes; 0 leaves them alone)" };
        var logLevel = new Option<string>("--log-level") { Description = "trace, debug, information, warning, error", DefaultValueFactory = _ => "information" };
        logLevel.AcceptOnlyFromAmong("trace", "debug", "information", "warning", "error");

        var command = new Command("daemon", "Run a VNET daemon (a host, or the Proxy) until SIGTERM or SIGINT.")
        {
            config, name, role, listen, keyFile, pskFile, proxy, proxyKey, proxyName, transport, streams, admit, hostsFile, adminKeys, acceptTools,
            taps, pcaps, lans, mtu, noOffloads, tapQueues, socket, metrics, web, webTokenFile, webTlsCert, webTlsKey, vmProvider, forwardingNice, logLevel,
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
                    if (parse.GetValue(metrics) is { } m)
                        daemonConfig = daemonConfig with { Metrics = DaemonConfig.ParseMetrics(m, "--metrics") };
                    if (parse.GetValue(web) is { } w)
                        daemonConfig = daemonConfig with { Web = DaemonConfig.ParseWeb(w, "--web") };
                    if (parse.GetValue(webTokenFile) is { } t)
                        daemonConfig = daemonConfig with { WebToken = DaemonConfig.ReadWebToken(t, "--web-token-file") };
                    if (DaemonConfig.ReadWebTls(parse.GetValue(webTlsCert), parse.GetValue(webTlsKey), "--web-tls-cert", "--web-tls-key") is { } tls)
                        daemonConfig = daemonConfig with { WebTls = tls };
                    if (parse.GetValue(vmProvider) is { } v)
                        daemonConfig = daemonConfig with { VmProvider = DaemonConfig.ReadVmProvider(v, "--vm-provider") };
                    daemonConfig = daemonConfig.Validated();
                }
                else
                {
                    daemonConfig = FromOptions(parse, new Options(name, role, listen, keyFile, pskFile, proxy, proxyKey, proxyName, transport, streams, admit, hostsFile,
                        adminKeys, acceptTools, taps, pcaps, lans, mtu, noOffloads, tapQueues, socket, metrics, web, webTokenFile, webTlsCert, webTlsKey, vmProvider));
                }
                if (parse.GetValue(forwardingNice) is { } nice)
                    daemonConfig = (daemonConfig with { ForwardingNice = nice }).Validated();
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

    private sealed record Options(Option<string?> Name, Option<string?> Role, Option<string?> Listen, Option<string?> KeyFile, Option<string?> PskFile,
        Option<string?> Proxy, Option<string?> ProxyKey, Option<string?> ProxyName, Option<string?> Transport, Option<int?> Streams, Option<string[]> Admit,
        Option<string?> HostsFile, Option<string[]> AdminKeys, Option<bool?> AcceptTools, Option<string[]> Taps, Option<string[]> Pcaps,
        Option<string[]> Lans, Option<int?> Mtu, Option<bool> NoOffloads, Option<int?> TapQueues, Option<string?> Socket, Option<string?> Metrics,
        Option<string?> Web, Option<string?> WebTokenFile, Option<string?> WebTlsCert, Option<string?> WebTlsKey, Option<string?> VmProvider);

    private static DaemonConfig FromOptions(ParseResult p, Options o)
    {
        var n = p.GetValue(o.Name) ?? throw new ConfigException("--name", "missing (or give --config)");
        var r = p.GetValue(o.Role) switch
        {
            "proxy" => DaemonRole.Proxy,
            "host" => DaemonRole.Host,
            _ => throw new ConfigException("--role", "missing: host or proxy"),
        };
        var listenText = p.GetValue(o.Listen) ?? "0.0.0.0:5500";
        if (!IPEndPoint.TryParse(listenText, out var listenEp) || listenEp.Port == 0)
            throw new ConfigException("--listen", $"'{listenText}' is not an address:port");
        // Keys come from files only: a command line is visible to every user in /proc.
        var keyPath = p.GetValue(o.KeyFile) ?? throw new ConfigException("--key-file", "missing (this daemon's private key; make one with 'vnet keygen')");
        var identity = StaticKeyPair.TryParse(KeyFiles.Read(keyPath, "--key-file"), out var keyError) ?? throw new ConfigException("--key-file", keyError!);
        var psk = PresharedKey.None;
        if (p.GetValue(o.PskFile) is { } pskPath)
            psk = PresharedKey.TryParse(KeyFiles.Read(pskPath, "--psk-file"), out keyError) ?? throw new ConfigException("--psk-file", keyError!);
        IPEndPoint? proxyEp = null;
        if (p.GetValue(o.Proxy) is { } proxyText && (!IPEndPoint.TryParse(proxyText, out proxyEp) || proxyEp.Port == 0))
            throw new ConfigException("--proxy", $"'{proxyText}' is not an address:port");
        PublicKeyId? proxyKey = null;
        if (p.GetValue(o.ProxyKey) is { } proxyKeyText && !PublicKeyId.TryParse(proxyKeyText, out proxyKey))
            throw new ConfigException("--proxy-key", $"'{proxyKeyText}' is not a public key");
        var hosts = new List<AdmittedHost>();
        foreach (var entry in p.GetValue(o.Admit) ?? [])
        {
            var eq = entry.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || !PublicKeyId.TryParse(entry[(eq + 1)..], out var hostKey))
                throw new ConfigException("--admit", $"'{entry}' is not NAME=PUBLIC_KEY");
            hosts.Add(new AdmittedHost(entry[..eq], hostKey, $"--admit {entry[..eq]}"));
        }
        var admins = new List<PublicKeyId>();
        foreach (var text in p.GetValue(o.AdminKeys) ?? [])
            admins.Add(PublicKeyId.TryParse(text, out var admin) ? admin : throw new ConfigException("--admin-key", $"'{text}' is not a public key"));
        var lanSet = new HashSet<string>(p.GetValue(o.Lans) ?? [], StringComparer.Ordinal);
        var interfaces = new List<InterfaceConfig>();
        var m = p.GetValue(o.Mtu) ?? 1500;
        var queues = p.GetValue(o.TapQueues) ?? 1;
        if (queues is < 1 or > InterfaceConfig.MaxQueues)
            throw new ConfigException("--tap-queues", $"{queues} is out of range (1..{InterfaceConfig.MaxQueues})");
        if (queues > 1 && (p.GetValue(o.Taps) ?? []).Length == 0)
            throw new ConfigException("--tap-queues", "applies to --tap interfaces, and there is none");
        foreach (var t in p.GetValue(o.Taps) ?? [])
        {
            interfaces.Add(new InterfaceConfig
            {
                Name = t, Kind = InterfaceKind.Tap, Mtu = m, Lan = lanSet.Contains(t), Learn = !lanSet.Contains(t), Offloads = !p.GetValue(o.NoOffloads),
                Queues = queues,
            });
        }
        foreach (var c in p.GetValue(o.Pcaps) ?? [])
        {
            var lan = lanSet.Contains(c) || r == DaemonRole.Proxy;
            interfaces.Add(new InterfaceConfig { Name = c, Kind = InterfaceKind.Pcap, Mtu = m, Lan = lan, Learn = !lan, Offloads = !p.GetValue(o.NoOffloads) });
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
            Identity = identity,
            Psk = psk,
            ProxyAddress = proxyEp,
            ProxyKey = proxyKey,
            ProxyName = p.GetValue(o.ProxyName) ?? "proxy",
            ProxyTransport = p.GetValue(o.Transport) == "udp" ? LinkTransport.Udp : LinkTransport.Tcp,
            ProxyStreams = p.GetValue(o.Streams) ?? 1,
            Hosts = hosts,
            HostsFile = p.GetValue(o.HostsFile) is { } hostsFile ? Path.GetFullPath(hostsFile) : null,
            AdminKeys = admins,
            AcceptTools = p.GetValue(o.AcceptTools),
            Interfaces = interfaces,
            ControlSocket = p.GetValue(o.Socket),
            Metrics = p.GetValue(o.Metrics) is { } metrics ? DaemonConfig.ParseMetrics(metrics, "--metrics") : null,
            Web = p.GetValue(o.Web) is { } web ? DaemonConfig.ParseWeb(web, "--web") : null,
            WebToken = p.GetValue(o.WebTokenFile) is { } tokenFile ? DaemonConfig.ReadWebToken(tokenFile, "--web-token-file") : null,
            WebTls = DaemonConfig.ReadWebTls(p.GetValue(o.WebTlsCert), p.GetValue(o.WebTlsKey), "--web-tls-cert", "--web-tls-key"),
            VmProvider = DaemonConfig.ReadVmProvider(p.GetValue(o.VmProvider), "--vm-provider"),
        }.Validated().WithHostsFile();
    }

    private static async Task<int> Run(DaemonConfig config, string logLevel, CancellationToken ct)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, Args = [] });
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(Enum.Parse<LogLevel>(logLevel, ignoreCase: true));
        // A daemon that cannot start says why in one line on stderr (below); the generic host would
        // also log the same exception with its stack trace ("Hosting failed to start").
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical);
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
    private System.Runtime.InteropServices.PosixSignalRegistration? _reload;

    // The daemon once it serves (SIGHUP reloads it), and a SIGHUP that came before that.
    private VnetDaemon? _serving;
    private int _reloadPending;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        // SIGHUP re-reads the keys (administrators, hosts, the hosts file), as tinc does; it no
        // longer ends the process. Registered before the daemon serves anything: registered after,
        // a SIGHUP sent once the daemon answered its first request met the default action and
        // ended the process. One that comes before the daemon serves is taken once it does.
        // (A daemon started with SIGHUP ignored, under nohup, keeps ignoring it: the runtime
        // respects that; `vnet reload` does the same.)
        _reload = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGHUP, context =>
        {
            context.Cancel = true;
            if (Volatile.Read(ref _serving) is { } serving)
            {
                _ = serving.ReloadFromSignalAsync();
                return;
            }
            Volatile.Write(ref _reloadPending, 1);
            // The daemon may have started serving meanwhile and looked for a pending one already.
            if (Volatile.Read(ref _serving) is { } late && Interlocked.Exchange(ref _reloadPending, 0) == 1)
                _ = late.ReloadFromSignalAsync();
        });
        _daemon = new VnetDaemon(config, loggers);
        try
        {
            var commands = DaemonControl.Attach(_daemon);
            await _daemon.StartAsync();
            _control = new ControlServer(config.ControlSocketPath, commands, loggers.CreateLogger("vnet.control"));
            _control.Start();
            Volatile.Write(ref _serving, _daemon);
            if (Interlocked.Exchange(ref _reloadPending, 0) == 1)
                _ = _daemon.ReloadFromSignalAsync();
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
        _reload?.Dispose();
        _reload = null;
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
