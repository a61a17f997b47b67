using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Engine;
using Vnet.Links;
using Vnet.Peers;

namespace Vnet.Inference;

/// <summary>
/// VTTIF on one daemon: the local traffic matrix the data path fills, the report every period,
/// and on the Proxy the global matrix, its smoothing and the inferred topology. State lives on the
/// control loop; the data path only adds to the local matrix.
/// <code>
/// A VTTIF report:
///  1. Every frame forwarded from a local interface adds its bytes to the local matrix (data path).
///  2. Every report period (a timer on the loop) the daemon measures its links (RTT, throughput)
///     and snapshots the matrix: cumulative counters, so a lost report loses nothing.
///  3. A host sends both to the Proxy over the star (Traffic) when something moved (ReportGate:
///     an idle host stays silent but for a heartbeat, with its digests); the Proxy takes a host's
///     report at its loop's next tick (timed by its arrival) and folds in its own matrix the same
///     way (a gate of its own: only when it moved, and once after).
///  4. The Proxy smooths the global matrix, infers the topology, and raises a topology change
///     (damped: a pattern switch is one change), which adaptation acts on. With nothing reported
///     and nothing left to decay (an idle overlay) both steps return what they had at once.
/// </code>
/// Idle, a tick only reads the links' counters and the matrix's frame total: nothing is
/// snapshotted, sent, folded or inferred, and nothing is allocated but the Proxy's own link
/// measurements.
/// </summary>
public sealed partial class VttifService : IDisposable
{
    // VTTIF needs time that never steps back (a wall-clock step would freeze it): a fixed epoch
    // plus the monotonic clock.
    private static readonly DateTimeOffset Epoch = DateTimeOffset.UtcNow;
    private static readonly long Start0 = Stopwatch.GetTimestamp();

    private readonly DaemonConfig _config;
    private readonly VirtualSwitch _switch;
    private readonly LinkManager _links;
    private readonly PeerChannel _peers;
    private readonly ControlLoop _loop;
    private readonly ILogger _logger;
    private readonly LocalTrafficMatrix _matrix = new();
    private readonly ReportGate _gate;
    private readonly Dictionary<string, IReadOnlyList<LinkMeasurement>> _measurements = new(StringComparer.Ordinal);
    private readonly Dictionary<string, LinkSample> _linkSamples = new(StringComparer.Ordinal);
    private readonly TrafficAggregator? _aggregator;
    private readonly TopologyInference? _inference;
    private IReadOnlyList<PairRate> _smoothed = [];

    /// <param name="heartbeat">How often a quiet host still reports (<see cref="ReportGate"/>): the directory's digest heartbeat, so both go out together.</param>
    public VttifService(DaemonConfig config, VirtualSwitch sw, LinkManager links, PeerChannel peers, ControlLoop loop, ILogger logger, TimeSpan? heartbeat = null)
    {
        _config = config;
        _switch = sw;
        _links = links;
        _peers = peers;
        _loop = loop;
        _logger = logger;
        // A host's gate decides what it sends; the Proxy's, when it folds in its own matrix.
        _gate = new ReportGate(heartbeat);
        if (IsProxy)
        {
            _aggregator = new TrafficAggregator(Options);
            _inference = new TopologyInference(Options);
        }
    }

    private bool IsProxy => _config.Role == DaemonRole.Proxy;

    private string Name => _config.Name;

    private static DateTimeOffset Now => Epoch + Stopwatch.GetElapsedTime(Start0);

    /// <summary>VTTIF settings (the report period on every daemon, the rest on the Proxy).</summary>
    public VttifOptions Options => _config.Vttif;

    /// <summary>The inferred topology changed (Proxy, control loop).</summary>
    public event Action<TopologyEvent>? TopologyChanged;

    /// <summary>The Proxy's global matrix, smoothed; empty on a host. Safe from any thread.</summary>
    public IReadOnlyList<PairRate> SmoothedMatrix => Volatile.Read(ref _smoothed);

