using Vnet.Frames;

namespace Vnet.Inference;

/// <summary>
/// The Proxy's global traffic matrix: every daemon's cumulative counters turned into rates, summed
/// per directed (source, destination) pair, and smoothed by a first-order low-pass filter.
/// <code>
/// Report(daemon, at, counters)   per pair: delta = counters - previous counters of that daemon
///                                (a counter that went down: a restart, delta = the new value);
///                                bytes and elapsed time pile up until the next tick; a pair the
///                                daemon no longer reports is forgotten (it sent nothing); a
///                                report resumed after skipped ones counts over one period.
/// Tick(now)                      per daemon: rate = piled bytes / piled time (several reports
///                                since the last tick average, so nothing is lost); a daemon with
///                                no report since the last tick but one within 2 report periods is
///                                late: its latest rates stand in; one silent longer counts as 0.
///                                per pair: x = sum of daemons' latest rates,
///                                smoothed += (1 - exp(-dt/tau)) * (x - smoothed), dropped under 1 B/s.
///                                At rest (nothing smoothed, no rate standing, no bytes reported
///                                since the last tick) a tick only takes the time: the same result,
///                                nothing computed or allocated (an idle Proxy ticks every second).
/// </code>
/// Not thread-safe: the Proxy's control loop owns it. Time is always passed in, never read.
/// </summary>
public sealed class TrafficAggregator
{
    /// <summary>A smoothed rate under this (bytes/s) is forgotten, so decayed pairs leave memory.</summary>
    public const double ForgetBelow = 1.0;

    private readonly Dictionary<string, DaemonState> _daemons = new(StringComparer.Ordinal);
    private readonly Dictionary<Directed, double> _smoothed = [];
    private readonly TimeSpan _lateGrace;
    private DateTimeOffset? _lastTick;

    public TrafficAggregator(VttifOptions? options = null)
    {
        Options = (options ?? VttifOptions.Default).Validated();
        _lateGrace = Options.ReportPeriod * 2;
    }

    public VttifOptions Options { get; }

    /// <summary>The smoothed matrix as of the last <see cref="Tick"/>, sorted by source then destination.</summary>
    public IReadOnlyList<PairRate> Current { get; private set; } = [];

    /// <summary>Daemons that have reported and not been forgotten.</summary>
    public IReadOnlyCollection<string> Daemons => _daemons.Keys;

    /// <summary>Reports not newer than the same daemon's previous one (duplicates, reordering): ignored.</summary>
    public long IgnoredReports { get; private set; }

    /// <summary>Entries or pairs left out because of <see cref="VttifOptions.MaxPairs"/>.</summary>
    public long DroppedPairs { get; private set; }

    /// <summary>Ticks that found the matrix at rest (see <see cref="Tick"/>) and so folded nothing.</summary>
    public long RestingTicks { get; private set; }

    /// <summary>
    /// Nothing to fold: no pair smoothed (all decayed and forgotten), no daemon with a rate that
    /// would stand in or bytes reported since the last tick. A tick then leaves the matrix empty.
    /// </summary>
    public bool AtRest
    {
        get
        {
            if (_smoothed.Count > 0)
                return false;
            foreach (var state in _daemons.Values)
            {
                if (state.Rates.Count > 0 || state.PendingBytes.Count > 0)
                    return false;
            }
            return true;
        }
    }

    /// <summary>
    /// Takes one daemon's cumulative counters. The first report of a daemon (or the first after
    /// <see cref="Forget"/>) is only a baseline: nobody knows over what time its counters grew.
    /// A report not newer than the daemon's previous one is ignored. Negative counters count as 0;
    /// a pair listed twice keeps its last entry; frames to oneself are ignored.
    /// <paramref name="resumed"/>: the daemon skipped reports because its counters did not move
    /// (<see cref="ReportGate"/>), so what they moved by happened in the last report period, and
    /// is counted over that period, not over the whole silence (which would dilute a new burst).
    /// </summary>
    public void Report(string daemon, DateTimeOffset at, IReadOnlyList<MatrixEntry> cumulative, bool resumed = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(daemon);
        ArgumentNullException.ThrowIfNull(cumulative);

        var counters = new Dictionary<Directed, Counters>(Math.Min(cumulative.Count, Options.MaxPairs));
        foreach (var e in cumulative)
        {
            if (e.Source == e.Destination)
                continue;
            var key = new Directed(e.Source, e.Destination);
            if (counters.Count >= Options.MaxPairs && !counters.ContainsKey(key))
            {
                DroppedPairs++;
                continue;
            }
            counters[key] = new Counters(Math.Max(0, e.Bytes), Math.Max(0, e.Frames));
        }

        if (!_daemons.TryGetValue(daemon, out var state))
        {
            _daemons[daemon] = new DaemonState { LastAt = at, Counters = counters };
            return;
        }
        if (at <= state.LastAt)
        {
            IgnoredReports++;
            return;
        }

        foreach (var (key, now) in counters)
        {
            // A counter can only go down when the daemon started again from zero (or dropped the
            // pair and met it anew): what it shows now is all it sent since. Checking frames too
            // catches a restart whose byte count has already climbed past the old value.
            var delta = state.Counters.TryGetValue(key, out var before) && now.Bytes >= before.Bytes && now.Frames >= before.Frames
                ? now.Bytes - before.Bytes
                : now.Bytes;
            if (delta <= 0)
                continue;
            if (state.PendingBytes.TryGetValue(key, out var piled))
                state.PendingBytes[key] = piled + delta;
            else if (state.PendingBytes.Count < Options.MaxPairs)
                state.PendingBytes[key] = delta;
            else
                DroppedPairs++;
        }

        // Pairs missing from this report are forgotten: their next appearance counts from zero.
        state.Counters = counters;
        var elapsed = at - state.LastAt;
        state.PendingSeconds += (resumed && elapsed > Options.ReportPeriod ? Options.ReportPeriod : elapsed).TotalSeconds;
        state.LastAt = at;
    }

