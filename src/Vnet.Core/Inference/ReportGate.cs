namespace Vnet.Inference;

/// <summary>
/// A host's choice, each report period, whether its VTTIF report is worth sending: an idle host
/// that reported every second cost the Proxy and itself a sealed JSON message and a wake-up each
/// for nothing. It reports when something moved since its last report (its matrix, its links'
/// counters or its set of links), once more after that (a quiet report: the Proxy reads the zero
/// rates at once instead of holding the last ones while the report is "late"), on the first
/// period after a (re)start of its star link (the Proxy's fresh baseline), and at least every
/// <see cref="HeartbeatPeriods"/> periods (the Proxy's RTT of the link stays fresh).
/// <para>A report that follows skipped periods is marked <c>resumed</c>: its counters did not move
/// until the period before it, so the Proxy counts its delta over one period, not over the silence.</para>
/// Not thread-safe: the control loop owns it.
/// </summary>
public sealed class ReportGate
{
    /// <summary>A quiet host still reports this often (in report periods).</summary>
    public const int HeartbeatPeriods = 10;

    private ReportState _sent = new(-1, -1);
    private bool _lastMoved = true;
    private bool _skipped;
    private int _sinceSent;

    /// <summary>
    /// Whether to send this period's report, given the matrix's total frames (cumulative, so it
    /// grows with any traffic), whether any link carried bytes, and the links' shape (how many,
    /// how many with an RTT). <paramref name="resumed"/>: periods were skipped before this one.
    /// </summary>
    public bool ShouldSend(long matrixFrames, bool linksMoved, int linkShape, out bool resumed)
    {
        _sinceSent++;
        var moved = linksMoved || new ReportState(matrixFrames, linkShape) != _sent;
        resumed = _skipped;
        if (moved || _lastMoved || _sinceSent >= HeartbeatPeriods)
            return true;
        _skipped = true;
        return false;
    }

    /// <summary>The report decided on was sent (a report that could not be sent is tried again next period).</summary>
    public void Sent(long matrixFrames, bool linksMoved, int linkShape)
    {
        var state = new ReportState(matrixFrames, linkShape);
        _lastMoved = linksMoved || state != _sent;
        _sent = state;
        _skipped = false;
        _sinceSent = 0;
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
