using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Prometheus;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Json;
using Vnet.Links;

namespace Vnet.Metrics;

/// <summary>
/// A daemon's counters in Prometheus form (docs/metrics.md), in a registry of its own (several
/// daemons in one process never mix). Nothing is counted here: at each scrape one item on the
/// control loop reads the counters the daemon keeps anyway, with the reads <c>vnet status</c>,
/// <c>vnet link list</c> and <c>vnet rule list</c> make (volatile reads of the data path's
/// interlocked counters, the loop's own state), and the series are set from that reading off the
/// loop (the registry's before-collect callback). The data path does no work for metrics, and a
/// daemon nobody scrapes does none at all. Scrapes (<see cref="ScrapeAsync"/>, the only way the
/// registry is collected) run one at a time; a loop that does not answer within
/// <see cref="ReadTimeout"/>, or a daemon that is stopping, fails the scrape (HTTP 503).
/// </summary>
// A SemaphoreSlim holds no handle unless its AvailableWaitHandle is asked for: never disposing it
// spares a scrape that ends while the daemon stops from meeting a disposed gate.
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001:Types that own disposable fields should be disposable", Justification = "see above")]
public sealed class DaemonMetrics
{
    /// <summary>Where the metrics are served.</summary>
    public const string Path = "/metrics";

    /// <summary>Prometheus text exposition format 0.0.4.</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>
    /// Rules exported one by one, at most: user and adaptation rules first, then the daemon's own
    /// (a Proxy has one per VM of the overlay), each by id. <c>vnet_rules</c> counts them all.
    /// </summary>
    public const int MaxRuleSeries = 1000;

    /// <summary>How long a scrape waits for the control loop.</summary>
    public static readonly TimeSpan ReadTimeout = TimeSpan.FromSeconds(5);

    private static readonly DropReason[] DropReasons = Enum.GetValues<DropReason>();
    private static readonly OffloadFault[] OffloadFaults = [.. Enum.GetValues<OffloadFault>().Where(f => f != OffloadFault.None)];
    private static readonly RuleOrigin[] Origins = Enum.GetValues<RuleOrigin>();
    private static readonly string[] Interface = ["interface", "kind"];
    private static readonly string[] Link = ["peer", "transport", "star"];

    private readonly VnetDaemon _daemon;
    private readonly SemaphoreSlim _oneScrape = new(1, 1);
    private string? _failure;

    private readonly Gauge _uptime;
    private readonly Counter _loopBusy;
    private readonly Gauge _loopPending;
    private readonly Gauge _buffersCreated;
    private readonly Gauge _buffersAvailable;
    private readonly Counter _forwarded;
    private readonly Counter _drops;
    private readonly Counter _offloadFaults;

    private readonly MirroredSeries<Gauge.Child> _ifUp;
    private readonly MirroredSeries<Gauge.Child> _ifVms;
    private readonly MirroredSeries<Counter.Child> _ifRxFrames;
    private readonly MirroredSeries<Counter.Child> _ifRxBytes;
    private readonly MirroredSeries<Counter.Child> _ifTxFrames;
    private readonly MirroredSeries<Counter.Child> _ifTxBytes;
    private readonly MirroredSeries<Counter.Child> _ifTxDrops;
    private readonly MirroredSeries<Counter.Child> _ifRxErrors;

    private readonly MirroredSeries<Gauge.Child> _linkUp;
    private readonly MirroredSeries<Gauge.Child> _linkRtt;
    private readonly MirroredSeries<Gauge.Child> _linkQueued;
    private readonly MirroredSeries<Counter.Child> _linkSessions;
    private readonly MirroredSeries<Counter.Child> _linkRxFrames;
    private readonly MirroredSeries<Counter.Child> _linkRxBytes;
    private readonly MirroredSeries<Counter.Child> _linkTxFrames;
    private readonly MirroredSeries<Counter.Child> _linkTxBytes;
    private readonly MirroredSeries<Counter.Child> _linkTxDrops;
    private readonly MirroredSeries<Counter.Child> _linkRxErrors;
    private readonly MirroredSeries<Counter.Child> _linkAuthFailures;
    private readonly MirroredSeries<Counter.Child> _linkRekeys;

    private readonly Counter _handshakesRefused;
    private readonly Counter _handshakesLimited;
    private readonly Counter _udpRejected;
    private readonly Counter _udpFaults;

