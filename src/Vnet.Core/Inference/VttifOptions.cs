namespace Vnet.Inference;

/// <summary>
/// Settings of traffic inference (VTTIF). The original system published none of these numbers, so
/// each default is chosen here and argued in docs/vttif.md: rates are measured per second, smoothed
/// over a few seconds so that one burst does not redraw the topology, and a new topology must hold
/// for a few seconds more before anything acts on it.
/// </summary>
public sealed record VttifOptions
{
    public static VttifOptions Default { get; } = new();

    /// <summary>How often each daemon reports its cumulative counters to the Proxy (default 1 s).
    /// The aggregator also uses it to tell a late daemon from a silent one.</summary>
    public TimeSpan ReportPeriod { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Time constant tau of the low-pass filter (default 3 s): a tick of length dt moves
    /// the smoothed rate by alpha = 1 - exp(-dt / tau) of the way to the measured rate, so after
    /// one tau a step in traffic shows at 1 - 1/e (63 %) of its size whatever the tick length.</summary>
    public TimeSpan TimeConstant { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>An edge survives pruning when its smoothed rate is at least this fraction of the
    /// strongest edge's (default 0.1).</summary>
    public double PruneThreshold { get; init; } = 0.1;

    /// <summary>Absolute floor in bytes/s (default 10 000): below it no edge, so that when the
    /// network is idle, keep-alives, ARP and DHCP never form a topology of their own.</summary>
    public double MinRate { get; init; } = 10_000;

    /// <summary>Damping (default 3 s): a new edge set must stay unchanged this long before it
    /// replaces the current topology. Events are therefore at least this far apart.</summary>
    public TimeSpan HoldTime { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Cap on directed (source, destination) pairs the aggregator tracks, and on the
    /// entries it takes from one report (default 100 000, a few MB): a misbehaving or hostile
    /// daemon cannot grow the Proxy's memory without bound.</summary>
    public int MaxPairs { get; init; } = 100_000;

    /// <summary>Topology events kept for <see cref="TopologyInference.EventsSince"/> (default 100).</summary>
    public int MaxEvents { get; init; } = 100;

    /// <summary>Throws when a setting makes no sense; the inference types call it on construction.</summary>
    public VttifOptions Validated()
    {
        if (ReportPeriod <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(ReportPeriod), ReportPeriod, "the report period must be positive");
        if (TimeConstant <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(TimeConstant), TimeConstant, "the time constant must be positive");
        if (!(PruneThreshold is >= 0 and <= 1))
            throw new ArgumentOutOfRangeException(nameof(PruneThreshold), PruneThreshold, "the prune threshold is a fraction between 0 and 1");
        if (!(MinRate >= 0) || double.IsInfinity(MinRate))
            throw new ArgumentOutOfRangeException(nameof(MinRate), MinRate, "the minimum rate must be a finite number of bytes/s, 0 or more");
        if (HoldTime < TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(HoldTime), HoldTime, "the hold time cannot be negative");
        if (MaxPairs <= 0)
            throw new ArgumentOutOfRangeException(nameof(MaxPairs), MaxPairs, "the pair cap must be positive");
        if (MaxEvents <= 0)
            throw new ArgumentOutOfRangeException(nameof(MaxEvents), MaxEvents, "the event history must hold at least one event");
        return this;
    }
}
