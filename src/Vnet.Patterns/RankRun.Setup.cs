using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace Vnet.Patterns;

/// <summary>Listening, dialing, accepting and the hello: everything before the start barrier.</summary>
internal sealed partial class RankRun
{
    /// <summary>One dial may take this long (a silent peer drops SYNs) before it is tried again.</summary>
    private static readonly TimeSpan AttemptTimeout = TimeSpan.FromSeconds(3);

    /// <summary>Dials are retried quickly at first (the peer is probably starting right now),
    /// then no faster than this.</summary>
    private static readonly TimeSpan MaxDialPause = TimeSpan.FromMilliseconds(500);

    /// <summary>An accepted connection must say hello within this time, or it is not a rank.</summary>
    private static readonly TimeSpan HelloTimeout = TimeSpan.FromSeconds(5);

    private void Listen()
    {
        var at = _o.Listen ?? _o.Peers[_rank];
        Socket? socket = null;
        try
        {
            socket = new Socket(at.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            // A run right after another on the same ports must not wait out TIME_WAIT.
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(at);
            socket.Listen(Math.Max(16, 2 * _n));
        }
        catch (SocketException e)
        {
            socket?.Dispose();
            throw new PatternException($"cannot listen on {at}: {e.Message}");
        }
        _listener = socket;
    }

    private async Task SetupAsync()
    {
        var expectData = new TaskCompletionSource<Connection>?[_n];
        var expectControl = new TaskCompletionSource<Connection>?[_n];
        foreach (var s in _sources)
            expectData[s] = new(TaskCreationOptions.RunContinuationsAsynchronously);
        if (_rank == 0)
        {
            for (var k = 1; k < _n; k++)
                expectControl[k] = new(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        var expected = expectData.Concat(expectControl).OfType<TaskCompletionSource<Connection>>().Select(t => t.Task).ToArray();

        using var phase = new Phase(this, _o.ConnectTimeout, _o.ConnectTimeout, what: null);
        using var stopAccepting = CancellationTokenSource.CreateLinkedTokenSource(phase.Token);
        Track(AcceptAsync(Task.WhenAll(expected), expectData, expectControl, stopAccepting.Token));

        foreach (var s in _sources)
            phase.Add(s, () => $"{Who(s)} did not connect", token => expectData[s]!.Task.WaitAsync(token));
        if (_rank == 0)
        {
            for (var k = 1; k < _n; k++)
            {
                var peer = k;
                phase.Add(peer, () => $"{Who(peer)} did not connect", token => expectControl[peer]!.Task.WaitAsync(token));
            }
        }
        foreach (var t in _targets)
        {
            var last = new StrongBox<string?>();
            phase.Add(t, () => $"{Who(t)} did not accept a connection{Because(last)}",
                async token => _out[t] = await DialAsync(t, ChannelKind.Data, last, token));
        }
        if (_rank != 0)
        {
            var last = new StrongBox<string?>();
            phase.Add(0, () => $"{Who(0)} did not accept a barrier connection{Because(last)}", async token =>
            {
                var c = await DialAsync(0, ChannelKind.Control, last, token);
                _control[0] = c;
                StartReader(c);
            });
        }

        try
        {
            await phase.WaitAsync();
        }
        finally
        {
            // Everyone expected is in (or the run failed): later connections are not ranks.
            await stopAccepting.CancelAsync();
            _listener?.Dispose();
        }
        foreach (var s in _sources)
            _in[s] = await expectData[s]!.Task;
        if (_rank == 0)
        {
            for (var k = 1; k < _n; k++)
                _control[k] = await expectControl[k]!.Task;
        }
    }

    private static string Because(StrongBox<string?> last) => last.Value is { } why ? $" ({why})" : "";

    private async Task AcceptAsync(Task allIn, TaskCompletionSource<Connection>?[] expectData,
        TaskCompletionSource<Connection>?[] expectControl, CancellationToken token)
    {
        try
        {
            while (!allIn.IsCompleted)
            {
                var socket = await _listener!.AcceptAsync(token);
                Track(WelcomeAsync(socket, expectData, expectControl, token));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // Setup ended; a missing rank is reported by the setup phase, which knows which one.
        }
    }

    /// <summary>Answers an accepted connection's hello and files it under the rank it names.</summary>
    private async Task WelcomeAsync(Socket socket, TaskCompletionSource<Connection>?[] expectData,
        TaskCompletionSource<Connection>?[] expectControl, CancellationToken token)
    {
        socket.NoDelay = true;
        var stream = new NetworkStream(socket, ownsSocket: true);
        var kept = false;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(token);
            timeout.CancelAfter(HelloTimeout);
            var buffer = new byte[Hello.Size];
            await stream.ReadExactlyAsync(buffer, timeout.Token);
            if (!Hello.TryRead(buffer, out var theirs))
                return;
            // Answer before judging, so that the dialer sees the same mismatch and says so too.
            (_me with { Channel = theirs.Channel }).Write(buffer);
            await stream.WriteAsync(buffer, timeout.Token);
            if (Judge(theirs, socket.RemoteEndPoint) is { } problem)
            {
                Fail(problem);
                return;
            }
            var c = Track(new Connection(theirs.Rank, stream, theirs.Channel == ChannelKind.Data ? ReceiveBufferSize : 0));
            kept = true;
            var slot = theirs.Channel == ChannelKind.Data ? expectData[theirs.Rank]! : expectControl[theirs.Rank]!;
            if (!slot.TrySetResult(c))
            {
                Fail($"two processes say they are {Who(theirs.Rank)}: check --rank");
                return;
            }
            if (theirs.Channel == ChannelKind.Control)
                StartReader(c);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException)
        {
            // Not a rank, or one that vanished mid-hello: if a rank is missing because of this,
            // the setup phase names it.
        }
        finally
        {
            if (!kept)
                await stream.DisposeAsync();
        }
    }

    /// <summary>Why a hello from an accepted connection is refused, or null if it is welcome.</summary>
    private string? Judge(Hello theirs, EndPoint? remote)
    {
        var who = theirs.Rank >= 0 && theirs.Rank < _n ? Who(theirs.Rank) : $"{remote}";
        if (!theirs.SameRun(_me))
            return $"{who} runs {theirs.DescribeRun()}; this rank runs {_me.DescribeRun()}";
        if (theirs.Rank < 0 || theirs.Rank >= _n || theirs.Rank == _rank)
            return $"{remote} says it is rank {theirs.Rank}, which is not another rank of 0..{_n - 1}: check --rank";
        if (theirs.Channel == ChannelKind.Data && !_sources.Contains(theirs.Rank))
            return $"{who} sends to rank {_rank}, which {_o.Kind.Name()} does not do: check --rank and --peers";
        if (theirs.Channel == ChannelKind.Control && _rank != 0)
            return $"{who} takes rank {_rank} for rank 0: check --peers";
        return null;
    }

    /// <summary>
    /// Dials a peer until it answers (a refused or silent dial is retried until the phase ends),
    /// then exchanges hellos. A wrong answer is not retried: it is a mistake in the arguments.
    /// </summary>
    private async Task<Connection> DialAsync(int peer, ChannelKind channel, StrongBox<string?> last, CancellationToken token)
    {
        var at = _o.Peers[peer];
        var pause = TimeSpan.FromMilliseconds(25);
        while (true)
        {
            var socket = new Socket(at.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(token);
                attempt.CancelAfter(AttemptTimeout);
                await socket.ConnectAsync(at, attempt.Token);
            }
            catch (Exception e) when (e is SocketException || (e is OperationCanceledException && !token.IsCancellationRequested))
            {
                socket.Dispose();
                last.Value = e is SocketException s ? s.Message : "no answer";
                await Task.Delay(pause, token);
                pause = pause * 2 < MaxDialPause ? pause * 2 : MaxDialPause;
                continue;
            }
            catch
            {
                socket.Dispose();
                throw;
            }

            last.Value = "it took the connection but did not answer the hello";
            var stream = new NetworkStream(socket, ownsSocket: true);
            try
            {
                var buffer = new byte[Hello.Size];
                (_me with { Channel = channel }).Write(buffer);
                await stream.WriteAsync(buffer, token);
                await stream.ReadExactlyAsync(buffer, token);
                if (!Hello.TryRead(buffer, out var theirs))
                    throw new PatternException($"{Who(peer)} answered, but not as a pattern rank: check --peers");
                if (!theirs.SameRun(_me))
                    throw new PatternException($"{Who(peer)} runs {theirs.DescribeRun()}; this rank runs {_me.DescribeRun()}");
                if (theirs.Rank != peer)
                    throw new PatternException($"{at} answered as rank {theirs.Rank}, not rank {peer}: check --peers");
                return Track(new Connection(peer, stream, channel == ChannelKind.Data ? SendBufferSize : 0, _payload));
            }
            catch
            {
                await stream.DisposeAsync();
                throw;
            }
        }
    }

    private int SendBufferSize => DataFrame.HeaderSize + Math.Min(_o.Bytes, ChunkSize);

    private int ReceiveBufferSize => Math.Max(DataFrame.HeaderSize, Math.Min(_o.Bytes, ChunkSize));

    private void StartReader(Connection c)
    {
        lock (_gate)
            _controlPeers.Add(c);
        Track(ReadControlAsync(c));
    }
}
