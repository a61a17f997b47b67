using Vnet.Engine;
using Vnet.Native;

namespace Vnet.Tests.Engine;

/// <summary>
/// The forwarding threads' priority, read back from the kernel (<c>/proc/self/task/TID/stat</c>).
/// The setting is one per process, so these tests run one after another (the collection) and put
/// the daemon default back; every daemon a test builds sets it again anyway.
/// </summary>
[Collection(nameof(ForwardingPriorityTests))]
public sealed class ForwardingPriorityTests : IDisposable
{
    public void Dispose() => ForwardingPriority.Configure(ForwardingPriority.DefaultNice);

    [Fact]
    public void Configure_AsRoot_AThreadThatAppliesItRunsAtThatNice_TheConfiguringThreadKeepsItsOwn()
    {
        var own = ForwardingPriority.ThreadNice(LibC.GetThreadId());

        Assert.Equal(ForwardingPriorityResult.Raised, ForwardingPriority.Configure(-7));

        Assert.Equal(own, ForwardingPriority.ThreadNice(LibC.GetThreadId()));
        Assert.Equal(-7, NiceOfAThreadThatApplies());
    }

    [Fact]
    public void Configure_Zero_ThreadsAreLeftAtTheirCreatorsNice()
    {
        Assert.Equal(ForwardingPriorityResult.Normal, ForwardingPriority.Configure(0));

        Assert.Equal(0, ForwardingPriority.Nice);
        Assert.Equal(ForwardingPriority.ThreadNice(LibC.GetThreadId()), NiceOfAThreadThatApplies());
    }

    [Fact]
    public void Configure_Lower_IsAlwaysPermitted()
    {
        Assert.Equal(ForwardingPriorityResult.Raised, ForwardingPriority.Configure(5));

        Assert.Equal(5, NiceOfAThreadThatApplies());
    }

    [Theory]
    [InlineData(-21)]
    [InlineData(20)]
    public void Configure_OutOfRange_Refused(int nice)
    {
        ForwardingPriority.Configure(-3);

        Assert.Throws<ArgumentOutOfRangeException>(() => ForwardingPriority.Configure(nice));
        Assert.Equal(-3, ForwardingPriority.Nice);
    }

    private static int NiceOfAThreadThatApplies()
    {
        var nice = int.MinValue;
        var thread = new Thread(() =>
        {
            ForwardingPriority.ApplyToCurrentThread();
            nice = ForwardingPriority.ThreadNice(LibC.GetThreadId());
        });
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(10)));
        return nice;
    }
}
