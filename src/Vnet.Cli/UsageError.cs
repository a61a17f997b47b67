using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.RegularExpressions;

namespace Vnet.Cli;

/// <summary>The one line a usage error gets: what is wrong, and where the command's help is.</summary>
internal static partial class UsageError
{
    public static string Line(ParseResult parsed)
    {
        var messages = Spaces().Replace(string.Join(" ", parsed.Errors.Select(e => e.Message)), " ").Trim();
        var names = new List<string>();
        for (var c = parsed.CommandResult; c is not null && c.Command is not RootCommand; c = c.Parent as CommandResult)
            names.Insert(0, c.Command.Name);
        var help = names.Count == 0 ? "vnet --help" : $"vnet {string.Join(' ', names)} --help";
        return $"vnet: {messages} ('{help}' shows the usage)";
    }

    [GeneratedRegex(@"\s+")]
    private static partial Regex Spaces();
}
