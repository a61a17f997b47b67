using System.Diagnostics;
using Vnet.Daemon;

namespace Vnet.Vms.Providers;

/// <summary>The outcome of one program run: its exit code and what it wrote.</summary>
public sealed record ProcessResult(int ExitCode, string Stdout, string Stderr)
{
    public bool Ok => ExitCode == 0;
}

/// <summary>
/// Runs the programs a provider needs (ip, udhcpc, arping, qemu), never through a shell: every
/// argument is one argv entry, so a VM name or address cannot become a command. Every run is
/// bounded in time; one that overruns is killed and refused.
/// </summary>
public static class ProcessRunner
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(20);

    /// <summary>Runs a program to its end and returns its result (a non-zero exit is a result, not an exception).</summary>
    public static async Task<ProcessResult> RunAsync(string file, IEnumerable<string> arguments, TimeSpan? timeout = null)
    {
        using var process = Start(file, arguments, redirectInput: false);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        var limit = timeout ?? DefaultTimeout;
        using var cts = new CancellationTokenSource(limit);
        try
        {
            await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            Kill(process);
            throw new DaemonCommandException($"{Path.GetFileName(file)} did not finish within {limit.TotalSeconds:0} s");
        }
        return new ProcessResult(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    /// <summary>Runs a program and refuses with its error output when it fails.</summary>
    public static async Task<string> CheckAsync(string file, IEnumerable<string> arguments, TimeSpan? timeout = null)
    {
        var args = arguments.ToList();
        var r = await RunAsync(file, args, timeout).ConfigureAwait(false);
        if (!r.Ok)
            throw new DaemonCommandException($"{Path.GetFileName(file)} {string.Join(' ', args)}: exit {r.ExitCode}: {r.Stderr.Trim()}");
        return r.Stdout;
    }

    /// <summary>Starts a long-running program (stdout and stderr redirected; the caller reads or discards them).</summary>
    public static Process Start(string file, IEnumerable<string> arguments, bool redirectInput)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = redirectInput,
            UseShellExecute = false,
        };
        foreach (var a in arguments)
            info.ArgumentList.Add(a);
        try
        {
            return Process.Start(info) ?? throw new DaemonCommandException($"{file} did not start");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new DaemonCommandException($"cannot run {file}: {e.Message}");
        }
    }

    public static void Kill(Process process)
    {
        try
        {
            if (!process.HasExited)
                process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
        }
    }

    /// <summary>The full path of a program on PATH, or null.</summary>
    public static string? Find(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").Split(':'))
        {
            if (dir.Length == 0)
                continue;
            var path = Path.Combine(dir, name);
            if (File.Exists(path))
                return path;
        }
        foreach (var dir in new[] { "/usr/sbin", "/sbin", "/usr/bin", "/bin" })
        {
            var path = Path.Combine(dir, name);
            if (File.Exists(path))
                return path;
        }
        return null;
    }
}
