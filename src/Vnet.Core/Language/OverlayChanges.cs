using System.Text;

namespace Vnet.Language;

/// <summary>The changes of one daemon, in the order they must be applied.</summary>
public sealed class DaemonChanges(string daemon, IReadOnlyList<Change> changes)
{
    public string Daemon { get; } = daemon;

    public IReadOnlyList<Change> Changes { get; } = changes;

    public override string ToString() => $"{Daemon}: {Changes.Count} change(s)";
}

/// <summary>
/// What <see cref="OverlayDiff.Compute"/> found: per daemon, the operations that turn the current
/// overlay into the desired one. Within a daemon: reports, rule removals, link removals, VM
/// removals, interface removals, interface additions, VM additions, link additions, rule additions,
/// so a rule never names a port that is missing at that moment.
/// </summary>
public sealed class OverlayChanges
{
    internal OverlayChanges(IReadOnlyList<DaemonChanges> byDaemon)
    {
        ByDaemon = byDaemon;
        All = [.. byDaemon.SelectMany(d => d.Changes)];
    }

    /// <summary>Daemons with at least one change: the desired description's order, then removed daemons.</summary>
    public IReadOnlyList<DaemonChanges> ByDaemon { get; }

    /// <summary>Every change, daemon after daemon, each daemon's in applying order.</summary>
    public IReadOnlyList<Change> All { get; }

    public bool IsEmpty => All.Count == 0;

    /// <summary>Whether every change can be applied to running daemons (none adds, removes or moves one).</summary>
    public bool IsApplicable => All.All(c => c.IsApplicable);

    /// <summary>The changes of one daemon; empty when it has none.</summary>
    public IReadOnlyList<Change> For(string daemon) =>
        ByDaemon.FirstOrDefault(d => d.Daemon == daemon)?.Changes ?? [];

    /// <summary>
    /// The text <c>vnet topo diff</c> prints: one block per daemon, one <c>+</c>, <c>-</c> or
    /// <c>~</c> line per change; "no changes" when there is nothing to do.
    /// </summary>
    public override string ToString()
    {
        if (IsEmpty)
            return "no changes\n";
        var text = new StringBuilder();
        foreach (var d in ByDaemon)
        {
            text.Append(d.Daemon).Append(":\n");
            foreach (var c in d.Changes)
                text.Append("  ").Append(c.Describe()).Append('\n');
        }
        return text.ToString();
    }
}
