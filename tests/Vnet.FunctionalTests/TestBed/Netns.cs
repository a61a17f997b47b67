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

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        LibC.SetNs(_previous, LibC.CLONE_NEWNET);
        LibC.Close(_previous);
    }
}
