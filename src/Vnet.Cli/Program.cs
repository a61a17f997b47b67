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
foreach (var command in ControlCli.Create())
    root.Add(command);
return await root.Parse(args).InvokeAsync();
