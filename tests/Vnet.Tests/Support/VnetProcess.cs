using System.Diagnostics;

namespace Vnet.Tests.Support;

/// <summary>The real <c>vnet</c> (this build's vnet.dll) run as a process, for the tests of its command line.</summary>
internal static class VnetProcess
{
    public static string Dll => Path.Combine(AppContext.BaseDirectory, "vnet.dll");

    /// <summary>`dotnet vnet.dll ARGS` with standard input, output and error redirected.</summary>
    public static ProcessStartInfo StartInfo(IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        psi.ArgumentList.Add(Dll);
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        return psi;
    }

    /// <summary>
    /// Runs vnet with its standard input closed and waits for it, at most <paramref name="bound"/>
    /// (then it is killed and the wait throws): its exit code, standard output and the lines of its
    /// standard error.
    /// </summary>
    public static async Task<(int ExitCode, string Stdout, string[] Stderr)> RunAsync(IEnumerable<string> args, TimeSpan bound,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = StartInfo(args);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
            psi.Environment[name] = value;
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        using var deadline = new CancellationTokenSource(bound);
        try
        {
            var stdout = p.StandardOutput.ReadToEndAsync(deadline.Token);
            var stderr = p.StandardError.ReadToEndAsync(deadline.Token);
            await p.WaitForExitAsync(deadline.Token);
            return (p.ExitCode, await stdout, (await stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
        finally
        {
            if (!p.HasExited)
                p.Kill(entireProcessTree: true);
        }
    }
}