    /// <summary>The Proxy's current inferred topology (control loop).</summary>
    public InferredTopology Topology => _inference?.Current ?? InferredTopology.Empty;

    public IReadOnlyList<TopologyEvent> EventsSince(long since) => _inference?.EventsSince(since) ?? [];

    /// <summary>What every daemon last reported about its links, the Proxy's own included (control loop).</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<LinkMeasurement>> LinkMeasurements => _measurements;

    /// <summary>Host: reports sent to the Proxy, since start (control loop, as the two below).</summary>
    public long ReportsSent { get; private set; }

    /// <summary>Host: periods whose report was not sent because nothing moved (<see cref="ReportGate"/>).</summary>
    public long ReportsSkipped { get; private set; }

    /// <summary>Proxy: hosts' reports folded in, since start.</summary>
    public long ReportsReceived { get; private set; }

    /// <summary>Proxy: changes of the inferred topology raised, since start.</summary>
    public long TopologyChanges { get; private set; }

    /// <summary>Proxy: ticks that found nothing to fold or infer (nothing reported, the matrix decayed to nothing).</summary>
    public long RestingTicks => _aggregator?.RestingTicks ?? 0;

    public void Start()
    {
        _switch.Observer = _matrix;
        if (!IsProxy)
        {
            // A new star session: the Proxy forgot this host, so its next report is a baseline.
            _peers.PeerUp += (port, _) =>
            {
                if (port.Star)
                    _gate.Reset();
            };
        }
        if (IsProxy)
        {
            _peers.On(PeerMessageType.Traffic, OnTraffic);
            _peers.PeerDown += (port, _, _) =>
            {
                // A host's pairs decay, and its next report starts afresh.
                if (port.Star)
                {
                    _aggregator!.Forget(port.Peer);
                    _measurements.Remove(port.Peer);
                }
            };
        }
        _loop.Every(Options.ReportPeriod, Tick);
    }

    /// <summary>Every report period: measure, then report (host) or fold in and infer (Proxy).</summary>
    private void Tick()
    {
        var now = Stopwatch.GetTimestamp();
        var (linksMoved, shape) = SampleLinks(now);
        // Cumulative: it grows with any traffic, so the gate sees whether anything moved without a snapshot.
        var frames = _matrix.TotalFrames();
        if (IsProxy)
            FoldAndInfer(frames, now);
        else
            Report(frames, linksMoved, shape, now);
    }

    /// <summary>Host: the report to the Proxy, when the gate says it is worth sending.</summary>
    private void Report(long frames, bool linksMoved, int shape, long now)
    {
        if (!_gate.ShouldSend(frames, linksMoved, shape, now, out var resumed))
        {
            ReportsSkipped++;
            return;
        }
        var snapshot = _matrix.Snapshot();
        var matrix = new List<TrafficEntry>(snapshot.Count);
        foreach (var e in snapshot)
            matrix.Add(new TrafficEntry(e.Source, e.Destination, e.Bytes, e.Frames));
        var report = new PeerMessage { Type = PeerMessageType.Traffic, Matrix = matrix, Measurements = Measurements(), Resumed = resumed ? true : null };
        if (_peers.Send(_config.ProxyName, report))
        {
            ReportsSent++;
            _gate.Sent(frames, linksMoved, shape, now);
        }
    }

