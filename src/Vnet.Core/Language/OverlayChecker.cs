using System.Net;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Language;

/// <summary>
/// The meaning checks a description must pass before anything is applied (the table is in
/// docs/language.md). Every problem is reported, in file order, at the construct at fault; one
/// problem refuses the whole description. The parser runs these after the syntax; models built in
/// code (the generator, a daemon's live state) can be checked the same way.
/// </summary>
public static class OverlayChecker
{
    public const int MinMtu = 576;
    public const int MaxMtu = 65000;

    /// <summary>Linux's IFNAMSIZ less the terminating zero: the longest interface or bridge name.</summary>
    public const int MaxDeviceNameLength = 15;

    public static IReadOnlyList<Diagnostic> Check(OverlayDescription overlay)
    {
        ArgumentNullException.ThrowIfNull(overlay);
        var problems = new List<Diagnostic>();
        void Report(SourceSpan at, string message) => problems.Add(new Diagnostic(at, message));

        var daemons = CheckDaemons(overlay, Report);
        CheckLinks(overlay, daemons, Report);
        var vmOwners = new Dictionary<MacAddress, (string Daemon, string Interface, SourceSpan At)>();
        foreach (var d in overlay.Daemons)
        {
            CheckInterfaces(d, vmOwners, Report);
            CheckRules(overlay, d, Report);
        }
        CheckPathsToProxy(overlay, daemons, Report);

        // OrderBy is stable: problems at one place keep the order the checks found them in.
        return [.. problems.OrderBy(p => p.Span.Line).ThenBy(p => p.Span.Column)];
    }

    private static Dictionary<string, DaemonDecl> CheckDaemons(OverlayDescription overlay, Action<SourceSpan, string> report)
    {
        var byName = new Dictionary<string, DaemonDecl>(StringComparer.Ordinal);
        DaemonDecl? proxy = null;
        foreach (var d in overlay.Daemons)
        {
            if (!Names.IsValid(d.Name))
                report(d.Span, $"'{d.Name}' is not a valid daemon name");
            if (!byName.TryAdd(d.Name, d))
                report(d.Span, $"daemon '{d.Name}' is declared twice{byName[d.Name].Span.LineNote("first at")}");
            if (d.Role == DaemonRole.Proxy)
            {
                if (proxy is null)
                    proxy = d;
                else
                    report(d.Span, $"a second proxy '{d.Name}': an overlay has exactly one (the first is '{proxy.Name}'{AtLine(proxy.Span)})");
            }
            if (d.Address is { Port: 0 })
                report(Or(d.AddressAt, d.Span), $"{d.Name}'s address has port 0: expected a port from 1 to 65535");
        }
        if (proxy is null)
            report(default, "the overlay has no proxy: declare the daemon on the user's LAN with 'proxy NAME at ADDRESS:PORT'");
        return byName;
    }

    private static void CheckLinks(OverlayDescription overlay, Dictionary<string, DaemonDecl> daemons, Action<SourceSpan, string> report)
    {
        var seen = new List<LinkDecl>();
        foreach (var l in overlay.Links)
        {
            var fromKnown = daemons.TryGetValue(l.From, out _);
            var known = daemons.TryGetValue(l.To, out var dialed);
            if (!fromKnown)
                report(Or(l.FromAt, l.Span), $"link from unknown daemon '{l.From}'");
            if (!known)
                report(Or(l.ToAt, l.Span), $"link to unknown daemon '{l.To}'");
            if (l.From == l.To)
            {
                report(l.Span, $"link from {l.From} to itself");
                continue;
            }
            if (seen.FirstOrDefault(s => s.Joins(l.From, l.To)) is { } first)
                report(l.Span, $"a second link between {l.From} and {l.To}{first.Span.LineNote("the first is at")}: one link joins a pair of daemons, whichever dials");
            else
                seen.Add(l);
            if (dialed is { Address: null })
                report(l.Span, $"{l.From} cannot dial {l.To}: {l.To} has no address (give it one with 'at ADDRESS:PORT')");
            if (l.Port is { } port && port is < 1 or > IPEndPoint.MaxPort)
                report(Or(l.PortAt, l.Span), $"port {port} is out of range (1-65535)");
            if (l.Streams is < 1 or > LinkPort.MaxStreams)
                report(Or(l.StreamsAt, l.Span), $"streams {l.Streams} is out of range (1..{LinkPort.MaxStreams})");
        }
    }

