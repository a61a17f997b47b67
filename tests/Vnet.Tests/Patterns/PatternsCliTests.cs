using System.Diagnostics;
using System.Net;
using System.Text.RegularExpressions;
using Vnet.Patterns;
using static Vnet.Tests.Patterns.Ranks;

namespace Vnet.Tests.Patterns;

/// <summary>The real <c>vnet patterns</c>, one process per rank on 127.0.0.1, as it runs in VMs.</summary>
public sealed partial class PatternsCliTests
{
    private static readonly TimeSpan ProcessBound = TimeSpan.FromSeconds(20);

    private static string VnetDll => Path.Combine(AppContext.BaseDirectory, "vnet.dll");

    private sealed record Outcome(int ExitCode, string[] Stdout, string[] Stderr);

    [GeneratedRegex(@"^round (\d+): \d+\.\d{3} s$")]
    private static partial Regex RoundLine();

    [GeneratedRegex(@"^total: \d+\.\d{3} s \(3 rounds of ring, 3 ranks, 4K per message; rank (\d) sent 12K, received 12K\)$")]
    private static partial Regex TotalLine();

    [Fact]
    public async Task Patterns_RingOfThreeProcesses_EachPrintsItsRoundsAndTotal()
    {
        var peers = Peers(FreeEndpoints(3));

        var outcomes = await RunAsync(
            ["--pattern", "ring", "--peers", peers, "--rank", "0", "--bytes", "4K", "--rounds", "3"],
            ["--pattern", "ring", "--peers", peers, "--rank", "1", "--bytes", "4K", "--rounds", "3"],
            ["--pattern", "ring", "--peers", peers, "--rank", "2", "--bytes", "4K", "--rounds", "3", "--json"]);

        Assert.All(outcomes, o => Assert.True(o.ExitCode == 0, $"exit {o.ExitCode}: {string.Join(" | ", o.Stderr)}"));
        for (var rank = 0; rank < 2; rank++)
        {
            var lines = outcomes[rank].Stdout;
            Assert.Equal(4, lines.Length);
            Assert.Equal(["1", "2", "3"], lines[..3].Select(l => RoundLine().Match(l) is { Success: true } m ? m.Groups[1].Value : l));
            Assert.Equal($"{rank}", TotalLine().Match(lines[3]) is { Success: true } m ? m.Groups[1].Value : lines[3]);
            Assert.Empty(outcomes[rank].Stderr);
        }
        var report = PatternReport.FromJson(string.Join('\n', outcomes[2].Stdout))!;
        Assert.Equal((2, PatternKind.Ring, 3, 4096, 3, 3, 3 * 4096L, 3 * 4096L),
            (report.Rank, report.Kind, report.N, report.Bytes, report.Rounds, report.RoundTimes.Count, report.BytesSent, report.BytesReceived));
    }

    [Fact]
    public async Task Patterns_PeerNeverStarts_ExitsOneWithAOneLineReasonNamingIt()
    {
        var endpoints = FreeEndpoints(2);

        var outcome = (await RunAsync(["--pattern", "bus", "--peers", Peers(endpoints), "--rank", "1", "--connect-timeout", "1"])).Single();

        Assert.Equal(1, outcome.ExitCode);
        Assert.Empty(outcome.Stdout);
        var line = Assert.Single(outcome.Stderr);
        Assert.StartsWith("vnet: ", line, StringComparison.Ordinal);
        Assert.Contains($"rank 0 ({endpoints[0]})", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--bytes", "5Q", "--bytes '5Q' is not a size")]
    [InlineData("--rank", "7", "rank 7 is not in 0..1")]
    [InlineData("--peers", "127.0.0.1", "has no port")]
    public async Task Patterns_BadArgument_ExitsTwoSayingWhich(string option, string value, string expected)
    {
        string[] args = ["--pattern", "ring", "--peers", "127.0.0.1:7000,127.0.0.1:7001", "--rank", "0"];
        var i = Array.IndexOf(args, option);
        args = i >= 0 ? [.. args[..(i + 1)], value, .. args[(i + 2)..]] : [.. args, option, value];

        var outcome = (await RunAsync(args)).Single();

        Assert.Equal(2, outcome.ExitCode);
        Assert.Contains(expected, Assert.Single(outcome.Stderr), StringComparison.Ordinal);
    }

    private static string Peers(IReadOnlyList<IPEndPoint> endpoints) => string.Join(',', endpoints);

    /// <summary>Starts one <c>vnet patterns</c> per argument list at once; waits for all, at most <see cref="ProcessBound"/>.</summary>
    private static async Task<Outcome[]> RunAsync(params string[][] ranks)
    {
        var processes = new List<Process>();
        try
        {
            foreach (var args in ranks)
            {
                var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                psi.ArgumentList.Add(VnetDll);
                psi.ArgumentList.Add("patterns");
                foreach (var a in args)
                    psi.ArgumentList.Add(a);
                processes.Add(Process.Start(psi)!);
            }
            using var bound = new CancellationTokenSource(ProcessBound);
            return await Task.WhenAll(processes.Select(p => FinishAsync(p, bound.Token)));
        }
        finally
        {
            foreach (var p in processes)
            {
                if (!p.HasExited)
                    p.Kill(entireProcessTree: true);
                p.Dispose();
            }
        }
    }

    private static async Task<Outcome> FinishAsync(Process p, CancellationToken ct)
    {
        var stdout = p.StandardOutput.ReadToEndAsync(ct);
        var stderr = p.StandardError.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct);
        return new Outcome(p.ExitCode, Lines(await stdout), Lines(await stderr));
    }

    private static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
