using System.Collections.Concurrent;
using System.Diagnostics;
using Vnet.Patterns;
using static Vnet.Tests.Patterns.Ranks;

namespace Vnet.Tests.Patterns;

/// <summary>
/// Every rank in this process over real TCP on 127.0.0.1: each pattern moves exactly the bytes it
/// promises, the barrier holds every rank back until all finished the round, and failures end every
/// rank quickly with a reason that names the rank at fault.
/// </summary>
public sealed class PatternRunnerTests
{
    public static TheoryData<PatternKind, int> KindsAndSizes()
    {
        var data = new TheoryData<PatternKind, int>();
        foreach (var kind in Enum.GetValues<PatternKind>())
        {
            for (var n = 4; n <= 6; n++)
                data.Add(kind, n);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(KindsAndSizes))]
    public async Task RunAsync_EveryRank_CompletesWithExactlyThePatternsBytes(PatternKind kind, int n)
    {
        const int Bytes = 3000;
        const int Rounds = 3;

        var reports = await RunAllAsync(kind, n, Bytes, Rounds);

        for (var rank = 0; rank < n; rank++)
        {
            var r = reports[rank];
            Assert.Equal((rank, kind, n, Bytes, Rounds), (r.Rank, r.Kind, r.N, r.Bytes, r.Rounds));
            Assert.Equal(Rounds, r.RoundTimes.Count);
            Assert.All(r.RoundTimes, t => Assert.True(t > TimeSpan.Zero && t <= r.Total));
            Assert.Equal((long)Rounds * Bytes * kind.Targets(rank, n).Count, r.BytesSent);
            Assert.Equal((long)Rounds * Bytes * kind.Sources(rank, n).Count, r.BytesReceived);
        }
        Assert.Equal(reports.Sum(r => r.BytesSent), reports.Sum(r => r.BytesReceived));
    }

    [Fact]
    public async Task RunAsync_MessagesLargerThanAPiece_ArriveWhole()
    {
        // 600 000 bytes is two full 256 KiB pieces and a partial one.
        var reports = await RunAllAsync(PatternKind.Reduction, 3, 600_000, 2);

        Assert.Equal([2 * 600_000L * 2, 2 * 600_000L, 2 * 600_000L], reports.Select(r => r.BytesSent));
        Assert.Equal(reports.Select(r => r.BytesSent), reports.Select(r => r.BytesReceived));
    }

    [Fact]
    public async Task RunAsync_EmptyMessages_RoundsStillMeetAtTheBarrier()
    {
        var reports = await RunAllAsync(PatternKind.AllToAll, 3, 0, 4);

        Assert.All(reports, r => Assert.Equal((4, 0L, 0L), (r.RoundTimes.Count, r.BytesSent, r.BytesReceived)));
    }

    [Fact]
    public async Task RunAsync_OneRank_CompletesAlone()
    {
        var report = (await RunAllAsync(PatternKind.Tree, 1, 1000, 2)).Single();

        Assert.Equal((2, 0L, 0L), (report.RoundTimes.Count, report.BytesSent, report.BytesReceived));
    }

    [Fact]
    public async Task RunAsync_RoundCompleted_CalledOncePerRoundInOrder()
    {
        var peers = FreeEndpoints(2);
        var seen = new ConcurrentQueue<int>();
        var tasks = await Ranks.RunAsync([
            Options(PatternKind.Ring, peers, 0, 100, 3) with { RoundCompleted = (round, _) => seen.Enqueue(round) },
            Options(PatternKind.Ring, peers, 1, 100, 3),
        ]);

        var reports = Reports(tasks);
        Assert.Equal([1, 2, 3], seen);
        Assert.Equal(reports[0].RoundTimes.Count, seen.Count);
    }

    [Fact]
    public async Task RunAsync_OneRankSlow_NoRankStartsTheNextRoundBeforeAllFinishedThisOne()
    {
        // A ring: without the barrier, ranks that do not wait on the slow one would run ahead.
        const int N = 5;
        const int Rounds = 4;
        const int SlowRank = 3;
        const int SlowRound = 2;
        var delay = TimeSpan.FromMilliseconds(200);
        var events = new ConcurrentQueue<(int Rank, int Round, RoundStep Step, long At)>();
        async Task Trace(int rank, int round, RoundStep step)
        {
            if (rank == SlowRank && round == SlowRound && step == RoundStep.Exchanged)
                await Task.Delay(delay);
            events.Enqueue((rank, round, step, Stopwatch.GetTimestamp()));
        }
        var peers = FreeEndpoints(N);

        var tasks = await Ranks.RunAsync(Enumerable.Range(0, N).Select(r =>
            Options(PatternKind.Ring, peers, r, 2000, Rounds) with { Trace = Trace }));

        var reports = Reports(tasks);
        long At(int rank, int round, RoundStep step) => events.Single(e => e.Rank == rank && e.Round == round && e.Step == step).At;
        for (var round = 1; round <= Rounds; round++)
        {
            var lastDone = Enumerable.Range(0, N).Max(r => At(r, round, RoundStep.Exchanged));
            Assert.All(Enumerable.Range(0, N), r => Assert.True(At(r, round, RoundStep.Released) >= lastDone, $"rank {r} released from round {round} early"));
            if (round < Rounds)
                Assert.All(Enumerable.Range(0, N), r => Assert.True(At(r, round + 1, RoundStep.Started) >= lastDone, $"rank {r} started round {round + 1} early"));
        }
        // The slow round is slow for everyone, as the barrier makes it (with a margin: a rank may
        // start the round a moment after the slow one, and timers may fire a little early).
        Assert.All(reports, r => Assert.True(r.RoundTimes[SlowRound - 1] >= delay * 0.75, $"rank {r.Rank}: {r.RoundTimes[SlowRound - 1]}"));
    }

