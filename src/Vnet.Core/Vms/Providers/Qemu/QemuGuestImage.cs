using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Vnet.Vms.Providers.Qemu;

/// <summary>
/// What every QEMU guest boots (the QEMU provider's VMs, the test bed's QemuGuest): the distribution's kernel (linux-image-amd64) and an
/// initramfs made here of busybox-static, that kernel's virtio-net modules (in dependency order) and
/// the guest's /init. Made once per test run and kept under $TMPDIR/vnet-qemu-guest, named by a hash
/// of everything in it, so a later run reuses it and a changed /init or kernel makes a new one; a
/// file deleted under a running test host is made again.
/// </summary>
/// <remarks>
/// A missing package is an error that says which package to install: CI installs them
/// (.ci/run, test.sh), so a skip would only hide a broken install.
/// </remarks>
public sealed class QemuGuestImage
{
    /// <summary>Starts every line the guest prints for the test to read (see <see cref="InitScript"/>).</summary>
    public const string Marker = "VNET-GUEST";

    private const string QemuProgram = "qemu-system-x86_64";
    private const string Busybox = "/bin/busybox";

    /// <summary>The modules that make eth0 of a virtio-net-pci device; their dependencies come along.</summary>
    private static readonly string[] RootModules = ["virtio_pci", "virtio_net"];

    private static readonly Lock Gate = new();
    private static QemuGuestImage? s_image;

    private QemuGuestImage(string qemu, string kernel, string kernelVersion, string initramfs, IReadOnlyList<string> modules)
    {
        Qemu = qemu;
        Kernel = kernel;
        KernelVersion = kernelVersion;
        Initramfs = initramfs;
        Modules = modules;
    }

    public string Qemu { get; }

    /// <summary>/boot/vmlinuz-{version}.</summary>
    public string Kernel { get; }

    public string KernelVersion { get; }

    /// <summary>The gzip-compressed cpio archive.</summary>
    public string Initramfs { get; }

    /// <summary>The modules /init loads, in that order.</summary>
    public IReadOnlyList<string> Modules { get; }

    /// <summary>The image, made on first use (or again when its file is gone); throws saying what to install.</summary>
    public static QemuGuestImage Get()
    {
        lock (Gate)
        {
            if (s_image is null || !File.Exists(s_image.Initramfs))
                s_image = Build();
            return s_image;
        }
    }

    /// <summary>
    /// The guest's whole user space. It prints "VNET-GUEST ..." lines on the console (ttyS0, the
    /// test host reads QEMU's stdout): init, then "dhcp lease IP" or "dhcp failed", then "ready";
    /// from then on it runs each line "ID COMMAND" it reads from the console and answers
    /// "done ID rc=N" after the command's output.
    /// </summary>
    public const string InitScript = """
        #!/bin/busybox sh
        # The guest's init (src/Vnet.Core/Vms/Providers/Qemu/QemuGuestImage.cs).
        /bin/busybox --install -s /bin
        export PATH=/bin
        mount -t proc proc /proc
        mount -t sysfs sysfs /sys
        mount -t devtmpfs devtmpfs /dev
        echo "VNET-GUEST init $(cut -d' ' -f1 /proc/uptime)"
        for m in $(cat /etc/vnet-guest/modules); do
            insmod "/lib/modules/$m.ko" || echo "VNET-GUEST error insmod $m"
        done
        # virtio_net makes eth0 while it loads; this is a bound, not a delay.
        i=0
        while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        ip link set lo up
        ip link set eth0 up || echo "VNET-GUEST error no eth0"
        # Kernel messages from here on would fall into the commands' output.
        echo 1 > /proc/sys/kernel/printk
        # -t 15 -T 2: about 30 s of DISCOVERs, for a daemon that comes up after the guest.
        udhcpc -i eth0 -f -q -n -t 15 -T 2 -s /etc/vnet-guest/udhcpc.sh 2>&1 || echo "VNET-GUEST dhcp failed"
        # Commands come on the console; no echo, so that only their output comes back.
        stty -echo
        echo "VNET-GUEST ready $(cut -d' ' -f1 /proc/uptime)"
        while read -r id cmd; do
            sh -c "$cmd" < /dev/null 2>&1
            echo "VNET-GUEST done $id rc=$?"
        done
        echo "VNET-GUEST console closed"
        poweroff -f
        """;

