using System.Net;
using Vnet.ChangeSets;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Language;
using Vnet.Links;

namespace Vnet.Overlay;

/// <summary>
/// Between the live overlay and its description: what the daemons report becomes a model in the
/// language, and the language's changes become the daemons' change sets.
/// </summary>
public static class OverlayModel
{
    public const int DefaultMtu = 1500;

    /// <summary>
    /// The live overlay as a description: daemons, interfaces with their VMs, user rules, and
    /// links as their dialing side has them. Rules the daemons install themselves (VM defaults,
    /// locations, flooding) and adaptation's are not part of it, so dump then apply changes nothing;
    /// nor are ordered VMs' interfaces (<c>vnet vm</c> makes and closes them), so a description
    /// written by hand, which cannot know them, does not remove them when applied.
    /// Daemons the Proxy cannot reach are left out, with the links to them and the rules naming those.
    /// </summary>
    public static OverlayDescription FromStates(OverlayStates states)
    {
        var listen = new Dictionary<string, IPEndPoint>(StringComparer.Ordinal);
        foreach (var s in states.Daemons)
        {
            if (s.Listen is not null && IPEndPoint.TryParse(s.Listen, out var ep))
                listen[s.Name] = ep;
        }
        // A Proxy listening on every address is where its hosts dial it.
        var proxy = states.Daemons.FirstOrDefault(d => d.Role == DaemonRole.Proxy);
        if (proxy is not null && listen.TryGetValue(proxy.Name, out var pl) && IsAny(pl.Address))
        {
            var dialed = states.Daemons.SelectMany(d => d.Links).FirstOrDefault(l => l.Star && l.Peer == proxy.Name && l.Dial is not null);
            if (dialed?.Dial is { } d && IPEndPoint.TryParse(d, out var dep))
                listen[proxy.Name] = dep;
        }

        var names = states.Daemons.Select(d => d.Name).ToHashSet(StringComparer.Ordinal);
        var daemons = new List<DaemonDecl>();
        var links = new List<LinkDecl>();
        foreach (var s in states.Daemons)
        {
            var interfaces = s.Interfaces.Where(i => i.OrderedVm is null).Select(i => new InterfaceDecl(i.Name, i.Kind,
                i.Mtu == DefaultMtu ? null : i.Mtu, i.Bridge, i.Lan, i.Vms.ToList())).ToList();
            var rules = s.Rules.Where(r => r.Origin == RuleOrigin.User).Select(r => r.ToRule())
                .Where(r => !NamesUnknownLink(r, names)).Select(RuleDecl.From).ToList();
            daemons.Add(new DaemonDecl(s.Name, s.Role,
                listen.GetValueOrDefault(s.Name), interfaces, rules));
            foreach (var l in s.Links)
            {
                // A link to a daemon the Proxy cannot reach (its host is down) cannot be described, nor
                // can the rules that name it: the description would name a daemon it does not declare.
                // Adaptation's links come and go with the traffic; a description is the user's overlay.
                if (l.Origin == RuleOrigin.Adaptation || l.Dial is null || !IPEndPoint.TryParse(l.Dial, out var dial) || !names.Contains(l.Peer))
                    continue;
                int? port = listen.TryGetValue(l.Peer, out var peer) && peer.Port == dial.Port ? null : dial.Port;
                links.Add(new LinkDecl(s.Name, l.Peer, l.Transport, port, l.Streams));
            }
        }
        return new OverlayDescription(daemons, links);
    }

    /// <summary>A change set names streams only above 1, so that a link of one stream is the change it always was.</summary>
    private static int? StreamsOf(int streams) => streams > 1 ? streams : null;

    /// <summary>Writes defaults the way the live model does (an MTU of 1500 is no MTU), so they never show as changes.</summary>
    public static OverlayDescription Normalize(OverlayDescription overlay) => overlay with
    {
        Daemons = overlay.Daemons.Select(d => d with
        {
            Interfaces = d.Interfaces.Select(i => i.Mtu == DefaultMtu ? i with { Mtu = null } : i).ToList(),
        }).ToList(),
    };

