using System.Text;
using Vnet.Peers;

namespace Vnet.Tests.Peers;

/// <summary>
/// Control messages between daemons as they arrive: TryParse refuses what the services could not
/// use, with a reason, and never throws (it runs on a link's receiver thread, where an exception
/// ends the daemon). The cases below were found by fuzzing (fuzz/run.sh peer-message).
/// </summary>
public sealed class PeerMessageTests
{
    [Theory]
    // A null entry made Check throw NullReferenceException inside TryParse.
    [InlineData("""{"type":"vms","epoch":1,"seq":0,"entries":[null]}""", "empty entry")]
    [InlineData("""{"type":"locations","epoch":1,"seq":3,"full":true,"entries":[{"mac":"02:00:00:00:00:01","value":"h1"},null]}""", "empty entry")]
    // Accepted, then the Proxy's inference and adaptation dereferenced the null entry or keyed by a null peer.
    [InlineData("""{"type":"traffic","matrix":[null]}""", "empty matrix entry")]
    [InlineData("""{"type":"traffic","measurements":[null]}""", "measurement")]
    [InlineData("""{"type":"traffic","measurements":[{}]}""", "measurement")]
    [InlineData("""{"type":"traffic","measurements":[{"peer":"no spaces","star":true,"txBytesPerSecond":1,"rxBytesPerSecond":1}]}""", "measurement")]
    public void TryParse_NullOrIncompleteElement_RefusedWithReason(string json, string reason)
    {
        var message = PeerMessage.TryParse(Encoding.UTF8.GetBytes(json), out var error);

        Assert.Null(message);
        Assert.NotNull(error);
        Assert.Contains(reason, error, StringComparison.Ordinal);
    }

    [Fact]
    public void TryParse_TrafficReport_Accepted()
    {
        var json = """{"type":"traffic","matrix":[{"src":"02:00:00:00:00:01","dst":"02:00:00:00:00:02","bytes":100,"frames":1}],"measurements":[{"peer":"proxy","star":true,"rttMs":0.5,"txBytesPerSecond":10,"rxBytesPerSecond":20}]}""";

        var message = PeerMessage.TryParse(Encoding.UTF8.GetBytes(json), out var error);

        Assert.Null(error);
        Assert.NotNull(message);
        Assert.Equal("proxy", Assert.Single(message.Measurements!).Peer);
        Assert.Single(message.Matrix!);
    }
}
