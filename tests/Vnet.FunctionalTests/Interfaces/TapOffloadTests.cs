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
    private static int s_counter;
    private readonly string _ns;

    public TapOffloadTests()
    {
        TestBedGuard.ThrowIfUnavailable();
        _ns = $"vtto{Environment.ProcessId % 10000}{Interlocked.Increment(ref s_counter)}";
        Sh.TryExec("ip", ["netns", "del", _ns], 10);
        Sh.Run($"ip netns add {_ns}");
    }

    public void Dispose() => Sh.TryExec("ip", ["netns", "del", _ns], 10);

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
        var features = Sh.Run($"ip netns exec {_ns} ethtool -k vto0");
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

    private TapInterface Open(string name, OffloadSet set)
    {
        TapInterface? tap = null;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                using (Netns.Enter(_ns))
                    tap = TapInterface.Open(name, 1500, set);
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(10)), "opening the TAP did not finish within 10 s");
        if (error is not null)
            throw new InvalidOperationException($"opening {name} failed", error);
        return tap!;
    }
}