    private static void CheckInterfaces(
        DaemonDecl d,
        Dictionary<MacAddress, (string Daemon, string Interface, SourceSpan At)> vmOwners,
        Action<SourceSpan, string> report)
    {
        var names = new Dictionary<string, InterfaceDecl>(StringComparer.Ordinal);
        foreach (var i in d.Interfaces)
        {
            if (!Names.IsValid(i.Name))
                report(i.Span, $"'{i.Name}' is not a valid interface name");
            else if (i.Name.Length > MaxDeviceNameLength)
                report(i.Span, $"interface name '{i.Name}' is longer than {MaxDeviceNameLength} characters (the Linux limit)");
            if (!names.TryAdd(i.Name, i))
                report(i.Span, $"interface '{i.Name}' is declared twice at {d.Name}{names[i.Name].Span.LineNote("first at")}");
            if (i.Mtu is { } mtu && mtu is < MinMtu or > MaxMtu)
                report(Or(i.MtuAt, i.Span), $"MTU {mtu} is out of range ({MinMtu}..{MaxMtu})");
            if (i.Bridge is { } bridge)
            {
                if (i.Kind != InterfaceKind.Tap)
                    report(Or(i.BridgeAt, i.Span), $"'bridge' applies to tap interfaces; {i.Name} is pcap (an existing NIC)");
                else if (!Names.IsValid(bridge) || bridge.Length > MaxDeviceNameLength)
                    report(Or(i.BridgeAt, i.Span), $"'{bridge}' is not a bridge name (at most {MaxDeviceNameLength} letters, digits, '-', '_' or '.')");
            }
            if (i.Lan && d.Role != DaemonRole.Proxy)
                report(Or(i.LanAt, i.Span), $"'lan' applies to the proxy's interfaces only; {d.Name} is a host");
            for (var v = 0; v < i.Vms.Count; v++)
            {
                var mac = i.Vms[v];
                var at = v < i.VmsAt.Count ? i.VmsAt[v] : i.Span;
                if (mac.IsGroup)
                    report(at, $"VM {mac} is a group address, not a VM's");
                else if (vmOwners.TryGetValue(mac, out var owner))
                    report(at, $"VM {mac} is already behind interface {owner.Interface} of {owner.Daemon}{owner.At.LineNote("at")}");
                else
                    vmOwners.Add(mac, (d.Name, i.Name, at));
            }
        }
    }

    private static void CheckRules(OverlayDescription overlay, DaemonDecl d, Action<SourceSpan, string> report)
    {
        var seen = new Dictionary<RuleDecl, RuleDecl>();
        foreach (var r in d.Rules)
        {
            if (r.Source.Kind is not (MacMatchKind.Exact or MacMatchKind.Any))
                report(Or(r.SourceAt, r.Span), $"a rule's source is a MAC address or 'any', not '{r.Source}'");
            else if (r.Source.Kind == MacMatchKind.Exact && r.Source.Address.IsGroup)
                report(Or(r.SourceAt, r.Span), $"source {r.Source.Address} is a group address; frames never come from one");
            if (r.Ingress is { } ingress && PortProblem(overlay, d, ingress) is { } arrival)
                report(Or(r.IngressAt, r.Span), $"unknown arrival port: {arrival}");
            if (!r.Action.IsFlood && PortProblem(overlay, d, r.Action.Port) is { } action)
                report(Or(r.ActionAt, r.Span), $"unreachable action: {action}");
            if (!seen.TryAdd(r, r))
                report(r.Span, $"the same rule twice at {d.Name}{seen[r].Span.LineNote("first at")}");
        }
    }

    /// <summary>Why <paramref name="port"/> does not exist at daemon <paramref name="d"/>, or null.</summary>
    private static string? PortProblem(OverlayDescription overlay, DaemonDecl d, PortRef port)
    {
        if (!Names.IsValid(port.Name))
            return $"'{port.Name}' is not a valid name";
        if (port.Kind == PortKind.Interface)
            return d.Interface(port.Name) is null ? $"{d.Name} has no interface {port.Name}" : null;
        return overlay.LinkBetween(d.Name, port.Name) is null ? $"{d.Name} has no link to {port.Name}" : null;
    }

    /// <summary>Links carry frames both ways whoever dialed, so the path search ignores direction.</summary>
    private static void CheckPathsToProxy(OverlayDescription overlay, Dictionary<string, DaemonDecl> daemons, Action<SourceSpan, string> report)
    {
        var proxy = overlay.Proxy;
        if (proxy is null)
            return;
        var neighbours = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var l in overlay.Links)
        {
            if (!daemons.ContainsKey(l.From) || !daemons.ContainsKey(l.To))
                continue;
            Neighbours(l.From).Add(l.To);
            Neighbours(l.To).Add(l.From);
        }
        var reached = new HashSet<string>(StringComparer.Ordinal) { proxy.Name };
        var queue = new Queue<string>([proxy.Name]);
        while (queue.TryDequeue(out var name))
        {
            foreach (var next in Neighbours(name))
            {
                if (reached.Add(next))
                    queue.Enqueue(next);
            }
        }
        foreach (var d in overlay.Daemons)
        {
            // Each name once: a duplicate declaration is already reported.
            if (!reached.Contains(d.Name) && ReferenceEquals(daemons[d.Name], d))
                report(d.Span, $"{d.Name} has no path to the proxy {proxy.Name}: link it to {proxy.Name} or to a daemon that has one");
        }

        List<string> Neighbours(string name)
        {
            if (!neighbours.TryGetValue(name, out var list))
                neighbours[name] = list = [];
            return list;
        }
    }

    private static SourceSpan Or(SourceSpan precise, SourceSpan fallback) => precise.IsKnown ? precise : fallback;

    private static string AtLine(SourceSpan span) => span.IsKnown ? $" at line {span.Line}" : "";
}
