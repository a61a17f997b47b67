using Vnet.Native;

namespace Vnet.Tests.TestBed;

/// <summary>
/// Moves the calling thread into a network namespace until disposed, so that sockets, TAPs and pcap
/// handles it opens live there. Only the calling thread changes namespace.
/// </summary>
internal sealed class Netns : IDisposable
{
    private readonly int _previous;
    private bool _disposed;

    private Netns(int previous) => _previous = previous;

    public static Netns Enter(string name)
    {
        var previous = LibC.Open($"/proc/thread-self/ns/net", LibC.O_CLOEXEC);
        if (previous < 0)
            throw new IOException($"cannot open own netns: {LibC.ErrorText(LibC.LastError)}");
        var target = LibC.Open($"/run/netns/{name}", LibC.O_CLOEXEC);
        if (target < 0)
        {
            LibC.Close(previous);
            throw new IOException($"no network namespace '{name}': {LibC.ErrorText(LibC.LastError)}");
        }
        try
        {
            if (LibC.SetNs(target, LibC.CLONE_NEWNET) != 0)
                throw new IOException($"setns {name}: {LibC.ErrorText(LibC.LastError)}");
        }
        finally
        {
            LibC.Close(target);
        }
        return new Netns(previous);
    }

    /// <summary>
    /// Runs <paramref name="work"/> on a thread of its own inside namespace <paramref name="name"/>
    /// (a thread that was never anywhere else, so nothing it opens leaks into another namespace),
    /// waits for it at most <paramref name="bound"/>, and returns its result or rethrows its
    /// failure, wrapped with <paramref name="what"/>.
    /// </summary>
    public static T Run<T>(string name, Func<T> work, string what, TimeSpan? bound = null)
    {
        T result = default!;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using (Enter(name))
                    result = work();
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        thread.Start();
        var limit = bound ?? TimeSpan.FromSeconds(10);
        if (!thread.Join(limit))
            throw new TimeoutException($"{what} did not finish within {limit.TotalSeconds:0} s");
        if (error is not null)
            throw new InvalidOperationException($"{what} failed", error);
        return result;
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        LibC.SetNs(_previous, LibC.CLONE_NEWNET);
        LibC.Close(_previous);
    }
}

/// <summary>
/// A fresh network namespace of its own for one test class instance (named from the process and a
/// counter, so parallel runs do not meet), removed on dispose; a leftover of the same name from a
/// crashed run is removed first.
/// </summary>
internal sealed class ScratchNetns : IDisposable
{
    private static int s_counter;

    public ScratchNetns(string prefix)
    {
        TestBedGuard.ThrowIfUnavailable();
        Name = $"{prefix}{Environment.ProcessId % 10000}{Interlocked.Increment(ref s_counter)}";
        Sh.TryExec("ip", ["netns", "del", Name], 10);
        Sh.Run($"ip netns add {Name}");
    }

    public string Name { get; }

    public T Run<T>(Func<T> work, string what, TimeSpan? bound = null) => Netns.Run(Name, work, what, bound);

    public void Dispose() => Sh.TryExec("ip", ["netns", "del", Name], 10);
}
