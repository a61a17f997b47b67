using System.Text.Json.Nodes;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Inference;
using Vnet.Links.Security;
using Vnet.Peers;
using Vnet.Vms;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// Control JSON between daemons (<see cref="PeerMessage.TryParse"/>), and what the receiving
/// services do with a message that passed: replicate maps, compare digests, fold traffic reports.
/// An input holds up to 64 messages separated by 0xFF (a byte UTF-8 never has), fed in order to one
/// replica and one aggregator, as a session feeds them; a Proxy's list of keys is read as a host's
/// KeyRing reads each entry. TryParse documents no exception: a malformed message is null with a
/// reason; a message it passes must be safe to use.
/// </summary>
public sealed class PeerMessageTarget : FuzzTarget
{
    public override string Name => "peer-message";

    public override string Description => "Vnet.Peers.PeerMessage.TryParse and the replica/aggregator that consume it";

    public override IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        var vm1 = MacAddress.Parse("02:00:00:00:00:01");
        var vm2 = MacAddress.Parse("02:00:00:00:00:02");
        var snapshot = new PeerMessage { Type = PeerMessageType.Locations, Epoch = 0x1234, Seq = 4, Full = true, Entries = [new MapEntry(vm1, "h1"), new MapEntry(vm2, "h2")] };
        var delta = new PeerMessage { Type = PeerMessageType.Locations, Epoch = 0x1234, Seq = 5, Entries = [new MapEntry(vm1, "h2"), new MapEntry(vm2, null)] };
        var later = delta with { Seq = 7, Entries = [new MapEntry(vm2, "h3")] };
        var digest = new PeerMessage { Type = PeerMessageType.Digest, Topic = MapTopic.Locations, Epoch = 0x1234, Seq = 5, Count = 1, Hash = 0xDEADBEEF };
        var vms = new PeerMessage { Type = PeerMessageType.Vms, Epoch = 7, Seq = 1, Entries = [new MapEntry(vm1, "tap0")] };
        var sync = new PeerMessage { Type = PeerMessageType.Sync, Topic = MapTopic.Vms, Reason = "diverged" };
        var traffic = new PeerMessage
        {
            Type = PeerMessageType.Traffic,
            Matrix = [new TrafficEntry(vm1, vm2, 150000, 100), new TrafficEntry(vm2, vm1, 64, 1)],
            Measurements = [new LinkMeasurement("proxy", true, 0.25, 1e6, 2e6), new LinkMeasurement("h2", false, null, 0, 0)],
        };
        var request = new PeerMessage { Type = PeerMessageType.Request, Id = 42, Command = "rule.add", Args = new JsonObject { ["src"] = "any", ["dst"] = "02:00:00:00:00:02", ["to"] = "link:h2" } };
        var response = new PeerMessage { Type = PeerMessageType.Response, Id = 42, Ok = true, Data = new JsonObject { ["id"] = 3, ["frames"] = new JsonArray(1, 2) } };
        var keys = new PeerMessage
        {
            Type = PeerMessageType.Keys,
            Seq = 3,
            Keys = [new KeyEntry("h1", "aDEgcHVibGljIGtleSwgdGhpcnR5LXR3byBieXRlcy4="), new KeyEntry("h2", "not a key")],
        };
        yield return ("keys.json", keys.Serialize());
        yield return ("locations-snapshot.json", snapshot.Serialize());
        yield return ("locations-delta.json", delta.Serialize());
        yield return ("digest.json", digest.Serialize());
        yield return ("vms.json", vms.Serialize());
        yield return ("sync.json", sync.Serialize());
        yield return ("traffic.json", traffic.Serialize());
        yield return ("request.json", request.Serialize());
        yield return ("response.json", response.Serialize());
        // A session's worth: snapshot, a delta, one that comes early, then a digest (0xFF between messages).
        yield return ("session.bin", [.. snapshot.Serialize(), 0xFF, .. later.Serialize(), 0xFF, .. delta.Serialize(), 0xFF, .. digest.Serialize()]);
    }

    protected override void Run(ReadOnlySpan<byte> data)
    {
        var replica = new MapReplica();
        var aggregator = new TrafficAggregator();
        var changed = new List<MapChange>();
        var at = DateTimeOffset.UnixEpoch;
        for (var n = 0; n < 64 && !data.IsEmpty; n++)
        {
            var end = data.IndexOf((byte)0xFF);
            var payload = end < 0 ? data : data[..end];
            data = end < 0 ? [] : data[(end + 1)..];

            var message = PeerMessage.TryParse(payload, out var error);
            if (message is null)
            {
                if (error is null)
                    throw new FuzzFindingException("refused without a reason");
                continue;
            }
            if (error is not null)
                throw new FuzzFindingException($"accepted with an error: {error}");

            switch (message.Type)
            {
                case PeerMessageType.Vms:
                case PeerMessageType.Locations:
                    if (message.Full)
                        replica.Apply(message.ToSnapshot(), changed);
                    else
                        replica.Apply(message.ToDelta(), changed);
                    if (replica.Buffered > MapReplica.MaxBuffered)
                        throw new FuzzFindingException($"the replica holds {replica.Buffered} deltas");
                    break;
                case PeerMessageType.Digest:
                    replica.Check(message.ToDigest());
                    break;
                case PeerMessageType.Traffic:
                    at += TimeSpan.FromSeconds(1);
                    var entries = new List<MatrixEntry>(message.Matrix?.Count ?? 0);
                    foreach (var t in message.Matrix ?? [])
                        entries.Add(new MatrixEntry(t.Src, t.Dst, t.Bytes, t.Frames));
                    aggregator.Report("h1", at, entries);
                    aggregator.Tick(at);
                    foreach (var m in message.Measurements ?? [])
                        _ = (m.Peer.Length, m.RttMs, m.TxBytesPerSecond, m.RxBytesPerSecond);
                    break;
                case PeerMessageType.Keys:
                    // What a host's KeyRing.OnKeys reads of every entry of the Proxy's list.
                    foreach (var k in message.Keys ?? [])
                        _ = (Names.IsValid(k.Name), PublicKeyId.TryParse(k.Key, out _), LogText.Safe(k.Name));
                    break;
                case PeerMessageType.Request:
                    try
                    {
                        _ = (message.Id, message.Command?.Length, message.Args?.Count);
                    }
                    catch (InvalidOperationException)
                    {
                        // Args is read lazily: a property name that is not UTF-8 fails when the
                        // command reads its arguments, which CommandDispatcher.HandleAsync turns
                        // into an error response (as the control-json target checks).
                    }
                    break;
                case PeerMessageType.Response:
                    _ = (message.Id, message.Ok, message.Data?.ToJsonString(), message.Error?.Length);
                    break;
            }

            // What was accepted goes back out the same way (a Proxy relays and logs messages).
            if (PeerMessage.TryParse(message.Serialize(), out var again) is null)
                throw new FuzzFindingException($"an accepted message does not parse once serialized: {again}");
        }
    }
}
