using System.Net;
using System.Text.Json.Nodes;
using Vnet.ChangeSets;
using Vnet.Daemon;
using Vnet.Json;
using Vnet.Links;
using Vnet.Peers;

namespace Vnet.Overlay;

/// <summary>
/// What became of a change set sent to a daemon: taken (no error), refused, or sent with no answer
/// (<see cref="OutcomeUnknown"/>: the daemon went away or did not answer in time, and may have
/// taken it all the same).
/// </summary>
public sealed record ChangeSetAnswer(string? Error, bool OutcomeUnknown = false);

/// <summary>What the Proxy knows of the whole overlay at one moment.</summary>
public sealed record OverlayStates(IReadOnlyList<DaemonState> Daemons, IReadOnlyList<string> Unreachable);

/// <summary>
/// The Proxy's view of the whole overlay for the language tools and adaptation: it gathers every
/// daemon's state (its own, and each connected host's over the star) and sends daemons their
/// change sets, each checked against the version of the state it was planned from.
/// </summary>
public sealed class OverlayService
{
    private readonly string _name;
    private readonly bool _isProxy;
    private readonly PeerChannel _peers;
    private readonly LinkManager _links;
    private readonly Func<Task<DaemonState>> _ownState;
    private readonly Func<IReadOnlyList<DaemonChange>, string?, Task<ApplyResult>> _applyHere;

    public OverlayService(string name, bool isProxy, PeerChannel peers, LinkManager links, Func<Task<DaemonState>> ownState,
        Func<IReadOnlyList<DaemonChange>, string?, Task<ApplyResult>> applyHere)
    {
        _name = name;
        _isProxy = isProxy;
        _peers = peers;
        _links = links;
        _ownState = ownState;
        _applyHere = applyHere;
    }

    public string ProxyName => _name;

    /// <summary>
    /// Every daemon's state, its own and each connected host's, with the address the Proxy reaches
    /// each host at. Hosts whose star link is down are listed in <see cref="OverlayStates.Unreachable"/>.
    /// </summary>
    public async Task<OverlayStates> GatherStates()
    {
        if (!_isProxy)
            throw new DaemonCommandException($"{_name} is a host; overlay commands go to the Proxy");
        var own = await _ownState().ConfigureAwait(false);
        var hosts = _links.Links.Where(l => l.Star).OrderBy(l => l.Peer, StringComparer.Ordinal).ToList();
        var calls = hosts.Where(l => l.IsUp).Select(async l =>
        {
            try
            {
                var state = DaemonJson.FromNode<DaemonState>(await _peers.CallAsync(l.Peer, "state", null).ConfigureAwait(false));
                if (state?.Malformation() is { } malformed)
                    return (l, State: (DaemonState?)null, Error: $"malformed state: {malformed}");
                return (l, State: state, Error: state is null ? "no state in the answer" : null);
            }
            catch (DaemonCommandException e)
            {
                return (l, State: (DaemonState?)null, Error: e.Message);
            }
            catch (System.Text.Json.JsonException e)
            {
                return (l, State: (DaemonState?)null, Error: $"malformed state: {e.Message}");
            }
        }).ToList();
        var states = new List<DaemonState> { own };
        var unreachable = hosts.Where(l => !l.IsUp).Select(l => $"{l.Peer}: link down ({l.LastDownReason})").ToList();
        foreach (var (link, state, error) in await Task.WhenAll(calls).ConfigureAwait(false))
        {
            if (state is null)
            {
                unreachable.Add($"{link.Peer}: {error}");
                continue;
            }
            states.Add(WithReachableAddress(state, link));
        }
        return new OverlayStates(states, unreachable);
    }

    /// <summary>
    /// Sends one daemon its change set (here: applied on the loop); null when it took all of it,
    /// else why it refused. With <paramref name="ifVersion"/> the daemon refuses if it changed
    /// since that version of its state was read.
    /// </summary>
    public async Task<string?> SendChangeSet(string daemon, IReadOnlyList<DaemonChange> set, string? ifVersion = null) =>
        (await SendChangeSetAsync(daemon, set, ifVersion).ConfigureAwait(false)).Error;

    /// <summary>As <see cref="SendChangeSet"/>, telling a refusal from a set sent that got no answer.</summary>
    public async Task<ChangeSetAnswer> SendChangeSetAsync(string daemon, IReadOnlyList<DaemonChange> set, string? ifVersion = null)
    {
        try
        {
            ApplyResult? result;
            if (daemon == _name)
            {
                result = await _applyHere(set, ifVersion).ConfigureAwait(false);
            }
            else
            {
                var args = new JsonObject { ["changes"] = DaemonJson.ToNode(set.ToList()) };
                if (ifVersion is not null)
                    args["ifVersion"] = ifVersion;
                result = DaemonJson.FromNode<ApplyResult>(await _peers.CallAsync(daemon, "apply", args).ConfigureAwait(false));
            }
            return new ChangeSetAnswer(result is { Applied: true } ? null : result?.Error ?? "no answer");
        }
        catch (DaemonCommandException e)
        {
            return new ChangeSetAnswer(e.Message, e.OutcomeUnknown);
        }
    }

    /// <summary>
    /// The version of a host's state once its star link is up (now, or after it comes back), or
    /// null if it is not back and answering within <paramref name="limit"/>.
    /// </summary>
    public async Task<string?> WaitForVersion(string daemon, TimeSpan limit)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            if (_links.Find(daemon) is { Star: true, IsUp: true })
            {
                try
                {
                    var state = DaemonJson.FromNode<DaemonState>(await _peers.CallAsync(daemon, "state", null, limit - clock.Elapsed).ConfigureAwait(false));
                    if (state?.Version is { } version)
                        return version;
                }
                catch (Exception e) when (e is DaemonCommandException or System.Text.Json.JsonException or ArgumentOutOfRangeException)
                {
                    // Down again, or no answer: looked at again until the limit.
                }
            }
            if (clock.Elapsed + RecheckPeriod > limit)
                return null;
            await Task.Delay(RecheckPeriod).ConfigureAwait(false);
        }
    }

    private static readonly TimeSpan RecheckPeriod = TimeSpan.FromMilliseconds(250);

    /// <summary>A host listening on every address is reached where its star link comes from.</summary>
    private static DaemonState WithReachableAddress(DaemonState state, LinkPort star)
    {
        if (state.Listen is null || !IPEndPoint.TryParse(state.Listen, out var listen))
            return state;
        if (!listen.Address.Equals(IPAddress.Any) && !listen.Address.Equals(IPAddress.IPv6Any))
            return state;
        if (star.Session?.RemoteEndPoint is not { } remote || !IPEndPoint.TryParse(remote, out var from))
            return state;
        return state with { Listen = new IPEndPoint(from.Address, listen.Port).ToString() };
    }
}
