using Vnet.Daemon;

namespace Vnet.Tests.Daemon;

/// <summary>Text from the network on its way into a log: nothing that moves a terminal or forges a line, and bounded.</summary>
public sealed class LogTextTests
{
    [Theory]
    [InlineData("h1")]
    [InlineData("malformed control message: 'x' is an invalid start of a value. Path: $ | LineNumber: 0")]
    [InlineData("Grüße, 日本, 🙂")]
    public void Safe_CleanShortText_ReturnedAsItIs(string text) => Assert.Same(text, LogText.Safe(text));

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    public void Safe_Nothing_Empty(string? text) => Assert.Equal("", LogText.Safe(text));

    [Theory]
    [InlineData("a\nFake: line", "a?Fake: line")]
    [InlineData("a\r\nb", "a??b")]
    [InlineData("\u001b[2J\u001b[31mred", "?[2J?[31mred")]
    [InlineData("bell\u0007", "bell?")]
    [InlineData("nul\0", "nul?")]
    [InlineData("del\u007f", "del?")]
    [InlineData("csi\u009b31m", "csi?31m")]
    [InlineData("nel\u0085x", "nel?x")]
    [InlineData("tab\tx", "tab?x")]
    [InlineData("line\u2028sep", "line?sep")]
    [InlineData("para\u2029sep", "para?sep")]
    [InlineData("evil\u202Etxt.exe", "evil?txt.exe")]
    [InlineData("iso\u2066late\u2069", "iso?late?")]
    [InlineData("zero\u200Bwidth", "zero?width")]
    [InlineData("bom\uFEFF", "bom?")]
    public void Safe_ControlAndInvisibleCharacters_Replaced(string text, string expected) =>
        Assert.Equal(expected, LogText.Safe(text));

    [Fact]
    public void Safe_UnpairedSurrogates_Replaced()
    {
        Assert.Equal("a?b", LogText.Safe("a\uD800b"));
        Assert.Equal("a?b", LogText.Safe("a\uDC00b"));
        Assert.Equal("end?", LogText.Safe("end\uD83D"));
    }

    [Fact]
    public void Safe_LongText_CutAtMaxLengthWithAnEllipsis()
    {
        var text = new string('x', 2 << 20);

        var safe = LogText.Safe(text);

        Assert.Equal(LogText.MaxLength + 1, safe.Length);
        Assert.EndsWith("…", safe, StringComparison.Ordinal);
        Assert.Equal(new string('x', LogText.MaxLength), safe[..^1]);
    }

    [Fact]
    public void Safe_LongText_NeverSplitsASurrogatePair()
    {
        var text = new string('x', LogText.MaxLength - 1) + "🙂🙂";

        var safe = LogText.Safe(text);

        Assert.Equal(new string('x', LogText.MaxLength - 1) + "…", safe);
    }

    [Fact]
    public void Safe_LongDirtyText_CleanedAndCut()
    {
        var text = string.Concat(Enumerable.Repeat("ab\n\u001b", 1000));

        var safe = LogText.Safe(text);

        Assert.Equal(LogText.MaxLength + 1, safe.Length);
        Assert.DoesNotContain('\n', safe);
        Assert.DoesNotContain('\u001b', safe);
    }
}
