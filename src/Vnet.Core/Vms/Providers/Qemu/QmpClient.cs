using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Vnet.Daemon;

namespace Vnet.Vms.Providers.Qemu;

/// <summary>
/// A QEMU Machine Protocol session on a QEMU's monitor socket (<c>-qmp unix:PATH,server=on,wait=off</c>):
/// one JSON object a line each way; events are skipped. Every read is bounded in time.
/// </summary>
public sealed class QmpClient : IAsyncDisposable
{
    private static readonly TimeSpan ReplyLimit = TimeSpan.FromSeconds(10);

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;

    private QmpClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new StreamReader(_stream, Encoding.UTF8);
    }

    /// <summary>Connects (retrying while QEMU makes its socket, at most <paramref name="wait"/>) and leaves capability negotiation.</summary>
    public static async Task<QmpClient> ConnectAsync(string path, TimeSpan wait)
    {
        var deadline = DateTime.UtcNow + wait;
        while (true)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(path)).ConfigureAwait(false);
                var client = new QmpClient(socket);
                await client.ReadAsync().ConfigureAwait(false); // the greeting
                await client.ExecuteAsync("qmp_capabilities").ConfigureAwait(false);
                return client;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                socket.Dispose();
                await Task.Delay(100).ConfigureAwait(false);
            }
            catch (SocketException e)
            {
                socket.Dispose();
                throw new DaemonCommandException($"QEMU monitor {path}: {e.Message}");
            }
        }
    }

    /// <summary>Runs a command and returns its "return" value; a QMP error is refused with its description.</summary>
    public async Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments = null)
    {
        var request = new JsonObject { ["execute"] = command };
        if (arguments is not null)
            request["arguments"] = arguments;
        var line = Encoding.UTF8.GetBytes(request.ToJsonString() + "\n");
        await _stream.WriteAsync(line).ConfigureAwait(false);
        while (true)
        {
            var reply = await ReadAsync().ConfigureAwait(false);
            if (reply.ContainsKey("event"))
                continue;
            if (reply["error"] is JsonObject error)
                throw new DaemonCommandException($"QEMU refused {command}: {error["desc"]?.GetValue<string>() ?? error.ToJsonString()}");
            return reply["return"];
        }
    }

    private async Task<JsonObject> ReadAsync()
    {
        using var cts = new CancellationTokenSource(ReplyLimit);
        string? line;
        try
        {
            line = await _reader.ReadLineAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            throw new DaemonCommandException($"QEMU's monitor did not answer within {ReplyLimit.TotalSeconds:0} s");
        }
        if (line is null)
            throw new DaemonCommandException("QEMU's monitor closed");
        return JsonNode.Parse(line) as JsonObject ?? throw new DaemonCommandException("QEMU's monitor sent no JSON object");
    }

    public async ValueTask DisposeAsync()
    {
        _reader.Dispose();
        await _stream.DisposeAsync().ConfigureAwait(false);
        _socket.Dispose();
    }
}
