using System.CommandLine;
using Vnet.Links;

namespace Vnet.Cli;

internal static class KeygenCommand
{
    public static Command Create()
    {
        var command = new Command("keygen", "Print a new random network key (base64); every daemon of an overlay needs the same key.");
        command.SetAction(_ =>
        {
            Console.WriteLine(NetworkKey.Generate().ToString());
            return 0;
        });
        return command;
    }
}
