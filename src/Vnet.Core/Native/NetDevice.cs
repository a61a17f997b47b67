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
    private const nuint SIOCETHTOOL = 0x8946;
    private const uint ETHTOOL_GGRO = 0x2b;
    private const uint ETHTOOL_SGRO = 0x2c;
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

    /// <summary>
    /// Turns GRO on for <paramref name="name"/> if it is off, through <paramref name="socket"/> (any
    /// socket in the device's namespace): true if it did. False when it was on already, or the
    /// device refuses (no GRO, or no CAP_NET_ADMIN): the device is then used as it is.
    /// </summary>
    public static bool TryTurnGroOn(int socket, string name)
    {
        try
        {
            if (Ethtool(socket, name, ETHTOOL_GGRO, 0, "read GRO of") != 0)
                return false;
            Ethtool(socket, name, ETHTOOL_SGRO, 1, "turn GRO on for");
            return Ethtool(socket, name, ETHTOOL_GGRO, 0, "read GRO of") != 0;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Sets GRO for a device through <paramref name="socket"/>; false if the device refuses or is gone.</summary>
    public static bool TrySetGro(int socket, string name, bool on)
    {
        try
        {
            Ethtool(socket, name, ETHTOOL_SGRO, on ? 1u : 0u, "set GRO of");
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>One <c>struct ethtool_value</c> command (<c>{ u32 cmd; u32 data; }</c>, pointed to by ifr_data): returns its data.</summary>
    private static uint Ethtool(int s, string name, uint command, uint data, string what)
    {
        var value = stackalloc uint[2];
        value[0] = command;
        value[1] = data;
        var req = default(IfReq);
        req.SetName(name);
        // ifr_data is a pointer in the union at offset 16 (where Flags is).
        *(uint**)((byte*)&req + IfNameSize) = value;
        Check(LibC.Ioctl(s, SIOCETHTOOL, &req), $"{what} {name}");
        return value[1];
    }

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
