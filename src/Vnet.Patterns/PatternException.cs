namespace Vnet.Patterns;

/// <summary>A run failed; the message is one line and names the rank at fault where one is known.</summary>
public sealed class PatternException : Exception
{
    public PatternException()
    {
    }

    public PatternException(string message)
        : base(message)
    {
    }

    public PatternException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
