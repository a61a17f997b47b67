using Vnet.Frames;
using Vnet.Vms;

namespace Vnet.Tests.Vms;

/// <summary>
/// <see cref="MapPublisher"/> and <see cref="MapReplica"/>: a replica applies only what is newer,
/// a snapshot never removes what a newer delta added, early deltas wait for their predecessors,
/// and a digest tells a replica that is right from one that is not.
/// </summary>
public sealed class VersionedMapTests
{
    private static readonly MacAddress A = MacAddress.Parse("02:00:00:00:00:0a");
    private static readonly MacAddress B = MacAddress.Parse("02:00:00:00:00:0b");
    private static readonly MacAddress C = MacAddress.Parse("02:00:00:00:00:0c");

    private static Dictionary<MacAddress, string> Entries(MapReplica r) => r.Entries.ToDictionary();

    [Fact]
    public void Replica_DeltaOvertakesTheSnapshotBeforeIt_KeepsWhatTheDeltaAdded()
    {
        // The interleaving that lost VMs: a host's full set (without the VM) was computed, then the
        // VM was learned and announced, and the announce arrived first.
        var source = new MapPublisher(1);
        source.Set(A, "tap0");
        var snapshot = source.Snapshot();
        var delta = source.Set(B, "tap1")!;
        var replica = new MapReplica();

        Assert.Equal(ReplicaOutcome.Buffered, replica.Apply(delta, []));
        Assert.Equal(ReplicaOutcome.Applied, replica.Apply(snapshot, []));

        Assert.Equal(source.Entries.ToDictionary(), Entries(replica));
        Assert.Equal(DigestOutcome.Match, replica.Check(source.Digest()));
    }

    [Fact]
    public void Replica_SnapshotOlderThanWhatItHas_IgnoredAndNothingRemoved()
    {
        var source = new MapPublisher(1);
        source.Set(A, "tap0");
        var old = source.Snapshot();
        var replica = new MapReplica();
        replica.Apply(old, []);
        replica.Apply(source.Set(B, "tap0")!, []);

        var changed = new List<MapChange>();
        Assert.Equal(ReplicaOutcome.Stale, replica.Apply(old, changed));

        Assert.Empty(changed);
        Assert.Equal(source.Entries.ToDictionary(), Entries(replica));
    }

    [Fact]
    public void Replica_DeltasInAnyOrder_EndsEqualToTheSource()
    {
        var source = new MapPublisher(7);
        var replica = new MapReplica();
        replica.Apply(source.Snapshot(), []);
        var deltas = new List<MapDelta>
        {
            source.Set(A, "tap0")!,
            source.Set(B, "tap0")!,
            source.Remove(A)!,
            source.Set(C, "tap1")!,
            source.Set(B, "tap1")!,
        };

        foreach (var d in new[] { deltas[3], deltas[1], deltas[4], deltas[0], deltas[2] })
            replica.Apply(d, []);

        Assert.Equal(source.Entries.ToDictionary(), Entries(replica));
        Assert.Equal(source.Version, replica.Version);
        Assert.Equal(0, replica.Buffered);
    }

    [Fact]
    public void Replica_SameDeltaTwice_SecondIsStale()
    {
        var source = new MapPublisher(1);
        var replica = new MapReplica();
        replica.Apply(source.Snapshot(), []);
        var delta = source.Set(A, "tap0")!;

        Assert.Equal(ReplicaOutcome.Applied, replica.Apply(delta, []));
        Assert.Equal(ReplicaOutcome.Stale, replica.Apply(delta, []));
    }

    [Fact]
    public void Replica_DeltaOfAnotherIncarnation_AsksForASnapshot()
    {
        var first = new MapPublisher(1);
        var restarted = new MapPublisher(2);
        var replica = new MapReplica();
        replica.Apply(first.Snapshot(), []);

        Assert.Equal(ReplicaOutcome.NeedsSnapshot, replica.Apply(restarted.Set(A, "tap0")!, []));
    }

    [Fact]
    public void Replica_NewSession_TakesTheNextSnapshotWhateverItsVersionButKeepsEntriesUntilThen()
    {
        var first = new MapPublisher(1);
        first.Set(A, "tap0");
        first.Set(B, "tap0");
        var replica = new MapReplica();
        replica.Apply(first.Snapshot(), []);
        var restarted = new MapPublisher(2);
        restarted.Set(C, "tap0");

        replica.ExpectSnapshot();
        Assert.Equal(2, replica.Entries.Count);
        var changed = new List<MapChange>();
        Assert.Equal(ReplicaOutcome.Applied, replica.Apply(restarted.Snapshot(), changed));

        Assert.Equal(restarted.Entries.ToDictionary(), Entries(replica));
        Assert.Equal(
            [new MapChange(C, "tap0"), new MapChange(A, null), new MapChange(B, null)],
            changed.OrderBy(c => c.Value is null).ThenBy(c => c.Key));
    }

