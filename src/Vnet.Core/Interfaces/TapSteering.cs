using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Vnet.Native;

namespace Vnet.Interfaces;

/// <summary>
/// Which queue of a multi-queue TAP the kernel hands a frame to: an eBPF program attached with
/// <c>TUNSETSTEERINGEBPF</c>, which hashes the frame's IP addresses and TCP/UDP/SCTP ports.
/// <code>
/// Why a program: without one the kernel steers by its flow table (tun_automq_select_queue), which
///   records, for each flow, the queue the flow was last WRITTEN on, and sends the flow's frames out
///   of that queue; entries age out after 3 s. The daemon writes every frame on the first queue, so
///   every flow with traffic both ways (all of TCP) would be read on the first queue only, and a
///   flow whose entry appears or ages out changes queue with frames still waiting on the old one
///   (the kernel's own comment: "a very small possibility of OOO during switching"). With a
///   program the table is neither used nor updated: a flow's queue is a function of its headers
///   alone, for as long as the TAP lives, whichever queue the daemon writes on.
/// Hash:  IPv4 and IPv6 (no extension headers): source ^ destination address, each 32-bit word,
///        ^ (source port ^ destination port) for TCP, UDP and SCTP when the packet is not a
///        fragment (fragments after the first carry no ports, so a fragmented datagram is hashed
///        by its addresses alone, all its fragments alike); then the upper 16 bits of the 32-bit
///        product with 0x9E3779B1 (Fibonacci hashing), which the kernel takes modulo the number of
///        queues. Symmetric: both directions of a flow hash alike. Anything else (ARP, VLAN-tagged
///        frames, a frame too short for a field) goes to the first queue.
/// </code>
/// <see cref="Hash"/> computes the same value in C#, for tests and <see cref="MemoryInterface"/>.
/// </summary>
public static unsafe class TapSteering
{
    private const uint Multiplier = 0x9E3779B1;

    /// <summary>The value the program returns for <paramref name="frame"/> (an Ethernet frame).</summary>
    public static int Hash(ReadOnlySpan<byte> frame)
    {
        if (frame.Length < 14)
            return 0;
        uint h;
        int portsAt;
        switch (BinaryPrimitives.ReadUInt16BigEndian(frame[12..]))
        {
            case 0x0800:
            {
                if (frame.Length < 34)
                    return 0;
                h = BinaryPrimitives.ReadUInt32BigEndian(frame[26..]) ^ BinaryPrimitives.ReadUInt32BigEndian(frame[30..]);
                var fragment = (BinaryPrimitives.ReadUInt16BigEndian(frame[20..]) & 0x3fff) != 0;
                portsAt = !fragment && HasPorts(frame[23]) ? 14 + ((frame[14] & 0xf) << 2) : -1;
                break;
            }
            case 0x86dd:
            {
                if (frame.Length < 54)
                    return 0;
                h = 0;
                for (var at = 22; at < 54; at += 4)
                    h ^= BinaryPrimitives.ReadUInt32BigEndian(frame[at..]);
                portsAt = HasPorts(frame[20]) ? 54 : -1;
                break;
            }
            default:
                return 0;
        }
        if (portsAt >= 0)
        {
            // The program's load of a word past the frame's end ends it with 0.
            if (portsAt + 4 > frame.Length)
                return 0;
            var ports = BinaryPrimitives.ReadUInt32BigEndian(frame[portsAt..]);
            h ^= (ports >> 16) ^ (ports & 0xffff);
        }
        return (int)((h * Multiplier) >> 16);
    }

    /// <summary>The queue, of <paramref name="queues"/>, the kernel hands <paramref name="frame"/> to.</summary>
    public static int QueueOf(ReadOnlySpan<byte> frame, int queues) => queues <= 1 ? 0 : (ushort)Hash(frame) % queues;

    private static bool HasPorts(byte protocol) => protocol is 6 or 17 or 132;

    // ------------------------------------------------------------------ the program

    private const byte LdAbsW = 0x20, LdAbsH = 0x28, LdAbsB = 0x30, LdIndW = 0x40;
    private const byte Mov64K = 0xb7, Mov64X = 0xbf, Xor64X = 0xaf, And64K = 0x57, Lsh64K = 0x67, Rsh64K = 0x77;
    private const byte Mul32K = 0x24, Rsh32K = 0x74;
    private const byte JeqK = 0x15, JneK = 0x55, Ja = 0x05, Exit = 0x95;

    [StructLayout(LayoutKind.Sequential)]
    private struct Insn
    {
        public byte Code;
        public byte Regs; // destination in the low nibble, source in the high one
        public short Offset;
        public int Imm;
    }

