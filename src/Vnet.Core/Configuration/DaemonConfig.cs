using System.Globalization;
using System.Net;
using Tomlyn;
using Tomlyn.Model;
using Tomlyn.Parsing;
using Tomlyn.Syntax;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;
using Vnet.Links.Security;

namespace Vnet.Configuration;

public enum InterfaceKind
{
    Tap,
    Pcap,
}

/// <summary>A local interface in a daemon's configuration.</summary>
public sealed record InterfaceConfig
{
    public required string Name { get; init; }

    public InterfaceKind Kind { get; init; } = InterfaceKind.Tap;

    public int Mtu { get; init; } = 1500;

    /// <summary>Linux bridge to add a TAP to (created if missing), for VMs whose TAP QEMU owns.</summary>
    public string? Bridge { get; init; }

    /// <summary>VM MACs known up front; others are learned from the frames the interface carries.</summary>
    public IReadOnlyList<MacAddress> Macs { get; init; } = [];

    /// <summary>Learn VM MACs from the source of the frames read on this interface.</summary>
    public bool Learn { get; init; } = true;

    /// <summary>
    /// The user's LAN (Proxy only): the default destination of frames for MACs no VM has, and the
    /// interface that gives VMs their presence on the LAN. Never learns VM MACs.
    /// </summary>
    public bool Lan { get; init; }

    /// <summary>TAP offloads (IFF_VNET_HDR, TSO); off only to compare or for old kernels.</summary>
    public bool Offloads { get; init; } = true;

    /// <summary>
    /// TAP receive queues (IFF_MULTI_QUEUE above 1), each read by its own thread; the kernel keeps
    /// every flow on one queue. 1 is a plain TAP.
    /// </summary>
    public int Queues { get; init; } = 1;

    /// <summary>Most queues a TAP interface may have.</summary>
    public const int MaxQueues = Vnet.Interfaces.TapInterface.MaxQueues;
}

/// <summary>A link this daemon dials at start (besides the star link to the Proxy); the peer's key when it is not learned from the Proxy.</summary>
/// <summary>A link this daemon dials; <paramref name="Streams"/> parallel sessions (1 to 8; on a UDP link each with its own UDP socket), frames spread over them by flow.</summary>
public sealed record LinkConfig(string Peer, IPEndPoint Address, LinkTransport Transport, PublicKeyId? PublicKey = null, int Streams = 1);

/// <summary>Proxy: a host admitted to the overlay, by name and public key; <paramref name="Where"/> names its entry in errors.</summary>
public sealed record AdmittedHost(string Name, PublicKeyId PublicKey, string? Where = null)
{
    public string Entry => Where ?? $"host '{Name}'";
}

/// <summary>
/// A daemon's own settings: who it is, where it listens, its key, its interfaces. What the overlay
/// looks like beyond that (extra links, rules) is run-time state set through the control API.
/// </summary>
public sealed record DaemonConfig
{
    public required string Name { get; init; }

    public required DaemonRole Role { get; init; }

    public required IPEndPoint Listen { get; init; }

    /// <summary>This daemon's key pair (its private key file): its identity on every link.</summary>
    public required StaticKeyPair Identity { get; init; }

    /// <summary>The overlay's optional shared secret, mixed into every handshake (as WireGuard's preshared key).</summary>
    public PresharedKey Psk { get; init; } = PresharedKey.None;

    /// <summary>Hosts: the Proxy's public key, pinned (a host talks to no other Proxy).</summary>
    public PublicKeyId? ProxyKey { get; init; }

    /// <summary>Proxy: the hosts admitted to the overlay (more can be admitted at run time).</summary>
    public IReadOnlyList<AdmittedHost> Hosts { get; init; } = [];

    /// <summary>Proxy: a file that keeps the hosts admitted at run time across restarts (one "NAME KEY" a line).</summary>
    public string? HostsFile { get; init; }

    /// <summary>Proxy: the hosts the hosts file admits (read by <see cref="WithHostsFile"/>).</summary>
    public IReadOnlyList<AdmittedHost> RuntimeHosts { get; init; } = [];

    /// <summary>The configuration file this was read from; null when it came from options. A reload reads it again.</summary>
    public string? Source { get; init; }

    /// <summary>Keys that may control this daemon remotely (<c>vnet --remote</c>).</summary>
    public IReadOnlyList<PublicKeyId> AdminKeys { get; init; } = [];

    /// <summary>Whether remote control is served here at all (default: on the Proxy when it has administrators).</summary>
    public bool? AcceptTools { get; init; }

    public bool ServesTools => AcceptTools ?? (Role == DaemonRole.Proxy && AdminKeys.Count > 0);

