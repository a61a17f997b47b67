using System.Net;
using Vnet.Forwarding;

namespace Vnet.Language;

/// <summary>
/// Computes the operations that turn one description into another, per daemon. Daemons, interfaces
/// and link ends are matched by name; rules by value (a rule has no name, only its match and action).
/// <code>
/// 1. A daemon only in desired or current, or whose role changed: AddDaemon / RemoveDaemon (reported;
///    its own interfaces, rules and link ends go with starting or stopping it). A changed address:
///    ChangeDaemonAddress (reported), and the rest of that daemon is compared as usual.
/// 2. Interfaces: gone -> remove; new -> add (with VMs); other settings -> remove + add; same
///    settings -> VMs one by one.
/// 3. Link ends: link A -> B is the end (A, B, t, B's address with the port override) and the end
///    (B, A, t, null). Gone -> remove; new -> add; different transport or dial -> remove + add.
/// 4. Rules: gone -> remove; new -> add; kept but naming a port that step 2 or 3 re-makes -> remove
///    + add, so the port can go while no rule names it.
/// 5. Each daemon's list is sorted by stage (<see cref="ChangeStage"/>), keeping the model order within one.
/// </code>
/// Both descriptions should pass <see cref="OverlayChecker"/>; a link whose dialed daemon is missing
/// or has no address cannot be turned into a dialing end and throws <see cref="ArgumentException"/>.
/// </summary>
public static class OverlayDiff
{
    public static OverlayChanges Compute(OverlayDescription current, OverlayDescription desired)
    {
        ArgumentNullException.ThrowIfNull(current);
        ArgumentNullException.ThrowIfNull(desired);
        var groups = new List<DaemonChanges>();
        foreach (var want in desired.Daemons)
        {
            var have = current.Daemon(want.Name);
            var changes = have is null || have.Role != want.Role
                ? Replaced(have, want)
                : Compare(current, have, desired, want);
            Add(groups, want.Name, changes);
        }
        foreach (var have in current.Daemons)
        {
            if (desired.Daemon(have.Name) is null)
                Add(groups, have.Name, [new RemoveDaemon(have.Name)]);
        }
        return new OverlayChanges(groups);
    }

    private static void Add(List<DaemonChanges> groups, string daemon, List<Change> changes)
    {
        // A name declared twice (an unchecked model) gets one group.
        if (changes.Count == 0 || groups.Any(g => g.Daemon == daemon))
            return;
        groups.Add(new DaemonChanges(daemon, [.. changes.OrderBy(c => c.Stage)]));
    }

    private static List<Change> Replaced(DaemonDecl? have, DaemonDecl want)
    {
        var changes = new List<Change>();
        if (have is not null)
            changes.Add(new RemoveDaemon(have.Name));
        changes.Add(new AddDaemon(want.Name, want.Role, want.Address));
        return changes;
    }

    private static List<Change> Compare(OverlayDescription current, DaemonDecl have, OverlayDescription desired, DaemonDecl want)
    {
        var name = want.Name;
        var changes = new List<Change>();
        if (!Equals(have.Address, want.Address))
            changes.Add(new ChangeDaemonAddress(name, have.Address, want.Address));

        // Ports removed, including those removed to be made again: rules naming them must be redone.
        var remade = new HashSet<PortRef>();

        foreach (var old in have.Interfaces)
        {
            var now = want.Interface(old.Name);
            if (now is null)
            {
                changes.Add(new RemoveInterface(name, old.Name));
                remade.Add(PortRef.Interface(old.Name));
            }
            else if (!old.SameSettings(now))
            {
                changes.Add(new RemoveInterface(name, old.Name));
                changes.Add(new AddInterface(name, now));
                remade.Add(PortRef.Interface(old.Name));
            }
            else
            {
                foreach (var mac in old.Vms.Except(now.Vms))
                    changes.Add(new RemoveVm(name, old.Name, mac));
                foreach (var mac in now.Vms.Except(old.Vms))
                    changes.Add(new AddVm(name, old.Name, mac));
            }
        }
        foreach (var now in want.Interfaces)
        {
            if (have.Interface(now.Name) is null)
                changes.Add(new AddInterface(name, now));
        }

        var oldEnds = LinkEnds(current, name);
        var newEnds = LinkEnds(desired, name);
        foreach (var (peer, old) in oldEnds)
        {
            if (!newEnds.TryGetValue(peer, out var now))
            {
                changes.Add(new RemoveLink(name, peer));
                remade.Add(PortRef.Link(peer));
            }
            else if (old != now)
            {
                changes.Add(new RemoveLink(name, peer));
                changes.Add(now);
                remade.Add(PortRef.Link(peer));
            }
        }
        foreach (var (peer, now) in newEnds)
        {
            if (!oldEnds.ContainsKey(peer))
                changes.Add(now);
        }

        var oldRules = have.Rules.ToHashSet();
        var newRules = want.Rules.ToHashSet();
        foreach (var r in have.Rules)
        {
            if (!newRules.Contains(r) || UsesAny(r, remade))
                changes.Add(new RemoveRule(name, r));
        }
        foreach (var r in want.Rules)
        {
            if (!oldRules.Contains(r) || UsesAny(r, remade))
                changes.Add(new AddRule(name, r));
        }
        return changes;
    }

    private static bool UsesAny(RuleDecl rule, HashSet<PortRef> ports) => ports.Any(rule.Uses);

    /// <summary>The link ends of one daemon, by peer, in model order (an unchecked duplicate: the first wins).</summary>
    private static Dictionary<string, AddLink> LinkEnds(OverlayDescription overlay, string daemon)
    {
        var ends = new Dictionary<string, AddLink>(StringComparer.Ordinal);
        foreach (var l in overlay.Links)
        {
            if (l.From == l.To || !l.Involves(daemon))
                continue;
            var peer = l.PeerOf(daemon);
            if (ends.ContainsKey(peer))
                continue;
            ends.Add(peer, l.From == daemon
                ? new AddLink(daemon, peer, l.Transport, Dial(overlay, l), l.Streams)
                : new AddLink(daemon, peer, l.Transport, null));
        }
        return ends;
    }

    private static IPEndPoint Dial(OverlayDescription overlay, LinkDecl link)
    {
        var address = overlay.Daemon(link.To)?.Address
            ?? throw new ArgumentException($"{link}: {link.To} is unknown or has no address, so {link.From} cannot dial it (check the description first)", nameof(overlay));
        return new IPEndPoint(address.Address, link.Port ?? address.Port);
    }
}
