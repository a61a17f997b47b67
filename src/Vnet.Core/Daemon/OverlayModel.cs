using System.Net;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Language;
using Vnet.Links;

namespace Vnet.Daemon;

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
    /// locations, flooding) and adaptation's are not part of it, so dump then apply changes nothing.
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
        var proxy = states.Daemons.FirstOrDefault(d => d.Role == "proxy");
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
            var interfaces = s.Interfaces.Select(i => new InterfaceDecl(i.Name,
                i.Kind == "pcap" ? InterfaceKind.Pcap : InterfaceKind.Tap,
                i.Mtu == DefaultMtu ? null : i.Mtu, i.Bridge, i.Lan,
                i.Vms.Select(MacAddress.Parse).ToList())).ToList();
            var rules = s.Rules.Where(r => r.Origin == "user").Select(ToRule).OfType<Rule>()
                .Where(r => !NamesUnknownLink(r, names)).Select(RuleDecl.From).ToList();
            daemons.Add(new DaemonDecl(s.Name, s.Role == "proxy" ? DaemonRole.Proxy : DaemonRole.Host,
                listen.GetValueOrDefault(s.Name), interfaces, rules));
            foreach (var l in s.Links)
            {
                // A link to a daemon the Proxy cannot reach (its host is down) cannot be described, nor
                // can the rules that name it: the description would name a daemon it does not declare.
                // Adaptation's links come and go with the traffic; a description is the user's overlay.
                if (l.Origin == "adaptation" || l.Dial is null || !IPEndPoint.TryParse(l.Dial, out var dial) || !names.Contains(l.Peer))
                    continue;
                int? port = listen.TryGetValue(l.Peer, out var peer) && peer.Port == dial.Port ? null : dial.Port;
                links.Add(new LinkDecl(s.Name, l.Peer, l.Transport == "udp" ? LinkTransport.Udp : LinkTransport.Tcp, port));
            }
        }
        return new OverlayDescription(daemons, links);
    }

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
        AddInterface a => [AddInterfaceChange(a.Interface), .. a.Interface.Vms.Select(v => new DaemonChange { Op = DaemonChange.AddVm, Name = a.Interface.Name, Mac = v.ToString() })],
        RemoveInterface r => [new DaemonChange { Op = DaemonChange.RemoveInterface, Name = r.Name }],
        AddVm v => [new DaemonChange { Op = DaemonChange.AddVm, Name = v.Interface, Mac = v.Mac.ToString() }],
        RemoveVm v => [new DaemonChange { Op = DaemonChange.RemoveVm, Name = v.Interface, Mac = v.Mac.ToString() }],
        AddRule r => [RuleChange(DaemonChange.AddRule, r.Rule)],
        RemoveRule r => [RuleChange(DaemonChange.RemoveRule, r.Rule)],
        AddLink l => [new DaemonChange { Op = DaemonChange.AddLink, Peer = l.Peer, Transport = Transport(l.Transport), Dial = l.Dial?.ToString() }],
        RemoveLink l => [new DaemonChange { Op = DaemonChange.RemoveLink, Peer = l.Peer }],
        _ => throw new DaemonCommandException($"cannot apply '{change}'"),
    };

    /// <summary>The change set that undoes one change, given the overlay as it was before.</summary>
    public static IEnumerable<DaemonChange> Inverse(Change change, OverlayDescription before)
    {
        switch (change)
        {
            case AddInterface a:
                return [new DaemonChange { Op = DaemonChange.RemoveInterface, Name = a.Interface.Name }];
            case RemoveInterface r:
                var old = before.Daemon(r.Daemon)?.Interface(r.Name) ?? throw new DaemonCommandException($"{r.Daemon} had no interface {r.Name}");
                return ToDaemonChanges(new AddInterface(r.Daemon, old), before);
            case AddVm v:
                return [new DaemonChange { Op = DaemonChange.RemoveVm, Name = v.Interface, Mac = v.Mac.ToString() }];
            case RemoveVm v:
                return [new DaemonChange { Op = DaemonChange.AddVm, Name = v.Interface, Mac = v.Mac.ToString() }];
            case AddRule r:
                return [RuleChange(DaemonChange.RemoveRule, r.Rule)];
            case RemoveRule r:
                return [RuleChange(DaemonChange.AddRule, r.Rule)];
            case AddLink l:
                return [new DaemonChange { Op = DaemonChange.RemoveLink, Peer = l.Peer }];
            case RemoveLink l:
                var link = before.LinkBetween(l.Daemon, l.Peer) ?? throw new DaemonCommandException($"{l.Daemon} had no link to {l.Peer}");
                IPEndPoint? dial = null;
                if (link.From == l.Daemon && before.Daemon(l.Peer)?.Address is { } address)
                    dial = new IPEndPoint(address.Address, link.Port ?? address.Port);
                return [new DaemonChange { Op = DaemonChange.AddLink, Peer = l.Peer, Transport = Transport(link.Transport), Dial = dial?.ToString() }];
            default:
                return [];
        }
    }

    private static DaemonChange AddInterfaceChange(InterfaceDecl i) => new()
    {
        Op = DaemonChange.AddInterface,
        Name = i.Name,
        Kind = i.Kind == InterfaceKind.Pcap ? "pcap" : "tap",
        Mtu = i.Mtu,
        Bridge = i.Bridge,
        Lan = i.Lan,
    };

    private static DaemonChange RuleChange(string op, RuleDecl r) => new()
    {
        Op = op,
        Src = r.Source.ToString(),
        Dst = r.Destination.ToString(),
        In = r.Ingress?.ToString(),
        To = r.Action.ToString(),
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

    private static string Transport(LinkTransport t) => t == LinkTransport.Udp ? "udp" : "tcp";

    private static bool IsAny(IPAddress a) => a.Equals(IPAddress.Any) || a.Equals(IPAddress.IPv6Any);

    /// <summary>A rule as a daemon reports it, back as a rule (null when it does not parse).</summary>
    internal static Rule? ToRule(RuleStatus r)
    {
        if (!MacMatch.TryParse(r.Source, out var src) || !MacMatch.TryParse(r.Destination, out var dst))
            return null;
        PortRef? ingress = null;
        if (r.Ingress is not null)
        {
            if (!PortRef.TryParse(r.Ingress, out var i))
                return null;
            ingress = i;
        }
        RuleAction action;
        if (r.Action == "flood")
            action = RuleAction.Flood;
        else if (PortRef.TryParse(r.Action, out var p))
            action = RuleAction.To(p.Value);
        else
            return null;
        var origin = Enum.TryParse<RuleOrigin>(r.Origin, ignoreCase: true, out var o) ? o : RuleOrigin.User;
        return new Rule { Id = r.Id, Source = src, Destination = dst, Ingress = ingress, Action = action, Origin = origin };
    }
}