    [Fact]
    public void Replica_TooManyDeltasHeldBack_AsksForASnapshot()
    {
        var source = new MapPublisher(1);
        var replica = new MapReplica();
        replica.Apply(source.Snapshot(), []);
        source.Set(A, "lost");
        var outcomes = new List<ReplicaOutcome>();
        for (var i = 0; i <= MapReplica.MaxBuffered; i++)
            outcomes.Add(replica.Apply(source.Set(B, $"tap{i}")!, []));

        Assert.All(outcomes.Take(MapReplica.MaxBuffered), o => Assert.Equal(ReplicaOutcome.Buffered, o));
        Assert.Equal(ReplicaOutcome.NeedsSnapshot, outcomes[^1]);
        Assert.Equal(0, replica.Buffered);
    }

    [Fact]
    public void Check_EachKindOfDifference_ToldApart()
    {
        var source = new MapPublisher(1);
        source.Set(A, "tap0");
        var replica = new MapReplica();

        Assert.Equal(DigestOutcome.NoBaseline, replica.Check(source.Digest()));
        replica.Apply(source.Snapshot(), []);
        Assert.Equal(DigestOutcome.Match, replica.Check(source.Digest()));
        var before = source.Digest();
        source.Set(B, "tap0");
        Assert.Equal(DigestOutcome.Behind, replica.Check(source.Digest()));
        replica.Apply(source.Snapshot(), []);
        Assert.Equal(DigestOutcome.Stale, replica.Check(before));
        Assert.Equal(DigestOutcome.Diverged, replica.Check(new MapPublisher(9).Digest()));
        // Same version, other entries: a bug somewhere; the digest says so.
        var forged = source.Digest() with { Hash = source.Digest().Hash + 1 };
        Assert.Equal(DigestOutcome.Diverged, replica.Check(forged));
    }

    [Fact]
    public void Hash_SameEntriesReachedInAnotherOrder_SameDigestHash()
    {
        var one = new MapPublisher(1);
        one.Set(A, "tap0");
        one.Set(B, "tap1");
        one.Set(C, "tap0");
        one.Remove(C);
        var two = new MapPublisher(1);
        two.Set(B, "tap1");
        two.Set(A, "tap9");
        two.Set(A, "tap0");

        Assert.Equal(one.Digest().Hash, two.Digest().Hash);
        Assert.NotEqual(one.Digest().Hash, new MapPublisher(1).Digest().Hash);
    }

    [Fact]
    public void Publisher_ChangeThatChangesNothing_NoDeltaAndNoNewVersion()
    {
        var source = new MapPublisher(1);
        source.Set(A, "tap0");
        var version = source.Version;

        Assert.Null(source.Set(A, "tap0"));
        Assert.Null(source.Remove(B));
        Assert.Equal(version, source.Version);
    }

    /// <summary>
    /// Random operations on a source, its messages delivered to a replica late, twice, out of order
    /// or not at all, with a snapshot whenever the replica asks: once the messages stop and the
    /// replica has asked for what it lacked, it equals the source.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public void Replica_RandomLossDuplicationAndReordering_ConvergesThroughDigests(int seed)
    {
        var random = new Random(seed);
        var source = new MapPublisher((ulong)seed);
        var replica = new MapReplica();
        var inFlight = new List<object> { source.Snapshot() };
        var macs = Enumerable.Range(1, 12).Select(i => new MacAddress(0x0200_0000_0000UL + (ulong)i)).ToArray();
        for (var step = 0; step < 400; step++)
        {
            var mac = macs[random.Next(macs.Length)];
            var delta = random.Next(3) == 0 ? source.Remove(mac) : source.Set(mac, $"tap{random.Next(3)}");
            if (delta is not null && random.Next(10) > 0)
                inFlight.Add(delta);
            if (random.Next(8) == 0)
                inFlight.Add(source.Digest());
            while (inFlight.Count > 0 && random.Next(3) > 0)
            {
                var i = random.Next(inFlight.Count);
                var message = inFlight[i];
                if (random.Next(6) > 0)
                    inFlight.RemoveAt(i);
                Deliver(message);
            }
        }
        // Quiet: only anti-entropy now.
        for (var round = 0; round < 3 && replica.Check(source.Digest()) != DigestOutcome.Match; round++)
            Deliver(source.Digest());

        Assert.Equal(DigestOutcome.Match, replica.Check(source.Digest()));
        Assert.Equal(source.Entries.ToDictionary(), Entries(replica));

        void Deliver(object message)
        {
            var outcome = message switch
            {
                MapSnapshot s => replica.Apply(s, []),
                MapDelta d => replica.Apply(d, []),
                _ => replica.Check((MapDigest)message) is DigestOutcome.Behind or DigestOutcome.Diverged or DigestOutcome.NoBaseline
                    ? ReplicaOutcome.NeedsSnapshot
                    : ReplicaOutcome.Applied,
            };
            if (outcome == ReplicaOutcome.NeedsSnapshot)
                replica.Apply(source.Snapshot(), []);
        }
    }
}
