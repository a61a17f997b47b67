using System.Collections.Concurrent;
using System.Diagnostics;
using Vnet.Frames;

namespace Vnet.Vms;

/// <summary>
/// Where the data path hands a newly seen source MAC to the control plane. The switch calls
/// <see cref="OnNewSource"/> for a frame from a learning port whose source it does not know; the
/// gate reports the MAC to the control loop at most once per <see cref="ReportEvery"/> (a VM sends
/// many frames before its rules exist) and never blocks: the frame goes on to the lookup, and the
/// default rule carries it. The loop decides whether the MAC is a VM.
/// <para>Allocates only when a MAC is first seen; tracks at most <see cref="MaxTracked"/> MACs, so a
/// VM that floods made-up source addresses cannot grow the daemon's memory.</para>
/// </summary>
public sealed class LearningGate
{
    public const int MaxTracked = 4096;

    /// <summary>A MAC reported and not learned (refused, or the loop is slow) is reported again after this.</summary>
    public static readonly TimeSpan ReportEvery = TimeSpan.FromSeconds(1);

    private static readonly long ReportTicks = (long)(ReportEvery.TotalSeconds * Stopwatch.Frequency);

    private readonly Action<string, MacAddress> _report;
    private readonly ConcurrentDictionary<ulong, long> _quietUntil = new();
    private string?[] _interfaceByPort = [];
    private long _overflow;

    /// <param name="report">Called on the data-path thread with the interface and the MAC: post it to the loop.</param>
    public LearningGate(Action<string, MacAddress> report) => _report = report;

    /// <summary>Sources not reported because too many MACs were being tracked.</summary>
    public long Overflow => Interlocked.Read(ref _overflow);

    public int Tracked => _quietUntil.Count;

    /// <summary>Publishes which ports learn (port id → interface name); from the control loop.</summary>
    public void SetLearningPorts(IEnumerable<(int Port, string Interface)> ports)
    {
        var index = new string?[64];
        foreach (var (port, name) in ports)
        {
            if (port < 0)
                continue;
            if (port >= index.Length)
                Array.Resize(ref index, port + 64);
            index[port] = name;
        }
        Volatile.Write(ref _interfaceByPort, index);
    }

    /// <summary>Data path: a frame from an unknown source arrived on port <see cref="Frame.IngressPort"/>.</summary>
    public void OnNewSource(Frame frame, MacAddress source)
    {
        var index = Volatile.Read(ref _interfaceByPort);
        var id = frame.IngressPort;
        if ((uint)id >= (uint)index.Length || index[id] is not { } name)
            return;
        var now = Stopwatch.GetTimestamp();
        if (_quietUntil.TryGetValue(source.Value, out var until))
        {
            if (now < until)
                return;
        }
        else if (_quietUntil.Count >= MaxTracked)
        {
            Interlocked.Increment(ref _overflow);
            return;
        }
        _quietUntil[source.Value] = now + ReportTicks;
        _report(name, source);
    }

    /// <summary>Control loop: do not report <paramref name="mac"/> again for <paramref name="quiet"/> (refused, held down).</summary>
    public void Quiet(MacAddress mac, TimeSpan quiet) =>
        _quietUntil[mac.Value] = Stopwatch.GetTimestamp() + (long)(quiet.TotalSeconds * Stopwatch.Frequency);

    /// <summary>Control loop: the MAC was learned (the switch knows it now) or is of no interest any more.</summary>
    public void Forget(MacAddress mac) => _quietUntil.TryRemove(mac.Value, out _);

    /// <summary>Control loop: drops entries whose quiet time is over, so the table holds only live ones.</summary>
    public void Purge()
    {
        var now = Stopwatch.GetTimestamp();
        foreach (var (mac, until) in _quietUntil)
        {
            if (until <= now)
                _quietUntil.TryRemove(new KeyValuePair<ulong, long>(mac, until));
        }
    }
}
