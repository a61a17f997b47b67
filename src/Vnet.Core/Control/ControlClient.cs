using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

using Vnet.Links;
using Vnet.Links.Security;

namespace Vnet.Control;

/// <summary>Talks to a daemon's control socket: one request, one response.</summary>
public static class ControlClient
{
    public const string SocketDirectory = "/run/vnet";

    /// <summary>
    /// The socket to use: the explicit one, else $VNET_SOCKET, else the only socket in /run/vnet.
    /// </summary>
    public static string ResolveSocket(string? explicitPath)
    {
        if (!string.IsNullOrEmpty(explicitPath))
            return explicitPath;
        var env = Environment.GetEnvironmentVariable("VNET_SOCKET");
        if (!string.IsNullOrEmpty(env))
            return env;
        var sockets = Directory.Exists(SocketDirectory) ? Directory.GetFiles(SocketDirectory, "*.sock") : [];
        return sockets.Length switch
        {
            1 => sockets[0],
            0 => throw new ControlException($"no daemon socket in {SocketDirectory}; is a daemon running here? (or give --socket)"),
            _ => throw new ControlException($"several daemons run here ({string.Join(", ", sockets.Select(Path.GetFileNameWithoutExtension))}); pick one with --socket"),
        };
    }

    /// <summary>How long a command may take before the client gives up on the daemon.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long one command may take: 30 s, but VM orders, moves and removals wait for hosts that
    /// boot guests and migrate them (the Proxy bounds each step itself), so they get 4 minutes.
    /// </summary>
    public static TimeSpan TimeoutFor(string command) =>
        command is "vm.order" or "vm.move" or "vm.remove" ? TimeSpan.FromMinutes(4) : Timeout;

    public static async Task<JsonNode?> SendAsync(string socketPath, string command, JsonObject? args = null, CancellationToken ct = default)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var limit = TimeoutFor(command);
        timeout.CancelAfter(limit);
        try
        {
            return await Exchange(socketPath, command, args, timeout.Token);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new ControlException($"the daemon at {socketPath} did not answer '{command}' within {limit.TotalSeconds:0} s");
        }
    }

    private static async Task<JsonNode?> Exchange(string socketPath, string command, JsonObject? args, CancellationToken ct)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct);
        }
        catch (SocketException e)
        {
            throw new ControlException($"cannot reach the daemon at {socketPath}: {e.Message}");
        }
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var request = JsonSerializer.SerializeToUtf8Bytes(new ControlRequest(command, args), ControlJson.Default.ControlRequest);
        await stream.WriteAsync(request, ct);
        await stream.WriteAsync("\n"u8.ToArray(), ct);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        var line = await reader.ReadLineAsync(ct) ?? throw new ControlException("the daemon closed the connection without an answer");
        var response = JsonSerializer.Deserialize(line, ControlJson.Default.ControlResponse)
            ?? throw new ControlException("empty answer from the daemon");
        if (!response.Ok)
            throw new ControlException(response.Error ?? "the daemon refused the command");
        return response.Data;
    }
}

/// <summary>
/// Remote control over TCP: the CLI proves an administrator's key to a daemon's link port (a Noise
/// handshake as role Tool, to the daemon's pinned public key) and sends the same requests as over
/// the local socket, sealed.
/// </summary>
public static class RemoteControlClient
{
    public static async Task<JsonNode?> SendAsync(System.Net.IPEndPoint daemon, StaticKeyPair admin, PublicKeyId daemonKey, PresharedKey psk,
        string command, JsonObject? args = null, CancellationToken ct = default)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(ControlClient.TimeoutFor(command));
        using var socket = new Socket(daemon.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await HandshakeChannel.ConnectAsync(socket, daemon, timeout.Token);
            var (peer, local) = await LinkManager.HandshakeAsTool(socket, admin, daemonKey, psk, $"vnet-cli-{Environment.ProcessId}", timeout.Token);
            using var channel = new SecureChannel(socket, peer, local);
            var request = JsonSerializer.SerializeToUtf8Bytes(new ControlRequest(command, args), ControlJson.Default.ControlRequest);
            await channel.WriteAsync(MessageType.Control, request, timeout.Token);
            var (type, payload) = await channel.ReadAsync(Wire.MaxControlPayload - Wire.CounterSize - Wire.TagSize, timeout.Token);
            if (type != MessageType.Control)
                throw new ControlException($"{peer.Name} answered with {type}");
            var response = JsonSerializer.Deserialize(payload, ControlJson.Default.ControlResponse)
                ?? throw new ControlException("empty answer from the daemon");
            if (!response.Ok)
                throw new ControlException(response.Error ?? "the daemon refused the command");
            return response.Data;
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new ControlException($"{daemon} did not answer '{command}' within {ControlClient.Timeout.TotalSeconds:0} s");
        }
        catch (HandshakeException e) when (e.PeerClosed)
        {
            // A daemon answers nothing to a handshake made for another key: the likeliest mistake.
            throw new ControlException($"{daemon}: the daemon closed the connection during the handshake without a word, "
                + "as a daemon does when it is not the one --remote-key names: check --remote-key ('vnet pubkey' on the daemon's key file prints it)");
        }
        catch (Exception e) when (e is SocketException or IOException or HandshakeException)
        {
            throw new ControlException($"{daemon}: {e.Message}");
        }
    }
}

/// <summary>A control command failed; the message is for the user.</summary>
public sealed class ControlException : Exception
{
    public ControlException()
    {
    }

    public ControlException(string message)
        : base(message)
    {
    }

    public ControlException(string message, Exception inner)
        : base(message, inner)
    {
    }

    /// <summary>The command line was wrong (exit 2), not the daemon's answer or its reach (exit 1).</summary>
    public bool BadArguments { get; init; }
}
