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

    public static Result TryRun(string command, int timeoutSeconds = 30) =>
        TryExec("/bin/sh", ["-c", command], timeoutSeconds);

    /// <summary>
    /// Runs a program with an argument vector, no shell in between, so that names and addresses
    /// never need quoting.
    /// </summary>
    public static Result TryExec(string fileName, IEnumerable<string> args, int timeoutSeconds = 30)
    {
        var psi = new ProcessStartInfo(fileName, args)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start '{fileName}'");
        // A command reading stdin would otherwise wait for the test host's terminal.
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromSeconds(timeoutSeconds)))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit(5000);
            return new Result(-1, stdout.IsCompleted ? stdout.Result : "", $"timed out after {timeoutSeconds} s");
        }
        // What the command itself wrote is in the pipe by now; only a child left in the background
        // ("cmd &") can hold it open, and that child is not waited for.
        Task.WaitAll([stdout, stderr], TimeSpan.FromSeconds(2));
        return new Result(
            p.ExitCode,
            stdout.IsCompleted ? stdout.Result : "",
            stderr.IsCompleted ? stderr.Result : "(output still open: a background child holds it)");
    }

    /// <summary>Quotes one word for /bin/sh.</summary>
    public static string Quote(string word) => "'" + word.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