    /// <summary>Hosts: the Proxy's name and address, and the transport of the star link.</summary>
    public string ProxyName { get; init; } = "proxy";

    public IPEndPoint? ProxyAddress { get; init; }

    public LinkTransport ProxyTransport { get; init; } = LinkTransport.Tcp;

    /// <summary>Hosts: parallel connections of the star link (TCP only; 1 to 8, default 1).</summary>
    public int ProxyStreams { get; init; } = 1;

    public IReadOnlyList<InterfaceConfig> Interfaces { get; init; } = [];

    public IReadOnlyList<LinkConfig> Links { get; init; } = [];

    public string? ControlSocket { get; init; }

    /// <summary>
    /// Where the daemon serves <c>GET /metrics</c> (Prometheus text) over HTTP; null: no HTTP port
    /// at all (the default). It has no authentication: a non-loopback address shows the counters to
    /// whoever reaches it.
    /// </summary>
    public IPEndPoint? Metrics { get; init; }

    /// <summary>
    /// Proxy: where the web front is served (<c>web</c>, <c>--web</c>; docs/web.md); null: none (the
    /// default). A host refuses the setting: it is reached through the Proxy, whose front shows it.
    /// </summary>
    public IPEndPoint? Web { get; init; }

    /// <summary>
    /// The web front's token, read from <c>web_token_file</c> (<c>--web-token-file</c>), a private
    /// file as the key files are. Required when <see cref="Web"/> is not a loopback address; with
    /// it, every request must carry it (a bearer header or the cookie the login sets).
    /// </summary>
    public WebToken? WebToken { get; init; }

    /// <summary>
    /// The web front's certificate and key (<c>web_tls_cert_file</c> and <c>web_tls_key_file</c>,
    /// <c>--web-tls-cert</c> and <c>--web-tls-key</c>): it serves HTTPS. Without it, plain HTTP (a
    /// warning at start when the address is not loopback: the token would cross the network in clear).
    /// </summary>
    public WebTls? WebTls { get; init; }

    public byte HopLimit { get; init; } = 8;

    /// <summary>
    /// The nice value of the threads that forward frames (<c>forwarding_nice</c>,
    /// <c>--forwarding-nice</c>; -20..19, 0 leaves them alone): -10 by default, ahead of ordinary
    /// processes as a kernel tunnel's softirq work is (<see cref="Engine.ForwardingPriority"/>).
    /// </summary>
    public int ForwardingNice { get; init; } = Engine.ForwardingPriority.DefaultNice;

    /// <summary>Hosts: what makes VMs here on the Proxy's order (<c>vm_provider</c>); none by default.</summary>
    public Vms.Providers.VmProviderKind VmProvider { get; init; }

    /// <summary>Where the VM provider keeps its files (DHCP scripts, QEMU sockets and images); <c>vm_dir</c>.</summary>
    public string? VmDirectory { get; init; }

    /// <summary>The largest <see cref="MaxLearnedPerInterface"/> a configuration may set.</summary>
    public const int MaxLearnedLimit = 65536;

    /// <summary>The largest <see cref="QueueCapacity"/> a configuration may set.</summary>
    public const int MaxQueueCapacity = 65536;

    /// <summary>Most VM MACs one interface may learn, a guard against MAC flooding.</summary>
    public int MaxLearnedPerInterface { get; init; } = 256;

    /// <summary>Frames queued per link for sending (<c>queue_capacity</c>).</summary>
    public int QueueCapacity { get; init; } = 1024;

    /// <summary>Traffic inference settings (report period everywhere; smoothing, pruning, damping on the Proxy).</summary>
    public Inference.VttifOptions Vttif { get; init; } = Inference.VttifOptions.Default;

    /// <summary>Proxy: what adaptation does with the inferred topology (off, advise, auto).</summary>
    public Adaptation.AdaptationPolicy Adaptation { get; init; } = Vnet.Adaptation.AdaptationPolicy.Off;

    /// <summary>Proxy: most links adaptation adds per daemon.</summary>
    public int AdaptationBudget { get; init; } = 2;

    /// <summary>Link emulation by peer name (<c>*</c>: every link without its own entry).</summary>
    public IReadOnlyDictionary<string, LinkEmulation> Emulation { get; init; } = new Dictionary<string, LinkEmulation>();

    public string ControlSocketPath => ControlSocket ?? DefaultControlSocket(Name);

    public static string DefaultControlSocket(string name) => $"/run/vnet/{name}.sock";

