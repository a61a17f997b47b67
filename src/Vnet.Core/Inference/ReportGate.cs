using System.Diagnostics;

namespace Vnet.Inference;

/// <summary>
/// A host's choice, each report period, whether its VTTIF report is worth sending: an idle host
/// that reported every second cost the Proxy and itself a sealed JSON message and a wake-up each
/// for nothing. It reports when something moved since its last report (its matrix, its links'
/// counters or its set of links), once more after that (a quiet report: the Proxy reads the zero
/// rates at once instead of holding the last ones while the report is "late"), on the first
/// period after a (re)start of its star link (the Proxy's fresh baseline), and when the period
/// crosses a multiple of <see cref="Heartbeat"/> on the monotonic clock since its last report (the
/// Proxy's RTTs of the host's links stay fresh). The heartbeat is the directory's digest heartbeat
/// (30 s), on the same grid: an idle host's report and its digest go out on one wake-up of its
/// clock, and reach the Proxy together.
/// <para>A report that follows skipped periods is marked <c>resumed</c>: its counters did not move
/// until the period before it, so the Proxy counts its delta over one period, not over the silence.</para>
/// Not thread-safe: the control loop owns it.
/// </summary>
public sealed class ReportGate
{
    /// <summary>A quiet host still reports this often unless told otherwise (the digest heartbeat's default).</summary>
    public static readonly TimeSpan DefaultHeartbeat = TimeSpan.FromSeconds(30);

    private readonly long _heartbeatTicks;
    private ReportState _sent = new(-1, -1);
    private long _sentAt = -1;
    private bool _lastMoved = true;
    private bool _skipped;

    public ReportGate(TimeSpan? heartbeat = null)
    {
        Heartbeat = heartbeat ?? DefaultHeartbeat;
        if (Heartbeat <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(heartbeat), Heartbeat, "the heartbeat must be positive");
        _heartbeatTicks = Math.Max(1, (long)(Heartbeat.TotalSeconds * Stopwatch.Frequency));
    }

    /// <summary>A quiet host reports at each multiple of this on the monotonic clock.</summary>
    public TimeSpan Heartbeat { get; }

    /// <summary>
    /// Whether to send this period's report, given the matrix's total frames (cumulative, so it
    /// grows with any traffic), whether any link carried bytes, the links' shape (how many, how
    /// many with an RTT) and the time (Stopwatch ticks). <paramref name="resumed"/>: periods were
    /// skipped before this one.
    /// </summary>
    public bool ShouldSend(long matrixFrames, bool linksMoved, int linkShape, long now, out bool resumed)
    {
        var moved = linksMoved || new ReportState(matrixFrames, linkShape) != _sent;
        var beat = _sentAt < 0 || now / _heartbeatTicks != _sentAt / _heartbeatTicks;
        resumed = _skipped;
        if (moved || _lastMoved || beat)
            return true;
        _skipped = true;
        return false;
    }

    /// <summary>The report decided on was sent at <paramref name="now"/> (a report that could not be sent is tried again next period).</summary>
    public void Sent(long matrixFrames, bool linksMoved, int linkShape, long now)
    {
        var state = new ReportState(matrixFrames, linkShape);
        _lastMoved = linksMoved || state != _sent;
        _sent = state;
        _sentAt = now;
        _skipped = false;
    }

    /// <summary>The star link (re)started: the next period reports whatever it holds.</summary>
    public void Reset()
    {
        _sent = new ReportState(-1, -1);
        _lastMoved = true;
        _skipped = false;
    }

    private readonly record struct ReportState(long MatrixFrames, int LinkShape);
}