    /// <summary>busybox udhcpc's script: applies the lease ($mask is the prefix length) and says so.</summary>
    public const string DhcpScript = """
        #!/bin/sh
        case "$1" in
        deconfig)
            ip addr flush dev "$interface"
            ;;
        bound|renew)
            ip addr flush dev "$interface"
            ip addr add "$ip/${mask:-24}" dev "$interface"
            [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
            echo "VNET-GUEST dhcp lease $ip"
            ;;
        esac
        exit 0
        """;

    private static QemuGuestImage Build()
    {
        var qemu = ProcessRunner.Find(QemuProgram)
            ?? throw Missing($"{QemuProgram} is not on PATH", "qemu-system-x86");
        var (version, kernel) = FindKernel();
        if (!File.Exists(Busybox) || !IsStatic(Busybox))
            throw Missing($"{Busybox} is missing or not statically linked", "busybox-static");

        var modules = ResolveModules(version);
        var files = new List<(string Path, byte[] Data, bool Executable)>
        {
            ("/init", Unix(InitScript), true),
            ("/etc/vnet-guest/udhcpc.sh", Unix(DhcpScript), true),
            ("/etc/vnet-guest/modules", Unix(string.Join('\n', modules.Select(m => m.Name)) + "\n"), false),
            ("/bin/busybox", File.ReadAllBytes(Busybox), true),
        };
        files.AddRange(modules.Select(m => ($"/lib/modules/{m.Name}.ko", LoadModule(m.Path), false)));

        var key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(
            string.Join('\n', files.Select(f => f.Path + " " + Convert.ToHexString(SHA256.HashData(f.Data)))))))[..16];
        var directory = Path.Combine(Path.GetTempPath(), "vnet-qemu-guest");
        System.IO.Directory.CreateDirectory(directory);
        var initramfs = Path.Combine(directory, $"initramfs-{version}-{key}.gz");
        if (!File.Exists(initramfs))
        {
            var archive = new CpioArchive();
            foreach (var d in new[] { "/bin", "/dev", "/proc", "/sys", "/tmp", "/etc", "/etc/vnet-guest", "/lib", "/lib/modules" })
                archive.Directory(d);
            // The kernel opens /dev/console for init before anything mounts /dev.
            archive.CharDevice("/dev/console", 5, 1);
            foreach (var (path, data, executable) in files)
                archive.File(path, data, executable);
            // Written aside and renamed, so that a parallel test host never boots half a file.
            var partial = $"{initramfs}.{Environment.ProcessId}.tmp";
            File.WriteAllBytes(partial, archive.ToGzip());
            File.Move(partial, initramfs, overwrite: true);
            // Images of an older /init or kernel are of no more use.
            foreach (var old in System.IO.Directory.EnumerateFiles(directory, "initramfs-*.gz").Where(f => f != initramfs))
                TryDelete(old);
        }
        return new QemuGuestImage(qemu, kernel, version, initramfs, [.. modules.Select(m => m.Name)]);
    }

    private static InvalidOperationException Missing(string what, string package) =>
        new($"QEMU guests need the Debian package {package}: {what}. Install it as root with "
            + "'apt-get install qemu-system-x86 linux-image-amd64 busybox-static' (.ci/run and test.sh do).");

    /// <summary>The newest kernel with both an image in /boot and modules in /lib/modules.</summary>
    private static (string Version, string Kernel) FindKernel()
    {
        var candidates = System.IO.Directory.Exists("/lib/modules")
            ? System.IO.Directory.GetDirectories("/lib/modules").Select(Path.GetFileName).OfType<string>()
                .Where(v => File.Exists($"/boot/vmlinuz-{v}"))
                .OrderByDescending(VersionKey, Comparer<long[]>.Create(CompareVersions))
                .ToList()
            : [];
        if (candidates.Count == 0)
            throw Missing("no /boot/vmlinuz-VERSION with /lib/modules/VERSION", "linux-image-amd64");
        return (candidates[0], $"/boot/vmlinuz-{candidates[0]}");
    }

    private static long[] VersionKey(string version) =>
        [.. version.Split('.', '-', '+', '~').Select(p => long.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : -1)];

    private static int CompareVersions(long[]? a, long[]? b)
    {
        a ??= [];
        b ??= [];
        for (var i = 0; i < Math.Min(a.Length, b.Length); i++)
        {
            if (a[i] != b[i])
                return a[i].CompareTo(b[i]);
        }
        return a.Length.CompareTo(b.Length);
    }

    private sealed record Module(string Name, string Path);

    /// <summary>
    /// <see cref="RootModules"/> and what they depend on (<c>modinfo -F depends</c>), each after its
    /// dependencies: the order insmod needs. Modules built into the kernel are left out.
    /// </summary>
    private static List<Module> ResolveModules(string version)
    {
        var ordered = new List<Module>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        void Visit(string name)
        {
            if (!seen.Add(name))
                return;
            var path = ModInfo(version, "-n", name);
            if (path is "(builtin)" || path.StartsWith("(builtin)", StringComparison.Ordinal))
                return;
            foreach (var dependency in ModInfo(version, "-F", "depends", name).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                Visit(dependency.Replace('-', '_'));
            ordered.Add(new Module(name, path));
        }
        foreach (var root in RootModules)
            Visit(root);
        return ordered;
    }

    private static string ModInfo(string version, params string[] args)
    {
        ProcessResult r;
        try
        {
            r = ProcessRunner.RunAsync(ProcessRunner.Find("modinfo") ?? "modinfo", ["-k", version, .. args], TimeSpan.FromSeconds(30)).GetAwaiter().GetResult();
        }
        catch (Vnet.Daemon.DaemonCommandException e)
        {
            throw Missing($"cannot run modinfo ({e.Message})", "kmod");
        }
        if (!r.Ok)
            throw Missing($"'modinfo -k {version} {string.Join(' ', args)}' failed: {r.Stderr.Trim()}", "linux-image-amd64");
        return r.Stdout.Trim();
    }

    /// <summary>The module's bytes, decompressed: busybox's insmod may not read .ko.xz or .ko.zst.</summary>
    private static byte[] LoadModule(string path)
    {
        if (path.EndsWith(".ko", StringComparison.Ordinal))
            return File.ReadAllBytes(path);
        string? tool = path.EndsWith(".xz", StringComparison.Ordinal) ? "xz"
            : path.EndsWith(".zst", StringComparison.Ordinal) ? "zstd"
            : path.EndsWith(".gz", StringComparison.Ordinal) ? "gzip"
            : null;
        if (tool is null)
            throw new InvalidOperationException($"module {path}: unknown compression");
        using var process = ProcessRunner.Start(ProcessRunner.Find(tool) ?? tool, ["-dc", path], redirectInput: false);
        using var plain = new MemoryStream();
        var errors = process.StandardError.ReadToEndAsync();
        process.StandardOutput.BaseStream.CopyTo(plain);
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            ProcessRunner.Kill(process);
            throw new InvalidOperationException($"decompressing {path} with {tool} took more than 60 s");
        }
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"cannot decompress {path} with {tool}: {errors.GetAwaiter().GetResult().Trim()}");
        return plain.ToArray();
    }

    /// <summary>Whether an ELF executable has no program interpreter (PT_INTERP): runs without a libc.</summary>
    private static bool IsStatic(string path)
    {
        var elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || elf[0] != 0x7F || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F' || elf[4] != 2)
            return false;
        var phoff = (long)BinaryPrimitives.ReadUInt64LittleEndian(elf.AsSpan(0x20));
        var phentsize = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(0x36));
        var phnum = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(0x38));
        for (var i = 0; i < phnum; i++)
        {
            var at = phoff + (long)i * phentsize;
            if (at + 4 > elf.Length)
                return false;
            if (BinaryPrimitives.ReadUInt32LittleEndian(elf.AsSpan((int)at)) == 3)
                return false;
        }
        return true;
    }

    // Scripts must reach the guest with Unix line ends whatever this file was checked out with.
    private static byte[] Unix(string text) => Encoding.UTF8.GetBytes(text.Replace("\r\n", "\n", StringComparison.Ordinal) + (text.EndsWith('\n') ? "" : "\n"));

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
