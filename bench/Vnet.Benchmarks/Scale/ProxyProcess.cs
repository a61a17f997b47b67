using System.Diagnostics;
using System.Net.Sockets;
using System.Net;
using System.Text;
using Vnet.Configuration;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Json;
using Vnet.Links.Security;
using Vnet.Vms;

namespace Vnet.Benchmarks.Scale;

/// <summary>The Proxy's counters (its <c>status</c>) and what /proc says of it, at one moment.</summary>
internal sealed record ProxySample(DaemonStatus Status, ProcSample Proc);

/// <summary>
/// The Proxy as a process of its own (<c>dotnet vnet.dll daemon --role proxy</c>), so that its CPU
/// time, memory and threads are its alone and can be read from /proc. It runs as a user runs it:
/// the published CLI, the key in a file only its owner reads, the default log level (its log goes
/// to a file); the run talks to it only through its control socket, as <c>vnet</c> does.
/// </summary>
internal sealed class ProxyProcess : IAsyncDisposable
{
    /// <summary>How long a stopping Proxy gets after SIGTERM before it is killed.</summary>
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(10);

    private readonly Process _process;
    private readonly StreamWriter _log;
    private readonly string _logFile;
    private readonly Lock _logLock = new();
    private readonly List<string> _tail = [];
    private int _warningCount;
    private bool _disposed;
    private bool _stopped;

    private ProxyProcess(Process process, string logFile, string socket, IPEndPoint listen)
    {
        _process = process;
        _logFile = logFile;
        _log = new StreamWriter(logFile) { AutoFlush = true };
        Pid = process.Id;
        Socket = socket;
        Listen = listen;
    }

    public int Pid { get; }

    public string Socket { get; }

    public IPEndPoint Listen { get; }

    public bool HasExited => _process.HasExited;

    /// <summary>Lines the Proxy logged at warning level or worse (a directory repair is one).</summary>
    public int WarningCount
    {
        get
        {
            lock (_logLock)
                return _warningCount;
        }
    }

    /// <summary>The Proxy's warnings counted by what they say.</summary>
    public LogTally Tally { get; } = new();

    /// <summary>The last lines the Proxy wrote, to show when it failed.</summary>
    public IReadOnlyList<string> Tail
    {
        get
        {
            lock (_logLock)
                return [.. _tail];
        }
    }

    /// <summary>
    /// Makes the key pairs: the Proxy's private key goes to a file created with mode 0600 (never on a
    /// command line), and every host's public key to the Proxy's hosts file (NAME PUBLIC_KEY), so it
    /// admits them. The hosts run in this process and take their pairs from here.
    /// </summary>
    public static (StaticKeyPair Proxy, StaticKeyPair[] Hosts) MakeKeys(string keyFile, string hostsFile, int hosts)
    {
        var proxy = StaticKeyPair.Generate();
        KeyFiles.Write(keyFile, proxy.ExportPrivate());
        var pairs = new StaticKeyPair[hosts];
        var admitted = new StringBuilder();
        for (var h = 0; h < hosts; h++)
        {
            pairs[h] = StaticKeyPair.Generate();
            admitted.Append(SimHosts.NameOf(h)).Append(' ').Append(pairs[h].Public).Append('\n');
        }
        File.WriteAllText(hostsFile, admitted.ToString());
        return (proxy, pairs);
    }

    /// <summary>Starts the Proxy on a free loopback port; its standard output and error go to <paramref name="logFile"/>.</summary>
    public static ProxyProcess Start(string vnetDll, string keyFile, string hostsFile, string socket, string logFile)
    {
        var listen = new IPEndPoint(IPAddress.Loopback, FreePort());
        var info = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        // The hosts' process may run the server GC (bench/scale.sh asks for it); the Proxy runs with
        // the GC its own runtimeconfig names, as users run it.
        info.Environment.Remove("DOTNET_gcServer");
        info.Environment.Remove("COMPlus_gcServer");
        foreach (var arg in (string[])[vnetDll, "daemon", "--name", "proxy", "--role", "proxy", "--listen", listen.ToString(),
            "--key-file", keyFile, "--hosts-file", hostsFile, "--control-socket", socket])
        {
            info.ArgumentList.Add(arg);
        }
        var process = Process.Start(info) ?? throw new InvalidOperationException("cannot start dotnet");
        var proxy = new ProxyProcess(process, logFile, socket, listen);
        process.OutputDataReceived += (_, e) => proxy.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => proxy.OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return proxy;
    }

