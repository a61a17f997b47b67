using System.Text;
using System.Text.Json;
using Vnet.Daemon;

namespace Vnet.Tests.Daemon;

/// <summary>
/// A host's state as the Proxy receives it (<c>overlay.state</c>, dump, diff, trace): JSON null or a
/// missing field gets past the record's shape, so <see cref="DaemonState.Malformation"/> names what
/// is missing and the Proxy leaves such a host out instead of failing on it. Found by fuzzing
/// (fuzz/run.sh daemon-json): each state below made <see cref="OverlayModel.FromStates"/> throw
/// NullReferenceException.
/// </summary>
public sealed class DaemonStateTests
{
    private const string Whole = """{"name":"h1","role":"host","listen":"192.0.2.11:5500","interfaces":[{"name":"tap0","kind":"tap","mtu":1500,"lan":false,"vms":["02:00:00:00:00:01"]}],"links":[{"peer":"proxy","transport":"tcp","star":true,"dial":"192.0.2.1:5500","up":true}],"rules":[{"id":1,"source":"any","destination":"multicast","action":"flood","origin":"user","priority":1,"frames":0,"bytes":0}],"version":"v1"}""";

    private static readonly DaemonState Proxy = new("proxy", Vnet.Links.DaemonRole.Proxy, "192.0.2.1:5500", [], [], []);

    private static DaemonState Read(string json) => JsonSerializer.Deserialize(Encoding.UTF8.GetBytes(json), DaemonJson.Default.DaemonState)!;

    [Fact]
    public void Malformation_WholeState_NoneAndDescribed()
    {
        var state = Read(Whole);

        Assert.Null(state.Malformation());
        Assert.Equal(2, OverlayModel.FromStates(new OverlayStates([Proxy, state], [])).Daemons.Count);
    }

    [Theory]
    [InlineData("""{"name":"h1","role":"host","interfaces":null,"links":[],"rules":[]}""")]
    [InlineData("""{"name":"h1","role":"host","interfaces":[],"rules":[]}""")]
    [InlineData("""{"role":"host","interfaces":[],"links":[],"rules":[]}""")]
    [InlineData("""{"name":"h1","role":"host","interfaces":[null],"links":[],"rules":[]}""")]
    [InlineData("""{"name":"h1","role":"host","interfaces":[{"name":"tap0","kind":"tap","mtu":1500}],"links":[],"rules":[]}""")]
    [InlineData("""{"name":"h1","role":"host","interfaces":[],"links":[{"transport":"tcp","dial":"192.0.2.1:5500"}],"rules":[]}""")]
    [InlineData("""{"name":"h1","role":"host","interfaces":[],"links":[null],"rules":[]}""")]
    [InlineData("""{"name":"h1","role":"host","interfaces":[],"links":[],"rules":[null]}""")]
    [InlineData("""{"name":"h1","role":"host","interfaces":[],"links":[],"rules":[{"id":1,"source":"any","destination":"any","origin":"user"}]}""")]
    [InlineData("""{"name":"h1","role":"host","interfaces":[],"links":[],"rules":[],"version":null}""")]
    public void Malformation_NullOrMissingPart_Named(string json)
    {
        var state = Read(json);

        Assert.NotNull(state.Malformation());
    }
}
