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
var code = await parsed.InvokeAsync();
// Usage errors (an unknown option, a bad value) exit 2, as bad configurations do (docs/cli.md).
return parsed.Errors.Count > 0 ? 2 : code;
