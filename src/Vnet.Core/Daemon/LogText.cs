using System.Globalization;
using System.Text;

namespace Vnet.Daemon;

/// <summary>
/// Text from the network on its way into a log: no terminal escapes, no line breaks, bounded length.
/// A peer's name, reason or JSON error could otherwise forge log lines, move a terminal's cursor,
/// hide text behind bidirectional overrides, or make one line megabytes long.
/// </summary>
public static class LogText
{
    public const int MaxLength = 200;

    /// <summary>
    /// The text with every control character (C0, DEL, C1: escapes, CR, LF, NEL), line and
    /// paragraph separator, invisible format character (bidi overrides and isolates, zero-width
    /// characters, BOM) and unpaired surrogate replaced by '?', and cut after <see cref="MaxLength"/>
    /// characters with '…' (never between the halves of a surrogate pair). Clean short text comes
    /// back as it is, without allocating.
    /// </summary>
    public static string Safe(string? text)
    {
        if (string.IsNullOrEmpty(text))
            return "";
        if (text.Length <= MaxLength && IsClean(text))
            return text;
        var sb = new StringBuilder(Math.Min(text.Length, MaxLength) + 1);
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            var pair = char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]);
            if (sb.Length + (pair ? 2 : 1) > MaxLength)
            {
                sb.Append('…');
                break;
            }
            if (pair)
            {
                sb.Append(c).Append(text[++i]);
                continue;
            }
            sb.Append(IsUnsafe(c) ? '?' : c);
        }
        return sb.ToString();
    }

    private static bool IsClean(string text)
    {
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++;
                continue;
            }
            if (IsUnsafe(c))
                return false;
        }
        return true;
    }

    private static bool IsUnsafe(char c)
    {
        // Printable ASCII, the common case, without a category lookup.
        if (c is >= ' ' and < (char)0x7F)
            return false;
        return char.IsControl(c) || char.IsSurrogate(c) || char.GetUnicodeCategory(c) is
            UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator or UnicodeCategory.Format;
    }
}
