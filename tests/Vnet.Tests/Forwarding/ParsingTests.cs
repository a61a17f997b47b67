using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Tests.Forwarding;

public sealed class MacAddressTests
{
    [Theory]
    [InlineData("00:00:00:00:00:00")]
    [InlineData("02:00:5e:10:20:ff")]
    [InlineData("ff:ff:ff:ff:ff:ff")]
    [InlineData("01:00:5e:7f:00:01")]
    public void Parse_CanonicalText_RoundTrips(string text)
    {
        Assert.Equal(text, MacAddress.Parse(text).ToString());
    }

    [Fact]
    public void Parse_DashesAndUpperCase_SameAddress()
    {
        Assert.Equal(MacAddress.Parse("0a:1b:2c:3d:4e:5f"), MacAddress.Parse("0A-1B-2C-3D-4E-5F"));
        Assert.Equal(0x0a1b2c3d4e5fUL, MacAddress.Parse("0A-1B-2C-3D-4E-5F").Value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("02:00:00:00:00")]
    [InlineData("02:00:00:00:00:0")]
    [InlineData("02:00:00:00:00:000")]
    [InlineData("02:00:00:00:00:0g")]
    [InlineData("02.00.00.00.00.01")]
    [InlineData("0200:00:00:00:01x")]
    [InlineData(" 2:00:00:00:00:01")]
    [InlineData("any")]
    public void TryParse_BadText_ReturnsFalse(string text)
    {
        Assert.False(MacAddress.TryParse(text, out _));
    }

    [Fact]
    public void Parse_BadText_ThrowsFormatException()
    {
        Assert.Throws<FormatException>(() => MacAddress.Parse("nope"));
    }

    [Fact]
    public void ReadWrite_SixBytes_RoundTrip()
    {
        var mac = MacAddress.Parse("12:34:56:78:9a:bc");
        var bytes = new byte[6];

        mac.Write(bytes);

        Assert.Equal(new byte[] { 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc }, bytes);
        Assert.Equal(mac, MacAddress.Read(bytes));
    }

    [Fact]
    public void Constructor_ValueWiderThan48Bits_Masked()
    {
        Assert.Equal(MacAddress.Broadcast, new MacAddress(ulong.MaxValue));
    }

    [Fact]
    public void IsGroup_BroadcastMulticastUnicast_OnlyGroupsTrue()
    {
        Assert.True(MacAddress.Broadcast.IsGroup);
        Assert.True(MacAddress.Broadcast.IsBroadcast);
        Assert.True(MacAddress.Parse("01:00:5e:00:00:01").IsGroup);
        Assert.True(MacAddress.Parse("33:33:00:00:00:01").IsGroup);
        Assert.False(MacAddress.Parse("01:00:5e:00:00:01").IsBroadcast);
        Assert.False(MacAddress.Parse("02:00:00:00:00:01").IsGroup);
        Assert.False(MacAddress.Zero.IsGroup);
    }

    [Fact]
    public void TryFormat_BufferTooShort_ReturnsFalse()
    {
        var mac = MacAddress.Parse("02:00:00:00:00:01");
        Span<char> small = stackalloc char[16];
        Span<char> exact = stackalloc char[17];

        Assert.False(mac.TryFormat(small, out var none, default, null));
        Assert.Equal(0, none);
        Assert.True(mac.TryFormat(exact, out var written, default, null));
        Assert.Equal("02:00:00:00:00:01", exact[..written].ToString());
    }
}

public sealed class MacMatchTests
{
    [Theory]
    [InlineData("any", MacMatchKind.Any)]
    [InlineData("ANY", MacMatchKind.Any)]
    [InlineData("none", MacMatchKind.None)]
    [InlineData("None", MacMatchKind.None)]
    [InlineData("multicast", MacMatchKind.Multicast)]
    [InlineData("MultiCast", MacMatchKind.Multicast)]
    [InlineData("02:00:00:00:00:01", MacMatchKind.Exact)]
    [InlineData("FF-FF-FF-FF-FF-FF", MacMatchKind.Exact)]
    public void TryParse_Keyword_ReturnsKind(string text, MacMatchKind kind)
    {
        Assert.True(MacMatch.TryParse(text, out var match));
        Assert.Equal(kind, match.Kind);
    }

