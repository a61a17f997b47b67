using System.CommandLine;
using System.Globalization;
using System.Net;
using Vnet.Language;
using Vnet.Patterns;

namespace Vnet.Cli;

/// <summary>
/// <c>vnet patterns</c>: one rank of a synthetic BSP benchmark. Run one per VM, all with the same
/// --peers and each with its own --rank; they exchange messages in rounds with a barrier between.
/// </summary>
internal static class PatternsCommand
{
    public static Command Create()
    {
        var pattern = new Option<string>("--pattern", "-p")
        {
            Description = "Who sends to whom each round: " + string.Join(", ", PatternGraph.Names) + " (see docs/patterns.md)",
            Required = true,
        };
        pattern.AcceptOnlyFromAmong([.. PatternGraph.Names]);
        var peers = new Option<string>("--peers")
        {
            Description = "Every rank's listen address, rank 0 first: ADDR:PORT,ADDR:PORT,... (the same list at every rank)",
            Required = true,
        };
        var rank = new Option<int>("--rank", "-r") { Description = "This process's rank: its index in --peers", Required = true };
        var bytes = new Option<string>("--bytes", "-b")
        {
            Description = "Bytes per message: a number with an optional K, M or G suffix (powers of 1024)",
            DefaultValueFactory = _ => "64K",
        };
        var rounds = new Option<int>("--rounds", "-n") { Description = "Rounds to run", DefaultValueFactory = _ => 10 };
        var json = new Option<bool>("--json") { Description = "Print this rank's report as JSON" };
        var roundTimeout = new Option<double>("--round-timeout")
        {
            Description = "Seconds a round may take, from its start to the barrier's release",
            DefaultValueFactory = _ => 60,
        };
        var connectTimeout = new Option<double>("--connect-timeout")
        {
            Description = "Seconds for every connection to come up, counted from this rank's start",
            DefaultValueFactory = _ => 30,
        };
        var listen = new Option<string?>("--listen") { Description = "Listen on ADDR:PORT instead of this rank's --peers entry (e.g. behind NAT)" };

        var command = new Command("patterns",
            "Run one rank of a communication pattern over TCP, in rounds with a barrier; print the time per round and in total (rank 0's are authoritative).")
        {
            pattern, peers, rank, bytes, rounds, json, roundTimeout, connectTimeout, listen,
        };
        command.SetAction(async (p, ct) =>
        {
            PatternOptions options;
            var asJson = p.GetValue(json);
            try
            {
                options = new PatternOptions
                {
                    Kind = PatternGraph.TryParse(p.GetValue(pattern), out var kind) ? kind : throw new ArgumentException($"unknown pattern '{p.GetValue(pattern)}'"),
                    Peers = ParsePeers(p.GetValue(peers)!),
                    Rank = p.GetValue(rank),
                    Bytes = ParseBytes(p.GetValue(bytes)!),
                    Rounds = p.GetValue(rounds),
                    Listen = p.GetValue(listen) is { } l ? ParseEndpoint(l) : null,
                    ConnectTimeout = Seconds(p.GetValue(connectTimeout), "--connect-timeout"),
                    RoundTimeout = Seconds(p.GetValue(roundTimeout), "--round-timeout"),
                    RoundCompleted = asJson ? null : (round, time) => Console.WriteLine(Invariant($"round {round}: {time.TotalSeconds:0.000} s")),
                };
                options.Validate();
            }
            catch (ArgumentException e)
            {
                await Console.Error.WriteLineAsync($"vnet: {e.Message}");
                return 2;
            }

            try
            {
                var report = await PatternRunner.RunAsync(options, ct);
                if (asJson)
                {
                    Console.WriteLine(report.ToJson());
                }
                else
                {
                    Console.WriteLine(Invariant(
                        $"total: {report.Total.TotalSeconds:0.000} s ({report.Rounds} rounds of {report.Kind.Name()}, {report.N} ranks, {ByteSize.Format(report.Bytes)} per message; rank {report.Rank} sent {ByteSize.Format(report.BytesSent)}, received {ByteSize.Format(report.BytesReceived)})"));
                }
                return 0;
            }
            catch (PatternException e)
            {
                await Console.Error.WriteLineAsync($"vnet: {e.Message}");
                return 1;
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                await Console.Error.WriteLineAsync("vnet: interrupted");
                return 1;
            }
        });
        return command;
    }

    private static List<IPEndPoint> ParsePeers(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0)
            throw new ArgumentException("--peers is empty: give every rank's ADDR:PORT, rank 0 first");
        return [.. parts.Select(ParseEndpoint)];
    }

    private static IPEndPoint ParseEndpoint(string text) =>
        OverlayParser.TryParseEndpoint(text, out var endpoint, out var problem) ? endpoint : throw new ArgumentException(problem);

    private static int ParseBytes(string text)
    {
        if (!ByteSize.TryParse(text, out var bytes) || bytes > PatternOptions.MaxBytes)
            throw new ArgumentException($"--bytes '{text}' is not a size from 0 to 1G (such as 512, 64K, 10M)");
        return (int)bytes;
    }

    private static TimeSpan Seconds(double seconds, string option) =>
        seconds > 0 && seconds <= int.MaxValue / 1000
            ? TimeSpan.FromSeconds(seconds)
            : throw new ArgumentException($"{option} {seconds.ToString(CultureInfo.InvariantCulture)} is not a positive number of seconds");

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
