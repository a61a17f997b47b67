using System.Globalization;
using System.Net;
using System.Text;
using Vnet.Configuration;
using Vnet.Forwarding;
using Vnet.Links;

namespace Vnet.Language;

/// <summary>
/// Prints a description in its one canonical form: daemons in model order with a blank line between
/// them, a daemon's interfaces before its rules, interface options as <c>mtu</c>, <c>bridge</c>,
/// <c>lan</c>, the link transport always written, two spaces per level, links last. Empty blocks are
/// left out. Comments are not kept: the model has no place for them.
/// </summary>
public static class OverlayFormatter
{
    private const string Indent = "  ";

    public static string Format(OverlayDescription overlay)
    {
        ArgumentNullException.ThrowIfNull(overlay);
        var text = new StringBuilder();
        for (var i = 0; i < overlay.Daemons.Count; i++)
        {
            if (i > 0)
                text.Append('\n');
            AppendDaemon(text, overlay.Daemons[i]);
        }
        if (overlay.Links.Count > 0 && overlay.Daemons.Count > 0)
            text.Append('\n');
        foreach (var link in overlay.Links)
            text.Append(Line(link)).Append('\n');
        return text.ToString();
    }

    private static void AppendDaemon(StringBuilder text, DaemonDecl daemon)
    {
        text.Append(Header(daemon));
        if (daemon.Interfaces.Count == 0 && daemon.Rules.Count == 0)
        {
            text.Append('\n');
            return;
        }
        text.Append(" {\n");
        foreach (var i in daemon.Interfaces)
        {
            text.Append(Indent).Append(Header(i));
            if (i.Vms.Count == 0)
            {
                text.Append('\n');
                continue;
            }
            text.Append(" {\n");
            foreach (var vm in i.Vms)
                text.Append(Indent).Append(Indent).Append("vm ").Append(vm.ToString()).Append('\n');
            text.Append(Indent).Append("}\n");
        }
        foreach (var r in daemon.Rules)
            text.Append(Indent).Append(Line(r)).Append('\n');
        text.Append("}\n");
    }

    internal static string Header(DaemonDecl daemon)
    {
        var role = daemon.Role == DaemonRole.Proxy ? "proxy" : "host";
        return daemon.Address is null ? $"{role} {daemon.Name}" : $"{role} {daemon.Name} at {Endpoint(daemon.Address)}";
    }

    internal static string Header(InterfaceDecl i)
    {
        var text = new StringBuilder("interface ").Append(i.Name).Append(i.Kind == InterfaceKind.Pcap ? " pcap" : " tap");
        if (i.Mtu is { } mtu)
            text.Append(" mtu ").Append(mtu.ToString(CultureInfo.InvariantCulture));
        if (i.Bridge is not null)
            text.Append(" bridge ").Append(i.Bridge);
        if (i.Lan)
            text.Append(" lan");
        return text.ToString();
    }

    internal static string Line(RuleDecl rule)
    {
        var from = rule.Ingress is { } ingress ? $" from {Port(ingress)}" : "";
        var action = rule.Action.IsFlood ? "flood" : $"to {Port(rule.Action.Port)}";
        return $"rule {rule.Source} -> {rule.Destination}{from} {action}";
    }

    internal static string Line(LinkDecl link)
    {
        var transport = link.Transport == LinkTransport.Udp ? "udp" : "tcp";
        var port = link.Port is { } p ? " port " + p.ToString(CultureInfo.InvariantCulture) : "";
        var streams = link.Streams != 1 ? " streams " + link.Streams.ToString(CultureInfo.InvariantCulture) : "";
        return $"link {link.From} -> {link.To} {transport}{port}{streams}";
    }

    /// <summary>A port as rules write it: <c>link h2</c>, <c>interface tap0</c>.</summary>
    public static string Port(PortRef port) => (port.Kind == PortKind.Link ? "link " : "interface ") + port.Name;

    /// <summary><c>192.0.2.1:5500</c> or <c>[2001:db8::1]:5500</c>, what the parser reads back.</summary>
    public static string Endpoint(IPEndPoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        return endpoint.ToString();
    }
}
