using Vnet.Links;

namespace Vnet.Tests.Links;

/// <summary>The shelf that keeps ended sessions' large buffers for the next sessions.</summary>
public sealed class BufferShelfTests
{
    [Fact]
    public void Take_AfterReturn_TheSameBufferAgain()
    {
        var shelf = new BufferShelf(4096, keep: 2);
        var first = shelf.Take();
        Assert.Equal(4096, first.Length);
        Assert.Equal(0, shelf.Count);

        shelf.Return(first);

        Assert.Equal(1, shelf.Count);
        Assert.Same(first, shelf.Take());
        Assert.Equal(0, shelf.Count);
    }

    [Fact]
    public void Return_MoreThanItKeepsOrAnotherSize_KeepsAtMostItsBound()
    {
        var shelf = new BufferShelf(1024, keep: 2);
        shelf.Return(new byte[1024]);
        shelf.Return(new byte[1024]);
        shelf.Return(new byte[1024]);
        shelf.Return(new byte[512]);
        shelf.Return(null);

        Assert.Equal(2, shelf.Count);
    }
}
