namespace Vnet.Language;

/// <summary>
/// Where a construct starts in a description: the file and the 1-based line and column (a tab counts
/// as one column). The default value means "unknown", as for models built in code.
/// </summary>
public readonly record struct SourceSpan(string File, int Line, int Column)
{
    public bool IsKnown => Line > 0;

    public override string ToString() => IsKnown ? $"{File}:{Line}:{Column}" : File ?? "";

    /// <summary>"line 4", or nothing when the position is unknown; for "first declared at ..." notes.</summary>
    internal string LineNote(string prefix) => IsKnown ? $" ({prefix} line {Line})" : "";
}

/// <summary>One error in a description: where, and what was expected or what is wrong.</summary>
public sealed record Diagnostic(SourceSpan Span, string Message)
{
    /// <summary><c>file:line:column: message</c>, the form compilers use, so editors can jump to it.</summary>
    public override string ToString() =>
        Span.IsKnown ? $"{Span}: {Message}" : string.IsNullOrEmpty(Span.File) ? Message : $"{Span.File}: {Message}";
}
