using System.Net.Sockets;
using Vnet.Native;

namespace Vnet.Links;

/// <summary>
/// Waits for TCP sockets to become readable or writable on behalf of the handshake and the tool
/// sessions, with one thread of its own and <c>poll</c>, so that .NET's socket engine never sees a
/// link's socket.
/// <para>
/// Why: an async call on a <see cref="Socket"/> (ConnectAsync, ReceiveAsync, SendAsync) registers
/// its descriptor with the runtime's epoll for as long as the socket lives, edge-triggered. A link
/// that did its handshake that way had the runtime's epoll thread, and a thread-pool worker behind
/// it, woken by every segment that arrived for the rest of the session, though nothing in .NET
/// read it any more (the link's receiver reads the raw descriptor): 21% of each daemon's CPU on a
/// TCP link (docs/perf). The runtime offers no way to take a socket out of its set again.
/// </para>
/// <code>
/// Waiting (any thread): the socket was tried first and said EAGAIN; a waiter (descriptor, events)
///   joins the list, the eventfd wakes the poll thread, the caller awaits the waiter's task. A
///   cancelled wait leaves the list and fails its task.
/// The poll thread: 1. poll the eventfd and every waiter's descriptor (the list as it is now);
///   2. each waiter whose descriptor reported anything (ready, error, hang-up, closed) leaves the
///   list and its task completes, on the thread pool; the caller then tries the socket again and
///   meets the error there. 3. drain the eventfd and go round.
/// </code>
/// A waiter is found by its own identity, not its descriptor: a descriptor closed and reused while
/// a wait was pending cannot complete someone else's wait. The list stays small (the connections
/// waiting for an INIT are bounded by InitWaitList, handshakes by their slots), and nothing here is
/// on the data path, so rebuilding the poll array each round is fine.
/// </summary>
internal sealed unsafe class HandshakePoller
{
    public static HandshakePoller Shared { get; } = new();

    private sealed class Waiter(int fd, short events)
    {
        public readonly int Fd = fd;
        public readonly short Events = events;
        public readonly TaskCompletionSource Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    private readonly Lock _lock = new();
    private readonly List<Waiter> _waiters = [];
    private readonly int _wake;
    private Thread? _thread;

    private HandshakePoller()
    {
        _wake = LibC.EventFd(0, LibC.EFD_CLOEXEC | LibC.EFD_NONBLOCK);
        if (_wake < 0)
            throw new InvalidOperationException($"eventfd: {LibC.ErrorText(LibC.LastError)}");
    }

    /// <summary>Completes when <paramref name="socket"/> is readable (or writable), has an error or is closed; throws if <paramref name="ct"/> fires first.</summary>
    public Task WaitAsync(Socket socket, bool write, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        var waiter = new Waiter((int)socket.SafeHandle.DangerousGetHandle(), write ? LibC.POLLOUT : LibC.POLLIN);
        lock (_lock)
        {
            _waiters.Add(waiter);
            if (_thread is null)
            {
                _thread = new Thread(Run) { IsBackground = true, Name = "vnet-handshake-poll" };
                _thread.Start();
            }
        }
        Wake();
        if (ct.CanBeCanceled)
        {
            var registration = ct.Register(() =>
            {
                if (Remove(waiter))
                    waiter.Done.TrySetCanceled(ct);
            });
            // Disposed once the wait ends either way, so that a long-lived token keeps no waiter.
            _ = waiter.Done.Task.ContinueWith(static (_, r) => ((CancellationTokenRegistration)r!).Dispose(), registration,
                CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
        return waiter.Done.Task;
    }

    private bool Remove(Waiter waiter)
    {
        lock (_lock)
            return _waiters.Remove(waiter);
    }

    private void Wake()
    {
        ulong one = 1;
        LibC.Write(_wake, &one, sizeof(ulong));
    }

    private void Run()
    {
        var fds = new LibC.PollFd[64];
        var round = new Waiter[64];
        while (true)
        {
            int count;
            lock (_lock)
            {
                count = _waiters.Count;
                if (fds.Length < count + 1)
                {
                    fds = new LibC.PollFd[(count + 1) * 2];
                    round = new Waiter[(count + 1) * 2];
                }
                for (var i = 0; i < count; i++)
                {
                    var w = _waiters[i];
                    round[i] = w;
                    fds[i + 1] = new LibC.PollFd { Fd = w.Fd, Events = w.Events };
                }
            }
            fds[0] = new LibC.PollFd { Fd = _wake, Events = LibC.POLLIN };
            int n;
            fixed (LibC.PollFd* p = fds)
                n = LibC.Poll(p, (nuint)(count + 1), -1);
            if (n < 0)
            {
                // EINTR; anything else would be a bug in the array, so back off rather than spin.
                if (LibC.LastError != LibC.EINTR)
                    Thread.Sleep(10);
                continue;
            }
            for (var i = 0; i < count; i++)
            {
                var waiter = round[i];
                round[i] = null!;
                if (fds[i + 1].Revents != 0 && Remove(waiter))
                    waiter.Done.TrySetResult();
            }
            if (fds[0].Revents != 0)
            {
                ulong drained;
                LibC.Read(_wake, &drained, sizeof(ulong));
            }
        }
    }
}
