using System.Runtime.InteropServices;
using System.Text;

namespace Vnet.Native;

/// <summary>
/// Network-device settings through the classic ioctls (<c>SIOCSIFMTU</c>, <c>SIOCSIFFLAGS</c>,
/// bridge ports): enough to configure a TAP without shelling out to <c>ip</c>.
/// </summary>
internal static unsafe class NetDevice
{
    private const nuint SIOCGIFFLAGS = 0x8913;
    private const nuint SIOCSIFFLAGS = 0x8914;
    private const nuint SIOCGIFMTU = 0x8921;
    private const nuint SIOCSIFMTU = 0x8922;
    private const nuint SIOCGIFHWADDR = 0x8927;
    private const nuint SIOCBRADDBR = 0x89a0;
    private const nuint SIOCBRADDIF = 0x89a2;
    private const nuint SIOCGIFINDEX = 0x8933;
    private const short IFF_UP = 0x1;
    private const short IFF_PROMISC = 0x100;

    public const int IfNameSize = 16;

    /// <summary>Where ifr_hwaddr's address bytes start in <see cref="IfReq"/>: after the name (16) and sa_family (2).</summary>
    internal const int HardwareAddressOffset = IfNameSize + 2;

    /// <summary><c>struct ifreq</c>: a 16-byte name and a 24-byte union.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 40)]
    public struct IfReq
    {
        public fixed byte Name[IfNameSize];
        public short Flags; // also ifr_mtu (int) and ifr_ifindex at the same offset
        public short Pad;
        public fixed byte Rest[20];

        public void SetName(string name)
        {
            var bytes = Encoding.ASCII.GetBytes(name);
            if (bytes.Length >= IfNameSize)
                throw new ArgumentException($"interface name '{name}' is longer than {IfNameSize - 1} characters");
            for (var i = 0; i < IfNameSize; i++)
                Name[i] = i < bytes.Length ? bytes[i] : (byte)0;
        }

        public readonly string GetName()
        {
            var len = 0;
            while (len < IfNameSize && Name[len] != 0)
                len++;
            fixed (byte* p = Name)
                return Encoding.ASCII.GetString(p, len);
        }

        public int IntValue
        {
            readonly get
            {
                fixed (short* p = &Flags)
                    return *(int*)p;
            }
            set
            {
                fixed (short* p = &Flags)
                    *(int*)p = value;
            }
        }
    }

    public static void SetMtu(string name, int mtu) => WithSocket(s =>
    {
        var req = default(IfReq);
        req.SetName(name);
        req.IntValue = mtu;
        Check(LibC.Ioctl(s, SIOCSIFMTU, &req), $"set MTU {mtu} on {name}");
    });

    public static int GetMtu(string name) => WithSocket(s =>
    {
        var req = default(IfReq);
        req.SetName(name);
        Check(LibC.Ioctl(s, SIOCGIFMTU, &req), $"read MTU of {name}");
        return req.IntValue;
    });

    public static void SetUp(string name, bool promiscuous = false) => WithSocket(s =>
    {
        var req = default(IfReq);
        req.SetName(name);
        Check(LibC.Ioctl(s, SIOCGIFFLAGS, &req), $"read flags of {name}");
        req.Flags |= IFF_UP;
        if (promiscuous)
            req.Flags |= IFF_PROMISC;
        Check(LibC.Ioctl(s, SIOCSIFFLAGS, &req), $"bring {name} up");
    });

    public static byte[] GetHardwareAddress(string name) => WithSocket(s =>
    {
        var req = default(IfReq);
        req.SetName(name);
        Check(LibC.Ioctl(s, SIOCGIFHWADDR, &req), $"read the address of {name}");
        // ifr_hwaddr is a sockaddr at offset 16: 2 bytes of family (where Flags is), then the
        // address, which starts at Pad (offset 18), not at Rest (offset 20).
        var mac = new byte[6];
        var bytes = (byte*)&req;
        for (var i = 0; i < 6; i++)
            mac[i] = bytes[HardwareAddressOffset + i];
        return mac;
    });

    /// <summary>The ARPHRD_* hardware type of a device (1: Ethernet), from SIOCGIFHWADDR's address family.</summary>
    public static ushort GetHardwareType(string name) => WithSocket(s =>
    {
        var req = default(IfReq);
        req.SetName(name);
        Check(LibC.Ioctl(s, SIOCGIFHWADDR, &req), $"read the hardware type of {name}");
        return (ushort)req.Flags;
    });

    public static bool Exists(string name) => LibC.IfNameToIndex(name) != 0;

    /// <summary>Adds a device to a Linux bridge, creating the bridge if it does not exist.</summary>
    public static void AddToBridge(string bridge, string device) => WithSocket(s =>
    {
        if (!Exists(bridge))
        {
            var name = Encoding.ASCII.GetBytes(bridge + "\0");
            fixed (byte* p = name)
                Check(LibC.Ioctl(s, SIOCBRADDBR, p), $"create bridge {bridge}");
        }
        SetUp(bridge);
        var req = default(IfReq);
        req.SetName(bridge);
        req.IntValue = (int)LibC.IfNameToIndex(device);
        if (req.IntValue == 0)
            throw new IOException($"cannot add {device} to bridge {bridge}: no such device");
        Check(LibC.Ioctl(s, SIOCBRADDIF, &req), $"add {device} to bridge {bridge}");
    });

    private static T WithSocket<T>(Func<int, T> action)
    {
        var s = LibC.Socket(LibC.AF_INET, LibC.SOCK_DGRAM | LibC.SOCK_CLOEXEC, 0);
        if (s < 0)
            throw new IOException($"socket: {LibC.ErrorText(LibC.LastError)}");
        try
        {
            return action(s);
        }
        finally
        {
            LibC.Close(s);
        }
    }

    private static void WithSocket(Action<int> action) => WithSocket<int>(s =>
    {
        action(s);
        return 0;
    });

    internal static void Check(int rc, string what)
    {
        if (rc < 0)
        {
            var errno = LibC.LastError;
            throw new IOException($"cannot {what}: {LibC.ErrorText(errno)}", errno);
        }
    }
}
