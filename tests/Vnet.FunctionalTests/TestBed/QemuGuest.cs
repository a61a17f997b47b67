using System.Globalization;
using System.Text.RegularExpressions;
using Vnet.Vms.Providers.Qemu;

namespace Vnet.Tests.TestBed;

/// <summary>
/// A real virtual machine in a namespace of a <see cref="TestBed"/>: QEMU boots the distribution
/// kernel and the busybox initramfs of <see cref="QemuGuestImage"/> with one virtio-net NIC on a TAP
/// that QEMU makes in that namespace. The guest takes a DHCP lease at boot, then runs the commands
/// the test sends (<see cref="Run"/>).
/// </summary>
/// <remarks>
/// <para>Control is the serial console on QEMU's stdin and stdout (<c>-serial stdio</c>): the
/// console is already there for the kernel's messages, needs no network and no agent in the guest,
/// and QEMU's stdout is a <see cref="BackgroundProcess"/>'s, so the console lands in the bed's log
/// directory and the same bounded <see cref="BackgroundProcess.WaitForOutput"/> reads it. Commands
/// go one line at a time, each answered by a "done ID rc=N" line, so a test can decide what to send
/// from what it saw (e.g. the other guest's lease).</para>
/// <para>Accelerator: KVM when /dev/kvm opens, else TCG. Where /dev/kvm exists but guests hang
/// (nested virtualisation missing), the first guest that does not reach /init under KVM in
/// <see cref="KvmBootLimit"/> is booted again under TCG, and every later one starts with TCG.
/// VNET_QEMU_ACCEL=tcg|kvm forces one.</para>
/// <para>Dispose stops QEMU (its TAP goes with it); the bed stops it too if the test does not.</para>
/// </remarks>
internal sealed partial class QemuGuest : IDisposable
{
    private static readonly TimeSpan TapLimit = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan KvmBootLimit = TimeSpan.FromSeconds(20);
    private static int s_kvmHangs;

    private readonly TestBed _bed;
    private readonly QemuGuestImage _image;
    private readonly int _memoryMb;
    private BackgroundProcess _qemu;
    private int _lastCommand;

    private QemuGuest(TestBed bed, QemuGuestImage image, string ns, string name, string tap, string mac, int memoryMb)
    {
        _bed = bed;
        _image = image;
        Namespace = ns;
        Name = name;
        Tap = tap;
        Mac = mac;
        _memoryMb = memoryMb;
        Accelerator = ChooseAccelerator();
        _qemu = Launch();
    }

    public string Name { get; }

    /// <summary>The namespace QEMU runs in, where its TAP is.</summary>
    public string Namespace { get; }

    /// <summary>QEMU's TAP: the guest's NIC as the namespace sees it (what a daemon opens as kind pcap).</summary>
    public string Tap { get; }

    public string Mac { get; }

    /// <summary>"kvm" or "tcg".</summary>
    public string Accelerator { get; private set; }

    /// <summary>QEMU, whose output is the guest's console (its log: <see cref="BackgroundProcess.LogPath"/>).</summary>
    public BackgroundProcess Process => _qemu;

    public sealed record Result(int ExitCode, string Output)
    {
        public bool Ok => ExitCode == 0;
    }

    /// <summary>
    /// Starts QEMU in <paramref name="ns"/> and returns once its TAP exists and is up (QEMU leaves it
    /// down), not waiting for the guest to boot: a daemon can open the TAP while it does, and several
    /// guests boot in parallel. (Under KVM, not forced, it first waits for /init, a second or two,
    /// to fall back to TCG where KVM does not run guests.)
    /// </summary>
    /// <param name="mac">The guest NIC's address, e.g. 52:54:00:00:00:01.</param>
    public static QemuGuest Start(TestBed bed, string ns, string name, string tap, string mac, int memoryMb = 128)
    {
        ArgumentNullException.ThrowIfNull(bed);
        var image = QemuGuestImage.Get();
        var guest = new QemuGuest(bed, image, ns, name, tap, mac, memoryMb);
        try
        {
            if (guest.Accelerator == "kvm" && Forced() is null && !guest.ReachesInit())
            {
                Interlocked.Exchange(ref s_kvmHangs, 1);
                guest._qemu.Stop(TimeSpan.FromSeconds(2));
                guest.Accelerator = "tcg";
                guest._qemu = guest.Launch();
            }
            guest.WaitForTap();
            return guest;
        }
        catch
        {
            guest.Dispose();
            throw;
        }
    }

    private static string? Forced() => Environment.GetEnvironmentVariable("VNET_QEMU_ACCEL") is "tcg" or "kvm"
        ? Environment.GetEnvironmentVariable("VNET_QEMU_ACCEL")
        : null;

