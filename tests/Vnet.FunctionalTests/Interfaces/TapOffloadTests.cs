using Vnet.Frames;
using Vnet.Interfaces;
using Vnet.Tests.TestBed;

namespace Vnet.Tests.Interfaces;

/// <summary>
/// What a real TAP agrees to: the set the daemon asks for, read back from the kernel by what the
/// TAP then accepts. In a fresh namespace, removed afterwards.
/// </summary>
[Collection("Netns")]
public sealed class TapOffloadTests : IDisposable
{
    private readonly ScratchNetns _scratch = new("vtto");

    public void Dispose() => _scratch.Dispose();

    [Theory]
    [InlineData(OffloadSet.All)]
    [InlineData(OffloadSet.Checksum | OffloadSet.Tso4)]
    [InlineData(OffloadSet.Checksum)]
    [InlineData(OffloadSet.None)]
    public void Open_AsksForASet_AgreesToExactlyThatSet(OffloadSet wanted)
    {
        using var tap = Open("vto0", wanted);
        Assert.Equal(wanted, tap.Offloads);
        // The kernel's view: TSO on the TAP's own features follows what was agreed.
        var features = Sh.Run($"ip netns exec {_scratch.Name} ethtool -k vto0");
        var tso = (wanted & OffloadSet.Tso4) != 0 ? "on" : "off";
        Assert.Contains($"tcp-segmentation-offload: {tso}", features, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_TsoWithoutChecksum_AsksForNoneOfIt()
    {
        // TSO without checksum offload is not a set the kernel takes; the daemon never asks for it.
        using var tap = Open("vto1", OffloadSet.Tso4 | OffloadSet.Tso6);
        Assert.Equal(OffloadSet.None, tap.Offloads);
    }

    private TapInterface Open(string name, OffloadSet set) =>
        _scratch.Run(() => TapInterface.Open(name, 1500, set), $"opening {name}");
}
