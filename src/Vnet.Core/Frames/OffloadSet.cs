namespace Vnet.Frames;

/// <summary>
/// The offloads a device and the daemon agreed on (for a TAP, the <c>TUN_F_*</c> flags that
/// <c>TUNSETOFFLOAD</c> accepted): the kinds of <see cref="VirtioNetHeader"/> the device hands the
/// daemon, and so the only kinds the daemon hands it back. A frame whose header asks for more is
/// finalised (segmented and checksummed) first: the kernel is only given what it offered itself,
/// whatever a peer sent.
/// </summary>
[Flags]
public enum OffloadSet : byte
{
    None = 0,

    /// <summary>Partial checksums (<c>NEEDS_CSUM</c>, <c>DATA_VALID</c>): <c>TUN_F_CSUM</c>.</summary>
    Checksum = 1,

    /// <summary>TCP over IPv4 super-frames: <c>TUN_F_TSO4</c>.</summary>
    Tso4 = 2,

    /// <summary>TCP over IPv6 super-frames: <c>TUN_F_TSO6</c>.</summary>
    Tso6 = 4,

    /// <summary>Super-frames with the ECN bit (<c>CWR</c> kept on the first segment only): <c>TUN_F_TSO_ECN</c>.</summary>
    TsoEcn = 8,

    /// <summary>Everything the daemon asks a TAP for.</summary>
    All = Checksum | Tso4 | Tso6 | TsoEcn,
}

public static class OffloadSetExtensions
{
    /// <summary>
    /// Whether a device with <paramref name="set"/> takes a frame with <paramref name="header"/> as it
    /// is. A few bit tests: it runs for every frame written to a local interface.
    /// </summary>
    public static bool Takes(this OffloadSet set, in VirtioNetHeader header)
    {
        if (header.IsPlain)
            return true;
        OffloadSet need;
        switch (header.GsoType & ~VirtioNetHeader.GsoEcn)
        {
            case VirtioNetHeader.GsoNone:
                need = OffloadSet.Checksum;
                break;
            case VirtioNetHeader.GsoTcpV4:
                need = OffloadSet.Checksum | OffloadSet.Tso4;
                break;
            case VirtioNetHeader.GsoTcpV6:
                need = OffloadSet.Checksum | OffloadSet.Tso6;
                break;
            default:
                // UFO, USO and anything unknown: never handed to a device as they are.
                return false;
        }
        if ((header.GsoType & VirtioNetHeader.GsoEcn) != 0)
            need |= OffloadSet.TsoEcn;
        return (set & need) == need;
    }
}