    [Theory]
    [InlineData("any")]
    [InlineData("none")]
    [InlineData("multicast")]
    [InlineData("02:00:00:00:00:01")]
    [InlineData("ff:ff:ff:ff:ff:ff")]
    public void ToString_ParsedMatch_RoundTrips(string text)
    {
        Assert.True(MacMatch.TryParse(text, out var match));
        Assert.Equal(text, match.ToString());
        Assert.True(MacMatch.TryParse(match.ToString(), out var again));
        Assert.Equal(match, again);
    }

    [Theory]
    [InlineData("")]
    [InlineData("anything")]
    [InlineData("not-02:00:00:00:00:01")]
    [InlineData("broadcast")]
    [InlineData("02:00:00:00:00")]
    [InlineData(" any")]
    public void TryParse_BadText_ReturnsFalse(string text)
    {
        Assert.False(MacMatch.TryParse(text, out _));
    }

    [Fact]
    public void Matches_EachKind_MatchesWhatItNames()
    {
        var unicast = MacAddress.Parse("02:00:00:00:00:01");
        var other = MacAddress.Parse("02:00:00:00:00:02");
        var group = MacAddress.Parse("01:00:5e:00:00:01");

        Assert.True(MacMatch.Exact(unicast).Matches(unicast));
        Assert.False(MacMatch.Exact(unicast).Matches(other));
        Assert.True(MacMatch.Multicast.Matches(group));
        Assert.True(MacMatch.Multicast.Matches(MacAddress.Broadcast));
        Assert.False(MacMatch.Multicast.Matches(unicast));
        Assert.True(MacMatch.Any.Matches(group));
        Assert.True(MacMatch.None.Matches(unicast));
    }
}

public sealed class PortRefTests
{
    [Theory]
    [InlineData("if:tap0", PortKind.Interface, "tap0")]
    [InlineData("interface:eth-1.2", PortKind.Interface, "eth-1.2")]
    [InlineData("link:proxy", PortKind.Link, "proxy")]
    [InlineData("link:9_host.example", PortKind.Link, "9_host.example")]
    public void TryParse_ValidText_ReturnsPort(string text, PortKind kind, string name)
    {
        Assert.True(PortRef.TryParse(text, out var port));
        Assert.Equal(new PortRef(kind, name), port);
    }

    [Theory]
    [InlineData("if:tap0")]
    [InlineData("link:proxy")]
    public void ToString_ParsedPort_RoundTrips(string text)
    {
        Assert.True(PortRef.TryParse(text, out var port));
        Assert.Equal(text, port.Value.ToString());
    }

    [Fact]
    public void ToString_LongKindName_FormatsShortKind()
    {
        Assert.True(PortRef.TryParse("interface:tap0", out var port));
        Assert.Equal("if:tap0", port.Value.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("tap0")]
    [InlineData(":tap0")]
    [InlineData("if:")]
    [InlineData("eth:tap0")]
    [InlineData("IF:tap0")]
    [InlineData("if:-tap0")]
    [InlineData("if:tap 0")]
    [InlineData("link:a:b")]
    [InlineData("link:abcdefghijklmnopqrstuvwxyz0123456")]
    public void TryParse_BadText_ReturnsFalse(string text)
    {
        Assert.False(PortRef.TryParse(text, out var port));
        Assert.Null(port);
    }

    [Fact]
    public void Equality_SameNameDifferentKind_NotEqual()
    {
        Assert.NotEqual(PortRef.Interface("x"), PortRef.Link("x"));
        Assert.Equal(PortRef.Link("x"), PortRef.Link("x"));
    }

    [Theory]
    [InlineData("a", true)]
    [InlineData("0", true)]
    [InlineData("a-b_c.d", true)]
    [InlineData("", false)]
    [InlineData(null, false)]
    [InlineData(".a", false)]
    [InlineData("a/b", false)]
    [InlineData("é", false)]
    public void IsValid_Name_ReturnsExpected(string? name, bool valid)
    {
        Assert.Equal(valid, Names.IsValid(name));
    }
}