    [Fact]
    public async Task RunAsync_RankNeverStarts_OthersFailWithinTheConnectTimeoutNamingIt()
    {
        const int N = 4;
        const int Missing = 3;
        var connect = TimeSpan.FromSeconds(1.5);
        var peers = FreeEndpoints(N);
        var clock = Stopwatch.StartNew();

        var tasks = await Ranks.RunAsync(Enumerable.Range(0, N - 1).Select(r =>
            Options(PatternKind.Ring, peers, r, 1000, 3) with { ConnectTimeout = connect }));

        Assert.True(clock.Elapsed < connect + TimeSpan.FromSeconds(3), $"took {clock.Elapsed}");
        Assert.All(tasks, t =>
        {
            Assert.Contains($"rank {Missing} ({peers[Missing]})", Failure(t), StringComparison.Ordinal);
            Assert.Contains("within 1.5 s", Failure(t), StringComparison.Ordinal);
        });
    }

    [Fact]
    public async Task RunAsync_RankZeroNeverStarts_OthersFailNamingIt()
    {
        var peers = FreeEndpoints(3);

        var tasks = await Ranks.RunAsync(Enumerable.Range(1, 2).Select(r =>
            Options(PatternKind.AllToAll, peers, r, 1000, 3) with { ConnectTimeout = TimeSpan.FromSeconds(1) }));

        Assert.All(tasks, t => Assert.Contains($"rank 0 ({peers[0]})", Failure(t), StringComparison.Ordinal));
    }

    [Fact]
    public async Task RunAsync_RankStallsMidRound_OthersFailWithinTheRoundTimeoutNamingIt()
    {
        const int N = 4;
        const int Stalled = 2;
        var roundTimeout = TimeSpan.FromSeconds(1);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var peers = FreeEndpoints(N);
        var others = Enumerable.Range(0, N).Where(r => r != Stalled)
            .Select(r => Start(Options(PatternKind.AllToAll, peers, r, 1000, 3) with { RoundTimeout = roundTimeout })).ToArray();
        var stalled = Start(Options(PatternKind.AllToAll, peers, Stalled, 1000, 3) with
        {
            RoundTimeout = roundTimeout,
            // Rank 2 stops before sending anything in round 2, as a hung VM would.
            Trace = (_, round, step) => round == 2 && step == RoundStep.Started ? release.Task.WaitAsync(Bound) : Task.CompletedTask,
        });

        var clock = Stopwatch.StartNew();
        await SettleAsync(others);
        var othersTook = clock.Elapsed;
        release.SetResult();
        await SettleAsync(stalled);

        Assert.True(othersTook < roundTimeout + TimeSpan.FromSeconds(4), $"took {othersTook}");
        Assert.All(others, t =>
        {
            Assert.Contains("round 2 did not finish within 1 s", Failure(t), StringComparison.Ordinal);
            Assert.Contains($"rank {Stalled} ({peers[Stalled]})", Failure(t), StringComparison.Ordinal);
        });
        Failure(stalled);
    }

    [Fact]
    public async Task RunAsync_PortTaken_FailsSayingWhere()
    {
        var peers = FreeEndpoints(2);
        using var squatter = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        squatter.Bind(peers[1]);
        squatter.Listen();

        var task = (await Ranks.RunAsync([Options(PatternKind.Ring, peers, 1, 100, 1)])).Single();

        Assert.StartsWith($"cannot listen on {peers[1]}: ", Failure(task), StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunAsync_RanksDisagreeOnSize_BothFailSayingHow()
    {
        var peers = FreeEndpoints(2);

        var tasks = await Ranks.RunAsync([
            Options(PatternKind.Ring, peers, 0, 1024, 3),
            Options(PatternKind.Ring, peers, 1, 2048, 3),
        ]);

        Assert.All(tasks, t => Assert.Contains("runs ring, 2 ranks, 3 rounds of", Failure(t), StringComparison.Ordinal));
        Assert.Contains($"rank 1 ({peers[1]}) runs ring, 2 ranks, 3 rounds of 2K; this rank runs ring, 2 ranks, 3 rounds of 1K",
            Failure(tasks[0]), StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunAsync_OneRankCancelled_ItStopsAndTheOthersSayItWasInterrupted()
    {
        using var cancel = new CancellationTokenSource();
        var peers = FreeEndpoints(3);
        var options = Enumerable.Range(0, 3).Select(r => Options(PatternKind.AllToAll, peers, r, 1000, 1000)).ToArray();
        options[1] = options[1] with { RoundCompleted = (round, _) => { if (round == 2) cancel.Cancel(); } };

        var rank1 = Start(options[1], cancel.Token);
        var tasks = await Ranks.RunAsync([options[0], options[2]]);
        await SettleAsync(rank1);

        Assert.True(rank1.IsCanceled, $"{rank1.Status}");
        Assert.All(tasks, t => Assert.Equal("rank 1: interrupted", Failure(t)));
    }
}
