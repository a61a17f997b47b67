namespace Vnet.Language;

internal enum TokenKind : byte
{
    Word,
    Arrow,
    Open,
    Close,
    EndOfLine,
    EndOfFile,
}

internal readonly record struct Token(TokenKind Kind, string Text, SourceSpan Span)
{
    public bool Is(string word) => Kind == TokenKind.Word && Text == word;

    /// <summary>The token as an error message names what it found.</summary>
    public string Describe() => Kind switch
    {
        TokenKind.Word => $"'{Text}'",
        TokenKind.Arrow => "'->'",
        TokenKind.Open => "'{'",
        TokenKind.Close => "'}'",
        TokenKind.EndOfLine => "the end of the line",
        _ => "the end of the file",
    };
}

/// <summary>
/// Cuts a description into words, <c>-&gt;</c>, braces and line ends. A word is any run of other
/// visible characters: whether it is a name, a MAC or an endpoint depends on where it stands, so the
/// parser, which knows what it expects there, judges it and says what is wrong with it. Comments and
/// blank lines leave at most one line end; nothing here can fail.
/// </summary>
internal static class Lexer
{
    public static List<Token> Read(string text, string file)
    {
        var tokens = new List<Token>();
        int line = 1, lineStart = 0, i = 0;
        while (i < text.Length)
        {
            var c = text[i];
            var span = new SourceSpan(file, line, i - lineStart + 1);
            if (c == '\n')
            {
                if (tokens.Count > 0 && tokens[^1].Kind != TokenKind.EndOfLine)
                    tokens.Add(new Token(TokenKind.EndOfLine, "", span));
                i++;
                line++;
                lineStart = i;
            }
            else if (char.IsWhiteSpace(c))
            {
                i++;
            }
            else if (c == '#')
            {
                while (i < text.Length && text[i] != '\n')
                    i++;
            }
            else if (c == '{' || c == '}')
            {
                tokens.Add(new Token(c == '{' ? TokenKind.Open : TokenKind.Close, c.ToString(), span));
                i++;
            }
            else if (IsArrow(text, i))
            {
                tokens.Add(new Token(TokenKind.Arrow, "->", span));
                i += 2;
            }
            else
            {
                var start = i;
                while (i < text.Length && !char.IsWhiteSpace(text[i]) && text[i] is not ('{' or '}' or '#') && !IsArrow(text, i))
                    i++;
                tokens.Add(new Token(TokenKind.Word, text[start..i], span));
            }
        }
        tokens.Add(new Token(TokenKind.EndOfFile, "", new SourceSpan(file, line, i - lineStart + 1)));
        return tokens;
    }

    private static bool IsArrow(string text, int i) => text[i] == '-' && i + 1 < text.Length && text[i + 1] == '>';
}