    /// <summary>The daemon change set for one change of the language.</summary>
    public static IEnumerable<DaemonChange> ToDaemonChanges(Change change, OverlayDescription desired) => change switch
    {
        AddInterface a => [AddInterfaceChange(a.Interface), .. a.Interface.Vms.Select(v => new DaemonChange { Op = ChangeOp.AddVm, Name = a.Interface.Name, Mac = v })],
        RemoveInterface r => [new DaemonChange { Op = ChangeOp.RemoveInterface, Name = r.Name }],
        AddVm v => [new DaemonChange { Op = ChangeOp.AddVm, Name = v.Interface, Mac = v.Mac }],
        RemoveVm v => [new DaemonChange { Op = ChangeOp.RemoveVm, Name = v.Interface, Mac = v.Mac }],
        AddRule r => [RuleChange(ChangeOp.AddRule, r.Rule)],
        RemoveRule r => [RuleChange(ChangeOp.RemoveRule, r.Rule)],
        AddLink l => [new DaemonChange { Op = ChangeOp.AddLink, Peer = l.Peer, Transport = l.Transport, Dial = l.Dial?.ToString(), Streams = StreamsOf(l.Streams) }],
        RemoveLink l => [new DaemonChange { Op = ChangeOp.RemoveLink, Peer = l.Peer }],
        _ => throw new DaemonCommandException($"cannot apply '{change}'"),
    };

    /// <summary>The change set that undoes one change, given the overlay as it was before.</summary>
    public static IEnumerable<DaemonChange> Inverse(Change change, OverlayDescription before)
    {
        switch (change)
        {
            case AddInterface a:
                return [new DaemonChange { Op = ChangeOp.RemoveInterface, Name = a.Interface.Name }];
            case RemoveInterface r:
                var old = before.Daemon(r.Daemon)?.Interface(r.Name) ?? throw new DaemonCommandException($"{r.Daemon} had no interface {r.Name}");
                return ToDaemonChanges(new AddInterface(r.Daemon, old), before);
            case AddVm v:
                return [new DaemonChange { Op = ChangeOp.RemoveVm, Name = v.Interface, Mac = v.Mac }];
            case RemoveVm v:
                return [new DaemonChange { Op = ChangeOp.AddVm, Name = v.Interface, Mac = v.Mac }];
            case AddRule r:
                return [RuleChange(ChangeOp.RemoveRule, r.Rule)];
            case RemoveRule r:
                return [RuleChange(ChangeOp.AddRule, r.Rule)];
            case AddLink l:
                return [new DaemonChange { Op = ChangeOp.RemoveLink, Peer = l.Peer }];
            case RemoveLink l:
                var link = before.LinkBetween(l.Daemon, l.Peer) ?? throw new DaemonCommandException($"{l.Daemon} had no link to {l.Peer}");
                IPEndPoint? dial = null;
                if (link.From == l.Daemon && before.Daemon(l.Peer)?.Address is { } address)
                    dial = new IPEndPoint(address.Address, link.Port ?? address.Port);
                return [new DaemonChange { Op = ChangeOp.AddLink, Peer = l.Peer, Transport = link.Transport, Dial = dial?.ToString(), Streams = dial is null ? null : StreamsOf(link.Streams) }];
            default:
                return [];
        }
    }

    private static DaemonChange AddInterfaceChange(InterfaceDecl i) => new()
    {
        Op = ChangeOp.AddInterface,
        Name = i.Name,
        Kind = i.Kind,
        Mtu = i.Mtu,
        Bridge = i.Bridge,
        Lan = i.Lan,
    };

    private static DaemonChange RuleChange(ChangeOp op, RuleDecl r) => new()
    {
        Op = op,
        Src = r.Source,
        Dst = r.Destination,
        In = r.Ingress,
        To = r.Action,
    };

    /// <summary>The description without the links that join one of <paramref name="daemons"/>, nor the rules that name those links.</summary>
    public static OverlayDescription WithoutLinksTo(OverlayDescription overlay, IReadOnlyCollection<string> daemons)
    {
        ArgumentNullException.ThrowIfNull(overlay);
        ArgumentNullException.ThrowIfNull(daemons);
        return overlay with
        {
            Daemons = overlay.Daemons.Select(d => d with { Rules = d.Rules.Where(r => !daemons.Any(x => r.Uses(PortRef.Link(x)))).ToList() }).ToList(),
            Links = overlay.Links.Where(l => !daemons.Any(l.Involves)).ToList(),
        };
    }

    /// <summary>A rule that sends to or matches on a link to a daemon the dump leaves out (it is not reachable).</summary>
    private static bool NamesUnknownLink(Rule rule, HashSet<string> daemons) =>
        (!rule.Action.IsFlood && rule.Action.Port.Kind == PortKind.Link && !daemons.Contains(rule.Action.Port.Name)) ||
        (rule.Ingress is { Kind: PortKind.Link } i && !daemons.Contains(i.Name));

    private static bool IsAny(IPAddress a) => a.Equals(IPAddress.Any) || a.Equals(IPAddress.IPv6Any);
}