    private readonly Gauge _rules;
    private readonly MirroredSeries<Counter.Child> _ruleFrames;
    private readonly MirroredSeries<Counter.Child> _ruleBytes;

    private readonly Gauge _vmsLocal;
    private readonly Gauge _vmsKnown;
    private readonly Counter _repairs;
    private readonly Counter _learnRefused;

    private readonly Counter _peerTxMessages;
    private readonly Counter _peerTxBytes;
    private readonly Counter _peerRxMessages;
    private readonly Counter _peerRxBytes;
    private readonly Counter _peerBad;
    private readonly Counter _peerFloods;
    private readonly Counter _peerRequestsRefused;
    private readonly Counter _toolSessionsRefused;

    private readonly Counter _vttifSent;
    private readonly Counter _vttifReceived;
    private readonly Counter _vttifResting;
    private readonly Counter _topologyChanges;
    private readonly Counter _adaptation;

    public DaemonMetrics(VnetDaemon daemon)
    {
        ArgumentNullException.ThrowIfNull(daemon);
        _daemon = daemon;
        Registry = Prometheus.Metrics.NewCustomRegistry();
        var f = Prometheus.Metrics.WithCustomRegistry(Registry);
        // Process metrics (CPU, memory, threads, collections): of the process, which in tests holds several daemons.
        DotNetStats.Register(Registry);

        f.CreateGauge("vnet_daemon_info", "The daemon: its name, role and version (value 1).", "name", "role", "version")
            .WithLabels(daemon.Name, EnumText.Of(daemon.Config.Role), VnetDaemon.VersionText).Set(1);
        _uptime = f.CreateGauge("vnet_daemon_uptime_seconds", "Seconds since the daemon started.");
        _loopBusy = f.CreateCounter("vnet_control_loop_busy_seconds_total", "Time the control loop spent running work.");
        _loopPending = f.CreateGauge("vnet_control_loop_pending", "Work items queued on the control loop and not yet started.");
        _buffersCreated = f.CreateGauge("vnet_frame_buffers_created", "Frame buffers the pool has created.");
        _buffersAvailable = f.CreateGauge("vnet_frame_buffers_available", "Frame buffers free in the pool.");
        _forwarded = f.CreateCounter("vnet_switch_forwarded_frames_total", "Frames the switch forwarded.");
        _drops = f.CreateCounter("vnet_switch_dropped_frames_total", "Frames the switch dropped, by reason.", "reason");
        _offloadFaults = f.CreateCounter("vnet_switch_offload_faults_total", "Frames from links refused for their offload header, by the check they failed.", "check");

        _ifUp = Gauges(f, "vnet_interface_up", "Whether the interface is open (1) or not (0).", Interface);
        _ifVms = Gauges(f, "vnet_interface_vms", "VMs the daemon has on the interface.", Interface);
        _ifRxFrames = Counters(f, "vnet_interface_rx_frames_total", "Frames read from the interface.", Interface);
        _ifRxBytes = Counters(f, "vnet_interface_rx_bytes_total", "Bytes of the frames read from the interface.", Interface);
        _ifTxFrames = Counters(f, "vnet_interface_tx_frames_total", "Frames written to the interface.", Interface);
        _ifTxBytes = Counters(f, "vnet_interface_tx_bytes_total", "Bytes of the frames written to the interface.", Interface);
        _ifTxDrops = Counters(f, "vnet_interface_tx_dropped_frames_total", "Frames the interface could not send (down, a write error).", Interface);
        _ifRxErrors = Counters(f, "vnet_interface_rx_errors_total", "Frames that arrived malformed or could not be read.", Interface);

        _linkUp = Gauges(f, "vnet_link_up", "Whether the link has a session (1) or not (0).", Link);
        _linkRtt = Gauges(f, "vnet_link_rtt_seconds", "Smoothed round-trip time of the link's keep-alives (while it has one).", Link);
        _linkQueued = Gauges(f, "vnet_link_queued_frames", "Frames waiting in the link's send queue.", Link);
        _linkSessions = Counters(f, "vnet_link_sessions_started_total", "Sessions the link has had (each reconnection adds one).", Link);
        _linkRxFrames = Counters(f, "vnet_link_rx_frames_total", "Frames received on the link.", Link);
        _linkRxBytes = Counters(f, "vnet_link_rx_bytes_total", "Bytes of the frames received on the link.", Link);
        _linkTxFrames = Counters(f, "vnet_link_tx_frames_total", "Frames sent on the link.", Link);
        _linkTxBytes = Counters(f, "vnet_link_tx_bytes_total", "Bytes of the frames sent on the link.", Link);
        _linkTxDrops = Counters(f, "vnet_link_tx_dropped_frames_total", "Frames the link could not send (down, queue full, a send error).", Link);
        _linkRxErrors = Counters(f, "vnet_link_rx_errors_total", "Messages on the link that arrived malformed.", Link);
        _linkAuthFailures = Counters(f, "vnet_link_session_authentication_failures_total",
            "Sealed messages of the link's current session that did not authenticate (restarts with each session).", Link);
        _linkRekeys = Counters(f, "vnet_link_session_rekeys_total", "Key steps of the link's current session (restarts with each session).", Link);

        _handshakesRefused = f.CreateCounter("vnet_handshakes_refused_total",
            "Inbound link connections closed without a session, by step: init (first message refused before any Diffie-Hellman), " +
            "no_init (no INIT in time, or closed to make room), handshake (after a valid INIT: rate-limited, not admitted, replayed, timed out).", "step");
        _handshakesLimited = f.CreateCounter("vnet_handshakes_rate_limited_total", "Handshakes refused by the per-address limits (a part of step=\"handshake\").");
        _udpRejected = f.CreateCounter("vnet_udp_rejected_datagrams_total", "Datagrams the UDP port refused (no session, not authentic, replayed).");
        _udpFaults = f.CreateCounter("vnet_udp_receive_faults_total", "Datagrams that made the UDP receiver fault.");

        _rules = f.CreateGauge("vnet_rules", "Rules installed, by origin.", "origin");
        _ruleFrames = Counters(f, "vnet_rule_hits_total", $"Frames that matched the rule (at most {MaxRuleSeries} rules exported).", "rule", "origin");
        _ruleBytes = Counters(f, "vnet_rule_hit_bytes_total", "Bytes of the frames that matched the rule.", "rule", "origin");

        _vmsLocal = f.CreateGauge("vnet_vms_local", "VMs on this daemon's interfaces.");
        _vmsKnown = f.CreateGauge("vnet_vms_known", "VMs whose location this daemon knows.");
        _repairs = f.CreateCounter("vnet_directory_repairs_total",
            "Replicas that found themselves wrong and were repaired, by map: vms (VM locations), keys (the Proxy's key list, hosts).", "map");
        _learnRefused = f.CreateCounter("vnet_directory_learn_refused_total", "VMs refused because an interface reached its learning limit.");

        _peerTxMessages = f.CreateCounter("vnet_peer_tx_messages_total", "Control messages sent to other daemons.");
        _peerTxBytes = f.CreateCounter("vnet_peer_tx_bytes_total", "Bytes of the control messages sent to other daemons.");
        _peerRxMessages = f.CreateCounter("vnet_peer_rx_messages_total", "Control messages received from other daemons.");
        _peerRxBytes = f.CreateCounter("vnet_peer_rx_bytes_total", "Bytes of the control messages received from other daemons.");
        _peerBad = f.CreateCounter("vnet_peer_bad_messages_total", "Control messages that did not parse or failed their checks.");
        _peerFloods = f.CreateCounter("vnet_peer_floods_total", "Sessions cut because their link had too much waiting on the control loop.");
        _peerRequestsRefused = f.CreateCounter("vnet_peer_requests_refused_total", "The Proxy's requests answered busy.");
        _toolSessionsRefused = f.CreateCounter("vnet_tool_sessions_refused_total", "Remote CLI sessions refused for want of a slot.");

        _vttifSent = f.CreateCounter("vnet_vttif_reports_sent_total", "Host: traffic reports sent to the Proxy.");
        _vttifReceived = f.CreateCounter("vnet_vttif_reports_received_total", "Proxy: hosts' traffic reports folded in.");
        _vttifResting = f.CreateCounter("vnet_vttif_resting_ticks_total", "Proxy: VTTIF ticks with nothing to fold or infer (an idle overlay).");
        _topologyChanges = f.CreateCounter("vnet_vttif_topology_changes_total", "Proxy: changes of the inferred application topology.");
        _adaptation = f.CreateCounter("vnet_adaptation_actions_total",
            "Proxy: adaptation's actions, by outcome: applied, advised (policy advise), failed (refused, rollback refused, could not plan).", "outcome");

        Registry.AddBeforeCollectCallback(UpdateAsync);
    }

