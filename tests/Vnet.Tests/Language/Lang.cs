using System.Net;
using Vnet.Frames;
using Vnet.Language;

namespace Vnet.Tests.Language;

/// <summary>Shorthands for the language tests: parse or collect errors with a fixed file name.</summary>
internal static class Lang
{
    public const string FileName = "t.vnet";

    public static OverlayDescription Parse(string text)
    {
        var result = OverlayParser.Parse(text, FileName);
        Assert.True(result.Success, result.ToString());
        Assert.Empty(result.Diagnostics);
        return result.Overlay;
    }

    /// <summary>The errors as printed (file:line:column: message); asserts that no model came back.</summary>
    public static string[] Errors(string text)
    {
        var result = OverlayParser.Parse(text, FileName);
        Assert.False(result.Success);
        Assert.Null(result.Overlay);
        Assert.NotEmpty(result.Diagnostics);
        return [.. result.Diagnostics.Select(d => d.ToString())];
    }

    /// <summary>The single error of a text.</summary>
    public static string Error(string text) => Assert.Single(Errors(text));

    public static IPEndPoint Ep(string text) => IPEndPoint.Parse(text);

    public static MacAddress Mac(string text) => MacAddress.Parse(text);

    public static MacAddress Mac(int n) => new(0x0200_0000_0000UL | (uint)n);
}
