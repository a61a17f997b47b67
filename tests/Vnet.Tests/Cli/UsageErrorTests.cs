using Vnet.Tests.Support;

namespace Vnet.Tests.Cli;

/// <summary>
/// The real <c>vnet</c> given a command line it cannot parse: one line on stderr starting with
/// <c>vnet: </c> that says what is wrong and names the command's help, nothing on stdout, exit 2
/// (docs/cli.md), whatever the mistake, the <c>--remote</c> settings included; help asked for is
/// still help, on stdout, exit 0.
/// </summary>
public sealed class UsageErrorTests
{
    private static readonly TimeSpan ProcessBound = TimeSpan.FromSeconds(20);

    // No daemon may be reached by accident: the line must come before any connection.
    private static Task<(int ExitCode, string Stdout, string[] Stderr)> RunAsync(params string[] args) =>
        VnetProcess.RunAsync(args, ProcessBound, new Dictionary<string, string> { ["VNET_SOCKET"] = "/nonexistent/vnet-usage-test.sock" });

    public static TheoryData<string[], string, string> Mistakes() => new()
    {
        { ["status", "--bogus"], "Unrecognized command or argument '--bogus'", "vnet status --help" },
        { ["rule", "add", "--src", "any"], "Option '--dst' is required. Option '--to' is required.", "vnet rule add --help" },
        { ["link", "add", "h2", "192.0.2.12:5500", "--transport", "sctp"], "Argument 'sctp' not recognized. Must be one of: 'tcp' 'udp'", "vnet link add --help" },
        { ["nosuch"], "'nosuch'", "vnet --help" },
        { ["topo", "gen", "star"], "--proxy", "vnet topo gen --help" },
    };

    [Theory]
    [MemberData(nameof(Mistakes))]
    public async Task Mistake_OneLineOnStderrNamingItAndTheHelpNothingOnStdoutExitTwo(string[] args, string reason, string help)
    {
        var (code, stdout, stderr) = await RunAsync(args);

        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        var line = Assert.Single(stderr);
        Assert.StartsWith("vnet: ", line, StringComparison.Ordinal);
        Assert.Contains(reason, line, StringComparison.Ordinal);
        Assert.EndsWith($"('{help}' shows the usage)", line, StringComparison.Ordinal);
    }

    public static TheoryData<string[], string> RemoteMistakes() => new()
    {
        { ["status", "--remote", "192.0.2.1", "--remote-key", Key, "--admin-key-file", "/nonexistent/admin.key"], "--remote: '192.0.2.1' is not an address:port" },
        { ["status", "--remote", "192.0.2.1:5500", "--remote-key", "garbage", "--admin-key-file", "/nonexistent/admin.key"], "--remote-key: 'garbage' is not a public key" },
        { ["status", "--remote", "192.0.2.1:5500", "--admin-key-file", "/nonexistent/admin.key"], "--remote needs the daemon's public key" },
        { ["status", "--remote", "192.0.2.1:5500", "--remote-key", Key], "--remote needs an administrator's key" },
        { ["status", "--remote", "192.0.2.1:5500", "--remote-key", Key, "--admin-key-file", "/nonexistent/admin.key"], "/nonexistent/admin.key" },
        { ["topo", "dump", "--remote", "192.0.2.1:5500", "--remote-key", "garbage", "--admin-key-file", "/nonexistent/admin.key"], "--remote-key: 'garbage' is not a public key" },
    };

    /// <summary>A public key's form (any 32 bytes in base64); nothing is ever sent to it.</summary>
    private const string Key = "qi25WbWbVtlhiSS37Y0Xfzg++PEbi4XEGjGfV7dCcys=";

    /// <summary>A wrong --remote setting is the command line's fault: exit 2, before anything is sent (192.0.2.1 is never dialled).</summary>
    [Theory]
    [MemberData(nameof(RemoteMistakes))]
    public async Task RemoteMistake_OneLineExitTwo(string[] args, string reason)
    {
        var (code, stdout, stderr) = await RunAsync(args);

        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        var line = Assert.Single(stderr);
        Assert.StartsWith("vnet: ", line, StringComparison.Ordinal);
        Assert.Contains(reason, line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Help_AskedFor_OnStdoutExitZero()
    {
        var (code, stdout, stderr) = await RunAsync("rule", "add", "--help");

        Assert.Equal(0, code);
        Assert.Contains("--dst", stdout, StringComparison.Ordinal);
        Assert.Empty(stderr);
    }
}