    /// <summary>Waits until the Proxy answers on its control socket.</summary>
    public async Task WaitReadyAsync(TimeSpan timeout, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (_process.HasExited)
                throw new InvalidOperationException($"the Proxy exited at start (code {_process.ExitCode}):\n{string.Join('\n', Tail)}");
            if (File.Exists(Socket))
            {
                try
                {
                    await StatusAsync(ct);
                    return;
                }
                catch (ControlException)
                {
                }
            }
            if (clock.Elapsed > timeout)
                throw new TimeoutException($"the Proxy did not answer on {Socket} within {timeout.TotalSeconds:0} s");
            await Task.Delay(100, ct);
        }
    }

    public async Task<DaemonStatus> StatusAsync(CancellationToken ct) =>
        DaemonJson.FromNode<DaemonStatus>(await ControlClient.SendAsync(Socket, "status", null, ct))
            ?? throw new ControlException("empty status");

    /// <summary>The Proxy's view of every VM (<c>vm.list</c>).</summary>
    public async Task<List<VmStatus>> VmsAsync(CancellationToken ct) =>
        DaemonJson.FromNode<List<VmStatus>>(await ControlClient.SendAsync(Socket, "vm.list", null, ct)) ?? [];

    /// <summary>The Proxy's replicas of the hosts' maps and its repairs (<c>directory</c>).</summary>
    public async Task<DirectoryStatus> DirectoryAsync(CancellationToken ct) =>
        DaemonJson.FromNode<DirectoryStatus>(await ControlClient.SendAsync(Socket, "directory", null, ct))
            ?? throw new ControlException("empty directory status");

    /// <summary>Counters first, then /proc, so the CPU time read covers the status query itself.</summary>
    public async Task<ProxySample> SampleAsync(CancellationToken ct)
    {
        var status = await StatusAsync(ct);
        var proc = ProcStats.Read(Pid) ?? throw new InvalidOperationException("the Proxy process is gone");
        return new ProxySample(status, proc);
    }

    /// <summary>A port free for both TCP and UDP now (the daemon listens on both; the CLI wants a port, not 0).</summary>
    private static int FreePort()
    {
        for (var attempt = 0; ; attempt++)
        {
            using var tcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            tcp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            var port = ((IPEndPoint)tcp.LocalEndPoint!).Port;
            using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            try
            {
                udp.Bind(new IPEndPoint(IPAddress.Loopback, port));
                return port;
            }
            catch (SocketException) when (attempt < 20)
            {
            }
        }
    }

    private void OnLine(string? line)
    {
        if (line is null)
            return;
        lock (_logLock)
        {
            if (_disposed)
                return;
            _log.WriteLine(line);
            // The console logger writes "HH:mm:ss.fff warn: category[id] message".
            if (line.Contains(" warn: ", StringComparison.Ordinal) || line.Contains(" fail: ", StringComparison.Ordinal) ||
                line.Contains(" crit: ", StringComparison.Ordinal))
            {
                _warningCount++;
                // Past the timestamp: "warn: category[id] message".
                Tally.Add(line.Length > 13 ? line[13..] : line);
            }
            _tail.Add(line);
            if (_tail.Count > 30)
                _tail.RemoveAt(0);
        }
    }

    /// <summary>SIGTERM (the daemon closes its links and removes its socket), then SIGKILL if it does not stop.</summary>
    /// <param name="keepLog">Where to copy the Proxy's log before it is removed with the run's files; null: nowhere.</param>
    public async ValueTask StopAsync(string? keepLog)
    {
        if (_stopped)
            return;
        _stopped = true;
        if (!_process.HasExited)
        {
            ProcStats.Signal(Pid, ProcStats.SigTerm);
            using var grace = new CancellationTokenSource(StopGrace);
            try
            {
                await _process.WaitForExitAsync(grace.Token);
            }
            catch (OperationCanceledException)
            {
                _process.Kill();
                await _process.WaitForExitAsync(CancellationToken.None);
            }
        }
        lock (_logLock)
        {
            _disposed = true;
            _log.Dispose();
        }
        _process.Dispose();
        File.Delete(Socket);
        if (keepLog is not null)
            File.Copy(_logFile, keepLog, overwrite: true);
    }

    public ValueTask DisposeAsync() => StopAsync(null);
}
