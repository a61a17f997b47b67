using Vnet.Configuration;
using Vnet.Language;
using Vnet.Links;
using static Vnet.Tests.Language.Lang;

namespace Vnet.Tests.Language;

/// <summary>
/// The canonical text: the round trip on random models (parse(format(x)) == x, and formatting is a
/// fixed point), the golden files of every construct, and the layout choices.
/// </summary>
public sealed class OverlayFormatterTests
{
    private const int ModelsPerSeed = 100;

    public static TheoryData<string> GoldenFiles()
    {
        var data = new TheoryData<string>();
        foreach (var path in Directory.GetFiles(GoldenDirectory, "*.vnet").Order(StringComparer.Ordinal))
        {
            if (!path.EndsWith(".expected.vnet", StringComparison.Ordinal))
                data.Add(Path.GetFileNameWithoutExtension(path));
        }
        return data;
    }

    private static string GoldenDirectory => Path.Combine(AppContext.BaseDirectory, "Language", "Golden");

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(42)]
    [InlineData(1009)]
    [InlineData(20260101)]
    public void Format_RandomModels_ParsesBackEqualAndIsAFixedPoint(int seed)
    {
        var rng = new Random(seed);
        for (var n = 0; n < ModelsPerSeed; n++)
        {
            var model = RandomOverlay.Wide(rng);
            var text = OverlayFormatter.Format(model);
            var result = OverlayParser.Parse(text, $"seed{seed}-{n}.vnet");
            Assert.True(result.Success, $"seed {seed}, model {n}:\n{result}\n{text}");
            Assert.True(model.Equals(result.Overlay), $"seed {seed}, model {n}: parsed back different\n{text}\n---\n{result.Overlay}");
            Assert.Equal(model.GetHashCode(), result.Overlay.GetHashCode());
            Assert.Equal(text, OverlayFormatter.Format(result.Overlay));
        }
    }

    [Theory]
    [MemberData(nameof(GoldenFiles))]
    public void Format_GoldenFile_ExpectedText(string name)
    {
        var input = File.ReadAllText(Path.Combine(GoldenDirectory, name + ".vnet"));
        var expected = File.ReadAllText(Path.Combine(GoldenDirectory, name + ".expected.vnet"));

        var parsed = Parse(input);
        Assert.Equal(expected, OverlayFormatter.Format(parsed));
        // The expected text is itself canonical and means the same.
        var again = Parse(expected);
        Assert.Equal(parsed, again);
        Assert.Equal(expected, OverlayFormatter.Format(again));
    }

    [Fact]
    public void Format_EmptyBlocks_LeftOut()
    {
        var text = OverlayFormatter.Format(Parse("proxy p at 192.0.2.1:5500 { }\nhost h { interface tap0 tap { } }\nlink h -> p"));
        Assert.Equal("proxy p at 192.0.2.1:5500\n\nhost h {\n  interface tap0 tap\n}\n\nlink h -> p tcp\n", text);
    }

    [Fact]
    public void Format_Comments_NotKept()
    {
        var text = OverlayFormatter.Format(Parse("# the overlay\nproxy p at 192.0.2.1:5500 # home\n"));
        Assert.Equal("proxy p at 192.0.2.1:5500\n", text);
    }

    [Fact]
    public void Format_EmptyModel_EmptyText()
    {
        Assert.Equal("", OverlayFormatter.Format(OverlayDescription.Empty));
    }

    [Fact]
    public void ToString_Declarations_LanguageLines()
    {
        var o = Parse("""
            proxy p at [2001:db8::1]:5500 {
              interface eth0 pcap lan mtu 9000
              rule any -> 02:00:00:00:00:01 from interface eth0 to link h
            }
            host h
            link h -> p udp port 6000
            """);
        Assert.Equal("proxy p at [2001:db8::1]:5500", o.Daemons[0].ToString());
        Assert.Equal("host h", o.Daemons[1].ToString());
        Assert.Equal("interface eth0 pcap mtu 9000 lan", o.Daemons[0].Interfaces[0].ToString());
        Assert.Equal("rule any -> 02:00:00:00:00:01 from interface eth0 to link h", o.Daemons[0].Rules[0].ToString());
        Assert.Equal("link h -> p udp port 6000", o.Links[0].ToString());
        Assert.Equal(OverlayFormatter.Format(o), o.ToString());
    }

    [Fact]
    public void Format_ModelInCode_SameLayout()
    {
        var o = new OverlayDescription(
            [new DaemonDecl("p", DaemonRole.Proxy, Ep("192.0.2.1:5500"), [new InterfaceDecl("t", InterfaceKind.Tap, null, "br0", false, [Mac(1), Mac(2)])], [])],
            []);
        Assert.Equal("proxy p at 192.0.2.1:5500 {\n  interface t tap bridge br0 {\n    vm 02:00:00:00:00:01\n    vm 02:00:00:00:00:02\n  }\n}\n", OverlayFormatter.Format(o));
    }
}