    /// <summary>The daemon's own registry (collected through <see cref="ScrapeAsync"/> only).</summary>
    internal CollectorRegistry Registry { get; }

    /// <summary>Adds <c>GET /metrics</c> to an HTTP server's routes.</summary>
    public void Map(IEndpointRouteBuilder routes) => routes.MapGet(Path, ServeAsync);

    /// <summary>
    /// The exposition, as a scrape gets it. Throws <see cref="ScrapeFailedException"/> with the
    /// reason when the daemon could not be read (stopping, its loop not answering): a failed
    /// reading is never served as the last numbers. Scrapes run one at a time.
    /// </summary>
    public async Task<string> ScrapeAsync(CancellationToken cancellationToken = default)
    {
        await _oneScrape.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // The registry runs UpdateAsync first, and keeps any exception of it to itself (it
            // would serve what it has): UpdateAsync leaves its failure here instead.
            _failure = null;
            using var buffer = new MemoryStream();
            await Registry.CollectAndExportAsTextAsync(buffer, ExpositionFormat.PrometheusText, cancellationToken).ConfigureAwait(false);
            if (Volatile.Read(ref _failure) is { } why)
                throw new ScrapeFailedException(why);
            return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
        }
        finally
        {
            _oneScrape.Release();
        }
    }

    private async Task ServeAsync(HttpContext context)
    {
        string page;
        try
        {
            page = await ScrapeAsync(context.RequestAborted).ConfigureAwait(false);
        }
        catch (ScrapeFailedException e)
        {
            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            context.Response.ContentType = "text/plain; charset=utf-8";
            await context.Response.WriteAsync(e.Message + "\n", context.RequestAborted).ConfigureAwait(false);
            return;
        }
        context.Response.ContentType = ContentType;
        await context.Response.WriteAsync(page, context.RequestAborted).ConfigureAwait(false);
    }

    private static MirroredSeries<Counter.Child> Counters(MetricFactory f, string name, string help, params string[] labels) =>
        MirroredSeries.Of(f.CreateCounter(name, help, labels));

    private static MirroredSeries<Gauge.Child> Gauges(MetricFactory f, string name, string help, params string[] labels) =>
        MirroredSeries.Of(f.CreateGauge(name, help, labels));

    // ---------------------------------------------------------------- scrape time

    /// <summary>The registry's before-collect callback: reads the daemon, then sets the series.</summary>
    private async Task UpdateAsync(CancellationToken cancellationToken)
    {
        try
        {
            Apply(await _daemon.Run(Read).WaitAsync(ReadTimeout, cancellationToken).ConfigureAwait(false));
        }
        catch (TimeoutException)
        {
            Volatile.Write(ref _failure, $"the daemon's control loop did not answer within {ReadTimeout.TotalSeconds:0} s");
        }
        catch (ObjectDisposedException)
        {
            Volatile.Write(ref _failure, "the daemon is stopping");
        }
        catch (OperationCanceledException)
        {
            Volatile.Write(ref _failure, "the scrape was cancelled");
        }
        catch (Exception e)
        {
            // A bug in a read: said, not served as the last numbers (the registry would swallow it).
            Volatile.Write(ref _failure, $"reading the daemon failed: {e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>What a scrape shows, read on the control loop (numbers only: nothing else is done there).</summary>
    private sealed class Reading
    {
        public double Uptime { get; init; }
        public double LoopBusy { get; init; }
        public long LoopPending { get; init; }
        public int BuffersCreated { get; init; }
        public int BuffersAvailable { get; init; }
        public long Forwarded { get; init; }
        public required long[] Drops { get; init; }
        public required long[] OffloadFaults { get; init; }
        public required List<InterfaceReading> Interfaces { get; init; }
        public required List<LinkReading> Links { get; init; }
        public required long[] HandshakesRefused { get; init; }
        public long HandshakesLimited { get; init; }
        public long? UdpRejected { get; init; }
        public long? UdpFaults { get; init; }
        public required int[] RulesByOrigin { get; init; }
        public required List<RuleReading> Rules { get; init; }
        public int VmsLocal { get; init; }
        public int VmsKnown { get; init; }
        public long VmRepairs { get; init; }
        public long KeyRepairs { get; init; }
        public long LearnRefused { get; init; }
        public Peers.PeerTraffic PeerTraffic { get; init; }
        public long PeerBad { get; init; }
        public long PeerFloods { get; init; }
        public long PeerRequestsRefused { get; init; }
        public long ToolSessionsRefused { get; init; }
        public long VttifSent { get; init; }
        public long VttifReceived { get; init; }
        public long VttifResting { get; init; }
        public long TopologyChanges { get; init; }
        public (long Applied, long Advised, long Failed) Adaptation { get; init; }
    }

    private readonly record struct InterfaceReading(InterfacePort Owner, string Name, InterfaceKind Kind, bool Up, int Vms,
        long RxFrames, long RxBytes, long TxFrames, long TxBytes, long TxDrops, long RxErrors);

    private readonly record struct LinkReading(LinkPort Owner, LinkSession? Session, string Peer, LinkTransport Transport, bool Star, bool Up,
        long RttMicros, int Queued, long Sessions, long RxFrames, long RxBytes, long TxFrames, long TxBytes, long TxDrops, long RxErrors,
        long AuthFailures, long Rekeys);

    private readonly record struct RuleReading(RuleStats Owner, long Id, RuleOrigin Origin, long Frames, long Bytes);

    /// <summary>
    /// The rules exported one by one (at most <see cref="MaxRuleSeries"/>: user and adaptation
    /// rules first, then the daemon's own, each by id) and how many there are of each origin.
    /// </summary>
    private static (List<RuleReading> Rules, int[] ByOrigin) ReadRules(IReadOnlyList<RuleEntry> entries)
    {
        var byOrigin = new int[Origins.Length];
        var rules = new List<RuleReading>(Math.Min(entries.Count, MaxRuleSeries));
        foreach (var system in (ReadOnlySpan<bool>)[false, true])
        {
            foreach (var e in entries)
            {
                if ((e.Rule.Origin == RuleOrigin.System) != system)
                    continue;
                byOrigin[Array.IndexOf(Origins, e.Rule.Origin)]++;
                if (rules.Count < MaxRuleSeries)
                    rules.Add(new RuleReading(e.Stats, e.Rule.Id, e.Rule.Origin, e.Stats.Frames, e.Stats.Bytes));
            }
        }
        return (rules, byOrigin);
    }

    /// <summary>Control loop: the reads of <see cref="VnetDaemon.Status"/>, <c>link.list</c>, <c>interface.list</c> and <c>rule.list</c>.</summary>
    private Reading Read()
    {
        var d = _daemon;
        var interfaces = new List<InterfaceReading>(d.Interfaces.Count);
        foreach (var i in d.Interfaces.All)
        {
            var c = i.Port.Counters;
            interfaces.Add(new InterfaceReading(i.Port, i.Name, i.Config.Kind, i.Port.IsUp, d.Vms.CountOn(i.Name),
                c.RxFrames, c.RxBytes, c.TxFrames, c.TxBytes, c.TxDrops, c.RxErrors));
        }
        var links = new List<LinkReading>();
        foreach (var l in d.Links.Links)
        {
            var s = l.Session;
            var c = l.Counters;
            links.Add(new LinkReading(l, s, l.Peer, s?.Transport ?? l.Transport, l.Star, l.IsUp, s?.SmoothedRttMicros ?? -1, s?.QueuedFrames ?? 0,
                l.SessionsStarted, c.RxFrames, c.RxBytes, c.TxFrames, c.TxBytes, c.TxDrops, c.RxErrors, s?.RefusedMessages ?? 0, s?.Rekeys ?? 0));
        }
        var drops = new long[DropReasons.Length];
        for (var i = 0; i < DropReasons.Length; i++)
            drops[i] = d.Switch.Dropped(DropReasons[i]);
        var (rules, rulesByOrigin) = ReadRules(d.Rules.List());
        var faults = new long[OffloadFaults.Length];
        for (var i = 0; i < OffloadFaults.Length; i++)
            faults[i] = d.Switch.OffloadFaults(OffloadFaults[i]);
        return new Reading
        {
            Uptime = d.Uptime.TotalSeconds,
            LoopBusy = d.Loop.BusyTime.TotalSeconds,
            LoopPending = d.Loop.Pending,
            BuffersCreated = d.Pool.Created,
            BuffersAvailable = d.Pool.Available,
            Forwarded = d.Switch.ForwardedFrames,
            Drops = drops,
            OffloadFaults = faults,
            Interfaces = interfaces,
            Links = links,
            HandshakesRefused = [d.Links.InitsRefused, d.Links.ConnectionsWithoutInit, d.Links.HandshakesRefusedAfterInit],
            HandshakesLimited = d.Links.HandshakesLimited,
            UdpRejected = d.Links.Udp?.Rejected,
            UdpFaults = d.Links.Udp?.Faults,
            Rules = rules,
            RulesByOrigin = rulesByOrigin,
            VmsLocal = d.Vms.LocalCount,
            VmsKnown = d.Vms.Locations.Count,
            VmRepairs = d.Vms.Repairs,
            KeyRepairs = d.Keys.Repairs,
            LearnRefused = d.Vms.LearnRefused,
            PeerTraffic = d.Peers.Traffic,
            PeerBad = d.Peers.BadMessages,
            PeerFloods = d.Peers.Floods,
            PeerRequestsRefused = d.Peers.RequestsRefused,
            ToolSessionsRefused = d.ToolSessions.Refused,
            VttifSent = d.Vttif.ReportsSent,
            VttifReceived = d.Vttif.ReportsReceived,
            VttifResting = d.Vttif.RestingTicks,
            TopologyChanges = d.Vttif.TopologyChanges,
            Adaptation = d.Adaptation.ActionCounts,
        };
    }

    /// <summary>Sets the series from a reading (off the loop, one scrape at a time).</summary>
    private void Apply(Reading r)
    {
        _uptime.Set(r.Uptime);
        _loopBusy.IncTo(r.LoopBusy);
        _loopPending.Set(r.LoopPending);
        _buffersCreated.Set(r.BuffersCreated);
        _buffersAvailable.Set(r.BuffersAvailable);
        _forwarded.IncTo(r.Forwarded);
        for (var i = 0; i < DropReasons.Length; i++)
            _drops.WithLabels(DropReasons[i].ToString()).IncTo(r.Drops[i]);
        for (var i = 0; i < OffloadFaults.Length; i++)
            _offloadFaults.WithLabels(OffloadFaults[i].ToString()).IncTo(r.OffloadFaults[i]);

        MirroredSeries<Gauge.Child>[] ifGauges = [_ifUp, _ifVms];
        MirroredSeries<Counter.Child>[] ifCounters = [_ifRxFrames, _ifRxBytes, _ifTxFrames, _ifTxBytes, _ifTxDrops, _ifRxErrors];
        Begin(ifGauges, ifCounters);
        foreach (var i in r.Interfaces)
        {
            string[] labels = [i.Name, EnumText.Of(i.Kind)];
            _ifUp.Set(i.Up ? 1 : 0, i.Owner, labels);
            _ifVms.Set(i.Vms, i.Owner, labels);
            _ifRxFrames.Set(i.RxFrames, i.Owner, labels);
            _ifRxBytes.Set(i.RxBytes, i.Owner, labels);
            _ifTxFrames.Set(i.TxFrames, i.Owner, labels);
            _ifTxBytes.Set(i.TxBytes, i.Owner, labels);
            _ifTxDrops.Set(i.TxDrops, i.Owner, labels);
            _ifRxErrors.Set(i.RxErrors, i.Owner, labels);
        }
        End(ifGauges, ifCounters);

        MirroredSeries<Gauge.Child>[] linkGauges = [_linkUp, _linkRtt, _linkQueued];
        MirroredSeries<Counter.Child>[] linkCounters =
            [_linkSessions, _linkRxFrames, _linkRxBytes, _linkTxFrames, _linkTxBytes, _linkTxDrops, _linkRxErrors, _linkAuthFailures, _linkRekeys];
        Begin(linkGauges, linkCounters);
        foreach (var l in r.Links)
        {
            string[] labels = [l.Peer, EnumText.Of(l.Transport), l.Star ? "true" : "false"];
            _linkUp.Set(l.Up ? 1 : 0, l.Owner, labels);
            if (l.Session is not null && l.RttMicros >= 0)
                _linkRtt.Set(l.RttMicros / 1e6, l.Owner, labels);
            _linkQueued.Set(l.Queued, l.Owner, labels);
            _linkSessions.Set(l.Sessions, l.Owner, labels);
            _linkRxFrames.Set(l.RxFrames, l.Owner, labels);
            _linkRxBytes.Set(l.RxBytes, l.Owner, labels);
            _linkTxFrames.Set(l.TxFrames, l.Owner, labels);
            _linkTxBytes.Set(l.TxBytes, l.Owner, labels);
            _linkTxDrops.Set(l.TxDrops, l.Owner, labels);
            _linkRxErrors.Set(l.RxErrors, l.Owner, labels);
            if (l.Session is { } session)
            {
                _linkAuthFailures.Set(l.AuthFailures, session, labels);
                _linkRekeys.Set(l.Rekeys, session, labels);
            }
        }
        End(linkGauges, linkCounters);

        _handshakesRefused.WithLabels("init").IncTo(r.HandshakesRefused[0]);
        _handshakesRefused.WithLabels("no_init").IncTo(r.HandshakesRefused[1]);
        _handshakesRefused.WithLabels("handshake").IncTo(r.HandshakesRefused[2]);
        _handshakesLimited.IncTo(r.HandshakesLimited);
        if (r.UdpRejected is { } rejected)
            _udpRejected.IncTo(rejected);
        if (r.UdpFaults is { } udpFaults)
            _udpFaults.IncTo(udpFaults);

        for (var i = 0; i < Origins.Length; i++)
            _rules.WithLabels(EnumText.Of(Origins[i])).Set(r.RulesByOrigin[i]);
        _ruleFrames.Begin();
        _ruleBytes.Begin();
        foreach (var rule in r.Rules)
        {
            // A rule's id is never reused and its counters live as long as it does.
            string[] labels = [rule.Id.ToString(CultureInfo.InvariantCulture), EnumText.Of(rule.Origin)];
            _ruleFrames.Set(rule.Frames, rule.Owner, labels);
            _ruleBytes.Set(rule.Bytes, rule.Owner, labels);
        }
        _ruleFrames.End();
        _ruleBytes.End();

        _vmsLocal.Set(r.VmsLocal);
        _vmsKnown.Set(r.VmsKnown);
        _repairs.WithLabels("vms").IncTo(r.VmRepairs);
        _repairs.WithLabels("keys").IncTo(r.KeyRepairs);
        _learnRefused.IncTo(r.LearnRefused);

        _peerTxMessages.IncTo(r.PeerTraffic.MessagesSent);
        _peerTxBytes.IncTo(r.PeerTraffic.BytesSent);
        _peerRxMessages.IncTo(r.PeerTraffic.MessagesReceived);
        _peerRxBytes.IncTo(r.PeerTraffic.BytesReceived);
        _peerBad.IncTo(r.PeerBad);
        _peerFloods.IncTo(r.PeerFloods);
        _peerRequestsRefused.IncTo(r.PeerRequestsRefused);
        _toolSessionsRefused.IncTo(r.ToolSessionsRefused);

        _vttifSent.IncTo(r.VttifSent);
        _vttifReceived.IncTo(r.VttifReceived);
        _vttifResting.IncTo(r.VttifResting);
        _topologyChanges.IncTo(r.TopologyChanges);
        _adaptation.WithLabels("applied").IncTo(r.Adaptation.Applied);
        _adaptation.WithLabels("advised").IncTo(r.Adaptation.Advised);
        _adaptation.WithLabels("failed").IncTo(r.Adaptation.Failed);
    }

    private static void Begin(MirroredSeries<Gauge.Child>[] gauges, MirroredSeries<Counter.Child>[] counters)
    {
        foreach (var g in gauges)
            g.Begin();
        foreach (var c in counters)
            c.Begin();
    }

    private static void End(MirroredSeries<Gauge.Child>[] gauges, MirroredSeries<Counter.Child>[] counters)
    {
        foreach (var g in gauges)
            g.End();
        foreach (var c in counters)
            c.End();
    }
}
