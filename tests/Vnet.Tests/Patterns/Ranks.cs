using System.Net;
using System.Net.Sockets;
using Vnet.Patterns;

namespace Vnet.Tests.Patterns;

/// <summary>Runs every rank of a pattern in this process, on 127.0.0.1, each on its own free port.</summary>
internal static class Ranks
{
    /// <summary>No run in these tests may take longer than this, whatever goes wrong.</summary>
    public static readonly TimeSpan Bound = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Distinct free ports on 127.0.0.1, held until all are found. They are taken below the
    /// kernel's ephemeral range, so the ranks' own outgoing connections cannot take them before
    /// the ranks listen.
    /// </summary>
    public static IReadOnlyList<IPEndPoint> FreeEndpoints(int n)
    {
        var held = new List<Socket>();
        try
        {
            while (held.Count < n)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    // Listening, not only bound: .NET sets SO_REUSEADDR, under which two sockets that
                    // are merely bound may share a port.
                    socket.Bind(new IPEndPoint(IPAddress.Loopback, Random.Shared.Next(20000, 32000)));
                    socket.Listen();
                    held.Add(socket);
                }
                catch (SocketException)
                {
                    socket.Dispose();
                }
            }
            return [.. held.Select(s => (IPEndPoint)s.LocalEndPoint!)];
        }
        finally
        {
            foreach (var s in held)
                s.Dispose();
        }
    }

    public static PatternOptions Options(PatternKind kind, IReadOnlyList<IPEndPoint> peers, int rank, int bytes, int rounds) => new()
    {
        Kind = kind,
        Rank = rank,
        Peers = peers,
        Bytes = bytes,
        Rounds = rounds,
        ConnectTimeout = TimeSpan.FromSeconds(10),
        RoundTimeout = TimeSpan.FromSeconds(10),
    };

    /// <summary>Starts each rank as its own task and waits for all to end, at most <see cref="Bound"/>.</summary>
    public static async Task<Task<PatternReport>[]> RunAsync(IEnumerable<PatternOptions> ranks, CancellationToken ct = default)
    {
        var tasks = ranks.Select(o => Start(o, ct)).ToArray();
        await SettleAsync(tasks);
        Assert.All(tasks, t => Assert.True(t.IsCompleted, "a rank did not end within the bound"));
        return tasks;
    }

    public static Task<PatternReport> Start(PatternOptions options, CancellationToken ct = default) =>
        Task.Run(() => PatternRunner.RunAsync(options, ct), CancellationToken.None);

    /// <summary>Waits until the tasks end or the bound passes, whichever is first; never throws.</summary>
    public static async Task SettleAsync(params Task[] tasks) =>
        await Task.WhenAll(tasks).WaitAsync(Bound, CancellationToken.None)
            .ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing | ConfigureAwaitOptions.ContinueOnCapturedContext);

    /// <summary>The reports of ranks that all succeeded; the first failure's reason otherwise.</summary>
    public static PatternReport[] Reports(Task<PatternReport>[] tasks) =>
        [.. tasks.Select(t => t.IsCompletedSuccessfully ? t.Result : throw new Xunit.Sdk.XunitException($"a rank failed: {t.Exception?.InnerException?.Message ?? t.Status.ToString()}"))];

    /// <summary>Why a rank failed: its exception, which must be a <see cref="PatternException"/>.</summary>
    public static string Failure(Task<PatternReport> task) =>
        Assert.IsType<PatternException>(task.Exception?.InnerException).Message;

    public static async Task<PatternReport[]> RunAllAsync(PatternKind kind, int n, int bytes, int rounds)
    {
        var peers = FreeEndpoints(n);
        return Reports(await RunAsync(Enumerable.Range(0, n).Select(r => Options(kind, peers, r, bytes, rounds))));
    }
}
