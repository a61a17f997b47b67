using System.Collections.Concurrent;
using System.Diagnostics;
using Vnet.Frames;
using Vnet.Inference;

namespace Vnet.Daemon;

public sealed partial class VnetDaemon
{
    private readonly LocalTrafficMatrix _matrix = new();
    private readonly ConcurrentDictionary<string, IReadOnlyList<LinkMeasurement>> _measurements = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (long Tx, long Rx, long At)> _linkCounters = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _vttifStop = new();
    private TrafficAggregator? _aggregator;
    private TopologyInference? _inference;
    private IReadOnlyList<PairRate> _smoothed = [];
    private Task? _vttifLoop;

    // VTTIF needs time that never steps back (a wall-clock step would freeze it): a fixed epoch
    // plus the monotonic clock.
    private static readonly DateTimeOffset VttifEpoch = DateTimeOffset.UtcNow;
    private static readonly long VttifStart = Stopwatch.GetTimestamp();

    private static DateTimeOffset VttifNow => VttifEpoch + Stopwatch.GetElapsedTime(VttifStart);

    /// <summary>VTTIF settings of this daemon (the report period on every daemon, the rest on the Proxy).</summary>
    public VttifOptions Vttif => Config.Vttif;

    /// <summary>The Proxy's global matrix, smoothed; empty on a host.</summary>
    public IReadOnlyList<PairRate> SmoothedMatrix => Volatile.Read(ref _smoothed);

    /// <summary>The Proxy's current inferred topology.</summary>
    public InferredTopology InferredTopology => _inference?.Current ?? InferredTopology.Empty;

    public IReadOnlyList<TopologyEvent> TopologyEvents(long since) => _inference?.EventsSince(since) ?? [];

    /// <summary>What every daemon last reported about its links (the Proxy's own included).</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<LinkMeasurement>> LinkMeasurements => _measurements;

    private void StartVttif()
    {
        Switch.Observer = _matrix;
        if (IsProxy)
        {
            _aggregator = new TrafficAggregator(Vttif);
            _inference = new TopologyInference(Vttif);
        }
        _vttifLoop = Task.Run(VttifLoop);
    }

    /// <summary>
    /// Every report period: measure the links; a host sends its matrix and measurements to the
    /// Proxy; the Proxy folds in its own, smooths the global matrix and updates the topology.
    /// </summary>
    private async Task VttifLoop()
    {
        using var timer = new PeriodicTimer(Vttif.ReportPeriod);
        try
        {
            while (await timer.WaitForNextTickAsync(_vttifStop.Token))
            {
                var measurements = MeasureLinks();
                var snapshot = _matrix.Snapshot();
                if (!IsProxy)
                {
                    SendToProxy(new PeerMessage
                    {
                        Type = PeerMessage.Traffic,
                        Matrix = snapshot.Select(e => new TrafficEntry(e.Source.ToString(), e.Destination.ToString(), e.Bytes, e.Frames)).ToList(),
                        Measurements = measurements,
                    });
                    continue;
                }
                _measurements[Name] = measurements;
                _control.Post(() => ProxyTick(snapshot));
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void ProxyTick(List<MatrixEntry> own)
    {
        var now = VttifNow;
        _aggregator!.Report(Name, now, own);
        var smoothed = _aggregator.Tick(now);
        Volatile.Write(ref _smoothed, smoothed);
        var last = _inference!.Events.Count > 0 ? _inference.Events[^1].Id : 0;
        _inference.Update(smoothed, now);
        foreach (var e in _inference.EventsSince(last))
        {
            Log.TopologyChanged(_logger, e.Id, e.Topology.Edges.Count, e.Added, e.Removed);
            OnTopologyChanged(e);
        }
    }

    /// <summary>Proxy: a host's report.</summary>
    private void OnTraffic(string host, PeerMessage message)
    {
        var entries = new List<MatrixEntry>(message.Matrix?.Count ?? 0);
        foreach (var t in message.Matrix ?? [])
        {
            if (MacAddress.TryParse(t.Src, out var src) && MacAddress.TryParse(t.Dst, out var dst))
                entries.Add(new MatrixEntry(src, dst, t.Bytes, t.Frames));
        }
        _aggregator?.Report(host, VttifNow, entries);
        if (message.Measurements is { } m)
            _measurements[host] = m;
    }

    /// <summary>Proxy: a host's star link went down; its pairs decay, and its next report starts afresh.</summary>
    private void ForgetTraffic(string host)
    {
        _aggregator?.Forget(host);
        _measurements.TryRemove(host, out _);
    }

    /// <summary>RTT and throughput of each link over the last period, from its counters.</summary>
    private List<LinkMeasurement> MeasureLinks()
    {
        var list = new List<LinkMeasurement>();
        var now = Stopwatch.GetTimestamp();
        foreach (var port in Links.Links)
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

    /// <summary>Where each VM lives, as the Proxy knows it.</summary>
    public IReadOnlyDictionary<MacAddress, string> Locations => _locations;

    /// <summary>Hook for adaptation: the inferred topology changed (control loop).</summary>
    partial void OnTopologyChanged(TopologyEvent change);

    private async Task StopVttif()
    {
        await _vttifStop.CancelAsync();
        if (_vttifLoop is not null)
            await _vttifLoop;
        _vttifStop.Dispose();
        _matrix.Dispose();
    }
}
