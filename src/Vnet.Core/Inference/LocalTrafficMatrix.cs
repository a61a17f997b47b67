using Vnet.Engine;
using Vnet.Frames;

namespace Vnet.Inference;

/// <summary>
/// A daemon's own traffic matrix: bytes and frames per (source MAC, destination MAC) of the unicast
/// frames its local interfaces hand to the switch, i.e. its VMs' rows of the VM×VM matrix.
/// <para>
/// Each forwarding thread counts into a table of its own, so the data path takes no lock and no
/// atomic: a table has one writer. A slot is claimed by writing its key and then publishing it,
/// and counters are plain 64-bit stores that a reader may see a frame late, never torn. Tables
/// are fixed open-addressing arrays (<see cref="PairsPerThread"/> pairs, linear probing); a pair
/// that finds no slot is counted in <see cref="Overflow"/> rather than allocating. Each table also
/// lists its claimed slots in the order claimed, so a reader visits only those: the VTTIF tick,
/// every second on every daemon, reads <see cref="TotalFrames"/> (no allocation) and takes a
/// <see cref="Snapshot"/> only when it reports.
/// </para>
/// </summary>
public sealed class LocalTrafficMatrix : ITrafficObserver, IDisposable
{
    public const int PairsPerThread = 4096;
    private const int MaxProbe = 32;

    private readonly ThreadLocal<Table> _tables = new(static () => new Table(), trackAllValues: true);

    /// <summary>Records one forwarded frame. Group destinations are not VM pairs and are skipped.</summary>
    public void Record(MacAddress source, MacAddress destination, int bytes)
    {
        if (destination.IsGroup)
            return;
        _tables.Value!.Add(source.Value, destination.Value, bytes);
    }

    /// <summary>Pairs that found no free slot (the matrix is full).</summary>
    public long Overflow
    {
        get
        {
            long n = 0;
            foreach (var t in _tables.Values)
                n += Volatile.Read(ref t.Overflow);
            return n;
        }
    }

    /// <summary>Frames counted so far, all pairs and threads: it grows with any traffic, so a reader sees whether anything moved.</summary>
    public long TotalFrames()
    {
        long frames = 0;
        foreach (var t in _tables.Values)
        {
            var claimed = Volatile.Read(ref t.ClaimedCount);
            for (var k = 0; k < claimed; k++)
                frames += Volatile.Read(ref t.Frames[t.Claimed[k]]);
        }
        return frames;
    }

    /// <summary>The cumulative counters of every pair, summed over the threads that saw it.</summary>
    public List<MatrixEntry> Snapshot()
    {
        var sum = new Dictionary<(ulong, ulong), (long Bytes, long Frames)>();
        foreach (var t in _tables.Values)
        {
            var claimed = Volatile.Read(ref t.ClaimedCount);
            for (var k = 0; k < claimed; k++)
            {
                var i = t.Claimed[k];
                var key = (t.Source[i], t.Destination[i]);
                var (b, f) = sum.GetValueOrDefault(key);
                sum[key] = (b + Volatile.Read(ref t.Bytes[i]), f + Volatile.Read(ref t.Frames[i]));
            }
        }
        var list = new List<MatrixEntry>(sum.Count);
        foreach (var ((src, dst), (bytes, frames)) in sum)
            list.Add(new MatrixEntry(new MacAddress(src), new MacAddress(dst), bytes, frames));
        list.Sort(static (a, b) => a.Source != b.Source ? a.Source.CompareTo(b.Source) : a.Destination.CompareTo(b.Destination));
        return list;
    }

    public void Dispose() => _tables.Dispose();

    private sealed class Table
    {
        public readonly ulong[] Source = new ulong[PairsPerThread];
        public readonly ulong[] Destination = new ulong[PairsPerThread];
        public readonly long[] Bytes = new long[PairsPerThread];
        public readonly long[] Frames = new long[PairsPerThread];
        public readonly int[] Used = new int[PairsPerThread];

        // The claimed slots' indexes in the order claimed, what readers visit: an index (and its
        // slot's key) is written before the count that covers it, and readers read the count first.
        public readonly int[] Claimed = new int[PairsPerThread];
        public int ClaimedCount;
        public long Overflow;

        public void Add(ulong src, ulong dst, int bytes)
        {
            var h = (src * 0x9E3779B97F4A7C15UL) ^ (dst * 0xC2B2AE3D27D4EB4FUL);
            var i = (int)((h ^ (h >> 29)) & (PairsPerThread - 1));
            for (var probe = 0; probe < MaxProbe; probe++, i = (i + 1) & (PairsPerThread - 1))
            {
                if (Used[i] != 0)
                {
                    if (Source[i] != src || Destination[i] != dst)
                        continue;
                }
                else
                {
                    Source[i] = src;
                    Destination[i] = dst;
                    Used[i] = 1;
                    // Published after the key: a reader never sees a slot with half a key.
                    Claimed[ClaimedCount] = i;
                    Volatile.Write(ref ClaimedCount, ClaimedCount + 1);
                }
                Volatile.Write(ref Bytes[i], Bytes[i] + bytes);
                Volatile.Write(ref Frames[i], Frames[i] + 1);
                return;
            }
            Overflow++;
        }
    }
}