    /// <summary>The program as eBPF instructions; jumps are resolved from the labels.</summary>
    internal static byte[] Program()
    {
        var code = new List<Insn>();
        var labels = new Dictionary<string, int>(StringComparer.Ordinal);
        var jumps = new List<(int At, string Label)>();
        void Emit(byte op, int dst = 0, int src = 0, int imm = 0) =>
            code.Add(new Insn { Code = op, Regs = (byte)(dst | (src << 4)), Imm = imm });
        void Jump(byte op, string label, int dst = 0, int imm = 0)
        {
            jumps.Add((code.Count, label));
            Emit(op, dst, 0, imm);
        }
        void Label(string name) => labels[name] = code.Count;
        void Xor(int word)
        {
            Emit(LdAbsW, imm: word);
            Emit(Xor64X, 7, 0);
        }
        void PortsIf(string target)
        {
            Jump(JeqK, target, 0, 6);
            Jump(JeqK, target, 0, 17);
            Jump(JeqK, target, 0, 132);
            Jump(Ja, "mix");
        }

        Emit(Mov64X, 6, 1); // LD_ABS and LD_IND read the frame through the context in r6
        Emit(LdAbsH, imm: 12);
        Jump(JeqK, "ipv4", 0, 0x0800);
        Jump(JeqK, "ipv6", 0, 0x86dd);
        Emit(Mov64K, 0, 0, 0);
        Emit(Exit);

        Label("ipv4");
        Emit(LdAbsW, imm: 26);
        Emit(Mov64X, 7, 0);
        Xor(30);
        Emit(LdAbsH, imm: 20);
        Emit(And64K, 0, 0, 0x3fff); // more fragments, fragment offset
        Jump(JneK, "mix", 0, 0);
        Emit(LdAbsB, imm: 23);
        PortsIf("ports4");
        Label("ports4");
        Emit(LdAbsB, imm: 14);
        Emit(And64K, 0, 0, 0xf);
        Emit(Lsh64K, 0, 0, 2);
        Emit(Mov64X, 8, 0);
        Emit(LdIndW, 0, 8, 14); // r0 = the word at 14 + r8: source port << 16 | destination port
        Jump(Ja, "fold");

        Label("ipv6");
        Emit(LdAbsW, imm: 22);
        Emit(Mov64X, 7, 0);
        for (var at = 26; at < 54; at += 4)
            Xor(at);
        Emit(LdAbsB, imm: 20);
        PortsIf("ports6");
        Label("ports6");
        Emit(LdAbsW, imm: 54);

        Label("fold");
        Emit(Mov64X, 8, 0);
        Emit(Rsh64K, 8, 0, 16);
        Emit(And64K, 0, 0, 0xffff);
        Emit(Xor64X, 0, 8);
        Emit(Xor64X, 7, 0);

        Label("mix");
        Emit(Mul32K, 7, 0, unchecked((int)Multiplier));
        Emit(Rsh32K, 7, 0, 16);
        Emit(Mov64X, 0, 7);
        Emit(Exit);

        var insns = code.ToArray();
        foreach (var (at, label) in jumps)
            insns[at].Offset = (short)(labels[label] - at - 1);
        return MemoryMarshal.AsBytes(insns.AsSpan()).ToArray();
    }

    // ------------------------------------------------------------------ loading and attaching

    private const int BPF_PROG_LOAD = 5;
    private const uint BPF_PROG_TYPE_SOCKET_FILTER = 1;
    private const nuint TUNSETSTEERINGEBPF = 0x800454e0;

    /// <summary>Loads the program and attaches it to the TAP behind <paramref name="fd"/> (one of its queues).</summary>
    internal static void Attach(int fd, string device)
    {
        var prog = Load(out var errno, out var log);
        if (prog < 0)
        {
            var why = errno is LibC.EPERM or LibC.EACCES && log.Length == 0
                ? $"{LibC.ErrorText(errno)}: loading it needs CAP_BPF (or CAP_SYS_ADMIN) besides CAP_NET_ADMIN; a TAP with 1 queue needs no program"
                : $"{LibC.ErrorText(errno)}{(log.Length > 0 ? $" (verifier: {log})" : "")}";
            throw new IOException($"cannot load the queue-steering program of {device}: {why}", errno);
        }
        try
        {
            NetDevice.Check(LibC.Ioctl(fd, TUNSETSTEERINGEBPF, &prog), $"attach the queue-steering program to {device}");
        }
        finally
        {
            // The TAP holds its own reference to the program.
            LibC.Close(prog);
        }
    }

    private static int Load(out int errno, out string log)
    {
        var program = Program();
        var license = "GPL\0"u8;
        var name = "vnet_steer\0"u8;
        var logBuffer = new byte[16384];
        fixed (byte* insns = program)
        fixed (byte* lic = license)
        fixed (byte* logp = logBuffer)
        {
            // union bpf_attr for BPF_PROG_LOAD, up to prog_name: the kernel zero-fills the rest.
            var attr = stackalloc byte[64];
            new Span<byte>(attr, 64).Clear();
            *(uint*)attr = BPF_PROG_TYPE_SOCKET_FILTER;
            *(uint*)(attr + 4) = (uint)(program.Length / 8);
            *(ulong*)(attr + 8) = (ulong)insns;
            *(ulong*)(attr + 16) = (ulong)lic;
            name.CopyTo(new Span<byte>(attr + 48, 16));
            var fd = (int)LibC.Syscall(BpfSyscall, BPF_PROG_LOAD, (nint)attr, 64);
            errno = fd < 0 ? LibC.LastError : 0;
            log = "";
            if (fd >= 0 || errno is LibC.EPERM)
                return fd;
            // Again with the verifier's log, for the error message.
            *(uint*)(attr + 24) = 1;
            *(uint*)(attr + 28) = (uint)logBuffer.Length;
            *(ulong*)(attr + 32) = (ulong)logp;
            fd = (int)LibC.Syscall(BpfSyscall, BPF_PROG_LOAD, (nint)attr, 64);
            if (fd >= 0)
                return fd;
            var end = Array.IndexOf(logBuffer, (byte)0);
            log = Encoding.ASCII.GetString(logBuffer, 0, end < 0 ? logBuffer.Length : end).Trim().ReplaceLineEndings("; ");
            return fd;
        }
    }

    private static nint BpfSyscall => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => 321,
        Architecture.Arm64 => 280,
        var a => throw new PlatformNotSupportedException($"no bpf(2) syscall number for {a}"),
    };
}
