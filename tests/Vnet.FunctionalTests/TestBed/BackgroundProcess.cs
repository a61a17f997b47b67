using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Vnet.Tests.TestBed;

/// <summary>
/// A program a test runs in the background (a daemon, iperf3, tcpdump ...), usually inside a
/// namespace. Its stdout and stderr go line by line to a log file, so that a failed CI run can be
/// read afterwards, and to memory, so that a test can wait for and assert on what it printed.
/// </summary>
/// <remarks>
/// The program leads its own process group (it is started through setsid), so that stopping it
/// also ends whatever it forked, even children that outlive it.
/// </remarks>
internal sealed class BackgroundProcess : IDisposable
{
    private static readonly TimeSpan DefaultGrace = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan ReapLimit = TimeSpan.FromSeconds(10);

    private readonly Process _process;
    private readonly object _gate = new();
    private readonly List<string> _lines = [];
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();
    private readonly StreamWriter _log;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private bool _ownGroup;
    private bool _stdoutOpen = true;
    private bool _stderrOpen = true;
    private bool _disposed;
    private int? _finalExitCode;
    private StreamWriter? _input;

    public string Name { get; }

    /// <summary>The namespace it runs in, or null for the test host's own.</summary>
    public string? Namespace { get; }

    public string CommandLine { get; }
    public string LogPath { get; }
    public int Pid { get; private set; }