    /// <summary>
    /// Proxy: folds in its own matrix (through its gate, as a host's report: when it moved, once
    /// after, and resumed after skipped periods), then smooths and infers. An idle overlay's tick
    /// finds the aggregator and the inference at rest, and they return what they had.
    /// </summary>
    private void FoldAndInfer(long frames, long now)
    {
        _measurements[Name] = Measurements();
        var at = AtTimestamp(now);
        if (_gate.ShouldSend(frames, false, 0, now, out var resumed))
        {
            _aggregator!.Report(Name, at, _matrix.Snapshot(), resumed);
            _gate.Sent(frames, false, 0, now);
        }
        var smoothed = _aggregator!.Tick(at);
        Volatile.Write(ref _smoothed, smoothed);
        var last = _inference!.LastEventId;
        _inference.Update(smoothed, at);
        if (_inference.LastEventId == last)
            return;
        foreach (var e in _inference.EventsSince(last))
        {
            Log.TopologyChanged(_logger, e.Id, e.Topology.Edges.Count, e.Added, e.Removed);
            TopologyChanges++;
            TopologyChanged?.Invoke(e);
        }
    }

    /// <summary>Proxy: a host's report, at the loop's next tick (PeerChannel), timed by its arrival.</summary>
    private void OnTraffic(PeerEnvelope m)
    {
        var entries = new List<MatrixEntry>(m.Message.Matrix?.Count ?? 0);
        foreach (var t in m.Message.Matrix ?? [])
            entries.Add(new MatrixEntry(t.Src, t.Dst, t.Bytes, t.Frames));
        _aggregator!.Report(m.Peer, m.ReceivedAt > 0 ? AtTimestamp(m.ReceivedAt) : Now, entries, m.Message.Resumed == true);
        ReportsReceived++;
        if (m.Message.Measurements is { } measured)
            _measurements[m.Peer] = measured;
    }

    /// <summary>
    /// Each link's throughput over the last period, from its counters (kept for the report), and
    /// whether any link carried bytes and the links' shape (how many, how many with an RTT), for the gate.
    /// </summary>
    private (bool Moved, int Shape) SampleLinks(long now)
    {
        var (moved, shape) = (false, 0);
        foreach (var port in _links.Links)
        {
            var c = port.Counters;
            var (tx, rx) = (c.TxBytes, c.RxBytes);
            double txRate = 0, rxRate = 0;
            if (_linkSamples.TryGetValue(port.Peer, out var last))
            {
                var seconds = (now - last.At) / (double)Stopwatch.Frequency;
                if (seconds > 0)
                {
                    txRate = Math.Max(0, tx - last.Tx) / seconds;
                    rxRate = Math.Max(0, rx - last.Rx) / seconds;
                }
            }
            _linkSamples[port.Peer] = new LinkSample(tx, rx, now, txRate, rxRate);
            moved |= txRate > 0 || rxRate > 0;
            shape += RttOf(port) is null ? 2 : 3;
        }
        return (moved, shape);
    }

    /// <summary>RTT and throughput of each link over the last period, as sampled at this tick.</summary>
    private List<LinkMeasurement> Measurements()
    {
        var list = new List<LinkMeasurement>();
        foreach (var port in _links.Links)
        {
            var sample = _linkSamples.GetValueOrDefault(port.Peer);
            list.Add(new LinkMeasurement(port.Peer, port.Star, RttOf(port), sample.TxRate, sample.RxRate));
        }
        return list;
    }

    private static double? RttOf(LinkPort port) => port.Session?.SmoothedRttMicros is long r && r >= 0 ? r / 1000.0 : null;

    private static DateTimeOffset AtTimestamp(long timestamp) => Epoch + Stopwatch.GetElapsedTime(Start0, timestamp);

    /// <summary>A link's counters at the last tick, and its throughput over the period before it.</summary>
    private readonly record struct LinkSample(long Tx, long Rx, long At, double TxRate, double RxRate);

    public void Dispose() => _matrix.Dispose();

    private static partial class Log
    {
        [LoggerMessage(EventId = 60, Level = LogLevel.Information, Message = "Topology change {Id}: {Edges} edges; added [{Added}] removed [{Removed}]")]
        public static partial void TopologyChanged(ILogger logger, long id, int edges, IReadOnlyList<VmPair> added, IReadOnlyList<VmPair> removed);
    }
}
