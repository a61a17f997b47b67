using System.Text;
using Vnet.Language;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// The overlay language (<see cref="OverlayParser.Parse"/>): any text gives a result with
/// diagnostics, never an exception; an accepted description formats to canonical text that parses
/// again to the same canonical text (what <c>vnet topo fmt</c> and <c>dump</c> rely on).
/// </summary>
public sealed class OverlayTarget : FuzzTarget
{
    public override string Name => "overlay";

    public override string Description => "Vnet.Language.OverlayParser.Parse, checker and formatter round trip";

    protected override void Run(ReadOnlySpan<byte> data)
    {
        var text = Encoding.UTF8.GetString(data);
        var result = OverlayParser.Parse(text, "fuzz.vnet");
        if (!result.Success)
        {
            if (result.Diagnostics.Count == 0)
                throw new FuzzFindingException("refused without a diagnostic");
            _ = result.ToString();
            return;
        }
        var formatted = OverlayFormatter.Format(result.Overlay!);
        var again = OverlayParser.Parse(formatted, "formatted.vnet");
        if (!again.Success)
            throw new FuzzFindingException($"the formatted description does not parse:\n{again}\n--- formatted:\n{formatted}");
        var twice = OverlayFormatter.Format(again.Overlay!);
        if (twice != formatted)
            throw new FuzzFindingException($"formatting is not stable:\n--- once:\n{formatted}\n--- twice:\n{twice}");
    }
}