    private BackgroundProcess(string name, string? ns, string commandLine, string logPath, Process process, StreamWriter log)
    {
        Name = name;
        Namespace = ns;
        CommandLine = commandLine;
        LogPath = logPath;
        _process = process;
        _log = log;
        process.OutputDataReceived += (_, e) => OnLine(e.Data, stderr: false);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data, stderr: true);
        process.Exited += (_, _) => OnExited();
    }

    /// <summary>Starts <paramref name="fileName"/> (in <paramref name="ns"/> when given) and begins capturing.</summary>
    /// <param name="input">Keep its stdin open for <see cref="WriteLine"/> (a QEMU guest's serial
    /// console); otherwise stdin is closed at once.</param>
    internal static BackgroundProcess Start(
        string? ns, string name, string fileName, IEnumerable<string> args,
        IReadOnlyDictionary<string, string>? environment, string logPath, bool input = false)
    {
        var argv = new List<string>();
        if (ns is not null)
            argv.AddRange(["ip", "netns", "exec", ns]);
        argv.Add(fileName);
        argv.AddRange(args);
        var commandLine = string.Join(' ', argv.Select(a => a.Any(char.IsWhiteSpace) || a.Length == 0 ? Sh.Quote(a) : a));

        var psi = new ProcessStartInfo("setsid", argv)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        if (environment is not null)
        {
            foreach (var (key, value) in environment)
                psi.Environment[key] = value;
        }

        var log = new StreamWriter(new FileStream(logPath, FileMode.Create, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var bp = new BackgroundProcess(name, ns, commandLine, logPath, process, log);
        try
        {
            log.WriteLine($"# {commandLine}");
            process.Start();
        }
        catch
        {
            log.Dispose();
            process.Dispose();
            throw;
        }
        bp.Pid = process.Id;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        // A daemon must never wait on the test host's terminal; a program that takes input gets a
        // pipe only the test writes to.
        if (input)
            bp._input = process.StandardInput;
        else
            process.StandardInput.Close();
        bp._ownGroup = WaitForOwnGroup(process);
        return bp;
    }

    /// <summary>
    /// Start returns once setsid is exec'd, a moment before it calls setsid(2). Until then, or if
    /// setsid had to fork, signalling the group would hit the test host's own group.
    /// </summary>
    private static bool WaitForOwnGroup(Process process)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(2))
        {
            if (TestNative.GetPgid(process.Id) == process.Id)
                return true;
            if (process.HasExited)
                return false;
            Thread.Sleep(1);
        }
        return false;
    }

    public bool HasExited => _disposed || _process.HasExited;

    /// <summary>The exit code once it has ended (128 + signal when a signal ended it), else null.</summary>
    public int? ExitCode => _disposed ? _finalExitCode : _process.HasExited ? _process.ExitCode : null;

    /// <summary>All output so far, stdout and stderr interleaved in the order the lines arrived.</summary>
    public string Output
    {
        get
        {
            lock (_gate)
                return string.Join('\n', _lines);
        }
    }

    public IReadOnlyList<string> Lines
    {
        get
        {
            lock (_gate)
                return [.. _lines];
        }
    }

    public string Stdout
    {
        get
        {
            lock (_gate)
                return _stdout.ToString();
        }
    }

    public string Stderr
    {
        get
        {
            lock (_gate)
                return _stderr.ToString();
        }
    }

    /// <summary>
    /// Waits until a line of output contains <paramref name="substring"/> and returns that line.
    /// Fails at once, with the output, if the program ends without printing it.
    /// </summary>
    public string WaitForOutput(string substring, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        var checkedLines = 0;
        while (true)
        {
            bool streamsOpen;
            lock (_gate)
            {
                for (; checkedLines < _lines.Count; checkedLines++)
                {
                    if (_lines[checkedLines].Contains(substring, StringComparison.Ordinal))
                        return _lines[checkedLines];
                }
                streamsOpen = _stdoutOpen || _stderrOpen;
            }
            // Asked outside our lock: the Process class raises Exited while it holds its own lock,
            // and OnExited takes ours; asking it while holding ours once deadlocked a test run.
            if (!streamsOpen && _process.HasExited)
            {
                throw new InvalidOperationException(
                    $"'{Name}' exited ({_process.ExitCode}) without printing '{substring}'.{Tail()}");
            }
            var left = timeout - clock.Elapsed;
            if (left <= TimeSpan.Zero)
            {
                throw new TimeoutException(
                    $"timed out after {timeout.TotalSeconds:0.###} s waiting for '{substring}' in the output of '{Name}'.{Tail()}");
            }
            lock (_gate)
            {
                // Pulsed on every line and at exit; the cap covers an exit seen before streams close.
                if (checkedLines == _lines.Count)
                    Monitor.Wait(_gate, left < TimeSpan.FromMilliseconds(200) ? left : TimeSpan.FromMilliseconds(200));
            }
        }
    }

    /// <summary>Waits for the program to end and its output to be read; false if it has not by then.</summary>
    public bool WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout))
            return false;
        var clock = Stopwatch.StartNew();
        lock (_gate)
        {
            while (_stdoutOpen || _stderrOpen)
            {
                // A grandchild that inherited the pipes keeps them open; the exit itself is what counts.
                var left = TimeSpan.FromSeconds(2) - clock.Elapsed;
                if (left <= TimeSpan.Zero)
                    break;
                Monitor.Wait(_gate, left);
            }
        }
        return true;
    }

    /// <summary>Writes one line to its stdin (started with input); false once it has ended.</summary>
    public bool WriteLine(string line)
    {
        var input = _input ?? throw new InvalidOperationException($"'{Name}' was started without input");
        lock (input)
        {
            try
            {
                input.Write(line + "\n");
                input.Flush();
                return true;
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
                // The program ended and closed its end of the pipe.
                return false;
            }
        }
    }

    /// <summary>Ends the program and everything it started with SIGKILL; returns the exit code.</summary>
    public int Kill()
    {
        // Disposed already (e.g. by its owner before the bed): it was stopped then.
        if (_disposed)
            return _finalExitCode ?? -1;
        KillTree();
        if (!WaitForExit(ReapLimit))
            throw new InvalidOperationException($"'{Name}' (pid {Pid}) did not die within {ReapLimit.TotalSeconds} s of SIGKILL");
        return _process.ExitCode;
    }

    /// <summary>
    /// SIGKILL to the program's own process only, as a crash or the OOM killer would end it: what
    /// it started outlives it. Returns the exit code.
    /// </summary>
    public int KillOnly()
    {
        if (_disposed)
            return _finalExitCode ?? -1;
        if (!_process.HasExited)
        {
            Log("SIGKILL (the process only)");
            TestNative.Kill(Pid, TestNative.SIGKILL);
        }
        if (!WaitForExit(ReapLimit))
            throw new InvalidOperationException($"'{Name}' (pid {Pid}) did not die within {ReapLimit.TotalSeconds} s of SIGKILL");
        return _process.ExitCode;
    }

    /// <summary>
    /// Asks the program to end with SIGTERM, then SIGKILLs whatever of its tree is left after
    /// <paramref name="grace"/> (5 s by default); returns the exit code.
    /// </summary>
    public int Stop(TimeSpan? grace = null)
    {
        if (_disposed)
            return _finalExitCode ?? -1;
        if (!_process.HasExited)
        {
            Log("SIGTERM");
            Signal(TestNative.SIGTERM);
            if (!WaitForExit(grace ?? DefaultGrace))
                Log($"still running after {(grace ?? DefaultGrace).TotalSeconds} s grace");
        }
        return Kill();
    }

    private void KillTree()
    {
        if (!_process.HasExited)
        {
            Log("SIGKILL");
            try
            {
                // Walks the tree by parent pid, which also reaches children that left the group.
                _process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // It ended between the check and the kill.
            }
        }
        // Children that outlived their parent are reparented away from the tree but stay in the group.
        if (_ownGroup)
            TestNative.Kill(-Pid, TestNative.SIGKILL);
    }

    private void Signal(int signal)
    {
        if (_ownGroup)
            TestNative.Kill(-Pid, signal);
        else
            TestNative.Kill(Pid, signal);
    }

    private void OnLine(string? line, bool stderr)
    {
        lock (_gate)
        {
            if (line is null)
            {
                if (stderr)
                    _stderrOpen = false;
                else
                    _stdoutOpen = false;
            }
            else
            {
                _lines.Add(line);
                (stderr ? _stderr : _stdout).Append(line).Append('\n');
                WriteLog(stderr ? "err" : "out", line);
            }
            Monitor.PulseAll(_gate);
        }
    }

    private void OnExited()
    {
        // Read before taking our lock (see WaitForOutput).
        var code = _process.ExitCode;
        lock (_gate)
        {
            WriteLog("#", $"exited with code {code}");
            Monitor.PulseAll(_gate);
        }
    }

    private void Log(string text)
    {
        lock (_gate)
            WriteLog("#", text);
    }

    private void WriteLog(string stream, string text)
    {
        if (_disposed)
            return;
        try
        {
            _log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{_clock.Elapsed.TotalSeconds,9:0.000} {stream} {text}"));
        }
        catch (IOException)
        {
            // A full disk must not turn into a failure of the test that merely logs.
        }
    }

    private string Tail()
    {
        lock (_gate)
        {
            var from = Math.Max(0, _lines.Count - 20);
            var tail = string.Join("\n  ", _lines.Skip(from));
            return $" Log: {LogPath}. Last output:\n  {tail}";
        }
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        int? code = null;
        try
        {
            code = Stop(TimeSpan.FromSeconds(2));
        }
        catch (InvalidOperationException)
        {
            // Dispose is best effort; Stop already logged what it could.
        }
        lock (_gate)
        {
            // Kept so that a test can still read how it ended after its bed is gone.
            _finalExitCode = code;
            _disposed = true;
            _log.Dispose();
        }
        _process.Dispose();
    }
}
