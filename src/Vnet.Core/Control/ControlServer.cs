using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Vnet.Peers;

namespace Vnet.Control;

/// <summary>
/// Serves the control protocol on a Unix socket that only the daemon's owner may use (the socket
/// file is 0600 in a 0700 directory it creates). Each connection carries one request.
/// </summary>
public sealed partial class ControlServer : IAsyncDisposable
{
    private const int MaxRequestBytes = 4 << 20;

    private readonly string _path;
    private readonly ICommandHandler _commands;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private Socket? _socket;
    private Task? _loop;

    public ControlServer(string path, ICommandHandler commands, ILogger logger)
    {
        _path = path;
        _commands = commands;
        _logger = logger;
    }

    public string Path => _path;

    public void Start()
    {
        var dir = System.IO.Path.GetDirectoryName(_path);
        if (!string.IsNullOrEmpty(dir) && !Directory.Exists(dir))
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        if (File.Exists(_path))
        {
            // A stale socket from a daemon that died; a live one answers, and then we refuse to start.
            if (IsLive(_path))
                throw new IOException($"another daemon already serves {_path}");
            File.Delete(_path);
        }
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        var oldMask = Native.LibC.Umask(0x3F); // 077: the socket file is born owner-only
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(_path));
        }
        catch (SocketException e)
        {
            // The bare "Permission denied" names no file; the daemon that cannot start says which.
            socket.Dispose();
            throw new IOException($"cannot make the control socket {_path}: {e.Message}", e);
        }
        finally
        {
            _ = Native.LibC.Umask(oldMask);
        }
        File.SetUnixFileMode(_path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        socket.Listen(32);
        _socket = socket;
        _loop = Task.Run(AcceptLoop);
        Log.Serving(_logger, _path);
    }

    private static bool IsLive(string path)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _socket!.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            _ = Task.Run(() => Serve(client));
        }
    }

    private async Task Serve(Socket client)
    {
        using var _ = client;
        await using var stream = new NetworkStream(client, ownsSocket: false);
        ControlResponse response;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            timeout.CancelAfter(TimeSpan.FromSeconds(30));
            var line = await ReadLine(stream, timeout.Token);
            var request = line is null ? null : JsonSerializer.Deserialize(line, ControlJson.Default.ControlRequest);
            if (request is null || string.IsNullOrEmpty(request.Command))
            {
                response = new ControlResponse(false, null, "empty or malformed request");
            }
            else
            {
                response = ControlResponse.From(await _commands.HandleAsync(request.Command, request.Args));
            }
        }
        catch (JsonException e)
        {
            response = new ControlResponse(false, null, $"malformed request: {e.Message}");
        }
        catch (OperationCanceledException)
        {
            return;
        }
        catch (IOException)
        {
            return;
        }
        try
        {
            var bytes = JsonSerializer.SerializeToUtf8Bytes(response, ControlJson.Default.ControlResponse);
            await stream.WriteAsync(bytes);
            await stream.WriteAsync("\n"u8.ToArray());
        }
        catch (IOException)
        {
        }
    }

    private static async Task<string?> ReadLine(Stream stream, CancellationToken ct)
    {
        var buffer = new MemoryStream();
        var chunk = new byte[4096];
        while (buffer.Length < MaxRequestBytes)
        {
            var n = await stream.ReadAsync(chunk, ct);
            if (n == 0)
                break;
            var nl = Array.IndexOf(chunk, (byte)'\n', 0, n);
            if (nl >= 0)
            {
                buffer.Write(chunk, 0, nl);
                return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
            }
            buffer.Write(chunk, 0, n);
        }
        return buffer.Length == 0 ? null : Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _socket?.Dispose();
        if (_loop is not null)
            await _loop.ConfigureAwait(false);
        try
        {
            File.Delete(_path);
        }
        catch (IOException)
        {
        }
        _stop.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "Control socket {Path}")]
        public static partial void Serving(ILogger logger, string path);
    }
}
