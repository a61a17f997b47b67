using Vnet.Frames;
using Vnet.Interfaces;

namespace Vnet.Tests.Interfaces;

/// <summary>
/// The filter texts, compiled by libpcap without a device and run on frames with libpcap's own
/// offline matcher, so what is checked is what the kernel will run.
/// </summary>
public sealed class BpfFiltersTests
{
    private static readonly MacAddress Vm1 = MacAddress.Parse("02:56:4e:00:00:01");
    private static readonly MacAddress Vm2 = MacAddress.Parse("02:56:4e:00:00:02");
    private static readonly MacAddress Vm3 = MacAddress.Parse("02:56:4e:00:00:07");
    private static readonly MacAddress OtherPrefixVm = MacAddress.Parse("52:54:00:12:34:56");
    private static readonly MacAddress LanHost = MacAddress.Parse("00:1b:21:aa:bb:cc");
    private static readonly MacAddress LanRouter = MacAddress.Parse("00:1b:21:aa:bb:01");
    private static readonly MacAddress Ipv4Multicast = MacAddress.Parse("01:00:5e:00:00:fb");
    private static readonly MacAddress Ipv6Multicast = MacAddress.Parse("33:33:00:00:00:01");

    [Fact]
    public void ForHostInterface_NoMacs_EmptyFilterMatchesEverything()
    {
        var filter = BpfFilters.ForHostInterface([]);

        Assert.Equal("", filter);
        using var program = Compile(filter);
        Assert.True(Matches(program, LanHost, LanRouter));
        Assert.True(Matches(program, MacAddress.Broadcast, Vm1));
    }

    [Fact]
    public void ForHostInterface_VmMacs_MatchesOnlyFramesFromThem()
    {
        using var program = Compile(BpfFilters.ForHostInterface([Vm1, Vm3, OtherPrefixVm]));

        Assert.True(Matches(program, src: Vm1, dst: LanRouter));
        Assert.True(Matches(program, src: Vm3, dst: MacAddress.Broadcast));
        Assert.True(Matches(program, src: OtherPrefixVm, dst: Vm1));
        Assert.False(Matches(program, src: Vm2, dst: LanRouter));
        Assert.False(Matches(program, src: LanHost, dst: Vm1));
        Assert.False(Matches(program, src: LanHost, dst: MacAddress.Broadcast));
    }

    [Fact]
    public void ForProxyNic_NoMacs_MatchesOnlyBroadcastAndMulticast()
    {
        using var program = Compile(BpfFilters.ForProxyNic([]));

        Assert.True(Matches(program, src: LanHost, dst: MacAddress.Broadcast));
        Assert.True(Matches(program, src: LanHost, dst: Ipv4Multicast));
        Assert.True(Matches(program, src: LanHost, dst: Ipv6Multicast));
        Assert.False(Matches(program, src: LanHost, dst: LanRouter));
        Assert.False(Matches(program, src: LanHost, dst: Vm1));
    }

    [Fact]
    public void ForProxyNic_VmMacs_PassesToVmAndGroupFrames_DropsFromVmAndOtherUnicast()
    {
        using var program = Compile(BpfFilters.ForProxyNic([Vm1, Vm2, Vm3, OtherPrefixVm]));

        Assert.True(Matches(program, src: LanRouter, dst: Vm1));
        Assert.True(Matches(program, src: LanRouter, dst: Vm3));
        Assert.True(Matches(program, src: LanRouter, dst: OtherPrefixVm));
        Assert.True(Matches(program, src: LanRouter, dst: MacAddress.Broadcast));
        Assert.True(Matches(program, src: LanRouter, dst: Ipv4Multicast));

        // Our own injections (and any VM frame) must never come back in: they would loop.
        Assert.False(Matches(program, src: Vm1, dst: MacAddress.Broadcast));
        Assert.False(Matches(program, src: Vm2, dst: Vm1));
        Assert.False(Matches(program, src: OtherPrefixVm, dst: LanRouter));
        Assert.False(Matches(program, src: Vm3, dst: Ipv6Multicast));
        // Between Vm2 and Vm3 under the same prefix: not a VM.
        Assert.False(Matches(program, src: LanRouter, dst: MacAddress.Parse("02:56:4e:00:00:05")));
        Assert.False(Matches(program, src: LanRouter, dst: LanHost));
    }

    [Fact]
    public void ForProxyNic_DuplicateMacs_SameFilterAsDistinct()
    {
        Assert.Equal(BpfFilters.ForProxyNic([Vm1, Vm2]), BpfFilters.ForProxyNic([Vm2, Vm1, Vm2, Vm1]));
    }