    /// <summary>Checks the settings as a whole; throws <see cref="ConfigException"/> with the first problem.</summary>
    public DaemonConfig Validated()
    {
        if (!Names.IsValid(Name))
            throw new ConfigException("name", $"'{Name}' is not a valid daemon name (letters, digits, '-', '_', '.'; at most {Names.MaxLength})");
        if (Role == DaemonRole.Host && ProxyAddress is null)
            throw new ConfigException("proxy.address", "a host needs the Proxy's address");
        if (Role == DaemonRole.Host && ProxyKey is null)
            throw new ConfigException("proxy.public_key", "a host needs the Proxy's public key ('vnet pubkey' on the Proxy's key file prints it)");
        if (Role == DaemonRole.Host && Hosts.Count > 0)
            throw new ConfigException("host", "only the Proxy admits hosts");
        var admitted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var h in Hosts)
        {
            if (!Names.IsValid(h.Name) || h.Name == Name || !admitted.Add(h.Name))
                throw new ConfigException(h.Entry, "needs a valid name, not the Proxy's own, listed once");
        }
        if (Role == DaemonRole.Proxy && ProxyAddress is not null)
            throw new ConfigException("proxy", "the Proxy does not link to another Proxy");
        if (!Names.IsValid(ProxyName))
            throw new ConfigException("proxy.name", $"'{ProxyName}' is not a valid daemon name");
        if (Role == DaemonRole.Host && ProxyName == Name)
            throw new ConfigException("proxy.name", "a host cannot be its own Proxy");
        if (VmProvider != Vms.Providers.VmProviderKind.None && Role == DaemonRole.Proxy)
            throw new ConfigException("vm_provider", "the Proxy hosts no VMs: give vm_provider to hosts");
        if (HopLimit is 0 or > 64)
            throw new ConfigException("hop_limit", "must be between 1 and 64");
        if (ForwardingNice is < -20 or > 19)
            throw new ConfigException("forwarding_nice", "must be between -20 and 19 (0 leaves the forwarding threads at normal priority)");
        // Each sized something at run time: a link's send ring (negative or 0 failed every session
        // that was made), the VMs an interface may learn, the links adaptation may add.
        if (QueueCapacity is < 1 or > MaxQueueCapacity)
            throw new ConfigException("queue_capacity", $"must be between 1 and {MaxQueueCapacity} (frames queued per link)");
        if (MaxLearnedPerInterface is < 1 or > MaxLearnedLimit)
            throw new ConfigException("max_learned_per_interface", $"must be between 1 and {MaxLearnedLimit} (learn = false turns learning off)");
        if (AdaptationBudget is < 0 or > 64)
            throw new ConfigException("adaptation_budget", "must be between 0 and 64 (extra links per daemon)");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var i in Interfaces)
        {
            var where = $"interface '{i.Name}'";
            if (!Names.IsValid(i.Name) || i.Name.Length > 15)
                throw new ConfigException(where, "an interface name has 1 to 15 letters, digits, '-', '_' or '.'");
            if (!seen.Add(i.Name))
                throw new ConfigException(where, "is listed twice");
            if (i.Mtu is < 576 or > 65000)
                throw new ConfigException(where + ".mtu", $"{i.Mtu} is out of range (576..65000)");
            if (i.Lan && Role != DaemonRole.Proxy)
                throw new ConfigException(where + ".lan", "only the Proxy has a LAN interface");
            if (i.Bridge is not null && (i.Kind != InterfaceKind.Tap || !Names.IsValid(i.Bridge) || i.Bridge.Length > 15))
                throw new ConfigException(where + ".bridge", "a bridge applies to TAP interfaces and needs a valid device name");
            if (i.Queues is < 1 or > InterfaceConfig.MaxQueues)
                throw new ConfigException(where + ".queues", $"{i.Queues} is out of range (1..{InterfaceConfig.MaxQueues})");
            if (i.Queues > 1 && i.Kind != InterfaceKind.Tap)
                throw new ConfigException(where + ".queues", "several queues apply to TAP interfaces only");
            foreach (var mac in i.Macs)
            {
                if (mac.IsGroup)
                    throw new ConfigException(where + ".macs", $"{mac} is a group address, not a VM's");
            }
        }
        if (Metrics is not null && Metrics.Port == Listen.Port && Overlap(Metrics.Address, Listen.Address))
            throw new ConfigException("metrics", $"{Metrics} is the link port ({Listen}): give the metrics endpoint a port of its own");
        if (ProxyStreams is < 1 or > LinkPort.MaxStreams)
            throw new ConfigException("proxy.streams", $"{ProxyStreams} is out of range (1..{LinkPort.MaxStreams})");
        CheckWeb();
        var peers = new HashSet<string>(StringComparer.Ordinal);
        foreach (var l in Links)
        {
            if (!Names.IsValid(l.Peer) || l.Peer == Name || (Role == DaemonRole.Host && l.Peer == ProxyName) || !peers.Add(l.Peer))
                throw new ConfigException($"link '{l.Peer}'", "needs a valid peer name, not this daemon, the Proxy or a peer listed twice");
            if (l.Streams is < 1 or > LinkPort.MaxStreams)
                throw new ConfigException($"link '{l.Peer}'.streams", $"{l.Streams} is out of range (1..{LinkPort.MaxStreams})");
        }
        CheckKeys();
        return this;
    }

    private void CheckWeb()
    {
        if (Web is null)
        {
            if (WebToken is not null)
                throw new ConfigException("web_token_file", "given without web (the address of the web front)");
            if (WebTls is not null)
                throw new ConfigException("web_tls_cert_file", "given without web (the address of the web front)");
            return;
        }
        if (Role != DaemonRole.Proxy)
            throw new ConfigException("web", "only the Proxy serves the web front (a host is seen and controlled through it)");
        if (Web.Port == Listen.Port && Overlap(Web.Address, Listen.Address))
            throw new ConfigException("web", $"{Web} is the link port ({Listen}): give the web front a port of its own");
        if (Metrics is not null && Web.Port == Metrics.Port && Overlap(Web.Address, Metrics.Address))
            throw new ConfigException("web", $"{Web} is the metrics endpoint's port ({Metrics}): give the web front a port of its own");
        if (WebToken is null && !IPAddress.IsLoopback(Web.Address))
            throw new ConfigException("web_token_file", $"missing: the web front at {Web} is reachable from other machines, so it needs a token (a private file, e.g. 'openssl rand -hex 32 > web.token; chmod 600 web.token')");
    }

    /// <summary>
    /// The web front's address from the configuration or the command line: ADDR:PORT, or PORT
    /// alone for 127.0.0.1:PORT (the default address).
    /// </summary>
    public static IPEndPoint ParseWeb(string text, string field)
    {
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and <= 65535)
            return new IPEndPoint(IPAddress.Loopback, port);
        if (!IPEndPoint.TryParse(text, out var endPoint) || endPoint.Port == 0 || !text.Contains(':', StringComparison.Ordinal))
            throw new ConfigException(field, $"'{text}' is not an address:port such as 127.0.0.1:8080 (or a port alone, on 127.0.0.1)");
        return endPoint;
    }

    /// <summary>The web front's token from its file (checked as the key files are).</summary>
    public static WebToken ReadWebToken(string path, string field) =>
        WebToken.TryParse(KeyFiles.Read(path, field), out var error) ?? throw new ConfigException(field, error!);

    /// <summary>The web front's certificate and key, both or neither (null).</summary>
    public static WebTls? ReadWebTls(string? certFile, string? keyFile, string certField, string keyField) => (certFile, keyFile) switch
    {
        (null, null) => null,
        (null, _) => throw new ConfigException(certField, $"missing: {keyField} is given, so the certificate must be too"),
        (_, null) => throw new ConfigException(keyField, $"missing: {certField} is given, so its private key must be too"),
        _ => WebTls.Load(certFile, keyFile, certField, keyField),
    };

    /// <summary>Whether two TCP sockets bound to these addresses (one port) would clash.</summary>
    private static bool Overlap(IPAddress a, IPAddress b) =>
        a.Equals(b) || a.Equals(IPAddress.Any) || b.Equals(IPAddress.Any) || a.Equals(IPAddress.IPv6Any) || b.Equals(IPAddress.IPv6Any);

    /// <summary>
    /// The metrics endpoint from the configuration (<c>metrics</c>) or the command line
    /// (<c>--metrics</c>): an address and a port other than 0, e.g. <c>127.0.0.1:9464</c>.
    /// </summary>
    public static Vms.Providers.VmProviderKind ReadVmProvider(string? text, string field)
    {
        if (text is null)
            return Vms.Providers.VmProviderKind.None;
        try
        {
            return Vms.Providers.VmNames.ParseProvider(text);
        }
        catch (FormatException e)
        {
            throw new ConfigException(field, e.Message);
        }
    }

    public static IPEndPoint ParseMetrics(string text, string field)
    {
        if (!IPEndPoint.TryParse(text, out var endPoint) || endPoint.Port == 0 || !text.Contains(':', StringComparison.Ordinal))
            throw new ConfigException(field, $"'{text}' is not an address:port such as 127.0.0.1:9464 (0.0.0.0:9464 for every address)");
        return endPoint;
    }

    /// <summary>
    /// One name, one key, and one key, one name: a key is a daemon's identity, so two daemons with
    /// one key could each claim to be the other, and a host with the Proxy's key could pose as it.
    /// The configuration's hosts, its links' keys, the pinned Proxy key, this daemon's own key and
    /// the hosts file are checked together; a host both in the configuration and in the hosts file
    /// must have the same key there. The error names both entries.
    /// </summary>
    private void CheckKeys()
    {
        var byName = new Dictionary<string, (PublicKeyId Key, string Where)>(StringComparer.Ordinal);
        var byKey = new Dictionary<PublicKeyId, (string Name, string Where)>();
        void Bind(string name, PublicKeyId key, string where)
        {
            if (byName.TryGetValue(name, out var had))
            {
                if (!had.Key.Equals(key))
                    throw new ConfigException(where, $"'{name}' has key {key} here but {had.Key} in {had.Where}: one name, one key (keep one of them)");
                return;
            }
            if (byKey.TryGetValue(key, out var other))
                throw new ConfigException(where, $"'{name}' has the same public key as '{other.Name}' in {other.Where}: every daemon needs its own key pair ('vnet keygen')");
            byName[name] = (key, where);
            byKey[key] = (name, where);
        }
        Bind(Name, Identity.Public, Source is null ? "this daemon's key file" : $"{Source}: key_file (this daemon's own key)");
        if (Role == DaemonRole.Host && ProxyKey is not null)
            Bind(ProxyName, ProxyKey, "proxy.public_key");
        foreach (var h in Hosts)
            Bind(h.Name, h.PublicKey, h.Entry);
        foreach (var l in Links)
        {
            if (l.PublicKey is { } key)
                Bind(l.Peer, key, $"link '{l.Peer}'");
        }
        foreach (var h in RuntimeHosts)
        {
            if (h.Name == Name)
                throw new ConfigException(h.Entry, $"'{h.Name}' is this daemon's own name");
            Bind(h.Name, h.PublicKey, h.Entry);
        }
    }

    /// <summary>With <paramref name="hosts"/> as the run-time admissions, checked against the rest (one name, one key).</summary>
    public DaemonConfig WithRuntimeHosts(IReadOnlyList<AdmittedHost> hosts)
    {
        var with = this with { RuntimeHosts = hosts };
        with.CheckKeys();
        return with;
    }

    /// <summary>
    /// Proxy: the admissions of its hosts file, checked against the rest (a malformed line, a name
    /// with two keys, a key with two names: a <see cref="ConfigException"/> naming the file and line).
    /// </summary>
    public DaemonConfig WithHostsFile()
    {
        if (Role != DaemonRole.Proxy || HostsFile is null)
            return this;
        return WithRuntimeHosts(Configuration.HostsFile.Read(HostsFile));
    }

    /// <summary>Reads a TOML configuration file; errors name the file, the position or field, and the reason.</summary>
    public static DaemonConfig Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException(path, e.Message);
        }
        return Parse(text, path).WithHostsFile();
    }

    public static DaemonConfig Parse(string text, string source = "config")
    {
        TomlTable table;
        try
        {
            // The model reader lets a key or table defined twice through (the last silently wins);
            // the strict parser refuses what TOML forbids, with the line.
            var document = SyntaxParser.ParseStrict(text, null!, validate: true);
            RejectSplitTableArrays(document, source);
            table = TomlSerializer.Deserialize<TomlTable>(text)!;
        }
        catch (TomlException e)
        {
            throw new ConfigException(source, e.Message.Trim());
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or OverflowException or IndexOutOfRangeException)
        {
            // Tomlyn fails this way on some malformed text (a string cut by the end of the file
            // throws while it words the error): still a file that is not TOML.
            throw new ConfigException(source, $"not valid TOML ({e.Message.Trim()})");
        }
        try
        {
            return FromTable(table, source).Validated();
        }
        catch (ConfigException e) when (!e.Message.StartsWith(source, StringComparison.Ordinal))
        {
            throw new ConfigException($"{source}: {e.Field}", e.Reason);
        }
    }

    /// <summary>
    /// Refuses <c>[[interface]]</c> (or <c>[[link]]</c>) entries split by another table. That is valid
    /// TOML, but the model reader keeps only the last run of entries, so the file would silently
    /// lose interfaces or links.
    /// </summary>
    private static void RejectSplitTableArrays(DocumentSyntax document, string source)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        string? previous = null;
        foreach (var table in document.Tables)
        {
            var name = table.Name?.ToString().Trim() ?? "";
            if (table is not TableArraySyntax)
            {
                previous = null;
                continue;
            }
            if (name != previous && !seen.Add(name))
                throw new ConfigException($"{source}: line {table.Span.Start.Line + 1}", $"[[{name}]] entries must follow one another, with no other table between them");
            previous = name;
        }
    }

    private static DaemonConfig FromTable(TomlTable t, string source)
    {
        var reader = new TableReader(t, "");
        var name = reader.String("name") ?? throw new ConfigException("name", "missing");
        var role = reader.String("role") switch
        {
            "host" => DaemonRole.Host,
            "proxy" => DaemonRole.Proxy,
            null => throw new ConfigException("role", "missing (host or proxy)"),
            var r => throw new ConfigException("role", $"'{r}' is neither host nor proxy"),
        };
        var listen = reader.EndPoint("listen") ?? new IPEndPoint(IPAddress.Any, 5500);
        var identity = ReadIdentity(reader, source);
        var psk = ReadPsk(reader, source);

        string proxyName = "proxy";
        IPEndPoint? proxyAddress = null;
        PublicKeyId? proxyKey = null;
        var proxyTransport = LinkTransport.Tcp;
        var proxyStreams = 1;
        if (reader.Table("proxy") is { } p)
        {
            proxyName = p.String("name") ?? "proxy";
            proxyAddress = p.EndPoint("address") ?? throw new ConfigException("proxy.address", "missing");
            proxyTransport = p.Transport("transport") ?? LinkTransport.Tcp;
            proxyKey = p.PublicKey("public_key") ?? throw new ConfigException("proxy.public_key", "missing (the Proxy's public key)");
            proxyStreams = p.Int("streams") ?? 1;
            p.RejectUnknown("name", "address", "transport", "public_key", "streams");
        }

        var hosts = new List<AdmittedHost>();
        foreach (var h in reader.Tables("host"))
        {
            hosts.Add(new AdmittedHost(
                h.String("name") ?? throw new ConfigException(h.Path + ".name", "missing"),
                h.PublicKey("public_key") ?? throw new ConfigException(h.Path + ".public_key", "missing"),
                $"{source}: {h.Path}"));
            h.RejectUnknown("name", "public_key");
        }

        var interfaces = new List<InterfaceConfig>();
        foreach (var i in reader.Tables("interface"))
        {
            var kind = i.String("kind") switch
            {
                null or "tap" => InterfaceKind.Tap,
                "pcap" => InterfaceKind.Pcap,
                var k => throw new ConfigException(i.Path + ".kind", $"'{k}' is neither tap nor pcap"),
            };
            var lan = i.Bool("lan") ?? (role == DaemonRole.Proxy && kind == InterfaceKind.Pcap);
            interfaces.Add(new InterfaceConfig
            {
                Name = i.String("name") ?? throw new ConfigException(i.Path + ".name", "missing"),
                Kind = kind,
                Mtu = i.Int("mtu") ?? 1500,
                Bridge = i.String("bridge"),
                Macs = i.Macs("macs"),
                Learn = i.Bool("learn") ?? !lan,
                Lan = lan,
                Offloads = i.Bool("offloads") ?? true,
                Queues = i.Int("queues") ?? 1,
            });
            i.RejectUnknown("name", "kind", "mtu", "bridge", "macs", "learn", "lan", "offloads", "queues");
        }

        var links = new List<LinkConfig>();
        foreach (var l in reader.Tables("link"))
        {
            links.Add(new LinkConfig(
                l.String("peer") ?? throw new ConfigException(l.Path + ".peer", "missing"),
                l.EndPoint("address") ?? throw new ConfigException(l.Path + ".address", "missing"),
                l.Transport("transport") ?? LinkTransport.Tcp,
                l.PublicKey("public_key"),
                l.Int("streams") ?? 1));
            l.RejectUnknown("peer", "address", "transport", "public_key", "streams");
        }

        var emulation = new Dictionary<string, LinkEmulation>(StringComparer.Ordinal);
        foreach (var e in reader.Tables("emulate"))
        {
            var peer = e.String("peer") ?? throw new ConfigException(e.Path + ".peer", "missing (a daemon name or *)");
            if (peer != "*" && !Names.IsValid(peer))
                throw new ConfigException(e.Path + ".peer", $"'{peer}' is not a daemon name or *");
            try
            {
                emulation[peer] = LinkEmulation.Parse(e.String("link") ?? throw new ConfigException(e.Path + ".link", "missing (e.g. \"delay=20ms,rate=50mbit\")"));
            }
            catch (FormatException x)
            {
                throw new ConfigException(e.Path + ".link", x.Message);
            }
            e.RejectUnknown("peer", "link");
        }

        var config = new DaemonConfig
        {
            Name = name,
            Role = role,
            Listen = listen,
            Identity = identity,
            Psk = psk,
            ProxyKey = proxyKey,
            Hosts = hosts,
            HostsFile = reader.String("hosts_file") is { } hostsFile ? PathOf(hostsFile, source) : null,
            Source = source == "config" ? null : Path.GetFullPath(source),
            AdminKeys = reader.PublicKeys("admin_keys"),
            AcceptTools = reader.Bool("accept_tools"),
            ProxyName = proxyName,
            ProxyAddress = proxyAddress,
            ProxyTransport = proxyTransport,
            ProxyStreams = proxyStreams,
            Interfaces = interfaces,
            Links = links,
            ControlSocket = reader.String("control_socket"),
            Metrics = reader.String("metrics") is { } metrics ? ParseMetrics(metrics, "metrics") : null,
            Web = reader.String("web") is { } web ? ParseWeb(web, "web") : null,
            WebToken = reader.String("web_token_file") is { } tokenFile ? ReadWebToken(PathOf(tokenFile, source), "web_token_file") : null,
            WebTls = ReadWebTls(reader.String("web_tls_cert_file") is { } tlsCert ? PathOf(tlsCert, source) : null,
                reader.String("web_tls_key_file") is { } tlsKey ? PathOf(tlsKey, source) : null, "web_tls_cert_file", "web_tls_key_file"),
            HopLimit = (byte)Math.Clamp(reader.Int("hop_limit") ?? 8, 0, 255),
            ForwardingNice = reader.Int("forwarding_nice") ?? Engine.ForwardingPriority.DefaultNice,
            VmProvider = ReadVmProvider(reader.String("vm_provider"), "vm_provider"),
            VmDirectory = reader.String("vm_dir") is { } vmDir ? PathOf(vmDir, source) : null,
            MaxLearnedPerInterface = reader.Int("max_learned_per_interface") ?? 256,
            QueueCapacity = reader.Int("queue_capacity") ?? 1024,
            Emulation = emulation,
            Adaptation = reader.String("adaptation") switch
            {
                null or "off" => Vnet.Adaptation.AdaptationPolicy.Off,
                "advise" => Vnet.Adaptation.AdaptationPolicy.Advise,
                "auto" => Vnet.Adaptation.AdaptationPolicy.Auto,
                var a => throw new ConfigException("adaptation", $"'{a}' is not off, advise or auto"),
            },
            AdaptationBudget = reader.Int("adaptation_budget") ?? 2,
            Vttif = ReadVttif(reader),
        };
        reader.RejectUnknown("name", "role", "listen", "key_file", "psk_file", "host", "hosts_file", "admin_keys", "accept_tools", "proxy", "interface", "link", "control_socket", "metrics", "web", "web_token_file", "web_tls_cert_file", "web_tls_key_file",
            "hop_limit", "forwarding_nice", "max_learned_per_interface", "queue_capacity", "emulate", "adaptation", "adaptation_budget", "vttif", "vm_provider", "vm_dir");
        return config;
    }

    private static Inference.VttifOptions ReadVttif(TableReader reader)
    {
        var options = Inference.VttifOptions.Default;
        if (reader.Table("vttif") is not { } v)
            return options;
        static TimeSpan Ms(int ms) => TimeSpan.FromMilliseconds(ms);
        options = options with
        {
            ReportPeriod = v.Int("report_period_ms") is { } p ? Ms(p) : options.ReportPeriod,
            TimeConstant = v.Int("time_constant_ms") is { } t ? Ms(t) : options.TimeConstant,
            HoldTime = v.Int("hold_time_ms") is { } h ? Ms(h) : options.HoldTime,
            MinRate = v.Int("min_rate") is { } m ? m : options.MinRate,
            PruneThreshold = v.Int("prune_percent") is { } pr ? pr / 100.0 : options.PruneThreshold,
        };
        v.RejectUnknown("report_period_ms", "time_constant_ms", "hold_time_ms", "min_rate", "prune_percent");
        try
        {
            return options.Validated();
        }
        catch (ArgumentException e)
        {
            throw new ConfigException("vttif", e.Message);
        }
    }

    /// <summary>A path in the configuration, relative to the configuration file's folder.</summary>
    private static string PathOf(string file, string source) =>
        Path.IsPathRooted(file) || source == "config" ? file : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(source)) ?? "", file);

    private static StaticKeyPair ReadIdentity(TableReader reader, string source)
    {
        if (reader.String("key") is not null)
            throw new ConfigException("key", "a key is never written in the configuration: put it in a file of its own (key_file, mode 0600; 'vnet keygen')");
        var file = reader.String("key_file") ?? throw new ConfigException("key_file", "missing (this daemon's private key; make one with 'vnet keygen')");
        var text = KeyFiles.Read(PathOf(file, source), "key_file");
        return StaticKeyPair.TryParse(text, out var error) ?? throw new ConfigException("key_file", error!);
    }

    private static PresharedKey ReadPsk(TableReader reader, string source)
    {
        if (reader.String("psk_file") is not { } file)
            return PresharedKey.None;
        var text = KeyFiles.Read(PathOf(file, source), "psk_file");
        return PresharedKey.TryParse(text, out var error) ?? throw new ConfigException("psk_file", error!);
    }

    /// <summary>Typed access to a TOML table with field paths for error messages.</summary>
    private sealed class TableReader(TomlTable table, string path)
    {
        public string Path { get; } = path;

        private string Field(string key) => Path.Length == 0 ? key : $"{Path}.{key}";

        public string? String(string key) => Get(key) switch
        {
            null => null,
            string s => s,
            var v => throw new ConfigException(Field(key), $"expected a string, found {Describe(v)}"),
        };

        public bool? Bool(string key) => Get(key) switch
        {
            null => null,
            bool b => b,
            var v => throw new ConfigException(Field(key), $"expected true or false, found {Describe(v)}"),
        };

        public int? Int(string key) => Get(key) switch
        {
            null => null,
            long l when l is >= int.MinValue and <= int.MaxValue => (int)l,
            var v => throw new ConfigException(Field(key), $"expected an integer, found {Describe(v)}"),
        };

        public IPEndPoint? EndPoint(string key)
        {
            var s = String(key);
            if (s is null)
                return null;
            if (!IPEndPoint.TryParse(s, out var ep) || ep.Port == 0)
                throw new ConfigException(Field(key), $"'{s}' is not an address:port such as 192.0.2.1:5500");
            return ep;
        }

        public PublicKeyId? PublicKey(string key)
        {
            var s = String(key);
            if (s is null)
                return null;
            return PublicKeyId.TryParse(s, out var id) ? id : throw new ConfigException(Field(key), $"'{s}' is not a public key (32 bytes in base64; 'vnet pubkey' prints one)");
        }

        public List<PublicKeyId> PublicKeys(string key)
        {
            var v = Get(key);
            if (v is null)
                return [];
            if (v is not TomlArray array)
                throw new ConfigException(Field(key), $"expected a list of public keys, found {Describe(v)}");
            var list = new List<PublicKeyId>();
            foreach (var item in array)
            {
                if (item is not string text || !PublicKeyId.TryParse(text, out var id))
                    throw new ConfigException(Field(key), $"'{item}' is not a public key");
                list.Add(id);
            }
            return list;
        }

        public LinkTransport? Transport(string key) => String(key) switch
        {
            null => null,
            "tcp" => LinkTransport.Tcp,
            "udp" => LinkTransport.Udp,
            var s => throw new ConfigException(Field(key), $"'{s}' is neither tcp nor udp"),
        };

        public List<MacAddress> Macs(string key)
        {
            var v = Get(key);
            if (v is null)
                return [];
            if (v is not TomlArray array)
                throw new ConfigException(Field(key), $"expected a list of MAC addresses, found {Describe(v)}");
            var list = new List<MacAddress>();
            foreach (var item in array)
            {
                if (item is not string s || !MacAddress.TryParse(s, out var mac))
                    throw new ConfigException(Field(key), $"'{item}' is not a MAC address (aa:bb:cc:dd:ee:ff)");
                list.Add(mac);
            }
            return list;
        }

        public TableReader? Table(string key) => Get(key) switch
        {
            null => null,
            TomlTable t => new TableReader(t, Field(key)),
            var v => throw new ConfigException(Field(key), $"expected a table [{key}], found {Describe(v)}"),
        };

        public IEnumerable<TableReader> Tables(string key)
        {
            var v = Get(key);
            if (v is null)
                yield break;
            if (v is not TomlTableArray array)
                throw new ConfigException(Field(key), $"expected [[{key}]] entries, found {Describe(v)}");
            var index = 0;
            foreach (var t in array)
                yield return new TableReader(t, $"{Field(key)}[{index++}]");
        }

        public void RejectUnknown(params string[] known)
        {
            foreach (var key in table.Keys)
            {
                if (Array.IndexOf(known, key) < 0)
                    throw new ConfigException(Field(key), $"unknown setting (known here: {string.Join(", ", known)})");
            }
        }

        private object? Get(string key) => table.TryGetValue(key, out var v) ? v : null;

        private static string Describe(object v) => v switch
        {
            string s => $"\"{s}\"",
            TomlTable => "a table",
            TomlArray => "a list",
            _ => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "?",
        };
    }
}

/// <summary>A configuration problem: which field, and why.</summary>
public sealed class ConfigException : Exception
{
    public ConfigException()
    {
    }

    public ConfigException(string message)
        : base(message)
    {
        Field = "";
        Reason = message;
    }

    public ConfigException(string message, Exception inner)
        : base(message, inner)
    {
        Field = "";
        Reason = message;
    }

    public ConfigException(string field, string reason)
        : base($"{field}: {reason}")
    {
        Field = field;
        Reason = reason;
    }

    public string Field { get; } = "";

    public string Reason { get; } = "";
}
