namespace Vnet.Engine;

/// <summary>Why the switch dropped a frame; each reason has its own counter.</summary>
public enum DropReason
{
    /// <summary>Shorter than an Ethernet header, or a group source address.</summary>
    Malformed,

    /// <summary>No rule matched.</summary>
    NoMatch,

    /// <summary>Rules matched but every action pointed back at the arrival port or at no port.</summary>
    NoRoute,

    /// <summary>The frame used up its hop limit.</summary>
    HopLimit,

    /// <summary>No free buffer.</summary>
    NoBuffer,

    /// <summary>
    /// A frame from a link whose offload header (<c>virtio_net_hdr</c>) failed its checks
    /// (<see cref="Frames.OffloadCheck"/>; which check: <see cref="VirtualSwitch.OffloadFaults"/>).
    /// </summary>
    BadOffload,
}
