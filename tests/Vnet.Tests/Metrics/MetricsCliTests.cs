using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Vnet.Configuration;
using Vnet.Links.Security;

namespace Vnet.Tests.Metrics;

/// <summary>
/// The real <c>vnet daemon</c> given a metrics endpoint it cannot use: a malformed one (from the
/// option or, through <c>--config</c>, the file) stops it with one line and exit code 2; a port in
/// use, with one line and exit code 1, as the link port does.
/// </summary>
public sealed class MetricsCliTests : IDisposable
{
    private static readonly TimeSpan ProcessBound = TimeSpan.FromSeconds(30);

    private readonly string _dir = Directory.CreateTempSubdirectory("vnet-metrics-cli-").FullName;

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
    public async Task Daemon_MetricsWithoutAPort_OneLineAndExitTwo()
    {
        var (code, stderr) = await RunAsync(Daemon("--metrics", "127.0.0.1"));

        Assert.Equal(2, code);
        AssertOneLine(stderr, "bad configuration: --metrics: '127.0.0.1' is not an address:port such as 127.0.0.1:9464");
    }

    [Fact]
    public async Task Daemon_ConfigFileWithBadMetrics_OneLineNamingTheFileAndExitTwo()
    {
        var config = Path.Combine(_dir, "p.toml");
        await File.WriteAllTextAsync(config, $"name = \"p\"\nrole = \"proxy\"\nkey_file = \"{KeyFile()}\"\nmetrics = \"localhost:9464\"\n");

        var (code, stderr) = await RunAsync(["daemon", "--config", config]);

        Assert.Equal(2, code);
        AssertOneLine(stderr, $"bad configuration: {config}: metrics: 'localhost:9464' is not an address:port");
    }

    [Fact]
    public async Task Daemon_MetricsPortInUse_OneLineAndExitOne()
    {
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        taken.Listen();

        var (code, stderr) = await RunAsync(Daemon("--metrics", taken.LocalEndPoint!.ToString()!));

        Assert.Equal(1, code);
        AssertOneLine(stderr, "cannot start daemon p:");
        Assert.Contains("address already in use", stderr[0], StringComparison.OrdinalIgnoreCase);
    }
}
