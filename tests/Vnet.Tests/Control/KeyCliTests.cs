using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Vnet.Configuration;
using Vnet.Control;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Tests.Links;
using Vnet.Tests.Support;

namespace Vnet.Tests.Control;

/// <summary>
/// The real <c>vnet</c> facing key mistakes: a key file it cannot write, a key it cannot read, a
/// malformed public key, a malformed hosts file; each is one line on stderr and a non-zero exit,
/// never a stack trace. And the link-security counters of <c>vnet status</c>, and revocation of an
/// administrator's key by SIGHUP in a running daemon.
/// </summary>
public sealed class KeyCliTests : IDisposable
{
    private static readonly TimeSpan ProcessBound = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan Quick = TimeSpan.FromSeconds(10);

    private readonly string _dir = Directory.CreateTempSubdirectory("vnet-keycli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private sealed record Outcome(int ExitCode, string Stdout, string[] Stderr);

    private static async Task<Outcome> RunAsync(params string[] args)
    {
        var (code, stdout, stderr) = await VnetProcess.RunAsync(args, ProcessBound);
        return new Outcome(code, stdout, stderr);
    }

    /// <summary>One line, saying what is wrong with the file, and no stack trace.</summary>
    private static void AssertOneLine(Outcome o, string expected)
    {
        var line = Assert.Single(o.Stderr);
        Assert.StartsWith("vnet: ", line, StringComparison.Ordinal);
        Assert.Contains(expected, line, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Keygen_ExistingFileMissingDirectoryOrNoPermission_OneLineAndExitOne()
    {
        var existing = Path.Combine(_dir, "exists.key");
        await File.WriteAllTextAsync(existing, "keep me");

        var exists = await RunAsync("keygen", "-o", existing);
        var noDir = await RunAsync("keygen", "-o", Path.Combine(_dir, "missing", "k.key"));
        // Even root may not create a file in sysfs.
        var denied = await RunAsync("keygen", "-o", "/sys/vnet-test.key");

        Assert.Equal((1, 1, 1), (exists.ExitCode, noDir.ExitCode, denied.ExitCode));
        AssertOneLine(exists, "the file exists");
        AssertOneLine(noDir, "does not exist");
        AssertOneLine(denied, "cannot write /sys/vnet-test.key");
        Assert.Equal("keep me", await File.ReadAllTextAsync(existing));
    }

    [Fact]
    public async Task Pubkey_MissingOrOpenKeyFile_OneLineAndExitTwo_GoodFilePrintsTheKey()
    {
        using var pair = StaticKeyPair.Generate();
        var good = Path.Combine(_dir, "good.key");
        KeyFiles.Write(good, pair.ExportPrivate());
        var open = Path.Combine(_dir, "open.key");
        await File.WriteAllTextAsync(open, pair.ExportPrivate());
        File.SetUnixFileMode(open, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);

        var missing = await RunAsync("pubkey", Path.Combine(_dir, "absent.key"));
        var opened = await RunAsync("pubkey", open);
        var printed = await RunAsync("pubkey", good);

        Assert.Equal(2, missing.ExitCode);
        AssertOneLine(missing, "absent.key");
        Assert.Equal(2, opened.ExitCode);
        AssertOneLine(opened, "chmod 600");
        Assert.Equal(0, printed.ExitCode);
        Assert.Equal(pair.Public.ToString(), printed.Stdout.Trim());
    }

    [Fact]
    public async Task HostAdmit_MalformedKey_UsageErrorExitTwoBeforeAnythingIsSent()
    {
        // No daemon listens at this socket: the key is refused before the CLI tries to reach one.
        var o = await RunAsync("host", "admit", "h9", "not-a-key", "--socket", Path.Combine(_dir, "none.sock"));

        Assert.Equal(2, o.ExitCode);
        AssertOneLine(o, "'not-a-key' is not a public key");
        Assert.DoesNotContain(o.Stderr, l => l.Contains("none.sock", StringComparison.Ordinal));
        Assert.Equal("", o.Stdout);
    }

    [Fact]
    public async Task Daemon_MalformedHostsFile_OneLineWithFileAndLineAndExitTwo()
    {
        var config = WriteProxyConfig(admins: [], hostsFile: $"h1 {StaticKeyPair.Generate().Public}\nh2 what\n", port: FreePort());

        var o = await RunAsync("daemon", "--config", config);

        Assert.Equal(2, o.ExitCode);
        AssertOneLine(o, $"bad configuration: {Path.Combine(_dir, "hosts")}:2: 'what' is not a public key");
    }

    [Fact]
    public async Task Status_HandshakesRefusedAndPerLinkCounters_ShownInTextAndJson()
    {
        await using var net = await DaemonNet.StartAsync("h1");
        var proxy = net.Proxy;
        // A stranger's garbage instead of a handshake.
        using (var stranger = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await stranger.ConnectAsync(proxy.Links.LocalEndPoint!);
            await stranger.SendAsync(new byte[64]);
        }
        await DaemonNet.Until(() => proxy.Links.HandshakesRefused >= 1, Quick, "the Proxy to refuse the garbage");
        var socket = Path.Combine(_dir, "proxy.sock");
        await using var control = new ControlServer(socket, new CommandDispatcher(proxy), new ListLogger());
        control.Start();

        var text = await RunAsync("status", "--socket", socket);
        var json = await RunAsync("status", "--socket", socket, "--json");
        var links = await RunAsync("link", "list", "--socket", socket, "--json");

        Assert.Equal(0, text.ExitCode);
        Assert.Matches(@"handshakes [1-9]\d* refused \(.*\), 0 rate-limited", text.Stdout);
        Assert.Matches(@"sessions  0 messages failed authentication .*, 0 rekeys; udp 0 receive faults", text.Stdout);
        var security = JsonNode.Parse(json.Stdout)!["security"]!;
        Assert.True(security["handshakesRefused"]!.GetValue<long>() >= 1);
        Assert.Equal(0, security["handshakesRateLimited"]!.GetValue<long>());
        Assert.NotNull(security["authenticationFailures"]);
        Assert.NotNull(security["udpReceiveFaults"]);
        var h1 = JsonNode.Parse(links.Stdout)!.AsArray().Single(l => l!["peer"]!.GetValue<string>() == "h1")!;
        Assert.Equal(0, h1["authenticationFailures"]!.GetValue<long>());
        Assert.Equal(0, h1["rekeys"]!.GetValue<long>());
    }

    /// <summary>A Proxy's configuration in the test's folder, listening on loopback, serving the given administrators.</summary>
    private string WriteProxyConfig(IReadOnlyList<PublicKeyId> admins, int port, string? hostsFile = null)
    {
        var key = Path.Combine(_dir, "proxy.key");
        if (!File.Exists(key))
        {
            using var pair = StaticKeyPair.Generate();
            KeyFiles.Write(key, pair.ExportPrivate());
        }
        if (hostsFile is not null)
            File.WriteAllText(Path.Combine(_dir, "hosts"), hostsFile);
        var path = Path.Combine(_dir, "proxy.toml");
        File.WriteAllText(path, $"""
            name = "proxy"
            role = "proxy"
            listen = "127.0.0.1:{port}"
            key_file = "proxy.key"
            hosts_file = "hosts"
            accept_tools = true
            control_socket = "{Path.Combine(_dir, "run", "proxy.sock")}"
            admin_keys = [{string.Join(", ", admins.Select(a => $"\"{a}\""))}]
            """);
        return path;
    }

    private static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    [Fact]
    public async Task Sighup_AdministratorKeyRemoved_ItsOpenSessionEndsAndItIsRefused_OthersStillServed()
    {
        using var removed = StaticKeyPair.Generate();
        using var kept = StaticKeyPair.Generate();
        var port = FreePort();
        var config = WriteProxyConfig([removed.Public, kept.Public], port: port);
        var proxyKey = DaemonConfig.Load(config).Identity.Public;
        var at = new IPEndPoint(IPAddress.Loopback, port);
        using var daemon = Process.Start(VnetProcess.StartInfo(["daemon", "--config", config, "--log-level", "warning"]))!;
        var log = daemon.StandardError.ReadToEndAsync();
        _ = daemon.StandardOutput.ReadToEndAsync();
        try
        {
            await WaitServed(at, removed, proxyKey);
            // An administrator's session that stays open across the reload.
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            // A bound, not a timing: a daemon process on a machine loaded by the whole suite took
            // over 10 s from the connect to ending the session after SIGHUP.
            using var bound = new CancellationTokenSource(3 * Quick);
            await socket.ConnectAsync(at, bound.Token);
            var (peer, local) = await LinkManager.HandshakeAsTool(socket, removed, proxyKey, PresharedKey.None, "vnet-cli-test", bound.Token);
            using var channel = new SecureChannel(socket, peer, local);

            WriteProxyConfig([kept.Public], port: port);
            using (var hup = Process.Start("kill", ["-HUP", daemon.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
                await hup.WaitForExitAsync(bound.Token);

            // The open session is ended by the daemon: its next read finds the connection closed.
            var ended = await Assert.ThrowsAnyAsync<Exception>(async () => await channel.ReadAsync(1 << 16, bound.Token));
            Assert.IsNotType<OperationCanceledException>(ended);
            var refused = await Assert.ThrowsAsync<ControlException>(() => RemoteControlClient.SendAsync(at, removed, proxyKey, PresharedKey.None, "status"));
            Assert.Contains("not admitted", refused.Message, StringComparison.Ordinal);
            Assert.Equal("proxy", (await RemoteControlClient.SendAsync(at, kept, proxyKey, PresharedKey.None, "status"))!["name"]!.GetValue<string>());
            Assert.False(daemon.HasExited, "SIGHUP ended the daemon");
        }
        finally
        {
            if (!daemon.HasExited)
                daemon.Kill(entireProcessTree: true);
            await daemon.WaitForExitAsync(new CancellationTokenSource(Quick).Token);
        }
        Assert.DoesNotContain("Unhandled", await log, StringComparison.Ordinal);
    }

    /// <summary>Waits until the daemon process serves remote control with <paramref name="admin"/>'s key.</summary>
    private static async Task WaitServed(IPEndPoint at, StaticKeyPair admin, PublicKeyId daemonKey)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                await RemoteControlClient.SendAsync(at, admin, daemonKey, PresharedKey.None, "status");
                return;
            }
            catch (ControlException) when (clock.Elapsed < ProcessBound)
            {
                await Task.Delay(100);
            }
        }
    }
}
