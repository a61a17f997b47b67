using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text.RegularExpressions;
using Vnet.Tests.TestBed;
using Xunit.Abstractions;

namespace Vnet.Tests.Demo;

/// <summary>
/// The README's first command, as a user runs it: <c>demo.sh</c> reaches its ready line with the
/// web front answering (and refusing a request without the token), and Ctrl-C (SIGINT to its
/// process group, as a terminal sends it) leaves no namespace, interface, process or file behind.
/// </summary>
/// <remarks>
/// The script runs with the tests' own build of vnet (<c>VNET_DEMO_BIN</c>), its own prefix and
/// web subnet, so that a demo a user runs at the same time is not touched.
/// </remarks>
[Collection("Netns")]
public sealed partial class DemoScriptTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ReadyLimit = TimeSpan.FromMinutes(4);
    private static readonly TimeSpan StopLimit = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Demo_ReachesItsReadyLine_AndSigintLeavesNothingBehind()
    {
        TestBedGuard.ThrowIfUnavailable();
        var prefix = "vdt" + (Environment.ProcessId % 10000).ToString(CultureInfo.InvariantCulture);
        const string webNet = "169.254.78";
        var runDir = $"/tmp/vnet-{prefix}";
        var logs = Path.Combine(Environment.GetEnvironmentVariable("VNET_TEST_LOGS") is { Length: > 0 } l ? l : "/tmp/vnet-test-logs", "demo");
        Directory.CreateDirectory(logs);
        var env = new Dictionary<string, string>
        {
            ["VNET_DEMO_BIN"] = AppContext.BaseDirectory,
            ["VNET_DEMO_PREFIX"] = prefix,
            ["VNET_DEMO_WEBNET"] = webNet,
            ["TERM"] = "dumb",
        };
        // The test host ignores SIGINT, and a shell cannot trap a signal ignored when it started: perl
        // restores the default first, so the script meets Ctrl-C as it does under a terminal.
        using var demo = BackgroundProcess.Start(null, "demo", "perl",
            ["-e", "$SIG{INT} = 'DEFAULT'; $SIG{TERM} = 'DEFAULT'; exec @ARGV or die", "bash", Path.Combine(RepoRoot(), "demo.sh")], env, Path.Combine(logs, $"demo-{prefix}.log"));
        try
        {
            var urlLine = demo.WaitForOutput("Web front: http://", ReadyLimit);
            demo.WaitForOutput("VNET demo is running", ReadyLimit);
            var lines = demo.Lines;
            // The URL is the first useful line: only the build and install notes come before it.
            var first = lines.TakeWhile(x => !x.Contains("Web front: http://", StringComparison.Ordinal)).Where(x => x.Trim().Length > 0).ToList();
            Assert.All(first, x => Assert.Matches("^(building|installing)", x));

            var match = UrlPattern().Match(urlLine);
            Assert.True(match.Success, urlLine);
            var (baseUrl, token) = (match.Groups[1].Value, match.Groups[2].Value);
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
            using (var refused = await http.GetAsync(new Uri(baseUrl + "/api/state")))
                Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
            using (var request = new HttpRequestMessage(HttpMethod.Get, new Uri(baseUrl + "/api/state")))
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
                using var state = await http.SendAsync(request);
                Assert.Equal(HttpStatusCode.OK, state.StatusCode);
                var body = await state.Content.ReadAsStringAsync();
                foreach (var daemon in new[] { "proxy", "h1", "h2", "h3" })
                    Assert.Contains($"\"{daemon}\"", body, StringComparison.Ordinal);
            }
            Assert.NotEmpty(Namespaces(prefix));

            // Ctrl-C: the terminal signals the whole foreground process group.
            Assert.Equal(0, TestNative.Kill(-demo.Pid, TestNative.SIGINT));
            Assert.True(demo.WaitForExit(StopLimit), "demo.sh did not end within a minute of SIGINT");
            Assert.Equal(130, demo.ExitCode);
        }
        finally
        {
            output.WriteLine(string.Join('\n', demo.Lines.TakeLast(40)));
            // A failed assertion above: still let the script clean up after itself (a SIGKILL of
            // its tree when the process is disposed would leave its namespaces behind).
            if (!demo.HasExited)
            {
                TestNative.Kill(-demo.Pid, TestNative.SIGINT);
                demo.WaitForExit(StopLimit);
            }
        }

        Assert.Empty(Namespaces(prefix));
        // The VM the demo ordered: its host ended it (holder process and registration gone).
        Assert.False(File.Exists("/run/vnet-vms/web1.netns"), "the ordered VM web1 is still registered");
        Assert.NotEqual(0, Sh.TryRun($"ip link show {prefix}-web").ExitCode);
        Assert.False(Directory.Exists(runDir), $"{runDir} is still there");
        Assert.Empty(ProcessesMentioning(runDir));
    }

    private static List<string> Namespaces(string prefix) =>
        [.. TestBed.TestBed.ListNamespaces().Where(n => n.StartsWith(prefix + "-", StringComparison.Ordinal))];

    /// <summary>Every process whose command line names <paramref name="text"/> (a daemon's key file, a socket ...).</summary>
    private static List<string> ProcessesMentioning(string text)
    {
        var found = new List<string>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid) || pid == Environment.ProcessId)
                continue;
            try
            {
                var cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
                if (cmdline.Contains(text, StringComparison.Ordinal))
                    found.Add($"{pid}: {cmdline}");
            }
            catch (IOException)
            {
                // It ended while we looked.
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return found;
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "demo.sh")) && File.Exists(Path.Combine(dir.FullName, "Vnet.slnx")))
                return dir.FullName;
        }
        throw new InvalidOperationException($"no demo.sh above {AppContext.BaseDirectory}");
    }

    [GeneratedRegex(@"(http://[0-9.]+:[0-9]+)/\?token=([A-Za-z0-9_-]+)")]
    private static partial Regex UrlPattern();
}
