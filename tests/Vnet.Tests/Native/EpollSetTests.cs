using System.Net;
using System.Net.Sockets;
using Vnet.Native;

namespace Vnet.Tests.Native;

/// <summary>
/// A link session's socket leaves the runtime's epoll set once its handshake (asynchronous calls)
/// is over: the set no longer lists it, and the socket still carries bytes both ways.
/// </summary>
public sealed class EpollSetTests
{
    private static bool Watched(int fd)
    {
        foreach (var entry in Directory.GetFileSystemEntries("/proc/self/fd"))
        {
            try
            {
                if (new FileInfo(entry).LinkTarget != "anon_inode:[eventpoll]")
                    continue;
                foreach (var line in File.ReadLines($"/proc/self/fdinfo/{Path.GetFileName(entry)}"))
                {
                    if (line.StartsWith("tfd:", StringComparison.Ordinal) && line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1] == fd.ToString(System.Globalization.CultureInfo.InvariantCulture))
                        return true;
                }
            }
            catch (IOException)
            {
            }
        }
        return false;
    }

    [Fact]
    public async Task Forget_AfterAsyncCalls_SocketLeavesEpollAndStillCarriesBytes()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        using var server = await listener.AcceptAsync();
        await server.SendAsync("hello"u8.ToArray());
        var buffer = new byte[16];
        Assert.Equal(5, await client.ReceiveAsync(buffer));
        var fd = (int)client.SafeHandle.DangerousGetHandle();
        Assert.True(Watched(fd), "the runtime's epoll set should watch a socket after an asynchronous call");

        Assert.True(EpollSet.Forget(fd) >= 1);

        Assert.False(Watched(fd));
        Assert.Equal(0, EpollSet.Forget(fd));
        client.Blocking = true;
        Assert.Equal(3, client.Send("abc"u8));
        Assert.Equal(3, server.Receive(buffer));
        Assert.Equal(2, server.Send("ok"u8));
        client.ReceiveTimeout = 5000;
        Assert.Equal(2, client.Receive(buffer));
    }
}
