using Vnet.ChangeSets;
using Vnet.Language;

namespace Vnet.Overlay;

/// <summary>What <c>vnet topo apply</c> reports: the change list, and what became of it.</summary>
public sealed record OverlayApplyReport(string Diff, bool DryRun, bool Applied, IReadOnlyList<string> Daemons, string? Error, string? Rollback);

/// <summary>
/// The Proxy's side of the language tools: dump the live overlay, diff a description against it,
/// and apply it.
/// <code>
/// apply: gather every daemon's state -> describe it -> diff with the description -> refuse what
///        cannot be applied (daemons to start or stop, the star) -> per daemon, send its change
///        set (each daemon takes all of it or none) -> if one refuses or does not answer, send
///        the already-changed daemons the inverse of their sets, newest first -> report.
/// </code>
/// A daemon whose answer never came (its star link went down after the set reached it, or it
/// did not answer in time) may have taken its set: its state's version, once it is back (at most
/// <see cref="SettleLimit"/>), tells. Unchanged, it is left as it is; changed, it gets the
/// inverse too, checked against that version. Otherwise it would keep its part while the others
/// are rolled back: a description half applied.
/// Unchanged links and rules are not touched, so traffic on them flows on.
/// </summary>
public static class OverlayApplier
{
    /// <summary>How long an apply waits for a daemon that did not answer to come back (the CLI waits 30 s for the whole apply).</summary>
    public static readonly TimeSpan SettleLimit = TimeSpan.FromSeconds(10);

    public static async Task<OverlayDescription> DumpAsync(OverlayService proxy) =>
        OverlayModel.FromStates(await proxy.GatherStates());

    public static async Task<OverlayApplyReport> ApplyAsync(OverlayService proxy, OverlayDescription desired, bool dryRun)
    {
        var states = await proxy.GatherStates();
        var current = OverlayModel.FromStates(states);
        desired = OverlayModel.Normalize(desired);
        var missing = desired.Daemons.Where(d => current.Daemon(d.Name) is null).Select(d => d.Name).ToList();
        OverlayChanges changes;
        try
        {
            // The live model has no links to daemons it lacks (FromStates): compare like with like,
            // or links and rules that are live would show as changes next to the refusal.
            changes = OverlayDiff.Compute(current, missing.Count == 0 ? desired : OverlayModel.WithoutLinksTo(desired, missing));
        }
        catch (ArgumentException e)
        {
            return new OverlayApplyReport("", dryRun, false, [], e.Message, null);
        }
        var diff = changes.ToString();
        var problem = Refusal(changes, desired, states, missing);
        if (problem is not null || dryRun || changes.IsEmpty)
            return new OverlayApplyReport(diff, dryRun, false, [], problem, null);

        var done = new List<DaemonChanges>();
        foreach (var daemon in changes.ByDaemon)
        {
            var set = daemon.Changes.SelectMany(c => OverlayModel.ToDaemonChanges(c, desired)).ToList();
            // Planned from the state just read: a daemon that changed since refuses rather than
            // take a change set computed against what it no longer is.
            var version = states.Daemons.FirstOrDefault(d => d.Name == daemon.Daemon)?.Version;
            var answer = await proxy.SendChangeSetAsync(daemon.Daemon, set, version);
            if (answer.Error is null)
            {
                done.Add(daemon);
                continue;
            }
            var settled = answer.OutcomeUnknown ? await Settle(proxy, daemon, version, current) : null;
            var rollback = await Rollback(proxy, done, current);
            return new OverlayApplyReport(diff, false, false, done.Select(d => d.Daemon).ToList(),
                answer.OutcomeUnknown ? $"{daemon.Daemon} did not answer its changes: {answer.Error}" : $"{daemon.Daemon} refused its changes: {answer.Error}",
                settled is null ? rollback : done.Count == 0 ? settled : $"{settled}; {rollback}");
        }
        return new OverlayApplyReport(diff, false, true, done.Select(d => d.Daemon).ToList(), null, null);
    }

