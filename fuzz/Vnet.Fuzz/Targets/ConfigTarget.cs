using System.Text;
using Tomlyn;
using Tomlyn.Model;
using Vnet.Configuration;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// The daemon's TOML configuration (<see cref="DaemonConfig.Parse"/>): a bad file is refused with a
/// <see cref="ConfigException"/> naming the field; nothing else may escape.
/// <para>
/// A configuration names its secrets by file (<c>key_file</c>, <c>psk_file</c>, relative to the
/// configuration's folder), and Parse reads them. The harness keeps a folder of its own with a
/// private key <c>fuzz.key</c>, a preshared key <c>fuzz.psk</c> and a key file open to others
/// <c>open.key</c> (all made once per process), and parses as if the configuration were
/// <c>fuzz.toml</c> in that folder. Which file a daemon reads is the operator's choice, not
/// something to hand a fuzzer (a device file would block or never end): an input whose key_file or
/// psk_file leads out of that folder is skipped. Every other path through Parse is fuzzed.
/// </para>
/// </summary>
public sealed class ConfigTarget : FuzzTarget
{
    private static readonly string Folder = MakeFolder();

    public override string Name => "config";

    public override string Description => "Vnet.Configuration.DaemonConfig.Parse: the TOML configuration";

    /// <summary>A private key file, as 'vnet keygen' writes it (the same key every run).</summary>
    public const string PrivateKey = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

    private static string MakeFolder()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"vnet-fuzz-config-{Environment.ProcessId}");
        Directory.CreateDirectory(folder);
        File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Write(Path.Combine(folder, "fuzz.key"), PrivateKey, private_: true);
        Write(Path.Combine(folder, "fuzz.psk"), Convert.ToBase64String(Enumerable.Range(100, 32).Select(i => (byte)i).ToArray()), private_: true);
        Write(Path.Combine(folder, "open.key"), PrivateKey, private_: false);
        // "-" means standard input to KeyFiles.Read; a key file never comes from the fuzzer's stdin.
        Console.SetIn(TextReader.Null);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return folder;
    }

    private static void Write(string path, string text, bool private_)
    {
        File.WriteAllText(path, text + "\n");
        File.SetUnixFileMode(path, private_
            ? UnixFileMode.UserRead | UnixFileMode.UserWrite
            : UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
    }

    protected override void Run(ReadOnlySpan<byte> data)
    {
        var text = Encoding.UTF8.GetString(data);
        if (!FilesStayInFolder(text))
            return;
        try
        {
            var config = DaemonConfig.Parse(text, Path.Combine(Folder, "fuzz.toml"));
            _ = (config.ControlSocketPath, config.Identity.Public.ToString(), config.ServesTools, config.ProxyKey?.ToString());
        }
        catch (ConfigException e)
        {
            if (string.IsNullOrEmpty(e.Message))
                throw new FuzzFindingException("refused without a reason", e);
        }
    }

    /// <summary>
    /// Whether every secret file the text names is in the harness's folder. Read with the model reader
    /// Parse uses: where that reader fails, Parse fails there too, before it opens any file.
    /// </summary>
    private static bool FilesStayInFolder(string text)
    {
        TomlTable table;
        try
        {
            table = TomlSerializer.Deserialize<TomlTable>(text)!;
        }
#pragma warning disable CA1031 // Whatever the reader throws, Parse meets it first and opens nothing.
        catch (Exception)
#pragma warning restore CA1031
        {
            return true;
        }
        foreach (var key in (string[])["key_file", "psk_file"])
        {
            if (table is null || !table.TryGetValue(key, out var value) || value is not string file)
                continue;
            string full;
            try
            {
                full = Path.GetFullPath(Path.Combine(Folder, file));
            }
            catch (ArgumentException)
            {
                // A path no file can have (a NUL in it): Parse must refuse it like any other.
                continue;
            }
            if (!full.StartsWith(Folder + "/", StringComparison.Ordinal))
                return false;
        }
        return true;
    }
}