    [Fact]
    public void ForProxyNic_1000ConsecutiveMacs_CollapsesToARange()
    {
        var macs = Macs(1000, i => 0x02_56_4e_00_10_00UL + (ulong)i);

        var length = PacketSocketInterface.CompileFilter(BpfFilters.ForProxyNic(macs));

        Assert.InRange(length, 1, 64);
    }

    [Fact]
    public void ForProxyNic_1000SparseMacsUnderOnePrefix_FitsTheKernelLimit()
    {
        // Every third address: no run to collapse, one jump per MAC per set.
        var macs = Macs(1000, i => 0x02_56_4e_00_00_00UL + (ulong)(i * 3));

        var filter = BpfFilters.ForProxyNic(macs);
        var length = PacketSocketInterface.CompileFilter(filter);

        Assert.InRange(length, 1, PacketSocketInterface.KernelInstructionLimit);
        using var program = Compile(filter);
        Assert.True(Matches(program, src: LanRouter, dst: macs[999]));
        Assert.False(Matches(program, src: LanRouter, dst: new MacAddress(macs[999].Value + 1)));
        Assert.False(Matches(program, src: macs[500], dst: LanRouter));
    }

    [Fact]
    public void ForProxyNic_1000UnrelatedMacs_Compiles()
    {
        // Random prefixes defeat the grouping; the program exceeds the kernel limit (libpcap then
        // filters in user space) but must still compile and be right.
        var rng = new Random(7);
        var macs = Macs(1000, _ => ((ulong)rng.NextInt64(1L << 48) & ~0x01_00_00_00_00_00UL) | 0x02_00_00_00_00_00UL);

        var filter = BpfFilters.ForProxyNic(macs);
        Assert.True(PacketSocketInterface.CompileFilter(filter) > 0);
        using var program = Compile(filter);
        Assert.True(Matches(program, src: LanRouter, dst: macs[123]));
        Assert.False(Matches(program, src: macs[456], dst: MacAddress.Broadcast));
        Assert.False(Matches(program, src: LanRouter, dst: LanHost));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void ForProxyNic_RandomClusteredSets_AgreesWithSetMembership(int seed)
    {
        var rng = new Random(seed);
        for (var round = 0; round < 20; round++)
        {
            // Few prefixes and short runs, so groups, ranges, run edges and gaps all occur.
            var prefixes = new[] { 0x0256_4e00UL, 0x0256_4e01UL, 0x5254_0012UL };
            var set = new HashSet<MacAddress>();
            var count = rng.Next(1, 60);
            while (set.Count < count)
            {
                var prefix = prefixes[rng.Next(prefixes.Length)];
                var low = (ulong)rng.Next(0, 40);
                var run = rng.Next(1, 6);
                for (var k = 0; k < run; k++)
                    set.Add(new MacAddress((prefix << 16) | (low + (ulong)k)));
            }
            var macs = set.ToArray();
            using var proxy = Compile(BpfFilters.ForProxyNic(macs));
            using var host = Compile(BpfFilters.ForHostInterface(macs));

            for (var probe = 0; probe < 200; probe++)
            {
                var a = Probe(rng, prefixes);
                var b = Probe(rng, prefixes);
                var expectProxy = (set.Contains(a) || a.IsGroup) && !set.Contains(b);
                Assert.True(expectProxy == Matches(proxy, src: b, dst: a), $"seed {seed} round {round}: proxy, dst {a} src {b}, set [{string.Join(' ', set)}]");
                Assert.True(set.Contains(b) == Matches(host, src: b, dst: a), $"seed {seed} round {round}: host, src {b}, set [{string.Join(' ', set)}]");
            }
        }
    }

    private static MacAddress Probe(Random rng, ulong[] prefixes) => rng.Next(10) switch
    {
        0 => MacAddress.Broadcast,
        1 => Ipv4Multicast,
        2 => LanHost,
        _ => new MacAddress((prefixes[rng.Next(prefixes.Length)] << 16) | (uint)rng.Next(0, 48)),
    };

    private static MacAddress[] Macs(int count, Func<int, ulong> value)
    {
        var macs = new MacAddress[count];
        for (var i = 0; i < count; i++)
            macs[i] = new MacAddress(value(i));
        return macs;
    }

    private static BpfProgram Compile(string filter) => BpfProgram.Compile(filter);

    private static bool Matches(BpfProgram program, MacAddress src, MacAddress dst)
    {
        var frame = new byte[60];
        dst.Write(frame);
        src.Write(frame.AsSpan(6));
        frame[12] = 0x88;
        frame[13] = 0xb5;
        return program.Matches(frame);
    }
}
