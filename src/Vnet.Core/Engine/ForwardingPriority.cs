using Vnet.Native;

namespace Vnet.Engine;

/// <summary>Whether the forwarding threads got the priority the daemon asked for.</summary>
public enum ForwardingPriorityResult
{
    /// <summary>Nice 0 was asked: the threads run as every other thread.</summary>
    Normal,

    /// <summary>The forwarding threads run at the nice value asked for.</summary>
    Raised,

    /// <summary>Not permitted (a negative nice needs root or CAP_SYS_NICE): the threads run at nice 0.</summary>
    NotPermitted,
}

/// <summary>
/// The scheduling priority of the threads that forward frames: interface readers, link receivers
/// and link senders. A kernel tunnel does this work in softirq, ahead of every process; a daemon
/// whose forwarding threads compete as equals with the VMs' own threads and the machine's other
/// work drops frames at whichever stage the scheduler leaves behind (a TAP's ring, a link's
/// socket), so by default they run at nice -10, as Open vSwitch runs its datapath daemon
/// (tinc's <c>ProcessPriority</c>, OpenVPN's <c>--nice</c>). The control loop, the clock, the web
/// front and the runtime's own threads stay at the process's priority, so that a flood of control
/// messages cannot take the machine.
/// </summary>
/// <remarks>
/// One value for the process, set by the composition root before any forwarding thread starts
/// (<see cref="Configure"/>); each forwarding thread applies it to itself first
/// (<see cref="ApplyToCurrentThread"/>). On Linux the nice value belongs to a thread, so nothing
/// else changes.
/// </remarks>
public static class ForwardingPriority
{
    /// <summary>Open vSwitch's default for <c>ovs-vswitchd</c>.</summary>
    public const int DefaultNice = -10;

    private static int s_nice;

    /// <summary>The nice value forwarding threads take (0: they are left as they are).</summary>
    public static int Nice => Volatile.Read(ref s_nice);

    /// <summary>
    /// Sets the forwarding threads' nice value (-20..19) and tries it once on the calling thread,
    /// which then gets its own priority back, so that a daemon without the right to raise priority
    /// finds out (and says so) once, not per thread.
    /// </summary>
    public static ForwardingPriorityResult Configure(int nice)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(nice, -20);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(nice, 19);
        if (nice == 0 || !OperatingSystem.IsLinux())
        {
            Volatile.Write(ref s_nice, 0);
            return ForwardingPriorityResult.Normal;
        }
        var tid = LibC.GetThreadId();
        var own = ThreadNice(tid);
        if (LibC.SetPriority(LibC.PRIO_PROCESS, tid, nice) != 0)
        {
            Volatile.Write(ref s_nice, 0);
            return ForwardingPriorityResult.NotPermitted;
        }
        // Lowering one's own priority again is always allowed.
        LibC.SetPriority(LibC.PRIO_PROCESS, tid, own);
        Volatile.Write(ref s_nice, nice);
        return ForwardingPriorityResult.Raised;
    }

    /// <summary>Gives the calling forwarding thread the configured priority; first thing in its loop.</summary>
    public static void ApplyToCurrentThread()
    {
        var nice = Nice;
        if (nice != 0)
            LibC.SetPriority(LibC.PRIO_PROCESS, LibC.GetThreadId(), nice);
    }

    /// <summary>A thread of this process: its nice value (<see cref="ThreadNice(int, int)"/>).</summary>
    public static int ThreadNice(int tid) => ThreadNice(Environment.ProcessId, tid);

    /// <summary>A thread's nice value, from <c>/proc/PID/task/TID/stat</c> (field 19).</summary>
    public static int ThreadNice(int pid, int tid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/task/{tid}/stat");
        // The command name (field 2) is in parentheses and may hold spaces: count from after it.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return int.Parse(fields[16], System.Globalization.CultureInfo.InvariantCulture);
    }
}
