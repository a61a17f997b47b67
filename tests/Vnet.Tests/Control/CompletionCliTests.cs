using System.Diagnostics;

namespace Vnet.Tests.Control;

/// <summary>
/// `vnet completion bash` in a real bash: the script it prints is sourced, and its completion
/// function, called as bash would for a few command lines, offers vnet's own commands, subcommands
/// and options (asked of vnet through the suggest directive). A shim named `vnet` on PATH runs
/// this build.
/// </summary>
public sealed class CompletionCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vnet-completion-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Complete(string line)
    {
        var shim = Path.Combine(_dir, "vnet");
        File.WriteAllText(shim, $"#!/bin/sh\nexec dotnet \"{Path.Combine(AppContext.BaseDirectory, "vnet.dll")}\" \"$@\"\n");
        File.SetUnixFileMode(shim, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        const string script = """
            set -e
            source <(vnet completion bash)
            COMP_LINE="$1"; COMP_POINT=${#1}
            read -ra COMP_WORDS <<< "$1"
            [[ "$1" == *" " ]] && COMP_WORDS+=("")
            COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
            _vnet_complete
            printf '%s\n' "${COMPREPLY[@]}"
            """;
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        psi.ArgumentList.Add("bash");
        psi.ArgumentList.Add(line);
        psi.Environment["PATH"] = $"{_dir}:{Environment.GetEnvironmentVariable("PATH")}";
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(30)), "bash did not finish");
        Assert.True(p.ExitCode == 0, $"bash failed: {error.Result}");
        return output.Result;
    }

    [Theory]
    [InlineData("vnet li", "link")]
    [InlineData("vnet link a", "add")]
    [InlineData("vnet status --so", "--socket")]
    [InlineData("vnet compl", "completion")]
    public void Completes_TheOnlyMatch(string line, string expected) =>
        Assert.Equal([expected], Complete(line).Split('\n', StringSplitOptions.RemoveEmptyEntries));

    [Fact]
    public void Completes_EverySubcommandAfterASpace()
    {
        var words = Complete("vnet link ").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains("add", words);
        Assert.Contains("del", words);
        Assert.Contains("list", words);
        Assert.DoesNotContain("daemon", words);
    }
}
