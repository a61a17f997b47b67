using System.Net;
using Vnet.Configuration;
using Vnet.Frames;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Vms.Providers;

namespace Vnet.Tests.Configuration;

/// <summary>
/// The daemon's TOML file: a full file maps to the expected record with the documented defaults, and
/// every mistake an operator can make is refused with the field that is wrong and why.
/// </summary>
public sealed class DaemonConfigTests
{
    /// <summary>This test run's key files (mode 0600, as the daemon insists): a private key and a preshared key.</summary>
    private static readonly string KeyDir = Directory.CreateTempSubdirectory("vnet-config-keys-").FullName;

    private static readonly StaticKeyPair Pair = StaticKeyPair.Generate();

    private static readonly string Key = WriteKey("daemon.key", Pair.ExportPrivate());

    private static readonly string ProxyPub = StaticKeyPair.Generate().Public.ToString();

    /// <summary>A key file readable by everyone (what the daemon must refuse).</summary>
    private static string OpenKey()
    {
        var path = Path.Combine(KeyDir, "open.key");
        if (!File.Exists(path))
        {
            File.WriteAllText(path, Pair.ExportPrivate());
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }
        return path;
    }

    private static string WriteKey(string name, string secret)
    {
        var path = Path.Combine(KeyDir, name);
        if (!File.Exists(path))
            KeyFiles.Write(path, secret);
        return path;
    }

    private static string HostToml => $"""
        name = "host1"
        role = "host"
        listen = "192.0.2.10:5501"
        key_file = "{Key}"
        control_socket = "/tmp/vnet-host1.sock"
        hop_limit = 6
        forwarding_nice = -5
        max_learned_per_interface = 32
        queue_capacity = 512

        [proxy]
        name = "gateway"
        address = "192.0.2.1:5500"
        transport = "udp"
        public_key = "{ProxyPub}"

        [[interface]]
        name = "tap0"
        kind = "tap"
        mtu = 9000
        bridge = "br-vms"
        macs = ["52:54:00:00:00:01", "52-54-00-00-00-02"]
        offloads = false
        queues = 4

        [[interface]]
        name = "tap1"

        [[link]]
        peer = "host2"
        address = "192.0.2.11:5500"
        transport = "udp"
        streams = 2

        [[link]]
        peer = "host3"
        address = "[2001:db8::3]:5500"
        streams = 4
        """;

    private static string ProxyToml => $"""
        name = "proxy"
        role = "proxy"
        key_file = "{Key}"
        """;

    // Valid files.

    [Fact]
    public void Parse_FullHostFile_EveryFieldAsWritten()
    {
        var c = DaemonConfig.Parse(HostToml);

        Assert.Equal("host1", c.Name);
        Assert.Equal(DaemonRole.Host, c.Role);
        Assert.Equal(IPEndPoint.Parse("192.0.2.10:5501"), c.Listen);
        Assert.Equal(Pair.Public, c.Identity.Public);
        Assert.Equal(ProxyPub, c.ProxyKey?.ToString());
        Assert.Equal("/tmp/vnet-host1.sock", c.ControlSocket);
        Assert.Equal("/tmp/vnet-host1.sock", c.ControlSocketPath);
        Assert.Equal(6, c.HopLimit);
        Assert.Equal(-5, c.ForwardingNice);
        Assert.Equal(32, c.MaxLearnedPerInterface);
        Assert.Equal(512, c.QueueCapacity);
        Assert.Equal("gateway", c.ProxyName);
        Assert.Equal(IPEndPoint.Parse("192.0.2.1:5500"), c.ProxyAddress);
        Assert.Equal(LinkTransport.Udp, c.ProxyTransport);

        Assert.Equal(2, c.Interfaces.Count);
        var tap0 = c.Interfaces[0];
        Assert.Equal("tap0", tap0.Name);
        Assert.Equal(InterfaceKind.Tap, tap0.Kind);
        Assert.Equal(9000, tap0.Mtu);
        Assert.Equal("br-vms", tap0.Bridge);
        Assert.Equal([MacAddress.Parse("52:54:00:00:00:01"), MacAddress.Parse("52:54:00:00:00:02")], tap0.Macs);
        Assert.True(tap0.Learn);
        Assert.False(tap0.Lan);
        Assert.False(tap0.Offloads);
        Assert.Equal(4, tap0.Queues);

        var tap1 = c.Interfaces[1];
        Assert.Equal("tap1", tap1.Name);
        Assert.Equal(InterfaceKind.Tap, tap1.Kind);
        Assert.Equal(1500, tap1.Mtu);
        Assert.Null(tap1.Bridge);
        Assert.Empty(tap1.Macs);
        Assert.True(tap1.Learn);
        Assert.False(tap1.Lan);
        Assert.True(tap1.Offloads);
        Assert.Equal(1, tap1.Queues);

        Assert.Equal(
            [
                new LinkConfig("host2", IPEndPoint.Parse("192.0.2.11:5500"), LinkTransport.Udp, Streams: 2),
                new LinkConfig("host3", IPEndPoint.Parse("[2001:db8::3]:5500"), LinkTransport.Tcp, Streams: 4),
            ],
            c.Links);
    }

