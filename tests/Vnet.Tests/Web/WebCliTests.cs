using Vnet.Links.Security;
using Vnet.Tests.Support;

namespace Vnet.Tests.Web;

/// <summary>
/// The real <c>vnet daemon</c> given a web front it must not serve: on an address other than
/// loopback without a token file, or on a host, it stops with one line and exit code 2.
/// </summary>
public sealed class WebCliTests : DaemonCliTests
{
    [Fact]
    public async Task Daemon_WebOnEveryAddressWithoutTokenFile_OneLineAndExitTwo()
    {
        var (code, stderr) = await RunAsync(Daemon("--web", $"0.0.0.0:{FreePort()}"));

        Assert.Equal(2, code);
        AssertOneLine(stderr, "bad configuration: web_token_file: missing: the web front at 0.0.0.0:");
    }

    [Fact]
    public async Task Daemon_WebTokenFileOpenToOthers_OneLineAndExitTwo()
    {
        var token = Path.Combine(Dir, "web.token");
        await File.WriteAllTextAsync(token, "0123456789abcdef0123456789abcdef\n");
        File.SetUnixFileMode(token, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);

        var (code, stderr) = await RunAsync(Daemon("--web", $"0.0.0.0:{FreePort()}", "--web-token-file", token));

        Assert.Equal(2, code);
        AssertOneLine(stderr, $"bad configuration: --web-token-file: {token} is open to other users");
    }

    [Fact]
    public async Task Daemon_HostWithWeb_OneLineAndExitTwo()
    {
        var config = Path.Combine(Dir, "h.toml");
        using var proxy = StaticKeyPair.Generate();
        await File.WriteAllTextAsync(config, $"name = \"h1\"\nrole = \"host\"\nkey_file = \"{KeyFile()}\"\nweb = \"127.0.0.1:8080\"\n" +
            $"[proxy]\naddress = \"127.0.0.1:5500\"\npublic_key = \"{proxy.Public}\"\n");

        var (code, stderr) = await RunAsync(["daemon", "--config", config]);

        Assert.Equal(2, code);
        AssertOneLine(stderr, "web: only the Proxy serves the web front");
    }
}
