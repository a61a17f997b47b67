using System.Text;
using Vnet.Peers;

namespace Vnet.Tests.Peers;

public sealed class PeerMessageKeysTests
{
    [Theory]
    [InlineData("""{"type":"keys","seq":1,"keys":[null]}""")]
    [InlineData("""{"type":"keys","seq":1,"keys":[{"name":null,"key":"x"}]}""")]
    [InlineData("""{"type":"keys","seq":1,"keys":[{"name":"h1","key":null}]}""")]
    [InlineData("""{"type":"keys","keys":[]}""")]
    public void TryParse_KeysWithAnEmptyEntryOrNoVersion_RefusedWithAReason(string json)
    {
        Assert.Null(PeerMessage.TryParse(Encoding.UTF8.GetBytes(json), out var error));
        Assert.False(string.IsNullOrEmpty(error));
    }

    [Fact]
    public void TryParse_KeysWellFormed_Taken()
    {
        var message = PeerMessage.TryParse("""{"type":"keys","seq":1,"keys":[{"name":"h1","key":"k"}]}"""u8, out var error);

        Assert.Null(error);
        Assert.Equal("h1", Assert.Single(message!.Keys!).Name);
    }
}
