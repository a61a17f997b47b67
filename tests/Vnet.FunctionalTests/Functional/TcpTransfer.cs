using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Vnet.Tests.TestBed;

namespace Vnet.Tests.Functional;

/// <summary>
/// A TCP transfer between two VM namespaces that proves every byte arrived: the receiver reads to
/// the end of the stream and hashes what it got, the sender hashes what it sent.
/// </summary>
internal static class TcpTransfer
{
    public sealed record Result(long Bytes, string Sha256);

    /// <summary>Listens in <paramref name="netns"/> and receives one connection to its end.</summary>
    public static Task<Result> Receive(string netns, int port, TimeSpan timeout)
    {
        Socket listener;
        using (Netns.Enter(netns))
        {
            listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Any, port));
            listener.Listen(1);
        }
        return Task.Run(async () =>
        {
            using var _ = listener;
            using var cts = new CancellationTokenSource(timeout);
            using var s = await listener.AcceptAsync(cts.Token);
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buffer = new byte[64 * 1024];
            long total = 0;
            while (true)
            {
                var n = await s.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
                if (n == 0)
                    break;
                hash.AppendData(buffer, 0, n);
                total += n;
            }
            return new Result(total, Convert.ToHexString(hash.GetHashAndReset()));
        });
    }

    /// <summary>Connects from <paramref name="netns"/> and sends pseudo-random bytes at a bounded rate.</summary>
    public static Task<Result> Send(string netns, IPEndPoint to, long bytes, long bytesPerSecond, TimeSpan timeout)
    {
        Socket socket;
        using (Netns.Enter(netns))
            socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        return Task.Run(async () =>
        {
            using var _ = socket;
            using var cts = new CancellationTokenSource(timeout);
            await socket.ConnectAsync(to, cts.Token);
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var random = new Random(42);
            var chunk = new byte[32 * 1024];
            var clock = Stopwatch.StartNew();
            long sent = 0;
            while (sent < bytes)
            {
                var n = (int)Math.Min(chunk.Length, bytes - sent);
                random.NextBytes(chunk.AsSpan(0, n));
                hash.AppendData(chunk, 0, n);
                var off = 0;
                while (off < n)
                    off += await socket.SendAsync(chunk.AsMemory(off, n - off), SocketFlags.None, cts.Token);
                sent += n;
                var ahead = TimeSpan.FromSeconds((double)sent / bytesPerSecond) - clock.Elapsed;
                if (ahead > TimeSpan.Zero)
                    await Task.Delay(ahead, cts.Token);
            }
            socket.Shutdown(SocketShutdown.Send);
            // Wait for the receiver to close: then every byte was read.
            var tail = new byte[1];
            while (await socket.ReceiveAsync(tail, SocketFlags.None, cts.Token) > 0)
            {
            }
            return new Result(sent, Convert.ToHexString(hash.GetHashAndReset()));
        });
    }
}