    /// <summary>Drops a daemon's counters and rates (its link went down): its pairs decay to 0, and
    /// its next report is a fresh baseline, so a restart behind a reconnection is never misread.</summary>
    public bool Forget(string daemon) => _daemons.Remove(daemon);

    /// <summary>
    /// Advances the filter to <paramref name="now"/> and returns the smoothed matrix. The first tick
    /// assumes one report period has passed. A tick not after the previous one changes nothing.
    /// Ticks are meant to run once per report period; faster ticks see most daemons late (their
    /// rates are reused, so the result is the same), slower ticks average several reports per
    /// daemon. A daemon reporting slower than every 2 report periods decays between its reports.
    /// </summary>
    public IReadOnlyList<PairRate> Tick(DateTimeOffset now)
    {
        if (_lastTick is { } last && now <= last)
            return Current;
        var dt = _lastTick is { } previous ? (now - previous).TotalSeconds : Options.ReportPeriod.TotalSeconds;
        _lastTick = now;
        if (AtRest)
        {
            // What the full tick would do: every daemon's reported time is used up (no bytes came
            // with it), no input, nothing to decay. The result is the empty matrix it already was.
            foreach (var state in _daemons.Values)
                state.PendingSeconds = 0;
            RestingTicks++;
            return Current;
        }
        var alpha = -double.ExpM1(-dt / Options.TimeConstant.TotalSeconds);

        var input = new Dictionary<Directed, double>(_smoothed.Count);
        foreach (var state in _daemons.Values)
        {
            if (state.PendingSeconds > 0)
            {
                state.Rates.Clear();
                foreach (var (key, bytes) in state.PendingBytes)
                    state.Rates[key] = bytes / state.PendingSeconds;
                state.PendingBytes.Clear();
                state.PendingSeconds = 0;
            }
            else if (now - state.LastAt > _lateGrace)
            {
                state.Rates.Clear();
            }

            foreach (var (key, rate) in state.Rates)
                input[key] = input.GetValueOrDefault(key) + rate;
        }

        // Pairs that only decay, then pairs with a measurement (new ones start from 0, so a new
        // pair rises along the same step response as any other).
        foreach (var key in _smoothed.Keys.Where(k => !input.ContainsKey(k)).ToList())
            Set(key, _smoothed[key] * (1 - alpha));
        foreach (var (key, x) in input)
        {
            var s = _smoothed.GetValueOrDefault(key);
            Set(key, s + (alpha * (x - s)));
        }

        if (_smoothed.Count > Options.MaxPairs)
        {
            // Keep the strongest: weak pairs matter least to the topology.
            var weakest = _smoothed.OrderBy(p => p.Value).Take(_smoothed.Count - Options.MaxPairs).Select(p => p.Key).ToList();
            foreach (var key in weakest)
                _smoothed.Remove(key);
            DroppedPairs += weakest.Count;
        }

        Current = [.. _smoothed
            .OrderBy(p => p.Key.Source)
            .ThenBy(p => p.Key.Destination)
            .Select(p => new PairRate(p.Key.Source, p.Key.Destination, p.Value))];
        return Current;
    }

    private void Set(Directed key, double value)
    {
        if (value < ForgetBelow)
            _smoothed.Remove(key);
        else
            _smoothed[key] = value;
    }

    private readonly record struct Directed(MacAddress Source, MacAddress Destination);

    private readonly record struct Counters(long Bytes, long Frames);

    private sealed class DaemonState
    {
        public DateTimeOffset LastAt { get; set; }

        /// <summary>The counters of the latest report, the baseline of the next.</summary>
        public Dictionary<Directed, Counters> Counters { get; set; } = [];

        /// <summary>Bytes per pair reported since the last tick, over <see cref="PendingSeconds"/>.</summary>
        public Dictionary<Directed, double> PendingBytes { get; } = [];

        public double PendingSeconds { get; set; }

        /// <summary>The latest rate per pair, the filter's input until the next report.</summary>
        public Dictionary<Directed, double> Rates { get; } = [];
    }
}
