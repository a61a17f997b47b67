using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Cryptography;

namespace Vnet.Patterns;

/// <summary>
/// One rank's run: connections, rounds, barrier, failure. The flow is told in
/// <see cref="PatternRunner"/>; setup is in RankRun.Setup.cs, the bounded steps in RankRun.Phase.cs.
/// </summary>
/// <remarks>
/// Every wait belongs to a <see cref="Phase"/> with a deadline; every failure goes through
/// <see cref="Fail"/>, which keeps the first reason and cancels everything else. Connections are
/// indexed by peer rank in arrays that are written once during setup and only read afterwards.
/// </remarks>
internal sealed partial class RankRun : IAsyncDisposable
{
    /// <summary>Messages are written and read in pieces of this size; it also caps each
    /// connection's buffer, so a 1 GiB message costs no more memory than a 256 KiB one.</summary>
    private const int ChunkSize = 256 * 1024;

    /// <summary>
    /// A rank that sees a peer's connection break waits this long before blaming the break: the
    /// peer that failed sends its reason through rank 0, and that reason is the one worth printing.
    /// </summary>
    private static readonly TimeSpan ReasonGrace = TimeSpan.FromMilliseconds(300);

    /// <summary>
    /// Deadlines are staggered by this much, so that the rank that knows most says why: a rank
    /// waiting for a message before rank 0 waits for the barrier, rank 0 (which sees the whole
    /// barrier) before the other ranks wait for its release.
    /// </summary>
    private static readonly TimeSpan Stagger = TimeSpan.FromSeconds(1);

    /// <summary>How long a failing rank spends telling the others before it gives up on them.</summary>
    private static readonly TimeSpan NotifyTimeout = TimeSpan.FromSeconds(1);

    /// <summary>How long disposal waits for background readers to notice their sockets closed.</summary>
    private static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(2);

    private readonly PatternOptions _o;
    private readonly int _rank;
    private readonly int _n;
    private readonly IReadOnlyList<int> _targets;
    private readonly IReadOnlyList<int> _sources;
    private readonly Hello _me;
    private readonly CancellationToken _user;
    private readonly CancellationTokenSource _run;
    private readonly Lock _gate = new();
    private readonly List<Task> _background = [];
    private readonly List<Connection> _connections = [];
    private readonly List<Connection> _controlPeers = [];
    private readonly Connection?[] _out;
    private readonly Connection?[] _in;
    private readonly Connection?[] _control;
    private readonly byte[] _payload;
    private Socket? _listener;
    private string? _failure;
    private bool _failureFromPeer;
    private long _sent;
    private long _received;

    public RankRun(PatternOptions options, CancellationToken ct)
    {
        _o = options;
        _rank = options.Rank;
        _n = options.Peers.Count;
        _targets = options.Kind.Targets(_rank, _n);
        _sources = options.Kind.Sources(_rank, _n);
        _me = new Hello(ChannelKind.Data, options.Kind, _n, _rank, options.Rounds, options.Bytes);
        _user = ct;
        _run = CancellationTokenSource.CreateLinkedTokenSource(ct);
        _out = new Connection?[_n];
        _in = new Connection?[_n];
        _control = new Connection?[_n];
        _payload = new byte[Math.Min(options.Bytes, ChunkSize)];
        // Random contents, so that nothing on the path (compression, deduplication) makes the
        // pattern cheaper than the same bytes of real data.
        RandomNumberGenerator.Fill(_payload);
    }

    public async Task<PatternReport> RunAsync()
    {
        try
        {
            Listen();
            await SetupAsync();
            await StartBarrierAsync();
            var times = new List<TimeSpan>(_o.Rounds);
            var start = Stopwatch.GetTimestamp();
            for (var round = 1; round <= _o.Rounds; round++)
            {
                var time = await RoundAsync(round);
                times.Add(time);
                _o.RoundCompleted?.Invoke(round, time);
            }
            var total = Stopwatch.GetElapsedTime(start);
            return new PatternReport(_rank, _o.Kind, _n, _o.Bytes, _o.Rounds, times, total,
                Interlocked.Read(ref _sent), Interlocked.Read(ref _received));
        }
        catch (OperationCanceledException) when (_user.IsCancellationRequested)
        {
            Fail("interrupted");
            await NotifyPeersAsync();
            throw;
        }
        catch (PatternException e)
        {
            var failure = Fail(e.Message);
            await NotifyPeersAsync();
            throw failure;
        }
    }

    private async Task StartBarrierAsync()
    {
        // Rank 0 has every control connection, so each other rank needs at most its own setup
        // time to arrive; rank k may first wait out rank 0's setup, then rank 0's barrier.
        var limit = _rank == 0 ? _o.ConnectTimeout : 2 * _o.ConnectTimeout + Stagger;
        using var phase = new Phase(this, limit, limit, "the start barrier");
        await BarrierAsync(phase, 0);
    }

