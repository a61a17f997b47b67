using System.Runtime.InteropServices;

namespace Vnet.Native;

/// <summary>
/// The libpcap entry points VNET still uses: its filter compiler (<c>pcap_compile</c> on a dead
/// Ethernet handle, no device opened) and its classic BPF interpreter (<c>bpf_filter</c>), for a
/// program too long for the kernel. Capture itself goes through a packet socket
/// (<see cref="Interfaces.PacketSocketInterface"/>). Function pointers, so calls are blittable.
/// </summary>
internal static unsafe class LibPcap
{
    /// <summary>DLT_EN10MB.</summary>
    public const int LinkTypeEthernet = 1;

    /// <summary>PCAP_NETMASK_UNKNOWN: filters with "ip broadcast" fail to compile, nothing else changes.</summary>
    public const uint NetmaskUnknown = 0xffffffff;

    /// <summary><c>struct bpf_program</c>: an instruction count and a pointer to the instructions.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct BpfProgram
    {
        public uint Length;
        public void* Instructions;
    }

    private static readonly nint Library = Load();

    public static readonly delegate* unmanaged<int, int, nint> OpenDead =
        (delegate* unmanaged<int, int, nint>)Export("pcap_open_dead");

    public static readonly delegate* unmanaged<nint, BpfProgram*, byte*, int, uint, int> Compile =
        (delegate* unmanaged<nint, BpfProgram*, byte*, int, uint, int>)Export("pcap_compile");

    public static readonly delegate* unmanaged<nint, nint> GetError =
        (delegate* unmanaged<nint, nint>)Export("pcap_geterr");

    public static readonly delegate* unmanaged<BpfProgram*, void> FreeCode =
        (delegate* unmanaged<BpfProgram*, void>)Export("pcap_freecode");

    public static readonly delegate* unmanaged<nint, void> Close =
        (delegate* unmanaged<nint, void>)Export("pcap_close");

    /// <summary><c>u_int bpf_filter(const struct bpf_insn *, const u_char *, u_int wirelen, u_int buflen)</c>: 0 rejects.</summary>
    public static readonly delegate* unmanaged<void*, byte*, uint, uint, uint> Filter =
        (delegate* unmanaged<void*, byte*, uint, uint, uint>)Export("bpf_filter");

    private static nint Export(string name) => NativeLibrary.GetExport(Library, name);

    private static nint Load()
    {
        foreach (var name in (ReadOnlySpan<string>)["libpcap.so", "libpcap.so.1", "libpcap.so.0.8", "libpcap.so.0"])
        {
            if (NativeLibrary.TryLoad(name, out var handle))
                return handle;
        }
        throw new DllNotFoundException("libpcap is not installed (Debian/Ubuntu: apt-get install libpcap0.8)");
    }
}
