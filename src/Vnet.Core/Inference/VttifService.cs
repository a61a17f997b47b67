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
///     an idle host stays silent but for a heartbeat); the Proxy folds in its own.
///  4. The Proxy smooths the global matrix, infers the topology, and raises a topology change
///     (damped: a pattern switch is one change), which adaptation acts on.
/// </code>
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
    private readonly ReportGate _gate = new();
    private readonly Dictionary<string, IReadOnlyList<LinkMeasurement>> _measurements = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (long Tx, long Rx, long At)> _linkCounters = new(StringComparer.Ordinal);
    private readonly TrafficAggregator? _aggregator;
    private readonly TopologyInference? _inference;
    private IReadOnlyList<PairRate> _smoothed = [];

    public VttifService(DaemonConfig config, VirtualSwitch sw, LinkManager links, PeerChannel peers, ControlLoop loop, ILogger logger)
    {
        _config = config;
        _switch = sw;
        _links = links;
        _peers = peers;
        _loop = loop;
        _logger = logger;
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
        var measurements = MeasureLinks();
        var snapshot = _matrix.Snapshot();
        if (!IsProxy)
        {
            long frames = 0;
            foreach (var e in snapshot)
                frames += e.Frames;
            var (linksMoved, shape) = (false, measurements.Count * 2);
            foreach (var l in measurements)
            {
                linksMoved |= l.TxBytesPerSecond > 0 || l.RxBytesPerSecond > 0;
                shape += l.RttMs is null ? 0 : 1;
            }
            if (!_gate.ShouldSend(frames, linksMoved, shape, out var resumed))
            {
                ReportsSkipped++;
                return;
            }
            var matrix = new List<TrafficEntry>(snapshot.Count);
            foreach (var e in snapshot)
                matrix.Add(new TrafficEntry(e.Source, e.Destination, e.Bytes, e.Frames));
            var report = new PeerMessage { Type = PeerMessageType.Traffic, Matrix = matrix, Measurements = measurements, Resumed = resumed ? true : null };
            if (_peers.Send(_config.ProxyName, report))
            {
                ReportsSent++;
                _gate.Sent(frames, linksMoved, shape);
            }
            return;
        }
        _measurements[Name] = measurements;
        var now = Now;
        _aggregator!.Report(Name, now, snapshot);
        var smoothed = _aggregator.Tick(now);
        Volatile.Write(ref _smoothed, smoothed);
        var last = _inference!.Events.Count > 0 ? _inference.Events[^1].Id : 0;
        _inference.Update(smoothed, now);
        foreach (var e in _inference.EventsSince(last))
        {
            Log.TopologyChanged(_logger, e.Id, e.Topology.Edges.Count, e.Added, e.Removed);
            TopologyChanges++;
            TopologyChanged?.Invoke(e);
        }
    }

    /// <summary>Proxy: a host's report.</summary>
    private void OnTraffic(PeerEnvelope m)
    {
        var entries = new List<MatrixEntry>(m.Message.Matrix?.Count ?? 0);
        foreach (var t in m.Message.Matrix ?? [])
            entries.Add(new MatrixEntry(t.Src, t.Dst, t.Bytes, t.Frames));
        _aggregator!.Report(m.Peer, Now, entries, m.Message.Resumed == true);
        ReportsReceived++;
        if (m.Message.Measurements is { } measured)
            _measurements[m.Peer] = measured;
    }

    /// <summary>RTT and throughput of each link over the last period, from its counters.</summary>
    private List<LinkMeasurement> MeasureLinks()
    {
        var list = new List<LinkMeasurement>();
        var now = Stopwatch.GetTimestamp();
        foreach (var port in _links.Links)
        {
            var c = port.Counters;
            var (tx, rx) = (c.TxBytes, c.RxBytes);
            double txRate = 0, rxRate = 0;
            if (_linkCounters.TryGetValue(port.Peer, out var last))
            {
                var seconds = (now - last.At) / (double)Stopwatch.Frequency;
                if (seconds > 0)
                {
                    txRate = Math.Max(0, tx - last.Tx) / seconds;
                    rxRate = Math.Max(0, rx - last.Rx) / seconds;
                }
            }
            _linkCounters[port.Peer] = (tx, rx, now);
            var rtt = port.Session?.SmoothedRttMicros is long r && r >= 0 ? r / 1000.0 : (double?)null;
            list.Add(new LinkMeasurement(port.Peer, port.Star, rtt, txRate, rxRate));
        }
        return list;
    }

    public void Dispose() => _matrix.Dispose();

    private static partial class Log
    {
        [LoggerMessage(EventId = 60, Level = LogLevel.Information, Message = "Topology change {Id}: {Edges} edges; added [{Added}] removed [{Removed}]")]
        public static partial void TopologyChanged(ILogger logger, long id, int edges, IReadOnlyList<VmPair> added, IReadOnlyList<VmPair> removed);
    }
}