    [Fact]
    public void Parse_MinimalProxyFile_DocumentedDefaults()
    {
        var c = DaemonConfig.Parse(ProxyToml);

        Assert.Equal(DaemonRole.Proxy, c.Role);
        Assert.Equal(new IPEndPoint(IPAddress.Any, 5500), c.Listen);
        Assert.Null(c.ProxyAddress);
        Assert.Equal("proxy", c.ProxyName);
        Assert.Equal(LinkTransport.Tcp, c.ProxyTransport);
        Assert.Empty(c.Interfaces);
        Assert.Empty(c.Links);
        Assert.Null(c.ControlSocket);
        Assert.Equal("/run/vnet/proxy.sock", c.ControlSocketPath);
        Assert.Equal(8, c.HopLimit);
        Assert.Equal(-10, c.ForwardingNice);
        Assert.Equal(256, c.MaxLearnedPerInterface);
        Assert.Equal(1024, c.QueueCapacity);
        Assert.Null(c.Metrics);
    }

    [Theory]
    [InlineData("127.0.0.1:9464")]
    [InlineData("0.0.0.0:9464")]
    [InlineData("[::1]:9464")]
    [InlineData("0.0.0.0:5501")]
    public void Parse_Metrics_TheEndpointAsWritten(string endPoint)
    {
        var c = DaemonConfig.Parse($"{ProxyBase}\nmetrics = \"{endPoint}\"");

        Assert.Equal(IPEndPoint.Parse(endPoint), c.Metrics);
    }

    [Theory]
    [InlineData("netns", VmProviderKind.Netns)]
    [InlineData("qemu", VmProviderKind.Qemu)]
    [InlineData("none", VmProviderKind.None)]
    public void Parse_HostVmProvider(string text, VmProviderKind kind)
    {
        var c = DaemonConfig.Parse($"name = \"host1\"\nrole = \"host\"\nkey_file = \"{Key}\"\nvm_provider = \"{text}\"\n[proxy]\naddress = \"10.0.0.1:5500\"\npublic_key = \"{ProxyPub}\"");

        Assert.Equal(kind, c.VmProvider);
        Assert.Equal(VmProviderKind.None, DaemonConfig.Parse(HostBase).VmProvider);
    }

    [Fact]
    public void Parse_HostProxySectionWithAddressOnly_DefaultNameAndTcp()
    {
        var c = DaemonConfig.Parse($"""
            name = "h"
            role = "host"
            key_file = "{Key}"
            [proxy]
            address = "10.0.0.1:5500"
            public_key = "{ProxyPub}"
            """);

        Assert.Equal("proxy", c.ProxyName);
        Assert.Equal(LinkTransport.Tcp, c.ProxyTransport);
    }

    [Fact]
    public void Parse_ProxyWithPcapInterface_LanAndNotLearningByDefault()
    {
        var c = DaemonConfig.Parse(ProxyToml + """

            [[interface]]
            name = "eth0"
            kind = "pcap"

            [[interface]]
            name = "tap0"
            """);

        var eth0 = c.Interfaces[0];
        Assert.Equal(InterfaceKind.Pcap, eth0.Kind);
        Assert.True(eth0.Lan);
        Assert.False(eth0.Learn);
        var tap0 = c.Interfaces[1];
        Assert.False(tap0.Lan);
        Assert.True(tap0.Learn);
    }

