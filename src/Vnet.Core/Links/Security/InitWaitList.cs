using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Vnet.Links.Security;

/// <summary>
/// The listener's stateless first step: connections accepted but not yet proven, each waiting for
/// its INIT. Such a connection costs a socket and a pending read, nothing else (no handshake slot,
/// no timer, no Diffie-Hellman). The list is bounded: at most <see cref="PerAddress"/> per source
/// address and <see cref="MaxWaiting"/> in all; when either is full the oldest connection (of that
/// address, else of all) is closed to make room. A genuine initiator sends its INIT right after
/// connecting, so it survives unless that many newer connections arrive before its INIT does. A
/// connection still waiting after <see cref="Deadline"/> is closed by <see cref="Expire"/>.
/// Closing here is a shutdown: the pending read ends (as if the peer had closed) and its reader
/// disposes the socket. Disposing a socket under a pending read would wait, spinning, until the
/// aborted read's continuation ran on the thread pool, and a flood's evictions then starved it.
/// </summary>
internal sealed class InitWaitList
{
    public const int MaxWaiting = 512;
    public const int PerAddress = 64;

    /// <summary>
    /// How long a connection may wait for its INIT: the initiator sends it as soon as it is connected,
    /// so it needs one trip and, if that segment is lost, one retransmission (Linux's first RTO is
    /// about three round trips, at least 200 ms).
    /// </summary>
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(2);

    private readonly LinkedList<Waiting> _all = new();
    private readonly Dictionary<IPAddress, LinkedList<Waiting>> _byAddress = [];
    private readonly Lock _lock = new();
    private readonly int _max;
    private readonly int _perAddress;
    private long _evicted;
    private long _expired;

    public InitWaitList(int max = MaxWaiting, int perAddress = PerAddress)
    {
        _max = max;
        _perAddress = perAddress;
    }

    /// <summary>One accepted connection waiting for its INIT.</summary>
    public sealed class Waiting
    {
        internal Waiting(Socket socket, IPAddress from, long since)
        {
            Socket = socket;
            From = from;
            Since = since;
        }

        public Socket Socket { get; }

        public IPAddress From { get; }

        /// <summary>When it was accepted (<see cref="Stopwatch.GetTimestamp"/>).</summary>
        public long Since { get; }

        /// <summary>Whether the list let it go (its deadline passed, or its place was needed); its reader then disposes the socket.</summary>
        public bool Closed { get; internal set; }

        internal LinkedListNode<Waiting>? InAll;
        internal LinkedListNode<Waiting>? InAddress;

        /// <summary>Ends the pending read (its reader sees the connection closed).</summary>
        internal void Close()
        {
            Closed = true;
            try
            {
                Socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }
        }
    }

    /// <summary>Connections waiting now.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
                return _all.Count;
        }
    }

    /// <summary>Connections closed to make room for newer ones.</summary>
    public long Evicted => Interlocked.Read(ref _evicted);

    /// <summary>Connections closed because no INIT came within <see cref="Deadline"/>.</summary>
    public long Expired => Interlocked.Read(ref _expired);

    /// <summary>
    /// Adds a connection accepted from <paramref name="from"/>. When its address or the list is
    /// full, the oldest connection (of that address, else of all) is closed and returned as
    /// <paramref name="evicted"/>; at most one goes, since each addition takes one place.
    /// </summary>
    public Waiting Add(Socket socket, IPAddress from, out Waiting? evicted, long? now = null)
    {
        var waiting = new Waiting(socket, from, now ?? Stopwatch.GetTimestamp());
        evicted = null;
        lock (_lock)
        {
            if (_byAddress.TryGetValue(from, out var mine) && mine.Count >= _perAddress)
                evicted = mine.First!.Value;
            else if (_all.Count >= _max)
                evicted = _all.First!.Value;
            if (evicted is not null)
                Unlink(evicted);
            if (!_byAddress.TryGetValue(from, out mine))
                _byAddress[from] = mine = new LinkedList<Waiting>();
            waiting.InAll = _all.AddLast(waiting);
            waiting.InAddress = mine.AddLast(waiting);
        }
        if (evicted is not null)
        {
            Interlocked.Increment(ref _evicted);
            evicted.Close();
        }
        return waiting;
    }

    /// <summary>
    /// Takes the connection off the list (its INIT came, or its read failed). False when it is no
    /// longer there: it was closed to make room or for its deadline (and counted).
    /// </summary>
    public bool TryRemove(Waiting waiting)
    {
        lock (_lock)
        {
            if (waiting.InAll is null)
                return false;
            Unlink(waiting);
            return true;
        }
    }

    /// <summary>Closes every connection that has waited longer than <see cref="Deadline"/> and returns them.</summary>
    public IReadOnlyList<Waiting> Expire(long? now = null)
    {
        var at = now ?? Stopwatch.GetTimestamp();
        List<Waiting>? expired = null;
        lock (_lock)
        {
            while (_all.First is { } oldest && Stopwatch.GetElapsedTime(oldest.Value.Since, at) >= Deadline)
            {
                Unlink(oldest.Value);
                (expired ??= []).Add(oldest.Value);
            }
        }
        if (expired is null)
            return [];
        Interlocked.Add(ref _expired, expired.Count);
        foreach (var waiting in expired)
            waiting.Close();
        return expired;
    }

    /// <summary>Closes every waiting connection (the daemon is stopping).</summary>
    public void Clear()
    {
        List<Waiting> all;
        lock (_lock)
        {
            all = [.. _all];
            foreach (var waiting in all)
                Unlink(waiting);
        }
        foreach (var waiting in all)
            waiting.Close();
    }

    private void Unlink(Waiting waiting)
    {
        _all.Remove(waiting.InAll!);
        waiting.InAll = null;
        var mine = _byAddress[waiting.From];
        mine.Remove(waiting.InAddress!);
        waiting.InAddress = null;
        if (mine.Count == 0)
            _byAddress.Remove(waiting.From);
    }
}