    private async Task<TimeSpan> RoundAsync(int round)
    {
        var start = Stopwatch.GetTimestamp();
        var what = $"round {round}";
        await TraceAsync(round, RoundStep.Started);
        using (var exchange = new Phase(this, _o.RoundTimeout, _o.RoundTimeout, what))
        {
            Exchange(exchange, round);
            await exchange.WaitAsync();
        }
        await TraceAsync(round, RoundStep.Exchanged);
        // The barrier's deadline trails the exchange's: a rank stuck on a message times out first
        // and names the peer it waits for, which says more than "rank 3 did not reach the barrier".
        var grace = _rank == 0 ? Stagger : 2 * Stagger;
        var left = _o.RoundTimeout + grace - Stopwatch.GetElapsedTime(start);
        using (var barrier = new Phase(this, left > TimeSpan.Zero ? left : TimeSpan.Zero, _o.RoundTimeout, what))
            await BarrierAsync(barrier, round);
        var elapsed = Stopwatch.GetElapsedTime(start);
        await TraceAsync(round, RoundStep.Released);
        return elapsed;
    }

    private Task TraceAsync(int round, RoundStep step) => _o.Trace?.Invoke(_rank, round, step) ?? Task.CompletedTask;

    /// <summary>Adds this round's sends and receives to the phase; they run at once.</summary>
    private void Exchange(Phase phase, int round)
    {
        if (_o.Kind != PatternKind.Reduction)
        {
            foreach (var t in _targets)
                phase.Add(t, () => $"still sending to {Who(t)}", token => SendAsync(_out[t]!, round, token));
            foreach (var s in _sources)
                phase.Add(s, () => $"no message from {Who(s)}", token => ReceiveAsync(_in[s]!, round, token));
            return;
        }

        // A reduction is ordered: a rank combines its children's messages before it sends up, and
        // the result comes back down only once the root has everyone's.
        var parent = PatternGraph.TreeParent(_rank);
        var children = PatternGraph.TreeChildren(_rank, _n);
        var fromChildren = Task.WhenAll(children
            .Select(c => phase.Start(c, () => $"no message from {Who(c)}", token => ReceiveAsync(_in[c]!, round, token)))
            .ToArray());
        var result = fromChildren;
        if (parent >= 0)
        {
            phase.Add(parent, () => $"still sending up to {Who(parent)}", async token =>
            {
                await fromChildren;
                await SendAsync(_out[parent]!, round, token);
            });
            result = phase.Start(parent, () => $"no result from {Who(parent)}", token => ReceiveAsync(_in[parent]!, round, token));
        }
        foreach (var c in children)
        {
            phase.Add(c, () => $"still sending down to {Who(c)}", async token =>
            {
                await result;
                await SendAsync(_out[c]!, round, token);
            });
        }
    }

    private async Task SendAsync(Connection c, int round, CancellationToken token)
    {
        // The header and the first piece go in one write: a small message is one segment.
        var first = Math.Min(_o.Bytes, _payload.Length);
        DataFrame.WriteHeader(c.Buffer, round, _o.Bytes);
        await c.Stream.WriteAsync(c.Buffer.AsMemory(0, DataFrame.HeaderSize + first), token);
        for (var left = _o.Bytes - first; left > 0;)
        {
            var piece = Math.Min(left, _payload.Length);
            await c.Stream.WriteAsync(_payload.AsMemory(0, piece), token);
            left -= piece;
        }
        Interlocked.Add(ref _sent, _o.Bytes);
    }

    private async Task ReceiveAsync(Connection c, int round, CancellationToken token)
    {
        await c.Stream.ReadExactlyAsync(c.Buffer.AsMemory(0, DataFrame.HeaderSize), token);
        var (got, length) = DataFrame.ReadHeader(c.Buffer);
        if (got != round || length != _o.Bytes)
            throw new PatternException($"{Who(c.Rank)} sent a message for round {got} of {length} bytes; expected round {round} of {_o.Bytes}");
        for (var left = length; left > 0;)
        {
            var read = await c.Stream.ReadAsync(c.Buffer.AsMemory(0, Math.Min(left, c.Buffer.Length)), token);
            if (read == 0)
                throw new EndOfStreamException();
            left -= read;
        }
        Interlocked.Add(ref _received, length);
    }

    /// <summary>Rank k reports "done" and waits for "go"; rank 0 waits for every "done", then says "go".</summary>
    private async Task BarrierAsync(Phase phase, int round)
    {
        if (_n == 1)
            return;
        if (_rank != 0)
        {
            phase.Add(0, () => $"could not report to {Who(0)}", token => SendControlAsync(_control[0]!, new ControlMessage(ControlType.Done, round), token));
            phase.Add(0, () => $"{Who(0)} did not release the barrier", token => ExpectAsync(0, ControlType.Go, round, token));
            await phase.WaitAsync();
            return;
        }
        for (var k = 1; k < _n; k++)
        {
            var peer = k;
            phase.Add(peer, () => $"{Who(peer)} did not reach the barrier", token => ExpectAsync(peer, ControlType.Done, round, token));
        }
        await phase.WaitAsync();
        for (var k = 1; k < _n; k++)
        {
            var peer = k;
            phase.Add(peer, () => $"could not release {Who(peer)}", token => SendControlAsync(_control[peer]!, new ControlMessage(ControlType.Go, round), token));
        }
        await phase.WaitAsync();
    }

