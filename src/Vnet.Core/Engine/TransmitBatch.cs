namespace Vnet.Engine;

/// <summary>Something that holds frames for the wire until the reading thread says flush.</summary>
public interface IFlushable
{
    /// <summary>Sends what was queued during the current batch, on the calling thread if it can.</summary>
    void Flush();
}

/// <summary>
/// A reader thread's batch of transmissions. A reader (TAP, pcap, link receiver) that begins a
/// batch lets links queue the frames it forwards without waking their sender threads; when it has
/// nothing more to read right away (or after a bounded number of frames) it flushes, and each link
/// sends its queue with one system call on this very thread. A single frame (a ping) therefore
/// crosses no thread hand-off, and a burst is sent in one batch: the latency of an inline send
/// with the syscall count of a queue.
/// </summary>
public static class TransmitBatch
{
    /// <summary>Frames a reader forwards before it flushes even when more are waiting.</summary>
    public const int MaxFrames = 64;

    [ThreadStatic]
    private static List<IFlushable>? t_pending;

    [ThreadStatic]
    private static bool t_active;

    [ThreadStatic]
    private static int t_frames;

    /// <summary>Whether the calling thread is inside a batch (links then defer to its flush).</summary>
    public static bool Active => t_active;

    /// <summary>Marks the calling (reader) thread as batching; lasts until <see cref="End"/>.</summary>
    public static void Begin()
    {
        t_pending ??= new List<IFlushable>(8);
        t_active = true;
    }

    /// <summary>
    /// Remembers a link to flush at the end of the batch (once), and flushes early after
    /// <see cref="MaxFrames"/> frames, so a reader that never runs dry still sends in bounded batches.
    /// </summary>
    public static void Register(IFlushable target)
    {
        var pending = t_pending!;
        var known = false;
        for (var i = 0; i < pending.Count; i++)
        {
            if (ReferenceEquals(pending[i], target))
            {
                known = true;
                break;
            }
        }
        if (!known)
            pending.Add(target);
        if (++t_frames >= MaxFrames)
            Flush();
    }

    /// <summary>Flushes every link the batch touched.</summary>
    public static void Flush()
    {
        t_frames = 0;
        var pending = t_pending;
        if (pending is null || pending.Count == 0)
            return;
        for (var i = 0; i < pending.Count; i++)
            pending[i].Flush();
        pending.Clear();
    }

    public static void End()
    {
        Flush();
        t_active = false;
    }
}