    private static string ChooseAccelerator()
    {
        if (Forced() is { } forced)
            return forced;
        if (Volatile.Read(ref s_kvmHangs) != 0)
            return "tcg";
        try
        {
            using var kvm = new FileStream("/dev/kvm", FileMode.Open, FileAccess.ReadWrite);
            return "kvm";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "tcg";
        }
    }

    private BackgroundProcess Launch()
    {
        string[] args =
        [
            "-name", Name,
            "-accel", Accelerator,
            "-m", _memoryMb.ToString(CultureInfo.InvariantCulture),
            "-nodefaults", "-no-user-config",
            // -nographic without its monitor: the console alone on stdio, so nothing the test
            // writes is taken for a monitor escape (Ctrl-A).
            "-display", "none", "-monitor", "none", "-serial", "stdio",
            // A panic (init ended) ends QEMU rather than rebooting, so a broken guest fails fast.
            "-no-reboot",
            "-kernel", _image.Kernel,
            "-initrd", _image.Initramfs,
            // IPv6 off: no router solicitations or MLD reports among the guest's frames.
            "-append", "console=ttyS0 panic=-1 ipv6.disable=1",
            "-netdev", $"tap,id=n0,ifname={Tap},script=no,downscript=no",
            "-device", $"virtio-net-pci,netdev=n0,mac={Mac}",
        ];
        return _bed.Start(Namespace, Name, _image.Qemu, args, environment: null, input: true);
    }

    private void WaitForTap()
    {
        Wait.Until(() => _qemu.HasExited || _bed.HasInterface(Namespace, Tap), TapLimit, $"QEMU of {Name} to make TAP {Tap}");
        if (_qemu.HasExited)
            throw new InvalidOperationException($"QEMU of {Name} exited ({_qemu.ExitCode}): {Tail()}");
        _bed.Up(Namespace, Tap);
    }

    /// <summary>Whether the guest gets to /init in <see cref="KvmBootLimit"/>, rather than hanging or QEMU ending.</summary>
    private bool ReachesInit()
    {
        try
        {
            _qemu.WaitForOutput(QemuGuestImage.Marker + " init", KvmBootLimit);
            return true;
        }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>
    /// Waits for the outcome of the guest's DHCP at boot and returns the leased address; throws,
    /// with the console's last lines, when it got none.
    /// </summary>
    public string WaitForLease(TimeSpan timeout)
    {
        var line = _qemu.WaitForOutput(QemuGuestImage.Marker + " dhcp", timeout);
        var lease = LeasePattern().Match(line);
        if (!lease.Success)
            throw new InvalidOperationException($"guest {Name} got no DHCP lease: '{line.TrimEnd()}'. {Tail()}");
        return lease.Groups[1].Value;
    }

    /// <summary>
    /// Runs a /bin/sh command line in the guest (stdin /dev/null, stderr with stdout) and returns its
    /// exit code and output. Throws if the guest does not answer within <paramref name="timeout"/>
    /// (which includes waiting for it to finish booting); the command is not stopped then.
    /// </summary>
    public Result Run(string command, TimeSpan timeout)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(command);
        if (command.Contains('\n', StringComparison.Ordinal) || command.Contains('\r', StringComparison.Ordinal))
            throw new ArgumentException("one line only: the guest reads a command per line", nameof(command));
        var deadline = DateTime.UtcNow + timeout;
        _qemu.WaitForOutput(QemuGuestImage.Marker + " ready", timeout);
        var id = Interlocked.Increment(ref _lastCommand);
        var from = _qemu.Lines.Count;
        if (!_qemu.WriteLine($"{id} {command}"))
            throw new InvalidOperationException($"guest {Name} no longer reads its console. {Tail()}");
        var left = deadline - DateTime.UtcNow;
        var done = _qemu.WaitForOutput($"{QemuGuestImage.Marker} done {id} rc=", left > TimeSpan.Zero ? left : TimeSpan.FromMilliseconds(1));
        var lines = _qemu.Lines;
        var end = from;
        while (end < lines.Count && lines[end] != done)
            end++;
        var output = string.Join('\n', lines.Skip(from).Take(end - from).Select(l => l.TrimEnd('\r')));
        var rc = int.Parse(RcPattern().Match(done).Groups[1].Value, CultureInfo.InvariantCulture);
        return new Result(rc, output);
    }

    private string Tail()
    {
        var lines = _qemu.Lines;
        return $"Console ({_qemu.LogPath}), last lines:\n  " + string.Join("\n  ", lines.Skip(Math.Max(0, lines.Count - 25)).Select(l => l.TrimEnd('\r')));
    }

    public void Dispose() => _qemu.Dispose();

    [GeneratedRegex(@"dhcp lease (\d+\.\d+\.\d+\.\d+)")]
    private static partial Regex LeasePattern();

    [GeneratedRegex(@"rc=(\d+)")]
    private static partial Regex RcPattern();
}
