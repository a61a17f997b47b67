using System.Net;

namespace Vnet.Patterns;

/// <summary>What one rank of a pattern run does. Every rank must be given the same Kind, Peers,
/// Bytes and Rounds; ranks check this when they connect.</summary>
public sealed record PatternOptions
{
    /// <summary>The largest message: frames carry a 32-bit length, and 1 GiB is far past any test.</summary>
    public const int MaxBytes = 1 << 30;

    public required PatternKind Kind { get; init; }

    /// <summary>This process's rank: its index in <see cref="Peers"/>.</summary>
    public required int Rank { get; init; }

    /// <summary>Every rank's listen address; the index is the rank.</summary>
    public required IReadOnlyList<IPEndPoint> Peers { get; init; }

    /// <summary>Payload bytes per message. Default 64 KiB.</summary>
    public int Bytes { get; init; } = 64 * 1024;

    /// <summary>Rounds to run (each ends at the barrier). Default 10.</summary>
    public int Rounds { get; init; } = 10;

    /// <summary>
    /// Where to listen, when it is not this rank's entry in <see cref="Peers"/> (behind NAT, or
    /// 0.0.0.0). Default: the entry in Peers.
    /// </summary>
    public IPEndPoint? Listen { get; init; }

    /// <summary>
    /// How long the connections may take to come up, counted from this rank's start: ranks start at
    /// different times, so connects are retried until then. Default 30 s.
    /// </summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long one round's messages may take, from the round's start. Default 60 s. The barrier
    /// then gets a second more at rank 0 (two at the others), so that a rank stuck on a message
    /// reports first and names the peer it waits for.
    /// </summary>
    public TimeSpan RoundTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Called at the end of each round with its number (1-based) and duration, on the
    /// runner's path: keep it short.</summary>
    public Action<int, TimeSpan>? RoundCompleted { get; init; }

    /// <summary>Tests watch (rank, round, step) as it happens; the rank waits for the returned task,
    /// so a test can also stall a rank at a chosen point (without blocking a pool thread).</summary>
    internal Func<int, int, RoundStep, Task>? Trace { get; init; }

    public void Validate()
    {
        if (!Enum.IsDefined(Kind))
            throw new ArgumentException($"{Kind} is not a pattern");
        if (Peers is null || Peers.Count == 0)
            throw new ArgumentException("no peers: give every rank's address, rank 0 first");
        if (Rank < 0 || Rank >= Peers.Count)
            throw new ArgumentException($"rank {Rank} is not in 0..{Peers.Count - 1} (there are {Peers.Count} peers)");
        var seen = new Dictionary<IPEndPoint, int>();
        for (var i = 0; i < Peers.Count; i++)
        {
            var peer = Peers[i] ?? throw new ArgumentException($"peer {i} has no address");
            if (peer.Port == 0)
                throw new ArgumentException($"rank {i} ({peer}) has no port");
            if (!seen.TryAdd(peer, i))
                throw new ArgumentException($"ranks {seen[peer]} and {i} have the same address {peer}");
        }
        if (Bytes is < 0 or > MaxBytes)
            throw new ArgumentException($"{Bytes} bytes per message is not in 0..{MaxBytes} (1G)");
        if (Rounds < 1)
            throw new ArgumentException($"{Rounds} rounds: at least one is needed");
        if (ConnectTimeout <= TimeSpan.Zero || RoundTimeout <= TimeSpan.Zero)
            throw new ArgumentException("timeouts must be positive");
    }
}

/// <summary>Points of a round a test can observe (see <see cref="PatternOptions.Trace"/>).</summary>
internal enum RoundStep
{
    /// <summary>The round begins: the previous barrier released this rank.</summary>
    Started,

    /// <summary>This rank sent and received all its messages; next it reports to the barrier.</summary>
    Exchanged,

    /// <summary>The barrier released this rank: every rank finished the round.</summary>
    Released,
}
