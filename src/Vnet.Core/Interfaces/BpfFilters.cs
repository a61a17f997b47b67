using System.Globalization;
using System.Text;
using Vnet.Frames;

namespace Vnet.Interfaces;

/// <summary>
/// libpcap filter expressions for the two places VNET taps a NIC it does not own (vnet-facts §8).
/// <para>
/// Host side: the interface facing the VMs (a host-only network, or a QEMU TAP) is captured for
/// frames whose <em>source</em> is a VM, so the host's own traffic on it stays out of the overlay.
/// Proxy side: the user's LAN NIC is captured for frames <em>to</em> a VM, broadcast or multicast,
/// and never for frames <em>from</em> a VM: those are the Proxy's own injections (or a VM talking
/// through another path) and capturing them would loop them back into the overlay.
/// </para>
/// <para>
/// Size matters: the kernel refuses a classic BPF program longer than 4096 instructions
/// (<see cref="BpfProgram.KernelInstructionLimit"/>), and the daemon then filters in user space,
/// which copies every frame on the LAN into the process. A naive <c>ether src A or ether src B ...</c>
/// costs about 4-5 instructions per MAC, so a Proxy filter (two MAC sets) overflows near 430 VMs.
/// These filters instead group the MACs by their upper 32 bits (VNET assigns VM MACs from a few
/// prefixes), compare the lower 16 bits with one jump each, and collapse runs of consecutive MACs
/// into a range test. 1000 sparse MACs under one prefix compile to about 3500 instructions for the
/// whole Proxy filter; 1000 consecutive MACs to about 15. Arbitrary unrelated MACs still cost about
/// 5 per MAC per set: they work, filtered in user space past the limit.
/// </para>
/// </summary>
public static class BpfFilters
{
    private const int DestinationOffset = 0;
    private const int SourceOffset = 6;

    /// <summary>
    /// Frames sent by one of <paramref name="vmMacs"/>. With no VM MACs known the filter is empty
    /// and matches every frame: a host interface is then captured whole so the daemon can learn the
    /// VMs' MACs from what they send, and narrow the filter once it knows them.
    /// </summary>
    public static string ForHostInterface(IReadOnlyCollection<MacAddress> vmMacs)
    {
        ArgumentNullException.ThrowIfNull(vmMacs);
        if (vmMacs.Count == 0)
            return "";
        return MacSet(vmMacs, SourceOffset);
    }

    /// <summary>
    /// Frames to one of <paramref name="vmMacs"/>, broadcast or multicast, unless their source is one
    /// of <paramref name="vmMacs"/>. With no VM MACs: broadcast and multicast only (DHCP and ARP for
    /// VMs about to appear).
    /// </summary>
    public static string ForProxyNic(IReadOnlyCollection<MacAddress> vmMacs)
    {
        ArgumentNullException.ThrowIfNull(vmMacs);
        // The group bit covers broadcast too, so "ether broadcast" would only add instructions.
        const string Group = "ether multicast";
        if (vmMacs.Count == 0)
            return Group;
        return $"({Group} or {MacSet(vmMacs, DestinationOffset)}) and not {MacSet(vmMacs, SourceOffset)}";
    }

    /// <summary>
    /// An expression true when the MAC at <paramref name="offset"/> is one of <paramref name="macs"/>,
    /// parenthesised unless it is a single primitive, so callers can combine it freely (libpcap gives
    /// <c>and</c> and <c>or</c> the same precedence).
    /// </summary>
    private static string MacSet(IReadOnlyCollection<MacAddress> macs, int offset)
    {
        var values = new ulong[macs.Count];
        var n = 0;
        foreach (var mac in macs)
            values[n++] = mac.Value;
        Array.Sort(values);
        n = Dedupe(values);

        var direction = offset == SourceOffset ? "src" : "dst";
        var sb = new StringBuilder(n * 24);
        var groups = 0;
        for (var i = 0; i < n;)
        {
            var prefix = values[i] >> 16;
            var end = i + 1;
            while (end < n && values[end] >> 16 == prefix)
                end++;
            if (groups++ > 0)
                sb.Append(" or ");
            if (end - i == 1)
            {
                // A lone MAC reads better spelled out, and compiles to the same few instructions.
                sb.Append(CultureInfo.InvariantCulture, $"ether {direction} {new MacAddress(values[i])}");
            }
            else
            {
                sb.Append(CultureInfo.InvariantCulture, $"(ether[{offset}:4] = 0x{prefix:x8} and ");
                AppendLowBits(sb, values.AsSpan(i, end - i), offset + 4);
                sb.Append(')');
            }
            i = end;
        }
        return groups > 1 ? $"({sb})" : sb.ToString();
    }

    /// <summary>Tests the lower 16 bits against sorted, distinct <paramref name="macs"/> of one prefix.</summary>
    private static void AppendLowBits(StringBuilder sb, ReadOnlySpan<ulong> macs, int offset)
    {
        var terms = 0;
        var start = sb.Length;
        for (var i = 0; i < macs.Length;)
        {
            var end = i + 1;
            while (end < macs.Length && macs[end] == macs[end - 1] + 1)
                end++;
            if (terms++ > 0)
                sb.Append(" or ");
            var first = (ushort)macs[i];
            var last = (ushort)macs[end - 1];
            // Two equality tests cost as much as one range test; ranges pay from three MACs on.
            if (end - i >= 3)
            {
                sb.Append(CultureInfo.InvariantCulture, $"(ether[{offset}:2] >= 0x{first:x4} and ether[{offset}:2] <= 0x{last:x4})");
                i = end;
            }
            else
            {
                sb.Append(CultureInfo.InvariantCulture, $"ether[{offset}:2] = 0x{first:x4}");
                i++;
            }
        }
        if (terms > 1)
        {
            sb.Insert(start, '(');
            sb.Append(')');
        }
    }

    private static int Dedupe(ulong[] sorted)
    {
        if (sorted.Length == 0)
            return 0;
        var n = 1;
        for (var i = 1; i < sorted.Length; i++)
        {
            if (sorted[i] != sorted[n - 1])
                sorted[n++] = sorted[i];
        }
        return n;
    }
}
