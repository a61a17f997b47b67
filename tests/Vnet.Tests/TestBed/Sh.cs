using System.Diagnostics;

namespace Vnet.Tests.TestBed;

/// <summary>Runs system commands (ip, tc, ...) for test set-up, with a bound on time.</summary>
internal static class Sh
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public bool Ok => ExitCode == 0;
    }

    /// <summary>Runs a command line through /bin/sh; throws with its output when it fails.</summary>
    public static string Run(string command, int timeoutSeconds = 30)
    {
        var r = TryRun(command, timeoutSeconds);
        if (!r.Ok)
            throw new InvalidOperationException($"'{command}' failed ({r.ExitCode}): {r.Stderr.Trim()} {r.Stdout.Trim()}");
        return r.Stdout;
    }

    public static Result TryRun(string command, int timeoutSeconds = 30)
    {
        var psi = new ProcessStartInfo("/bin/sh", ["-c", command])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start '{command}'");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(timeoutSeconds)))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit(5000);
            return new Result(-1, stdout.IsCompleted ? stdout.Result : "", $"timed out after {timeoutSeconds} s");
        }
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }
}
