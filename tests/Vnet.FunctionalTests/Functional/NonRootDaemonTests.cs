using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Functional;

/// <summary>
/// The daemon as packaging/vnet@.service runs it: not root, but user nobody with exactly
/// CAP_NET_ADMIN and CAP_NET_RAW (ambient, as systemd's AmbientCapabilities gives them; here
/// through setpriv). It must create its TAP, open a NIC as a packet socket and serve its control
/// socket; without CAP_NET_RAW the packet socket is refused with a clear reason. The build is
/// copied to a directory every user can read, as an install under /usr would be.
/// </summary>
[Collection("Netns")]
public sealed class NonRootDaemonTests : IDisposable
{
    private const int Nobody = 65534;
    private readonly TestBed.TestBed _bed;
    private readonly string _dir;

    public NonRootDaemonTests(ITestOutputHelper output)
    {
        _bed = new TestBed.TestBed(output);
        _dir = Directory.CreateTempSubdirectory("vnet-nonroot-").FullName;
        File.SetUnixFileMode(_dir, (UnixFileMode)0b111_101_101);
        var app = Path.Combine(_dir, "app");
        Directory.CreateDirectory(app);
        foreach (var file in Directory.EnumerateFiles(AppContext.BaseDirectory))
        {
            if (file.EndsWith(".dll", StringComparison.Ordinal) || file.EndsWith(".json", StringComparison.Ordinal) || file.EndsWith(".so", StringComparison.Ordinal))
                File.Copy(file, Path.Combine(app, Path.GetFileName(file)));
        }
        // libsodium, where the runtime looks for it.
        var native = Path.Combine("runtimes", "linux-x64", "native");
        Directory.CreateDirectory(Path.Combine(app, native));
        foreach (var file in Directory.EnumerateFiles(Path.Combine(AppContext.BaseDirectory, native)))
            File.Copy(file, Path.Combine(app, native, Path.GetFileName(file)));
        Sh.Run($"chmod -R a+rX {Sh.Quote(app)}");
        foreach (var sub in new[] { "app", "run" })
        {
            var path = Path.Combine(_dir, sub);
            Directory.CreateDirectory(path);
            File.SetUnixFileMode(path, (UnixFileMode)0b111_101_101);
        }
        Sh.Run($"chown {Nobody}:{Nobody} {Sh.Quote(Path.Combine(_dir, "run"))}");
    }

    public void Dispose()
    {
        _bed.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private string KeyOwnedByNobody()
    {
        var key = Path.Combine(_dir, "proxy.key");
        Sh.Run($"dotnet {Sh.Quote(Path.Combine(_dir, "app", "vnet.dll"))} keygen -o {Sh.Quote(key)}");
        Sh.Run($"chown {Nobody}:{Nobody} {Sh.Quote(key)}");
        return key;
    }

    private BackgroundProcess StartAsNobody(string caps, string key, string socket)
    {
        _bed.Namespace("nr");
        _bed.Namespace("peer");
        _bed.Veth("nr", "eth0", "peer", "eth0");
        _bed.Up("nr", "eth0");
        return _bed.Start("nr", "daemon", "setpriv",
            ["--reuid", $"{Nobody}", "--regid", $"{Nobody}", "--clear-groups", "--inh-caps", caps, "--ambient-caps", caps,
             "env", $"HOME={_dir}", "DOTNET_CLI_HOME=" + _dir,
             "dotnet", Path.Combine(_dir, "app", "vnet.dll"), "daemon", "--name", "proxy", "--role", "proxy", "--listen", "127.0.0.1:5500",
             "--key-file", key, "--tap", "vtap0", "--pcap", "eth0", "--lan", "eth0", "--control-socket", socket, "--log-level", "information"],
            environment: null);
    }

    [Fact]
    public void AsNobodyWithNetAdminAndNetRaw_OpensTapAndNicAndServes()
    {
        var key = KeyOwnedByNobody();
        var socket = Path.Combine(_dir, "run", "proxy.sock");
        var daemon = StartAsNobody("+net_admin,+net_raw", key, socket);
        daemon.WaitForOutput("Control socket", TimeSpan.FromSeconds(60));

        var status = File.ReadAllLines($"/proc/{daemon.Pid}/status");
        Assert.Contains(status, l => l.StartsWith("Uid:", StringComparison.Ordinal) && l.Split('\t', StringSplitOptions.RemoveEmptyEntries)[1] == $"{Nobody}");
        // Effective capabilities: exactly CAP_NET_ADMIN (12) and CAP_NET_RAW (13).
        var capEff = status.Single(l => l.StartsWith("CapEff:", StringComparison.Ordinal)).Split('\t', StringSplitOptions.RemoveEmptyEntries)[1];
        Assert.Equal(0x3000UL, Convert.ToUInt64(capEff, 16));

        Assert.True(_bed.HasInterface("nr", "vtap0"), "the TAP was not created");
        var list = Sh.Run($"dotnet {Sh.Quote(Path.Combine(_dir, "app", "vnet.dll"))} interface list --socket {Sh.Quote(socket)}");
        Assert.Contains("vtap0", list, StringComparison.Ordinal);
        Assert.Contains("eth0", list, StringComparison.Ordinal);
        // Without CAP_SYS_NICE the forwarding threads stay at normal priority, said once, and it serves.
        Assert.Single(daemon.Lines, l => l.Contains("Forwarding threads stay at normal priority", StringComparison.Ordinal));
        Assert.False(daemon.HasExited, "the daemon ended");
    }

    [Fact]
    public void AsNobodyWithoutNetRaw_RefusesThePacketSocketWithTheReason()
    {
        var key = KeyOwnedByNobody();
        var daemon = StartAsNobody("+net_admin", key, Path.Combine(_dir, "run", "proxy.sock"));
        Assert.True(daemon.WaitForExit(TimeSpan.FromSeconds(60)), "the daemon did not end");
        Assert.Equal(1, daemon.ExitCode);
        Assert.Contains(daemon.Lines, l => l.Contains("eth0", StringComparison.Ordinal) && l.Contains("not permitted", StringComparison.OrdinalIgnoreCase));
    }
}
