using System.Globalization;
using System.Net.Sockets;
using System.Threading.Channels;

namespace Vnet.Patterns;

internal sealed partial class RankRun
{
    /// <summary>
    /// A group of steps that run at once under one deadline: the setup, the start barrier, or a
    /// round. Each step says what it is still waiting for, so a timeout names the late peers
    /// ("round 4 did not finish within 60 s: no message from rank 2 (10.0.0.3:7000)").
    /// </summary>
    private sealed class Phase : IDisposable
    {
        private readonly RankRun _run;
        private readonly TimeSpan _shown;
        private readonly string? _what;
        private readonly CancellationTokenSource _cts;
        private readonly List<(Task Task, Func<string> Pending)> _steps = [];

        /// <param name="limit">The deadline, from now.</param>
        /// <param name="shown">The limit as the user set it, for the message.</param>
        /// <param name="what">"round 3", or null when the pending texts say it all (setup).</param>
        public Phase(RankRun run, TimeSpan limit, TimeSpan shown, string? what)
        {
            _run = run;
            _shown = shown;
            _what = what;
            _cts = CancellationTokenSource.CreateLinkedTokenSource(run._run.Token);
            _cts.CancelAfter(limit);
        }

        public CancellationToken Token => _cts.Token;

        /// <summary>Starts a step against <paramref name="peer"/>.</summary>
        public void Add(int peer, Func<string> pending, Func<CancellationToken, Task> step) => Start(peer, pending, step);

        /// <summary>Starts a step and returns it, for later steps that must await it.</summary>
        public Task Start(int peer, Func<string> pending, Func<CancellationToken, Task> step)
        {
            var task = _run.GuardAsync(peer, step, _cts.Token);
            _steps.Add((task, pending));
            return task;
        }

        /// <summary>Waits for every step added so far; throws the run's failure or the timeout.</summary>
        public async Task WaitAsync()
        {
            await Task.WhenAll(_steps.Select(s => s.Task)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (_steps.TrueForAll(s => s.Task.IsCompletedSuccessfully))
                return;
            _run.ThrowIfFailed();
            _run._user.ThrowIfCancellationRequested();
            var late = string.Join("; ", _steps.Where(s => !s.Task.IsCompletedSuccessfully).Select(s => s.Pending()));
            var within = Seconds(_shown);
            throw _run.Fail(_what is null ? $"{late} within {within}" : $"{_what} did not finish within {within}: {late}");
        }

        public void Dispose() => _cts.Dispose();
    }

    /// <summary>Runs a step; any failure other than the phase's own cancellation becomes the run's failure.</summary>
    private async Task GuardAsync(int peer, Func<CancellationToken, Task> step, CancellationToken token)
    {
        try
        {
            await step(token);
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception e) when (e is IOException or SocketException)
        {
            // A broken connection is usually the echo of a failure elsewhere, whose reason is on
            // its way through rank 0; give it a moment to win.
            await Task.Delay(ReasonGrace, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            throw Fail(e is EndOfStreamException ? $"{Who(peer)} closed the connection (did it exit?)" : $"the connection with {Who(peer)} failed: {Cause(e)}");
        }
        catch (Exception e) when (e is PatternException or ChannelClosedException or ObjectDisposedException)
        {
            // A closed inbox or socket means the run is already failing; Fail keeps that reason.
            throw Fail(e.Message);
        }
    }

    private static string Seconds(TimeSpan t) =>
        t.TotalSeconds >= 10 || t.TotalSeconds == Math.Floor(t.TotalSeconds)
            ? string.Create(CultureInfo.InvariantCulture, $"{t.TotalSeconds:0.#} s")
            : string.Create(CultureInfo.InvariantCulture, $"{t.TotalSeconds:0.###} s");

    /// <summary>A connection to one peer rank. Data connections carry a buffer; control ones an inbox.</summary>
    private sealed class Connection : IDisposable
    {
        /// <param name="bufferSize">For data: the send or receive buffer's size; 0 for control.</param>
        /// <param name="payload">For a sending data connection: the message contents to copy in
        /// after the header, so the header and the first piece leave in one write.</param>
        public Connection(int rank, NetworkStream stream, int bufferSize, byte[]? payload = null)
        {
            Rank = rank;
            Stream = stream;
            Buffer = new byte[bufferSize];
            if (payload is not null && bufferSize > DataFrame.HeaderSize)
                payload.AsSpan(0, bufferSize - DataFrame.HeaderSize).CopyTo(Buffer.AsSpan(DataFrame.HeaderSize));
            if (bufferSize == 0)
                Inbox = Channel.CreateUnbounded<ControlMessage>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        }

        public int Rank { get; }

        public NetworkStream Stream { get; }

        public byte[] Buffer { get; }

        /// <summary>Barrier messages read from a control connection, in order.</summary>
        public Channel<ControlMessage>? Inbox { get; }

        public SemaphoreSlim WriteLock { get; } = new(1, 1);

        public void Dispose()
        {
            Stream.Dispose();
            WriteLock.Dispose();
        }
    }
}
