namespace Vnet.Daemon;

public sealed partial class VnetDaemon
{
    /// <summary>The daemon's interfaces, links and rules, for the Proxy's dumps, diffs and traces.</summary>
    public DaemonState State()
    {
        var interfaces = _interfaces.Values.OrderBy(i => i.Config.Name, StringComparer.Ordinal).Select(i =>
            new InterfaceState(i.Config.Name, i.Config.Kind.ToString().ToLowerInvariant(), i.Config.Mtu, i.Config.Bridge,
                i.Config.Lan, i.Vms.Keys.Select(m => m.ToString()).Order(StringComparer.Ordinal).ToList())).ToList();
        var links = Links.Links.OrderBy(l => l.Peer, StringComparer.Ordinal).Select(l =>
            new LinkState(l.Peer, (l.Session?.Transport ?? l.Transport).ToString().ToLowerInvariant(), l.Star,
                l.DialAddress?.ToString(), l.IsUp, l.Session?.RemoteEndPoint, l.Origin.ToString().ToLowerInvariant())).ToList();
        var listen = Links.LocalEndPoint?.ToString();
        return new DaemonState(Name, IsProxy ? "proxy" : "host", listen, interfaces, links, ListRules());
    }
}
