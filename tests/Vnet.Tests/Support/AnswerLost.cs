using System.Text.Json.Nodes;
using Vnet.Daemon;
using Vnet.Links;
using Vnet.Peers;

namespace Vnet.Tests.Support;

/// <summary>
/// Runs a host's commands as they are, but the first time for one verb ends the host's star session
/// once the command has run and before its answer is sent: the answer is lost with the session, as
/// when a link drops between a request's arrival and its answer (the Proxy cannot tell whether the
/// host did the work).
/// </summary>
internal sealed class AnswerLost(ICommandHandler inner, string verb, Func<LinkSession> session) : ICommandHandler
{
    private int _cut;

    /// <summary>Wraps <paramref name="host"/>'s command handler: its first <paramref name="verb"/> loses its answer with the star session to <paramref name="proxy"/>.</summary>
    public static void Install(VnetDaemon host, string verb, string proxy = "proxy") =>
        host.Peers.Commands = new AnswerLost(host.Peers.Commands!, verb, () => host.Links.Find(proxy)!.Session!);

    public async Task<CommandResult> HandleAsync(string command, JsonObject? args)
    {
        var result = await inner.HandleAsync(command, args);
        if (command == verb && Interlocked.Exchange(ref _cut, 1) == 0)
            session().Close("test: the session ends before the answer leaves");
        return result;
    }
}
