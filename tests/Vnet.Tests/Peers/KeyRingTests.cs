using System.Net;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Peers;
using Vnet.Tests.Links;

namespace Vnet.Tests.Peers;

/// <summary>
/// One name, one key, and the configuration first: the Proxy refuses to admit a key that is already
/// someone's (its own included) and keeps run-time admissions apart from its configuration's hosts;
/// a host keeps the keys its configuration pins whatever the Proxy's list says.
/// </summary>
public sealed class KeyRingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vnet-keyring-").FullName;
    private readonly StaticKeyPair _proxy = StaticKeyPair.Generate();
    private readonly PublicKeyId _h1 = StaticKeyPair.Generate().Public;
    private readonly PublicKeyId _h2 = StaticKeyPair.Generate().Public;
    private readonly ListLogger _log = new();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string HostsFile => Path.Combine(_dir, "hosts");

    private KeyRing Proxy() => new(new DaemonConfig
    {
        Name = "proxy",
        Role = DaemonRole.Proxy,
        Listen = new IPEndPoint(IPAddress.Loopback, 0),
        Identity = _proxy,
        Hosts = [new AdmittedHost("h1", _h1)],
        HostsFile = HostsFile,
    }.Validated().WithHostsFile(), _log);

    [Fact]
    public void AdmitHost_TheProxysOwnKey_RefusedAndNothingChanges()
    {
        var ring = Proxy();
        var before = ring.List();

        var e = Assert.Throws<DaemonCommandException>(() => ring.AdmitHost("h2", _proxy.Public.ToString()));

        Assert.Contains("the Proxy's own public key", e.Message, StringComparison.Ordinal);
        Assert.Equal(before, ring.List());
        Assert.False(File.Exists(HostsFile));
    }

    [Fact]
    public void AdmitHost_AKeyAnotherHostHas_RefusedNamingThatHost()
    {
        var ring = Proxy();

        var e = Assert.Throws<DaemonCommandException>(() => ring.AdmitHost("h2", _h1.ToString()));

        Assert.Contains("already the key of host 'h1'", e.Message, StringComparison.Ordinal);
        Assert.Null(ring.KeyOf("h2"));
        Assert.False(ring.Admit(_h1, "h2", DaemonRole.Host).Admitted);
    }

    [Fact]
    public void AdmitHost_AConfiguredHostWithAnotherKey_RefusedPointingToTheConfiguration()
    {
        var ring = Proxy();

        var e = Assert.Throws<DaemonCommandException>(() => ring.AdmitHost("h1", _h2.ToString()));

        Assert.Contains("in the configuration", e.Message, StringComparison.Ordinal);
        Assert.Equal(_h1, ring.KeyOf("h1"));
    }

    [Fact]
    public void AdmitHost_NewHost_HostsFileKeepsOnlyRunTimeAdmissionsAndReadsBack()
    {
        var ring = Proxy();

        ring.AdmitHost("h2", _h2.ToString());

        var kept = Vnet.Configuration.HostsFile.Read(HostsFile);
        Assert.Equal([("h2", _h2)], kept.Select(h => (h.Name, h.PublicKey)));
        Assert.Equal(_h2, Proxy().KeyOf("h2"));
    }

    [Fact]
    public void TakeProxyList_KeyDiffersFromThePin_PinnedKeyWinsAndTheMismatchIsLogged()
    {
        var pinned = _h2;
        var offered = StaticKeyPair.Generate().Public;
        var ring = new KeyRing(new DaemonConfig
        {
            Name = "h1",
            Role = DaemonRole.Host,
            Listen = new IPEndPoint(IPAddress.Loopback, 0),
            Identity = StaticKeyPair.Generate(),
            ProxyKey = _proxy.Public,
            ProxyAddress = new IPEndPoint(IPAddress.Loopback, 5500),
            Links = [new LinkConfig("h2", new IPEndPoint(IPAddress.Loopback, 5501), LinkTransport.Tcp, pinned)],
        }.Validated(), _log);
        var h3 = StaticKeyPair.Generate().Public;

        ring.TakeProxyList(new PeerMessage
        {
            Type = PeerMessageType.Keys,
            Seq = 1,
            Keys = [new KeyEntry("h2", offered.ToString()), new KeyEntry("h3", h3.ToString())],
        });

        Assert.Equal(pinned, ring.KeyOf("h2"));
        Assert.True(ring.Admit(pinned, "h2", DaemonRole.Host).Admitted);
        Assert.False(ring.Admit(offered, "h2", DaemonRole.Host).Admitted);
        Assert.Equal(h3, ring.KeyOf("h3"));
        Assert.True(_log.Contains("the pinned key is used"), _log.ToString());
    }
}
