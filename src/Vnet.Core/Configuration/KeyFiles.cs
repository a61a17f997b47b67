using Vnet.Native;

namespace Vnet.Configuration;

/// <summary>
/// Reading secrets from files (a daemon's private key, the overlay's preshared key, an
/// administrator's key): the file must be readable by its owner only and owned by the user the
/// daemon runs as, as ssh insists for its keys; otherwise the daemon refuses to start and says how
/// to fix it. Secrets are never taken from a command line (visible to every user in /proc).
/// </summary>
public static class KeyFiles
{
    private const UnixFileMode OthersMayTouch =
        UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute |
        UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>The trimmed content of a secret file; <paramref name="field"/> names it in errors. "-" reads standard input.</summary>
    public static string Read(string path, string field)
    {
        if (path == "-")
            return Console.In.ReadLine()?.Trim() ?? throw new ConfigException(field, "nothing on standard input");
        UnixFileMode mode;
        try
        {
            mode = File.GetUnixFileMode(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException(field, e.Message);
        }
        if ((mode & OthersMayTouch) != 0)
            throw new ConfigException(field, $"{path} is open to other users (mode {Convert.ToString((int)mode, 8)}); make it private: chmod 600 {path}");
        var owner = LibC.OwnerOf(path);
        if (owner >= 0 && owner != LibC.GetEffectiveUserId())
            throw new ConfigException(field, $"{path} belongs to another user (uid {owner}); the daemon's own key must be its own");
        try
        {
            return File.ReadAllText(path).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException(field, e.Message);
        }
    }

    /// <summary>Writes a secret to a new file, private from its first byte (mode 0600, created exclusively).</summary>
    public static void Write(string path, string secret)
    {
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        };
        using var stream = new FileStream(path, options);
        using var writer = new StreamWriter(stream);
        writer.WriteLine(secret);
    }
}
