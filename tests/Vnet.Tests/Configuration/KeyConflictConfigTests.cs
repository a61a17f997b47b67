using Vnet.Configuration;
using Vnet.Links.Security;

namespace Vnet.Tests.Configuration;

/// <summary>
/// A key is one daemon's identity: a configuration or hosts file that gives one key to two names, or
/// a host the Proxy's own key, is refused at load with both entries named; a hosts file is read
/// relative to the configuration, and a bad line in it is an error with its file and line.
/// </summary>
public sealed class KeyConflictConfigTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vnet-keyconflict-").FullName;
    private readonly StaticKeyPair _proxy = StaticKeyPair.Generate();
    private readonly string _h1 = StaticKeyPair.Generate().Public.ToString();
    private readonly string _h2 = StaticKeyPair.Generate().Public.ToString();

    public KeyConflictConfigTests() => KeyFiles.Write(Path.Combine(_dir, "proxy.key"), _proxy.ExportPrivate());

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Config => Path.Combine(_dir, "proxy.toml");

    /// <summary>A Proxy's configuration with relative key and hosts files, and its hosts.</summary>
    private string Write(string hosts, string? hostsFile = null)
    {
        File.WriteAllText(Config, $"name = \"proxy\"\nrole = \"proxy\"\nkey_file = \"proxy.key\"\nhosts_file = \"hosts\"\n{hosts}");
        if (hostsFile is not null)
            File.WriteAllText(Path.Combine(_dir, "hosts"), hostsFile);
        return Config;
    }

    private static string Host(string name, string key) => $"[[host]]\nname = \"{name}\"\npublic_key = \"{key}\"\n";

    [Fact]
    public void Load_TwoHostsWithOneKey_RefusedNamingTheFileAndBothEntries()
    {
        var e = Assert.Throws<ConfigException>(() => DaemonConfig.Load(Write(Host("h1", _h1) + Host("h2", _h1))));

        Assert.StartsWith($"{Config}: host[1]: 'h2' has the same public key as 'h1' in {Config}: host[0]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_HostWithTheProxysOwnKey_Refused()
    {
        var e = Assert.Throws<ConfigException>(() => DaemonConfig.Load(Write(Host("h1", _proxy.Public.ToString()))));

        Assert.StartsWith($"{Config}: host[0]: 'h1' has the same public key as 'proxy'", e.Message, StringComparison.Ordinal);
        Assert.Contains("key_file", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_HostsFileRelativeToTheConfiguration_ReadAndSameKeyTwiceIsFine()
    {
        var config = DaemonConfig.Load(Write(Host("h1", _h1), $"# kept\nh1 {_h1}\n\nh2 {_h2}\n"));

        Assert.Equal(Path.Combine(_dir, "hosts"), config.HostsFile);
        Assert.Equal(["h1", "h2"], config.RuntimeHosts.Select(h => h.Name));
    }

    public static TheoryData<string, string> BadHostsFiles() => new()
    {
        { "h1 {H1}\nh2\n", ":2: expected 'NAME PUBLIC_KEY'" },
        { "# c\n\nh2 not-a-key\n", ":3: 'not-a-key' is not a public key" },
        { "bad name {H2}\n", ":1: expected 'NAME PUBLIC_KEY'" },
        { "h2 {H2}\nh2 {H2}\n", ":2: host 'h2' is listed again (first on line 1)" },
        { "h1 {H2}\n", ":1: 'h1' has key" },
        { "h2 {H1}\n", ":1: 'h2' has the same public key as 'h1'" },
        { "proxy {H2}\n", ":1: 'proxy' is this daemon's own name" },
    };

    [Theory]
    [MemberData(nameof(BadHostsFiles))]
    public void Load_BadHostsFile_RefusedNamingFileAndLine(string hostsFile, string expected)
    {
        var e = Assert.Throws<ConfigException>(() =>
            DaemonConfig.Load(Write(Host("h1", _h1), hostsFile.Replace("{H1}", _h1, StringComparison.Ordinal).Replace("{H2}", _h2, StringComparison.Ordinal))));

        Assert.StartsWith(Path.Combine(_dir, "hosts") + expected, e.Message, StringComparison.Ordinal);
    }
}
