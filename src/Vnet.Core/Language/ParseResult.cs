using System.Diagnostics.CodeAnalysis;

namespace Vnet.Language;

/// <summary>What <see cref="OverlayParser.Parse"/> gives: the checked model, or the errors, never both.</summary>
public sealed class ParseResult
{
    private ParseResult(OverlayDescription? overlay, IReadOnlyList<Diagnostic> diagnostics)
    {
        Overlay = overlay;
        Diagnostics = diagnostics;
    }

    /// <summary>The description; null when there is any error.</summary>
    public OverlayDescription? Overlay { get; }

    /// <summary>The errors in file order; empty on success.</summary>
    public IReadOnlyList<Diagnostic> Diagnostics { get; }

    [MemberNotNullWhen(true, nameof(Overlay))]
    public bool Success => Overlay is not null;

    /// <summary>The description, or a <see cref="FormatException"/> with every error, one per line.</summary>
    public OverlayDescription OrThrow() =>
        Overlay ?? throw new FormatException(string.Join('\n', Diagnostics));

    internal static ParseResult Succeeded(OverlayDescription overlay) => new(overlay, []);

    internal static ParseResult Failed(IReadOnlyList<Diagnostic> diagnostics) => new(null, diagnostics);

    public override string ToString() => Success ? "ok" : string.Join('\n', Diagnostics);
}
