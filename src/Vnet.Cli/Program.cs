using System.CommandLine;
using Vnet.Cli;

var root = new RootCommand("VNET: a layer-2 virtual network that puts VMs spread over many sites on their owner's LAN.");
root.Add(DaemonCommand.Create());
root.Add(KeygenCommand.Create());
root.Add(KeygenCommand.CreatePubkey());
root.Add(TopoCli.Create());
root.Add(PatternsCommand.Create());
root.Add(VttifCli.Create());
root.Add(AdaptCli.Create());
root.Add(CompletionCommand.Create());
foreach (var command in ControlCli.Create())
    root.Add(command);
var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    // Usage errors (an unknown option, a bad value) are one line on stderr and exit 2, as bad
    // configurations are (docs/cli.md); the parser's own answer, the whole help on stdout with the
    // errors after it, buries the reason and reads as output to a script.
    Console.Error.WriteLine(UsageError.Line(parsed));
    return 2;
}
return await parsed.InvokeAsync();