    private async Task ExpectAsync(int peer, ControlType type, int round, CancellationToken token)
    {
        var message = await _control[peer]!.Inbox!.Reader.ReadAsync(token);
        if (message.Type != type || message.Round != round)
            throw new PatternException($"{Who(peer)} is out of step: it sent '{message}' during round {round}");
    }

    private static async Task SendControlAsync(Connection c, ControlMessage message, CancellationToken token)
    {
        // The barrier and a failure notice may both write to rank 0 at once.
        await c.WriteLock.WaitAsync(token);
        try
        {
            await c.Stream.WriteAsync(message.Encode(), token);
        }
        finally
        {
            c.WriteLock.Release();
        }
    }

    /// <summary>
    /// Reads one control connection for the whole run: barrier messages go to the inbox, an abort
    /// ends the run with the sender's reason, and a connection that ends early is a failure.
    /// </summary>
    private async Task ReadControlAsync(Connection c)
    {
        var header = new byte[ControlMessage.HeaderSize];
        try
        {
            while (true)
            {
                await c.Stream.ReadExactlyAsync(header, _run.Token);
                var (type, round, length) = ControlMessage.ReadHeader(header);
                if (!Enum.IsDefined(type) || length < 0 || length > ControlMessage.MaxText || (type != ControlType.Abort && length != 0))
                {
                    Fail($"{Who(c.Rank)} sent a malformed barrier message");
                    return;
                }
                if (type == ControlType.Abort)
                {
                    var text = new byte[length];
                    await c.Stream.ReadExactlyAsync(text, _run.Token);
                    Fail(System.Text.Encoding.UTF8.GetString(text), fromPeer: true);
                    return;
                }
                c.Inbox!.Writer.TryWrite(new ControlMessage(type, round));
                // The last round's message is the last one; the peer closes next.
                if (round == _o.Rounds)
                    return;
            }
        }
        catch (OperationCanceledException) when (_run.IsCancellationRequested)
        {
        }
        catch (EndOfStreamException)
        {
            Fail($"{Who(c.Rank)} closed its barrier connection (did it exit?)");
        }
        catch (IOException e)
        {
            Fail($"the barrier connection with {Who(c.Rank)} failed: {Cause(e)}");
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            c.Inbox!.Writer.TryComplete();
        }
    }

    /// <summary>
    /// Records the run's failure (the first reason wins) and cancels everything in flight.
    /// Returns the exception to throw, which carries the first reason.
    /// </summary>
    private PatternException Fail(string reason, bool fromPeer = false)
    {
        bool first;
        string failure;
        lock (_gate)
        {
            first = _failure is null;
            if (first)
            {
                _failure = reason;
                _failureFromPeer = fromPeer;
            }
            failure = _failure!;
        }
        if (first)
        {
            try
            {
                _run.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // A reader that notices its socket close after the run ended: nothing to cancel.
            }
        }
        return new PatternException(failure);
    }

    private void ThrowIfFailed()
    {
        lock (_gate)
        {
            if (_failure is not null)
                throw new PatternException(_failure);
        }
    }

    /// <summary>
    /// Tells the other ranks why this run ends: rank k tells rank 0, rank 0 tells everyone. A rank
    /// that learned the reason from rank 0 stays quiet.
    /// </summary>
    private async Task NotifyPeersAsync()
    {
        string text;
        bool fromPeer;
        Connection[] peers;
        lock (_gate)
        {
            text = _failure ?? "failed";
            fromPeer = _failureFromPeer;
            peers = [.. _controlPeers];
        }
        if (fromPeer && _rank != 0)
            return;
        if (!fromPeer)
            text = $"rank {_rank}: {text}";
        using var timeout = new CancellationTokenSource(NotifyTimeout);
        var message = new ControlMessage(ControlType.Abort, 0, text);
        await Task.WhenAll(peers.Select(p => SendQuietlyAsync(p, message, timeout.Token)));
    }

    private static async Task SendQuietlyAsync(Connection c, ControlMessage message, CancellationToken token)
    {
        try
        {
            await SendControlAsync(c, message, token);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
        {
            // Best effort: a peer that is gone learns nothing, and needs nothing.
        }
    }

    private string Who(int rank) => $"rank {rank} ({_o.Peers[rank]})";

    private static string Cause(Exception e) =>
        (e.InnerException as SocketException ?? e as SocketException)?.Message ?? e.Message;

    private void Track(Task task)
    {
        lock (_gate)
            _background.Add(task);
    }

    private Connection Track(Connection c)
    {
        lock (_gate)
            _connections.Add(c);
        return c;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            _run.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
        _listener?.Dispose();
        Connection[] connections;
        Task[] background;
        lock (_gate)
        {
            connections = [.. _connections];
            background = [.. _background];
        }
        foreach (var c in connections)
            c.Dispose();
        await Task.WhenAll(background).WaitAsync(DrainTimeout).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _run.Dispose();
    }
}
