namespace Vnet.Patterns;

/// <summary>
/// Runs one rank of a communication pattern over real TCP: one process per VM (<c>vnet patterns</c>),
/// all started with the same peer list, each with its own rank.
/// </summary>
/// <remarks>
/// The run, at every rank (the code is in <see cref="RankRun"/>):
/// <list type="number">
/// <item>Listen on this rank's address (its entry in the peer list, or the Listen override).</item>
/// <item>Setup, bounded by ConnectTimeout: dial a data connection to every target, and a control
/// connection to rank 0; accept a data connection from every source (and, at rank 0, a control
/// connection from every other rank). Ranks start at different times, so refused dials are retried.
/// Both ends exchange a hello and refuse a peer that runs another pattern, size or rank count.</item>
/// <item>The start barrier (round 0): no rank starts round 1 before every rank is connected, so
/// round times never include connection setup.</item>
/// <item>Rounds 1..Rounds, each bounded by RoundTimeout: send Bytes to every target and receive
/// Bytes from every source, all at once (reduction: up the tree, then down); then the barrier:
/// each rank reports "done r" to rank 0, rank 0 waits for every rank and answers "go r".</item>
/// <item>On a failure anywhere, the failing rank sends its reason to rank 0, rank 0 relays it to
/// every rank, and every rank ends with that one-line reason, which names the rank at fault.</item>
/// </list>
/// </remarks>
public static class PatternRunner
{
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    /// <exception cref="PatternException">The run failed; the message says why, in one line.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> was cancelled (the
    /// other ranks are told this rank was interrupted).</exception>
    public static async Task<PatternReport> RunAsync(PatternOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        await using var run = new RankRun(options, ct);
        return await run.RunAsync();
    }
}
