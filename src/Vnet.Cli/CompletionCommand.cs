using System.CommandLine;

namespace Vnet.Cli;

/// <summary>
/// `vnet completion bash|zsh`: prints a script that completes vnet's commands and options in the
/// shell. The words come from vnet itself, through System.CommandLine's suggest directive
/// (`vnet "[suggest:POSITION]" "LINE"`), so the script never goes stale as commands change.
/// </summary>
internal static class CompletionCommand
{
    // The line without the program's own name, and the cursor moved to match.
    private const string Bash = """
        # vnet completion for bash: source it, or install it as /etc/bash_completion.d/vnet
        _vnet_complete() {
            local line="${COMP_LINE#* }"
            local pos=$(( COMP_POINT - ${#COMP_LINE} + ${#line} ))
            (( pos < 0 )) && pos=0
            local IFS=$'\n'
            COMPREPLY=( $(compgen -W "$(vnet "[suggest:${pos}]" "${line}" 2>/dev/null)" -- "${COMP_WORDS[COMP_CWORD]}") )
        }
        complete -o default -F _vnet_complete vnet

        """;

    private const string Zsh = """
        # vnet completion for zsh: source it, or put it in a directory of $fpath as _vnet
        _vnet_complete() {
            local line="${BUFFER#* }"
            local pos=$(( CURSOR - ${#BUFFER} + ${#line} ))
            (( pos < 0 )) && pos=0
            local -a words
            words=("${(@f)$(vnet "[suggest:${pos}]" "${line}" 2>/dev/null)}")
            compadd -a words
        }
        compdef _vnet_complete vnet

        """;

    public static Command Create()
    {
        var shell = new Argument<string>("shell") { Description = "bash or zsh" };
        shell.AcceptOnlyFromAmong("bash", "zsh");
        var command = new Command("completion", "Print a shell completion script for vnet: 'source <(vnet completion bash)', or save it as /etc/bash_completion.d/vnet.")
        {
            shell,
        };
        command.SetAction(parse =>
        {
            Console.Out.Write(parse.GetValue(shell) == "zsh" ? Zsh : Bash);
            return 0;
        });
        return command;
    }
}
