using System.Net;
using Vnet.Frames;
using Vnet.Links;

namespace Vnet.Language;

/// <summary>
/// One operation at one daemon, as <see cref="OverlayDiff"/> lists them and the daemon side executes
/// them. <see cref="ToString"/> is the line <c>vnet topo diff</c> prints: <c>h1: + link h2 (dials ...)</c>.
/// </summary>
public abstract record Change(string Daemon)
{
    /// <summary>False for what a running daemon cannot do to itself (start, stop, move); only reported.</summary>
    public virtual bool IsApplicable => true;

    /// <summary>Where the change goes in a daemon's list: removals before additions, rules outermost.</summary>
    internal abstract ChangeStage Stage { get; }

    /// <summary>The change without its daemon: <c>+ link h2 (dials 192.0.2.12:5501, udp)</c>.</summary>
    public abstract string Describe();

    public sealed override string ToString() => $"{Daemon}: {Describe()}";

    private protected static string TransportName(LinkTransport t) => t == LinkTransport.Udp ? "udp" : "tcp";
}

/// <summary>The order of a daemon's changes, so that no rule ever names a missing port.</summary>
internal enum ChangeStage
{
    Daemon,
    RemoveRule,
    RemoveLink,
    RemoveVm,
    RemoveInterface,
    AddInterface,
    AddVm,
    AddLink,
    AddRule,
}

/// <summary>Create the interface, with its VMs.</summary>
public sealed record AddInterface(string Daemon, InterfaceDecl Interface) : Change(Daemon)
{
    internal override ChangeStage Stage => ChangeStage.AddInterface;

    public override string Describe() => Interface.Vms.Count == 0
        ? $"+ {Interface}"
        : $"+ {Interface} (vms {string.Join(", ", Interface.Vms)})";
}

/// <summary>Close the interface; its VMs leave with it.</summary>
public sealed record RemoveInterface(string Daemon, string Name) : Change(Daemon)
{
    internal override ChangeStage Stage => ChangeStage.RemoveInterface;

    public override string Describe() => $"- interface {Name}";
}

public sealed record AddVm(string Daemon, string Interface, MacAddress Mac) : Change(Daemon)
{
    internal override ChangeStage Stage => ChangeStage.AddVm;

    public override string Describe() => $"+ vm {Mac} on interface {Interface}";
}

public sealed record RemoveVm(string Daemon, string Interface, MacAddress Mac) : Change(Daemon)
{
    internal override ChangeStage Stage => ChangeStage.RemoveVm;

    public override string Describe() => $"- vm {Mac} on interface {Interface}";
}

public sealed record AddRule(string Daemon, RuleDecl Rule) : Change(Daemon)
{
    internal override ChangeStage Stage => ChangeStage.AddRule;

    public override string Describe() => $"+ {Rule}";
}

public sealed record RemoveRule(string Daemon, RuleDecl Rule) : Change(Daemon)
{
    internal override ChangeStage Stage => ChangeStage.RemoveRule;

    public override string Describe() => $"- {Rule}";
}

/// <summary>
/// One end of a link: <paramref name="Dial"/> is where this daemon dials the peer (the peer's
/// address, with the link's port override); null means the peer dials in and this end waits for it.
/// </summary>
/// <summary>A link end to add; <paramref name="Streams"/> matters to the end that dials (the other answers on what it is dialed).</summary>
public sealed record AddLink(string Daemon, string Peer, LinkTransport Transport, IPEndPoint? Dial, int Streams = 1) : Change(Daemon)
{
    internal override ChangeStage Stage => ChangeStage.AddLink;

    public override string Describe() => Dial is null
        ? $"+ link {Peer} ({Peer} dials in, {TransportName(Transport)})"
        : $"+ link {Peer} (dials {OverlayFormatter.Endpoint(Dial)}, {TransportName(Transport)}{(Streams > 1 ? $", {Streams} streams" : "")})";
}

public sealed record RemoveLink(string Daemon, string Peer) : Change(Daemon)
{
    internal override ChangeStage Stage => ChangeStage.RemoveLink;

    public override string Describe() => $"- link {Peer}";
}

/// <summary>A daemon the description adds: it must be started (with its interfaces and links); reported only.</summary>
public sealed record AddDaemon(string Daemon, DaemonRole Role, IPEndPoint? Address) : Change(Daemon)
{
    public override bool IsApplicable => false;

    internal override ChangeStage Stage => ChangeStage.Daemon;

    public override string Describe()
    {
        var role = Role == DaemonRole.Proxy ? "proxy" : "host";
        var at = Address is null ? "" : $" at {OverlayFormatter.Endpoint(Address)}";
        return $"+ {role} {Daemon}{at} (not applied: start the daemon)";
    }
}

/// <summary>A daemon the description no longer has: it must be stopped; reported only.</summary>
public sealed record RemoveDaemon(string Daemon) : Change(Daemon)
{
    public override bool IsApplicable => false;

    internal override ChangeStage Stage => ChangeStage.Daemon;

    public override string Describe() => $"- daemon {Daemon} (not applied: stop the daemon)";
}

/// <summary>A daemon whose listening address changes: it must be restarted; reported only.</summary>
public sealed record ChangeDaemonAddress(string Daemon, IPEndPoint? Old, IPEndPoint? New) : Change(Daemon)
{
    public override bool IsApplicable => false;

    internal override ChangeStage Stage => ChangeStage.Daemon;

    public override string Describe() =>
        $"~ address {Show(Old)} -> {Show(New)} (not applied: restart the daemon)";

    private static string Show(IPEndPoint? e) => e is null ? "none" : OverlayFormatter.Endpoint(e);
}
