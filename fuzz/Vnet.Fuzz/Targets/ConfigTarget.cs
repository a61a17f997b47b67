using System.Text;
using Vnet.Configuration;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// The daemon's TOML configuration (<see cref="DaemonConfig.Parse"/>): a bad file is refused with a
/// <see cref="ConfigException"/> naming the field; nothing else may escape.
/// </summary>
public sealed class ConfigTarget : FuzzTarget
{
    public override string Name => "config";

    public override string Description => "Vnet.Configuration.DaemonConfig.Parse: the TOML configuration";

    protected override void Run(ReadOnlySpan<byte> data)
    {
        var text = Encoding.UTF8.GetString(data);
        // key_file names a file the daemon reads: the operator's choice, not something to hand a
        // fuzzer (a device file would block or never end). Every other path through Parse is fuzzed.
        if (text.Contains("/dev", StringComparison.Ordinal) || text.Contains("/proc", StringComparison.Ordinal) ||
            text.Contains("/sys", StringComparison.Ordinal))
            return;
        try
        {
            var config = DaemonConfig.Parse(text, "fuzz.toml");
            _ = (config.ControlSocketPath, config.Key.ToString());
        }
        catch (ConfigException e)
        {
            if (string.IsNullOrEmpty(e.Message))
                throw new FuzzFindingException("refused without a reason", e);
        }
    }
}
