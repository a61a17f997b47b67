using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Vnet.Vms.Providers.Qemu;

namespace Vnet.Tests.TestBed;

/// <summary>
/// The serial console of a QEMU provider's guest (its <c>NAME.console</c> Unix socket): runs a
/// command line as <see cref="QemuGuest.Run"/> does ("ID COMMAND" in, output then "VNET-GUEST done
/// ID rc=N" out). Lines the guest printed before the connection are not seen; every wait is bounded.
/// </summary>
internal sealed partial class GuestConsole : IDisposable
{
    private readonly Socket _socket;
    private readonly List<string> _lines = [];
    private readonly Lock _gate = new();
    private readonly Thread _reader;
    private int _lastCommand;

    private GuestConsole(Socket socket)
    {
        _socket = socket;
        _reader = new Thread(Read) { IsBackground = true, Name = "guest-console" };
        _reader.Start();
    }

    /// <summary>Connects, retrying while the socket is not there yet, for at most 10 s.</summary>
    public static GuestConsole Connect(string path)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                socket.Connect(new UnixDomainSocketEndPoint(path));
                return new GuestConsole(socket);
            }
            catch (SocketException) when (DateTime.UtcNow < deadline)
            {
                socket.Dispose();
                Thread.Sleep(100);
            }
        }
    }

    private void Read()
    {
        var buffer = new byte[4096];
        var partial = new StringBuilder();
        try
        {
            while (true)
            {
                var n = _socket.Receive(buffer);
                if (n == 0)
                    return;
                partial.Append(Encoding.UTF8.GetString(buffer, 0, n));
                var text = partial.ToString();
                var end = text.LastIndexOf('\n');
                if (end < 0)
                    continue;
                lock (_gate)
                    _lines.AddRange(text[..end].Split('\n').Select(l => l.TrimEnd('\r')));
                partial.Clear().Append(text[(end + 1)..]);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
    }

    public sealed record Result(int ExitCode, string Output)
    {
        public bool Ok => ExitCode == 0;
    }

    /// <summary>
    /// Waits (bounded) for a line containing <paramref name="text"/> that the guest printed since the
    /// connection, e.g. its boot's "VNET-GUEST ready" (a command sent before it is not read); returns it.
    /// </summary>
    public string WaitForLine(string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            lock (_gate)
            {
                if (_lines.FirstOrDefault(l => l.Contains(text, StringComparison.Ordinal)) is { } line)
                    return line;
            }
            Thread.Sleep(50);
        }
        lock (_gate)
            throw new TimeoutException($"the guest printed no '{text}' within {timeout.TotalSeconds:0} s; console:\n  "
                + string.Join("\n  ", _lines.Skip(Math.Max(0, _lines.Count - 25))));
    }

    /// <summary>Runs one command line in the guest; throws with the console's tail when no answer comes in time.</summary>
    public Result Run(string command, TimeSpan timeout)
    {
        var id = Interlocked.Increment(ref _lastCommand) + 1000;
        int from;
        lock (_gate)
            from = _lines.Count;
        _socket.Send(Encoding.UTF8.GetBytes($"{id} {command}\n"));
        var done = $"{QemuGuestImage.Marker} done {id} rc=";
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            lock (_gate)
            {
                for (var i = from; i < _lines.Count; i++)
                {
                    var at = _lines[i].IndexOf(done, StringComparison.Ordinal);
                    if (at < 0)
                        continue;
                    var rc = int.Parse(RcPattern().Match(_lines[i][at..]).Groups[1].Value, CultureInfo.InvariantCulture);
                    return new Result(rc, string.Join('\n', _lines.Skip(from).Take(i - from)));
                }
            }
            Thread.Sleep(50);
        }
        lock (_gate)
            throw new TimeoutException($"the guest did not answer '{command}' within {timeout.TotalSeconds:0} s; console:\n  "
                + string.Join("\n  ", _lines.Skip(Math.Max(0, _lines.Count - 25))));
    }

    public void Dispose()
    {
        _socket.Dispose();
        _reader.Join(TimeSpan.FromSeconds(2));
    }

    [GeneratedRegex(@"rc=(\d+)")]
    private static partial Regex RcPattern();
}
