using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Vnet.Configuration;
using Vnet.Links.Security;

namespace Vnet.Tests.Web;

/// <summary>
/// The real <c>vnet daemon</c> given a web front it must not serve: on an address other than
/// loopback without a token file, or on a host, it stops with one line and exit code 2.
/// </summary>
public sealed class WebCliTests : IDisposable
{
    private static readonly TimeSpan ProcessBound = TimeSpan.FromSeconds(30);

    private readonly string _dir = Directory.CreateTempSubdirectory("vnet-web-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string VnetDll => Path.Combine(AppContext.BaseDirectory, "vnet.dll");

    private string KeyFile()
    {
        var path = Path.Combine(_dir, "p.key");
        if (!File.Exists(path))
        {
            using var pair = StaticKeyPair.Generate();
            KeyFiles.Write(path, pair.ExportPrivate());
        }
        return path;
    }

    private static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    private string[] Daemon(params string[] more) =>
        ["daemon", "--name", "p", "--role", "proxy", "--key-file", KeyFile(), "--listen", $"127.0.0.1:{FreePort()}",
            "--control-socket", Path.Combine(_dir, "p.sock"), .. more];

    private static async Task<(int ExitCode, string[] Stderr)> RunAsync(string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(VnetDll);
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        using var bound = new CancellationTokenSource(ProcessBound);
        try
        {
            var stdout = p.StandardOutput.ReadToEndAsync(bound.Token);
            var stderr = p.StandardError.ReadToEndAsync(bound.Token);
            await p.WaitForExitAsync(bound.Token);
            await stdout;
            return (p.ExitCode, (await stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
        finally
        {
            if (!p.HasExited)
                p.Kill(entireProcessTree: true);
        }
    }

    private static void AssertOneLine(string[] stderr, string expected)
    {
        var line = Assert.Single(stderr);
        Assert.StartsWith("vnet: ", line, StringComparison.Ordinal);
        Assert.Contains(expected, line, StringComparison.Ordinal);
    }

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
        var token = Path.Combine(_dir, "web.token");
        await File.WriteAllTextAsync(token, "0123456789abcdef0123456789abcdef\n");
        File.SetUnixFileMode(token, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);

        var (code, stderr) = await RunAsync(Daemon("--web", $"0.0.0.0:{FreePort()}", "--web-token-file", token));

        Assert.Equal(2, code);
        AssertOneLine(stderr, $"bad configuration: --web-token-file: {token} is open to other users");
    }

    [Fact]
    public async Task Daemon_HostWithWeb_OneLineAndExitTwo()
    {
        var config = Path.Combine(_dir, "h.toml");
        using var proxy = StaticKeyPair.Generate();
        await File.WriteAllTextAsync(config, $"name = \"h1\"\nrole = \"host\"\nkey_file = \"{KeyFile()}\"\nweb = \"127.0.0.1:8080\"\n" +
            $"[proxy]\naddress = \"127.0.0.1:5500\"\npublic_key = \"{proxy.Public}\"\n");

        var (code, stderr) = await RunAsync(["daemon", "--config", config]);

        Assert.Equal(2, code);
        AssertOneLine(stderr, "web: only the Proxy serves the web front");
    }
}
