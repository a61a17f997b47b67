using System.Text;

namespace Vnet.Daemon;

/// <summary>Text from the network on its way into a log: no terminal escapes, no line breaks, bounded length.</summary>
public static class LogText
{
    public const int MaxLength = 200;

    public static string Safe(string? text)
    {
        if (string.IsNullOrEmpty(text))
            return "";
        var clean = true;
        foreach (var c in text)
        {
            if (char.IsControl(c))
            {
                clean = false;
                break;
            }
        }
        if (clean && text.Length <= MaxLength)
            return text;
        var sb = new StringBuilder(Math.Min(text.Length, MaxLength) + 1);
        foreach (var c in text)
        {
            if (sb.Length >= MaxLength)
            {
                sb.Append('…');
                break;
            }
            sb.Append(char.IsControl(c) ? '?' : c);
        }
        return sb.ToString();
    }
}
