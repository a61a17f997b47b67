using System.Runtime.InteropServices;
using System.Text;
using Vnet.Native;

namespace Vnet.Interfaces;

/// <summary>
/// A libpcap filter expression compiled to classic BPF for Ethernet frames, without a device: what
/// <see cref="PacketSocketInterface"/> attaches to its socket (<c>SO_ATTACH_FILTER</c>), and runs
/// itself with libpcap's interpreter when the program is too long for the kernel. Accept statements
/// return <see cref="SnapLength"/>, longer than any frame, so the kernel never truncates a capture.
/// Not thread-safe against <see cref="Dispose"/>: its owner keeps a program alive while it runs.
/// </summary>
public sealed unsafe class BpfProgram : IDisposable
{
    /// <summary>
    /// Longest classic BPF program the kernel attaches to a socket (BPF_MAXINSNS). A longer one is
    /// run in user space: correct, but every frame on the wire is copied into the process.
    /// </summary>
    public const int KernelInstructionLimit = 4096;

    /// <summary>libpcap's largest snap length: what an accept statement returns.</summary>
    public const int SnapLength = 262144;

    private LibPcap.BpfProgram* _program;

    private BpfProgram(LibPcap.BpfProgram* program, string filter)
    {
        _program = program;
        Filter = filter;
        Length = (int)program->Length;
    }

    /// <summary>The expression this was compiled from.</summary>
    public string Filter { get; }

    /// <summary>Number of BPF instructions.</summary>
    public int Length { get; }

    /// <summary>Whether the kernel takes this program (at most <see cref="KernelInstructionLimit"/> instructions).</summary>
    public bool FitsKernel => Length <= KernelInstructionLimit;

    /// <summary>The instructions (<c>struct sock_filter</c> and <c>struct bpf_insn</c> are the same 8 bytes).</summary>
    internal void* Instructions => _program->Instructions;

    /// <summary>Compiles <paramref name="filter"/> (libpcap syntax; "" matches every frame).</summary>
    /// <exception cref="ArgumentException">The filter does not compile; the message is libpcap's.</exception>
    public static BpfProgram Compile(string filter)
    {
        ArgumentNullException.ThrowIfNull(filter);
        var handle = LibPcap.OpenDead(LibPcap.LinkTypeEthernet, SnapLength);
        if (handle == 0)
            throw new InvalidOperationException("libpcap cannot make a handle to compile filters with");
        var program = (LibPcap.BpfProgram*)NativeMemory.AllocZeroed((nuint)sizeof(LibPcap.BpfProgram));
        try
        {
            var text = Encoding.UTF8.GetBytes(filter + "\0");
            int rc;
            fixed (byte* p = text)
                rc = LibPcap.Compile(handle, program, p, 1, LibPcap.NetmaskUnknown);
            if (rc != 0)
            {
                var message = Marshal.PtrToStringUTF8(LibPcap.GetError(handle)) ?? "unknown error";
                throw new ArgumentException($"invalid BPF filter \"{Abbreviate(filter)}\": {message}", nameof(filter));
            }
            var result = new BpfProgram(program, filter);
            program = null;
            return result;
        }
        finally
        {
            if (program is not null)
                NativeMemory.Free(program);
            LibPcap.Close(handle);
        }
    }

    /// <summary>Whether the program accepts <paramref name="frame"/> (libpcap's interpreter; allocation-free).</summary>
    public bool Matches(ReadOnlySpan<byte> frame)
    {
        ObjectDisposedException.ThrowIf(_program is null, this);
        fixed (byte* p = frame)
            return LibPcap.Filter(_program->Instructions, p, (uint)frame.Length, (uint)frame.Length) != 0;
    }

    public void Dispose()
    {
        if (_program is null)
            return;
        LibPcap.FreeCode(_program);
        NativeMemory.Free(_program);
        _program = null;
    }

    internal static string Abbreviate(string filter) => filter.Length <= 120 ? filter : string.Concat(filter.AsSpan(0, 120), "...");
}
