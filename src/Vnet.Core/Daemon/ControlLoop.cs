using System.Threading.Channels;

namespace Vnet.Daemon;

/// <summary>
/// Runs every control-plane change of a daemon, one at a time, on one task: API commands, messages
/// from peers, link events. Nothing on the data path waits for it.
/// </summary>
internal sealed class ControlLoop : IAsyncDisposable
{
    private readonly Channel<Action> _work = Channel.CreateUnbounded<Action>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _runner;
    private readonly Action<Exception> _onError;

    public ControlLoop(Action<Exception> onError)
    {
        _onError = onError;
        _runner = Task.Run(Run);
    }

    /// <summary>Queues work without waiting for it.</summary>
    public void Post(Action work) => _work.Writer.TryWrite(work);

    /// <summary>Runs work on the loop and returns its result (or its exception).</summary>
    public Task<T> Invoke<T>(Func<T> work)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_work.Writer.TryWrite(() =>
        {
            try
            {
                done.SetResult(work());
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }))
        {
            done.SetException(new ObjectDisposedException("daemon is stopping"));
        }
        return done.Task;
    }

    private async Task Run()
    {
        await foreach (var work in _work.Reader.ReadAllAsync())
        {
            try
            {
                work();
            }
            catch (Exception e)
            {
                _onError(e);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _work.Writer.TryComplete();
        await _runner.ConfigureAwait(false);
    }
}
