using System.Runtime.InteropServices;

namespace Vnet.Native;

/// <summary>
/// UDP segmentation and receive offloads (Linux 4.18+/5.0+): one <c>sendmsg</c> carries many
/// equal-sized datagrams (<c>UDP_SEGMENT</c>), one <c>recvmsg</c> returns a run of datagrams the
/// kernel coalesced (<c>UDP_GRO</c>). .NET has no managed API for either.
/// </summary>
internal static unsafe partial class UdpBatch
{
    public const int SOL_UDP = 17;
    public const int UDP_SEGMENT = 103;
    public const int UDP_GRO = 104;
    public const int MSG_DONTWAIT = 0x40;

    /// <summary>Most datagrams the kernel accepts in one segmented send (UDP_MAX_SEGMENTS).</summary>
    public const int MaxSegments = 64;

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public LibC.IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct CmsgHdr
    {
        public nuint Length;
        public int Level;
        public int Type;
    }

    [LibraryImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    public static partial nint SendMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", EntryPoint = "recvmsg", SetLastError = true)]
    public static partial nint RecvMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport("libc", EntryPoint = "setsockopt", SetLastError = true)]
    public static partial int SetSockOpt(int fd, int level, int name, void* value, uint length);

    /// <summary>Turns on UDP GRO for a socket; false where the kernel lacks it.</summary>
    public static bool EnableGro(int fd)
    {
        var one = 1;
        return SetSockOpt(fd, SOL_UDP, UDP_GRO, &one, sizeof(int)) == 0;
    }

    /// <summary>
    /// Sends <paramref name="length"/> bytes at <paramref name="data"/> as datagrams of
    /// <paramref name="segment"/> bytes (the last may be shorter) in one call. Returns bytes sent or
    /// -errno.
    /// </summary>
    public static nint SendSegmented(int fd, byte* data, int length, int segment, byte* address, int addressLength)
    {
        var iov = new LibC.IoVec { Base = data, Length = (nuint)length };
        var control = stackalloc byte[sizeof(CmsgHdr) + 8];
        var header = (CmsgHdr*)control;
        header->Length = (nuint)(sizeof(CmsgHdr) + sizeof(ushort));
        header->Level = SOL_UDP;
        header->Type = UDP_SEGMENT;
        *(ushort*)(control + sizeof(CmsgHdr)) = (ushort)segment;
        var msg = new MsgHdr
        {
            Name = address,
            NameLength = (uint)addressLength,
            Iov = &iov,
            IovLength = 1,
            Control = length > segment ? control : null,
            ControlLength = length > segment ? (nuint)(sizeof(CmsgHdr) + 8) : 0,
        };
        var n = SendMsg(fd, &msg, 0);
        return n >= 0 ? n : -LibC.LastError;
    }

    /// <summary>
    /// Receives one datagram or one GRO run. <paramref name="segment"/> is the size of each
    /// datagram in the run (the last may be shorter), or the whole length when the kernel did not
    /// coalesce. Returns bytes received or -errno; fills the sender's address.
    /// </summary>
    public static nint Receive(int fd, byte* buffer, int capacity, byte* address, ref int addressLength, out int segment, int flags = 0)
    {
        var iov = new LibC.IoVec { Base = buffer, Length = (nuint)capacity };
        var control = stackalloc byte[64];
        var msg = new MsgHdr
        {
            Name = address,
            NameLength = (uint)addressLength,
            Iov = &iov,
            IovLength = 1,
            Control = control,
            ControlLength = 64,
        };
        var n = RecvMsg(fd, &msg, flags);
        segment = 0;
        if (n < 0)
            return -LibC.LastError;
        addressLength = (int)msg.NameLength;
        segment = (int)n;
        var at = control;
        var end = control + (int)msg.ControlLength;
        while (at + sizeof(CmsgHdr) <= end)
        {
            var c = (CmsgHdr*)at;
            if (c->Length < (nuint)sizeof(CmsgHdr))
                break;
            if (c->Level == SOL_UDP && c->Type == UDP_GRO)
                segment = *(int*)(at + sizeof(CmsgHdr));
            at += (int)((c->Length + 7) & ~(nuint)7);
        }
        return n;
    }
}