    [Fact]
    public void Parse_ProxyPcapInterfaceWithExplicitSettings_TheyWin()
    {
        var c = DaemonConfig.Parse(ProxyToml + """

            [[interface]]
            name = "eth1"
            kind = "pcap"
            lan = false

            [[interface]]
            name = "eth0"
            kind = "pcap"
            learn = true
            """);

        Assert.False(c.Interfaces[0].Lan);
        Assert.True(c.Interfaces[0].Learn);
        Assert.True(c.Interfaces[1].Lan);
        Assert.True(c.Interfaces[1].Learn);
    }

    [Fact]
    public void Parse_HostWithPcapInterface_NotLan()
    {
        var c = DaemonConfig.Parse($"""
            {HostBase}
            [[interface]]
            name = "eth0"
            kind = "pcap"
            """);

        Assert.False(c.Interfaces[0].Lan);
        Assert.True(c.Interfaces[0].Learn);
    }

    [Fact]
    public void Load_KeyFileNextToTheConfig_ReadRelativeToIt()
    {
        var dir = Directory.CreateTempSubdirectory("vnet-config-");
        try
        {
            KeyFiles.Write(Path.Combine(dir.FullName, "net.key"), Pair.ExportPrivate());
            var path = Path.Combine(dir.FullName, "vnet.toml");
            File.WriteAllText(path, """
                name = "proxy"
                role = "proxy"
                key_file = "net.key"
                """);

            var c = DaemonConfig.Load(path);

            Assert.Equal(Pair.Public, c.Identity.Public);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void Load_MissingFile_NamesThePath()
    {
        var path = Path.Combine(Path.GetTempPath(), $"vnet-missing-{Guid.NewGuid():N}.toml");

        var e = Assert.Throws<ConfigException>(() => DaemonConfig.Load(path));

        Assert.StartsWith(path, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MissingKeyFile_NamesKeyFile()
    {
        var dir = Directory.CreateTempSubdirectory("vnet-config-");
        try
        {
            var path = Path.Combine(dir.FullName, "vnet.toml");
            File.WriteAllText(path, """
                name = "proxy"
                role = "proxy"
                key_file = "absent.key"
                """);

            var e = Assert.Throws<ConfigException>(() => DaemonConfig.Load(path));

            Assert.Contains("key_file", e.Message, StringComparison.Ordinal);
            Assert.Contains("absent.key", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    // Errors: each names the field and the reason.

    public static TheoryData<string, string, string> Errors() => new()
    {
        // case, TOML, expected message (after the source prefix)
        { "missing name", $"role = \"proxy\"\nkey_file = \"{Key}\"", "name: missing" },
        { "name not a string", $"name = 5\nrole = \"proxy\"\nkey_file = \"{Key}\"", "name: expected a string, found 5" },
        { "invalid name", $"name = \"my host\"\nrole = \"proxy\"\nkey_file = \"{Key}\"", "name: 'my host' is not a valid daemon name" },
        { "missing role", $"name = \"p\"\nkey_file = \"{Key}\"", "role: missing (host or proxy)" },
        { "bad role", $"name = \"p\"\nrole = \"router\"\nkey_file = \"{Key}\"", "role: 'router' is neither host nor proxy" },
        { "listen without port", $"{ProxyBase}\nlisten = \"10.0.0.1\"", "listen: '10.0.0.1' is not an address:port" },
        { "listen port zero", $"{ProxyBase}\nlisten = \"10.0.0.1:0\"", "listen: '10.0.0.1:0' is not an address:port" },
        { "listen a name", $"{ProxyBase}\nlisten = \"proxy.example:5500\"", "listen: 'proxy.example:5500' is not an address:port" },
        { "host without proxy", $"name = \"h\"\nrole = \"host\"\nkey_file = \"{Key}\"", "proxy.address: a host needs the Proxy's address" },
        { "proxy section without address", $"name = \"h\"\nrole = \"host\"\nkey_file = \"{Key}\"\n[proxy]\nname = \"p\"", "proxy.address: missing" },
        { "bad proxy address", $"name = \"h\"\nrole = \"host\"\nkey_file = \"{Key}\"\n[proxy]\naddress = \"nowhere\"", "proxy.address: 'nowhere' is not an address:port" },
        { "proxy with proxy section", $"{ProxyBase}\n[proxy]\naddress = \"10.0.0.1:5500\"\npublic_key = \"{ProxyPub}\"", "proxy: the Proxy does not link to another Proxy" },
        { "host is its own proxy", $"name = \"p\"\nrole = \"host\"\nkey_file = \"{Key}\"\n[proxy]\nname = \"p\"\naddress = \"10.0.0.1:5500\"\npublic_key = \"{ProxyPub}\"", "proxy.name: a host cannot be its own Proxy" },
        { "typo at top level", $"{ProxyBase}\nlisen = \"0.0.0.0:5500\"", "lisen: unknown setting" },
        { "typo in proxy", $"name = \"h\"\nrole = \"host\"\nkey_file = \"{Key}\"\n[proxy]\nadress = \"10.0.0.1:5500\"\naddress = \"10.0.0.1:5500\"\npublic_key = \"{ProxyPub}\"", "proxy.adress: unknown setting" },
        { "typo in interface", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nbrige = \"br0\"", "interface[0].brige: unknown setting" },
        { "typo in second interface", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\n[[interface]]\nname = \"tap1\"\nmac = []", "interface[1].mac: unknown setting" },
        { "typo in link", $"{ProxyBase}\n[[link]]\npeer = \"h2\"\naddress = \"10.0.0.2:5500\"\ntransprot = \"udp\"", "link[0].transprot: unknown setting" },
        { "bad mac", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nmacs = [\"52:54:00:00:00:zz\"]", "interface[0].macs: '52:54:00:00:00:zz' is not a MAC address" },
        { "mac not a string", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nmacs = [1]", "interface[0].macs: '1' is not a MAC address" },
        { "macs not a list", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nmacs = \"52:54:00:00:00:01\"", "interface[0].macs: expected a list of MAC addresses" },
        { "group mac", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nmacs = [\"01:00:5e:00:00:01\"]", "interface 'tap0'.macs: 01:00:5e:00:00:01 is a group address" },
        { "broadcast mac", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nmacs = [\"ff:ff:ff:ff:ff:ff\"]", "interface 'tap0'.macs: ff:ff:ff:ff:ff:ff is a group address" },
        { "bad proxy transport", $"name = \"h\"\nrole = \"host\"\nkey_file = \"{Key}\"\n[proxy]\naddress = \"10.0.0.1:5500\"\npublic_key = \"{ProxyPub}\"\ntransport = \"sctp\"", "proxy.transport: 'sctp' is neither tcp nor udp" },
        { "bad link transport", $"{ProxyBase}\n[[link]]\npeer = \"h2\"\naddress = \"10.0.0.2:5500\"\ntransport = \"TCP\"", "link[0].transport: 'TCP' is neither tcp nor udp" },
        { "bad interface kind", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nkind = \"tun\"", "interface[0].kind: 'tun' is neither tap nor pcap" },
        { "interface without name", $"{ProxyBase}\n[[interface]]\nmtu = 1500", "interface[0].name: missing" },
        { "duplicate interface", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\n[[interface]]\nname = \"tap0\"", "interface 'tap0': is listed twice" },
        { "interface name too long", $"{ProxyBase}\n[[interface]]\nname = \"tap0123456789abcd\"", "interface 'tap0123456789abcd': an interface name has 1 to 15" },
        { "mtu too small", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nmtu = 100", "interface 'tap0'.mtu: 100 is out of range (576..65000)" },
        { "mtu not an integer", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nmtu = \"big\"", "interface[0].mtu: expected an integer, found \"big\"" },
        { "no queues", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nqueues = 0", "interface 'tap0'.queues: 0 is out of range (1..16)" },
        { "too many queues", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nqueues = 17", "interface 'tap0'.queues: 17 is out of range (1..16)" },
        { "queues not an integer", $"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nqueues = \"4\"", "interface[0].queues: expected an integer, found \"4\"" },
        { "queues on pcap", $"{ProxyBase}\n[[interface]]\nname = \"eth0\"\nkind = \"pcap\"\nqueues = 2", "interface 'eth0'.queues: several queues apply to TAP interfaces only" },
        { "bridge on pcap", $"{ProxyBase}\n[[interface]]\nname = \"eth0\"\nkind = \"pcap\"\nbridge = \"br0\"", "interface 'eth0'.bridge: a bridge applies to TAP interfaces" },
        { "lan on a host", $"name = \"h\"\nrole = \"host\"\nkey_file = \"{Key}\"\n[proxy]\naddress = \"10.0.0.1:5500\"\npublic_key = \"{ProxyPub}\"\n[[interface]]\nname = \"eth0\"\nlan = true", "interface 'eth0'.lan: only the Proxy has a LAN interface" },
        { "lan not a bool", $"{ProxyBase}\n[[interface]]\nname = \"eth0\"\nlan = \"yes\"", "interface[0].lan: expected true or false, found \"yes\"" },
        { "no streams", $"{ProxyBase}\n[[link]]\npeer = \"h2\"\naddress = \"10.0.0.2:5500\"\nstreams = 0", "link 'h2'.streams: 0 is out of range (1..8)" },
        { "too many streams", $"{ProxyBase}\n[[link]]\npeer = \"h2\"\naddress = \"10.0.0.2:5500\"\nstreams = 9", "link 'h2'.streams: 9 is out of range (1..8)" },
        { "streams not an integer", $"{ProxyBase}\n[[link]]\npeer = \"h2\"\naddress = \"10.0.0.2:5500\"\nstreams = \"4\"", "link[0].streams: expected an integer, found \"4\"" },
        { "link without address", $"{ProxyBase}\n[[link]]\npeer = \"h2\"", "link[0].address: missing" },
        { "link to itself", $"{ProxyBase}\n[[link]]\npeer = \"proxy\"\naddress = \"10.0.0.2:5500\"", "link 'proxy': needs a valid peer name" },
        { "link listed twice", $"{ProxyBase}\n[[link]]\npeer = \"h2\"\naddress = \"10.0.0.2:5500\"\n[[link]]\npeer = \"h2\"\naddress = \"10.0.0.3:5500\"", "link 'h2': needs a valid peer name" },
        { "hop limit zero", $"{ProxyBase}\nhop_limit = 0", "hop_limit: must be between 1 and 64" },
        { "hop limit huge", $"{ProxyBase}\nhop_limit = 1000", "hop_limit: must be between 1 and 64" },
        { "forwarding nice too high", $"{ProxyBase}\nforwarding_nice = -21", "forwarding_nice: must be between -20 and 19 (0 leaves the forwarding threads at normal priority)" },
        { "forwarding nice too low", $"{ProxyBase}\nforwarding_nice = 20", "forwarding_nice: must be between -20 and 19 (0 leaves the forwarding threads at normal priority)" },
        { "queue capacity negative", $"{ProxyBase}\nqueue_capacity = -5", "queue_capacity: must be between 1 and 65536 (frames queued per link)" },
        { "queue capacity zero", $"{ProxyBase}\nqueue_capacity = 0", "queue_capacity: must be between 1 and 65536 (frames queued per link)" },
        { "queue capacity huge", $"{ProxyBase}\nqueue_capacity = 100000000", "queue_capacity: must be between 1 and 65536 (frames queued per link)" },
        { "learned per interface negative", $"{ProxyBase}\nmax_learned_per_interface = -1", "max_learned_per_interface: must be between 1 and 65536 (learn = false turns learning off)" },
        { "adaptation budget negative", $"{ProxyBase}\nadaptation_budget = -3", "adaptation_budget: must be between 0 and 64 (extra links per daemon)" },
        { "interface not an array of tables", $"{ProxyBase}\ninterface = \"tap0\"", "interface: expected [[interface]] entries" },
        { "proxy not a table", $"name = \"h\"\nrole = \"host\"\nkey_file = \"{Key}\"\nproxy = \"10.0.0.1:5500\"", "proxy: expected a table [proxy]" },
        { "key inline", "name = \"p\"\nrole = \"proxy\"\nkey = \"AAAA\"", "key: a key is never written in the configuration" },
        { "missing key", "name = \"p\"\nrole = \"proxy\"", "key_file: missing" },
        { "short key", $"name = \"p\"\nrole = \"proxy\"\nkey_file = \"{WriteKey("short.key", "AAAA")}\"", "key_file: a private key is 32 bytes in base64" },
        { "garbage key", $"name = \"p\"\nrole = \"proxy\"\nkey_file = \"{WriteKey("garbage.key", "not a key!")}\"", "key_file: a private key is 32 bytes in base64" },
        { "key file open to others", $"name = \"p\"\nrole = \"proxy\"\nkey_file = \"{OpenKey()}\"", $"key_file: {OpenKey()} is open to other users (mode 644); make it private: chmod 600" },
        { "host without the Proxy's key", $"name = \"h\"\nrole = \"host\"\nkey_file = \"{Key}\"\n[proxy]\naddress = \"10.0.0.1:5501\"", "proxy.public_key: missing" },
        { "bad Proxy key", $"name = \"h\"\nrole = \"host\"\nkey_file = \"{Key}\"\n[proxy]\naddress = \"10.0.0.1:5501\"\npublic_key = \"xyz\"", "proxy.public_key: 'xyz' is not a public key" },
        { "bad admin key", $"{ProxyBase}\nadmin_keys = [\"nope\"]", "admin_keys: 'nope' is not a public key" },
        { "host admitting hosts", $"{HostBase}\n[[host]]\nname = \"h2\"\npublic_key = \"{ProxyPub}\"", "host: only the Proxy admits hosts" },
        { "admitted host without a key", $"{ProxyBase}\n[[host]]\nname = \"h2\"", "host[0].public_key: missing" },
        { "metrics without port", $"{ProxyBase}\nmetrics = \"127.0.0.1\"", "metrics: '127.0.0.1' is not an address:port such as 127.0.0.1:9464" },
        { "metrics port zero", $"{ProxyBase}\nmetrics = \"127.0.0.1:0\"", "metrics: '127.0.0.1:0' is not an address:port" },
        { "metrics a name", $"{ProxyBase}\nmetrics = \"localhost:9464\"", "metrics: 'localhost:9464' is not an address:port" },
        { "metrics a port alone", $"{ProxyBase}\nmetrics = 9464", "metrics: expected a string, found 9464" },
        { "metrics on the link port", $"{ProxyBase}\nmetrics = \"127.0.0.1:5500\"", "metrics: 127.0.0.1:5500 is the link port (0.0.0.0:5500)" },
        { "VM provider on the Proxy", $"{ProxyBase}\nvm_provider = \"netns\"", "vm_provider: the Proxy hosts no VMs" },
        { "unknown VM provider", $"{ProxyBase}\nvm_provider = \"xen\"", "vm_provider: 'xen' is not netns, qemu or none" },
    };

    [Theory]
    [MemberData(nameof(Errors))]
    public void Parse_Mistake_RefusedNamingFieldAndReason(string what, string toml, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => DaemonConfig.Parse(toml, "vnet.toml"));

        Assert.True(e.Message.StartsWith($"vnet.toml: {expected}", StringComparison.Ordinal), $"{what}: got \"{e.Message}\"");
    }

    /// <summary>
    /// Found by fuzzing (fuzz/run.sh config): a string cut by the end of the file made Tomlyn throw
    /// ArgumentOutOfRangeException while it worded its error, and that escaped Parse.
    /// </summary>
    [Theory]
    [InlineData("a = \"\\")]
    [InlineData("name = \"p\\")]
    [InlineData("name = 'p'\nrole = \"\\u")]
    public void Parse_StringCutByEndOfFile_RefusedAsConfigError(string toml)
    {
        var e = Assert.Throws<ConfigException>(() => DaemonConfig.Parse(toml, "vnet.toml"));

        Assert.StartsWith("vnet.toml: ", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_UnknownSetting_ListsTheKnownOnes()
    {
        var e = Assert.Throws<ConfigException>(() => DaemonConfig.Parse($"{ProxyBase}\n[[interface]]\nname = \"tap0\"\nmac = []"));

        Assert.Contains("known here: name, kind, mtu, bridge, macs, learn, lan, offloads, queues", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_Mistake_FieldAndReasonAvailableSeparately()
    {
        var e = Assert.Throws<ConfigException>(() => DaemonConfig.Parse($"{ProxyBase}\nhop_limit = 0"));

        Assert.Equal("config: hop_limit", e.Field);
        Assert.Equal("must be between 1 and 64", e.Reason);
    }

    [Fact]
    public void Parse_InterfacesSplitByAnotherTable_RefusedRatherThanLosingOne()
    {
        // Valid TOML, but the TOML reader keeps only the last run of [[interface]] entries.
        var toml = $"""
            {ProxyBase}
            [[interface]]
            name = "tap0"

            [[link]]
            peer = "h2"
            address = "10.0.0.2:5500"

            [[interface]]
            name = "tap1"
            """;

        var e = Assert.Throws<ConfigException>(() => DaemonConfig.Parse(toml, "vnet.toml"));

        Assert.Equal("vnet.toml: line 11: [[interface]] entries must follow one another, with no other table between them", e.Message);
    }

    [Fact]
    public void Parse_TableArraysEachInOneRun_AllEntriesKept()
    {
        var c = DaemonConfig.Parse($"""
            {ProxyBase}
            [[link]]
            peer = "h2"
            address = "10.0.0.2:5500"
            [[link]]
            peer = "h3"
            address = "10.0.0.3:5500"
            [[interface]]
            name = "tap0"
            [[interface]]
            name = "tap1"
            [[interface]]
            name = "tap2"
            """);

        Assert.Equal(["tap0", "tap1", "tap2"], c.Interfaces.Select(i => i.Name));
        Assert.Equal(["h2", "h3"], c.Links.Select(l => l.Peer));
    }

    [Theory]
    [InlineData("name = \"p\"\nrole = \"proxy\"\nkey = \"k\n", 3)]
    [InlineData("name = \"p\"\nrole = proxy\n", 2)]
    [InlineData("name = \"p\"\n\n\n[[interface]\nname = \"tap0\"\n", 4)]
    [InlineData("name = \"p\"\nname = \"q\"\n", 2)]
    [InlineData("name = \"p\"\n[proxy]\nname = \"a\"\n[proxy]\naddress = \"10.0.0.1:5500\"\npublic_key = \"{ProxyPub}\"\n", 4)]
    [InlineData("name = \"p\"\n[proxy]\nname = \"a\"\nname = \"b\"\n", 4)]
    public void Parse_TomlSyntaxError_NamesSourceAndLine(string toml, int line)
    {
        var e = Assert.Throws<ConfigException>(() => DaemonConfig.Parse(toml, "vnet.toml"));

        Assert.StartsWith("vnet.toml", e.Message, StringComparison.Ordinal);
        Assert.True(e.Message.Contains($"({line},", StringComparison.Ordinal) || e.Message.Contains($"line {line}", StringComparison.Ordinal),
            $"no line {line} in \"{e.Message}\"");
    }

    // Validated() on records built in code (the control API builds them too).

    [Fact]
    public void Validated_ValidRecord_ReturnsItself()
    {
        var c = DaemonConfig.Parse(HostToml);

        Assert.Same(c, c.Validated());
    }

    [Fact]
    public void Validated_LinkToTheProxyByName_Refused()
    {
        var c = DaemonConfig.Parse(HostToml) with
        {
            Links = [new LinkConfig("gateway", IPEndPoint.Parse("192.0.2.1:5500"), LinkTransport.Tcp)],
        };

        var e = Assert.Throws<ConfigException>(() => c.Validated());

        Assert.Equal("link 'gateway'", e.Field);
    }

    [Fact]
    public void ToString_ConfigWithKeyAndPresharedKey_NeitherSecretPrinted()
    {
        // A configuration record may be logged whole: its key pair shows the public key only and
        // its preshared key says "hidden".
        var psk = PresharedKey.Generate();
        var pskFile = WriteKey("redaction.psk", psk.Export());
        var c = DaemonConfig.Parse(HostToml.Replace("hop_limit = 6", $"hop_limit = 6\npsk_file = \"{pskFile}\"", StringComparison.Ordinal));

        var printed = c.ToString() + c.Identity + c.Psk;

        Assert.Equal(psk.Export(), c.Psk.Export());
        Assert.DoesNotContain(Pair.ExportPrivate(), printed, StringComparison.Ordinal);
        Assert.DoesNotContain(psk.Export(), printed, StringComparison.Ordinal);
        Assert.Contains(Pair.Public.ToString(), printed, StringComparison.Ordinal);
        Assert.Contains("hidden", printed, StringComparison.Ordinal);
    }

    private static string HostBase => $"name = \"host1\"\nrole = \"host\"\nkey_file = \"{Key}\"\n[proxy]\naddress = \"10.0.0.1:5500\"\npublic_key = \"{ProxyPub}\"";

    private static string ProxyBase => $"name = \"proxy\"\nrole = \"proxy\"\nkey_file = \"{Key}\"";
}
