using System.Net;
using System.Net.Sockets;
using Vnet.Tests.Support;

namespace Vnet.Tests.Metrics;

/// <summary>
/// The real <c>vnet daemon</c> given a metrics endpoint it cannot use: a malformed one (from the
/// option or, through <c>--config</c>, the file) stops it with one line and exit code 2; a port in
/// use, with one line and exit code 1, as the link port does.
/// </summary>
public sealed class MetricsCliTests : DaemonCliTests
{
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
        var config = Path.Combine(Dir, "p.toml");
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