    private static string? Refusal(OverlayChanges changes, OverlayDescription desired, OverlayStates states, List<string> missing)
    {
        var problems = new List<string>();
        foreach (var name in missing)
        {
            var why = states.Unreachable.FirstOrDefault(u => u.StartsWith(name + ":", StringComparison.Ordinal));
            problems.Add(why is null ? $"{name} is not part of the running overlay (start it first)" : $"{name} is not reachable: {why[(name.Length + 1)..].Trim()}");
        }
        foreach (var c in changes.All.Where(c => !c.IsApplicable && !missing.Contains(c.Daemon)))
            problems.Add(c.ToString());
        // An ordered VM's interface is the VM's (left out of the live model): a description may not
        // declare one of that name, or applying it would take the VM's interface over.
        foreach (var d in desired.Daemons)
        {
            var live = states.Daemons.FirstOrDefault(s => s.Name == d.Name);
            foreach (var i in d.Interfaces)
            {
                if (live?.Interfaces.FirstOrDefault(l => l.Name == i.Name)?.OrderedVm is { } vm)
                    problems.Add($"interface {i.Name} at {d.Name} is VM {vm}'s (made by 'vnet vm'): a description cannot declare it");
            }
        }
        var proxy = desired.Proxy?.Name;
        foreach (var c in changes.All)
        {
            var peer = c switch
            {
                AddLink a => a.Peer,
                RemoveLink r => r.Peer,
                _ => null,
            };
            if (peer is null || proxy is null || (c.Daemon != proxy && peer != proxy))
                continue;
            // A host's star link comes from its own configuration, not from apply.
            var host = c.Daemon == proxy ? peer : c.Daemon;
            var live = states.Daemons.FirstOrDefault(d => d.Name == host)?.Links.FirstOrDefault(l => l.Peer == proxy && l.Star);
            if (live is not null || c is AddLink)
                problems.Add($"{c} (the star link between {host} and {proxy} belongs to {host}'s configuration)");
        }
        return problems.Count == 0 ? null : "cannot apply: " + string.Join("; ", problems.Distinct());
    }

    /// <summary>
    /// A daemon that may or may not have taken its set: once it is back, its version says whether it
    /// changed since the apply read it; if it did, the inverse goes to it, checked against the
    /// version it has now. Says what became of it.
    /// </summary>
    private static async Task<string> Settle(OverlayService proxy, DaemonChanges daemon, string? planned, OverlayDescription before)
    {
        var name = daemon.Daemon;
        var now = await proxy.WaitForVersion(name, SettleLimit);
        if (now is null || planned is null)
            return $"{name} may have taken its changes (not back within {SettleLimit.TotalSeconds:0} s to tell): topo diff shows what it has";
        if (now == planned)
            return $"{name} had not taken its changes";
        var error = await proxy.SendChangeSet(name, Inverse(daemon, before), now);
        return error is null ? $"{name} had taken its changes: rolled back" : $"{name} had changed and could not be rolled back: {error}";
    }

    /// <summary>The change set that undoes a daemon's part, newest change first.</summary>
    private static List<DaemonChange> Inverse(DaemonChanges daemon, OverlayDescription before) =>
        daemon.Changes.Reverse().SelectMany(c => OverlayModel.Inverse(c, before)).ToList();

    private static async Task<string> Rollback(OverlayService proxy, List<DaemonChanges> done, OverlayDescription before)
    {
        var notes = new List<string>();
        for (var i = done.Count - 1; i >= 0; i--)
        {
            var daemon = done[i];
            var error = await proxy.SendChangeSet(daemon.Daemon, Inverse(daemon, before));
            notes.Add(error is null ? $"{daemon.Daemon} rolled back" : $"{daemon.Daemon} could not be rolled back: {error}");
        }
        return notes.Count == 0 ? "no daemon had changed" : string.Join("; ", notes);
    }
}
