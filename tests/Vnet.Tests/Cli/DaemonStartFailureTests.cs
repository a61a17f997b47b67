using System.Net;
using System.Net.Sockets;
using Vnet.Tests.Support;

namespace Vnet.Tests.Cli;

/// <summary>
/// The real <c>vnet daemon</c> that cannot start, because its link port is taken or its control
/// socket cannot be made: the reason is one line on stderr naming what failed and exit 1
/// (docs/daemon.md), and its log (stdout, the journal under systemd) has no stack trace from the
/// generic host repeating it.
/// </summary>
public sealed class DaemonStartFailureTests : DaemonCliTests
{
    [Fact]
    public async Task Daemon_LinkPortInUse_OneLineExitOneAndNoStackTraceInTheLog()
    {
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)taken.LocalEndPoint!).Port;

        var (code, log, stderr) = await RunWithLogAsync(["daemon", "--name", "p", "--role", "proxy", "--key-file", KeyFile(),
            "--listen", $"127.0.0.1:{port}", "--control-socket", Path.Combine(Dir, "p.sock")]);

        Assert.Equal(1, code);
        AssertOneLine(stderr, "cannot start daemon p:");
        Assert.Contains("address already in use", stderr[0], StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("   at ", log, StringComparison.Ordinal);
        Assert.DoesNotContain("Hosting failed to start", log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Daemon_ControlSocketItMayNotMake_OneLineNamingTheSocket()
    {
        // Even root may not make a file in sysfs.
        var (code, stderr) = await RunAsync(["daemon", "--name", "p", "--role", "proxy", "--key-file", KeyFile(),
            "--listen", $"127.0.0.1:{FreePort()}", "--control-socket", "/sys/vnet-test.sock"]);

        Assert.Equal(1, code);
        AssertOneLine(stderr, "cannot start daemon p: cannot make the control socket /sys/vnet-test.sock: ");
    }
}
