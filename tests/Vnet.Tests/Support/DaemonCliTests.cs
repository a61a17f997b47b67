using System.Net;
using System.Net.Sockets;
using Vnet.Configuration;
using Vnet.Links.Security;

namespace Vnet.Tests.Support;

/// <summary>
/// Runs the real <c>vnet daemon</c> (the build output's vnet.dll) as a process with a Proxy's
/// options and a key of its own, in a folder removed afterwards, and reads its exit code and its
/// standard error: for the tests of settings that stop a daemon before it serves.
/// </summary>
public abstract class DaemonCliTests : IDisposable
{
    private static readonly TimeSpan ProcessBound = TimeSpan.FromSeconds(30);

    protected string Dir { get; } = Directory.CreateTempSubdirectory("vnet-daemon-cli-").FullName;

    public void Dispose()
    {
        Directory.Delete(Dir, recursive: true);
        GC.SuppressFinalize(this);
    }

    protected string KeyFile()
    {
        var path = Path.Combine(Dir, "p.key");
        if (!File.Exists(path))
        {
            using var pair = StaticKeyPair.Generate();
            KeyFiles.Write(path, pair.ExportPrivate());
        }
        return path;
    }

    protected static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    protected string[] Daemon(params string[] more) =>
        ["daemon", "--name", "p", "--role", "proxy", "--key-file", KeyFile(), "--listen", $"127.0.0.1:{FreePort()}",
            "--control-socket", Path.Combine(Dir, "p.sock"), .. more];

    protected static async Task<(int ExitCode, string[] Stderr)> RunAsync(string[] args)
    {
        var (code, _, stderr) = await RunWithLogAsync(args);
        return (code, stderr);
    }

    /// <summary>Also returns standard output, where a daemon logs.</summary>
    protected static Task<(int ExitCode, string Stdout, string[] Stderr)> RunWithLogAsync(string[] args) => VnetProcess.RunAsync(args, ProcessBound);

    protected static void AssertOneLine(string[] stderr, string expected)
    {
        var line = Assert.Single(stderr);
        Assert.StartsWith("vnet: ", line, StringComparison.Ordinal);
        Assert.Contains(expected, line, StringComparison.Ordinal);
    }
}
