using Vnet.Engine;
using Vnet.Frames;
using Vnet.Interfaces;

namespace Vnet.Tests.Frames;

/// <summary>
/// A device gets only the kinds of offload metadata it agreed to (issue 8: offload headers checked
/// against what the TAP negotiated). <see cref="OffloadSetExtensions.Takes"/> is the rule, and
/// <see cref="InterfacePort.Transmit"/> the one place that applies it: a frame the device did not
/// agree to is finalised (segmented, checksummed) before it is written.
/// </summary>
public sealed class OffloadSetTests
{
    private static VirtioNetHeader Header(byte flags, byte gso) => new()
    {
        Flags = flags,
        GsoType = gso,
        GsoSize = gso == VirtioNetHeader.GsoNone ? (ushort)0 : (ushort)1400,
        CsumStart = 34,
        CsumOffset = 16,
    };

    private const byte Csum = VirtioNetHeader.FlagNeedsCsum;

    public static TheoryData<OffloadSet, byte, byte, bool> Cases() => new()
    {
        // Plain frames go to every device.
        { OffloadSet.None, 0, VirtioNetHeader.GsoNone, true },
        // Partial checksums and DATA_VALID need checksum offload.
        { OffloadSet.None, Csum, VirtioNetHeader.GsoNone, false },
        { OffloadSet.None, VirtioNetHeader.FlagDataValid, VirtioNetHeader.GsoNone, false },
        { OffloadSet.Checksum, Csum, VirtioNetHeader.GsoNone, true },
        { OffloadSet.Checksum, VirtioNetHeader.FlagDataValid, VirtioNetHeader.GsoNone, true },
        // Each TSO kind needs its own flag (and checksums).
        { OffloadSet.Checksum, Csum, VirtioNetHeader.GsoTcpV4, false },
        { OffloadSet.Checksum | OffloadSet.Tso4, Csum, VirtioNetHeader.GsoTcpV4, true },
        { OffloadSet.Tso4, Csum, VirtioNetHeader.GsoTcpV4, false },
        { OffloadSet.Checksum | OffloadSet.Tso4, Csum, VirtioNetHeader.GsoTcpV6, false },
        { OffloadSet.Checksum | OffloadSet.Tso6, Csum, VirtioNetHeader.GsoTcpV6, true },
        // The ECN bit needs TSO_ECN on top.
        { OffloadSet.Checksum | OffloadSet.Tso4, Csum, VirtioNetHeader.GsoTcpV4 | VirtioNetHeader.GsoEcn, false },
        { OffloadSet.All, Csum, VirtioNetHeader.GsoTcpV4 | VirtioNetHeader.GsoEcn, true },
        // UFO, USO and unknown types: never, whatever the device agreed to.
        { OffloadSet.All, Csum, VirtioNetHeader.GsoUdp, false },
        { OffloadSet.All, Csum, VirtioNetHeader.GsoUdpL4, false },
        { OffloadSet.All, Csum, 0x42, false },
        { OffloadSet.All, Csum, VirtioNetHeader.GsoEcn, true },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Takes_OnlyWhatTheDeviceAgreedTo(OffloadSet set, byte flags, byte gso, bool expected) =>
        Assert.Equal(expected, set.Takes(Header(flags, gso)));

    [Theory]
    [InlineData(false, OffloadSet.All, 1)]
    [InlineData(false, OffloadSet.Checksum | OffloadSet.Tso4, 1)]
    [InlineData(true, OffloadSet.Checksum | OffloadSet.Tso4, 5)]
    [InlineData(false, OffloadSet.Checksum, 5)]
    [InlineData(true, OffloadSet.None, 5)]
    public void Transmit_SuperFrame_PassedWholeOnlyWhenTheDeviceAgreedToItsKind(bool v6, OffloadSet set, int expectedWrites)
    {
        var pool = new FramePool(64);
        using var device = new MemoryInterface("m0", 1500, set);
        using var port = new InterfacePort(device, new VirtualSwitch(), pool);
        var spec = new PacketSpec { V6 = v6 };
        const int gso = 1200;
        var payload = TestPackets.RandomPayload(gso * 5, seed: 7);

        port.Transmit(TestPackets.SuperFrame(pool, spec, payload, gso));

        var written = new List<byte[]>();
        while (device.TryTake(out var bytes))
            written.Add(bytes);
        var headers = device.WrittenOffloads.ToArray();
        Assert.Equal(expectedWrites, written.Count);
        Assert.Equal(expectedWrites, headers.Length);
        foreach (var header in headers)
            Assert.True(set.Takes(header), $"the device got a header it did not agree to: GSO {header.GsoType}, flags {header.Flags}");
        if (expectedWrites > 1)
        {
            // Finalised: complete segments, each with a valid checksum, together the payload.
            var total = 0;
            foreach (var segment in written)
            {
                Assert.InRange(segment.Length, 1, device.MaxFrameSize);
                if ((set & OffloadSet.Checksum) == 0)
                    Assert.True(TestPackets.L4ChecksumValid(segment, spec), "a segment without a complete checksum reached a device without checksum offload");
                total += segment.Length - spec.HeadersLength;
            }
            Assert.Equal(payload.Length, total);
        }
        Assert.Equal(expectedWrites, port.Counters.TxFrames);
    }
}
