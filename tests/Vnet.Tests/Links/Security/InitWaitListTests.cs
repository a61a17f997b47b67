using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Vnet.Links.Security;

namespace Vnet.Tests.Links.Security;

public sealed class InitWaitListTests : IDisposable
{
    private static readonly IPAddress Flooder = IPAddress.Parse("198.51.100.7");
    private readonly List<Socket> _sockets = [];

    [Fact]
    public void Add_AddressAtItsShare_ItsOldestClosed_OthersKept()
    {
        var list = new InitWaitList(max: 8, perAddress: 3);
        var other = list.Add(NewSocket(), IPAddress.Parse("192.0.2.1"), out _);
        var mine = Enumerable.Range(0, 3).Select(i => list.Add(NewSocket(), Flooder, out _)).ToList();

        var newest = list.Add(NewSocket(), Flooder, out var pushedOut);

        Assert.Same(mine[0], pushedOut);
        Assert.True(mine[0].Closed);
        Assert.False(mine[1].Closed);
        Assert.False(list.TryRemove(mine[0]));
        Assert.Equal(4, list.Count);
        Assert.Equal(1, list.Evicted);
        Assert.True(list.TryRemove(other));
        Assert.True(list.TryRemove(newest));
        Assert.False(newest.Closed);
    }

    [Fact]
    public void Add_ListFull_OldestOfAllClosed_AndTheListStaysAtItsBound()
    {
        var list = new InitWaitList(max: 8, perAddress: 3);
        var all = Enumerable.Range(0, 8).Select(i => list.Add(NewSocket(), IPAddress.Parse($"192.0.2.{i}"), out _)).ToList();

        for (var i = 0; i < 20; i++)
        {
            list.Add(NewSocket(), IPAddress.Parse($"203.0.113.{i}"), out var evicted);
            Assert.NotNull(evicted);
            Assert.True(evicted.Closed);
            Assert.Equal(8, list.Count);
        }

        Assert.Equal(20, list.Evicted);
        Assert.All(all, w => Assert.False(list.TryRemove(w)));
    }

    [Fact]
    public void Add_PerAddressShareOfOne_TheNewConnectionTakesTheOldOnesPlace()
    {
        var list = new InitWaitList(max: 8, perAddress: 1);
        var first = list.Add(NewSocket(), Flooder, out _);

        var second = list.Add(NewSocket(), Flooder, out var evicted);

        Assert.Same(first, evicted);
        Assert.Equal(1, list.Count);
        Assert.True(list.TryRemove(second));
        Assert.Equal(0, list.Count);
    }

    [Fact]
    public void Expire_AfterTheDeadline_ClosedAndCounted_YoungerOnesKept()
    {
        var list = new InitWaitList();
        var now = Stopwatch.GetTimestamp();
        var old = list.Add(NewSocket(), Flooder, out _, now);
        var young = list.Add(NewSocket(), Flooder, out _, now + Stopwatch.Frequency);

        Assert.Empty(list.Expire(now + (long)(Stopwatch.Frequency * (InitWaitList.Deadline.TotalSeconds - 0.1))));
        var expired = list.Expire(now + (long)(Stopwatch.Frequency * InitWaitList.Deadline.TotalSeconds));

        Assert.Equal([old], expired);
        Assert.True(old.Closed);
        Assert.False(list.TryRemove(old));
        Assert.Equal(1, list.Expired);
        Assert.True(list.TryRemove(young));
        Assert.False(young.Closed);
    }

    [Fact]
    public void Clear_ClosesEveryWaitingConnection()
    {
        var list = new InitWaitList();
        var all = Enumerable.Range(0, 5).Select(i => list.Add(NewSocket(), Flooder, out _)).ToList();

        list.Clear();

        Assert.Equal(0, list.Count);
        Assert.All(all, w => Assert.True(w.Closed));
    }

    private Socket NewSocket()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _sockets.Add(socket);
        return socket;
    }

    public void Dispose()
    {
        foreach (var socket in _sockets)
            socket.Dispose();
    }
}
