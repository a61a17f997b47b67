using Microsoft.Extensions.Logging;
using Vnet.Daemon;
using Vnet.Native;

namespace Vnet.Vms.Providers;

/// <summary>
/// A provider's record of a VM that outlives the daemon that made it (so a daemon killed before it
/// could end its VMs finds them again when it starts): one short line in a file that only the
/// daemon's user (root) may write. Read strictly, because a restarted daemon acts on it (attaches a
/// device, kills a process): a file that is a symbolic link or not a regular file, belongs to
/// another user, is writable by group or others, or is longer than <see cref="MaxBytes"/> is
/// ignored with a log line, as is a line its provider cannot parse.
/// </summary>
public static partial class VmRegistry
{
    /// <summary>Longest entry read (an entry is one line of a few fields).</summary>
    public const int MaxBytes = 1024;

    private const UnixFileMode OthersMayWrite = UnixFileMode.GroupWrite | UnixFileMode.OtherWrite;

    /// <summary>The entry's trimmed text; null when there is none or it is not to be trusted (logged when <paramref name="logger"/> is given).</summary>
    public static string? Read(string path, ILogger? logger)
    {
        var info = new FileInfo(path);
        string? why;
        try
        {
            if (!info.Exists)
                return null;
            var owner = LibC.OwnerOf(path);
            why = info.LinkTarget is not null ? "a symbolic link"
                : (info.Attributes & (FileAttributes.Device | FileAttributes.Directory | FileAttributes.ReparsePoint)) != 0 ? "not a regular file"
                : owner != 0 && owner != LibC.GetEffectiveUserId() ? $"owned by uid {owner}"
                : (info.UnixFileMode & OthersMayWrite) != 0 ? $"writable by others (mode {Convert.ToString((int)info.UnixFileMode, 8)})"
                : info.Length > MaxBytes ? $"{info.Length} bytes long"
                : null;
            if (why is null)
            {
                var text = File.ReadAllText(path);
                if (text.Length <= MaxBytes)
                    return text.Trim();
                why = "grew while read";
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            why = e.Message;
        }
        if (logger is not null)
            Ignored(logger, path, LogText.Safe(why));
        return null;
    }

    /// <summary>Writes an entry private to the daemon's user (mode 0600) in one step: a reader never sees half of it.</summary>
    public static void Write(string path, string line)
    {
        var temporary = path + ".new";
        File.Delete(temporary);
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        };
        using (var stream = new FileStream(temporary, options))
        using (var writer = new StreamWriter(stream))
            writer.Write(line + "\n");
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>Logs an entry that exists but does not parse: it is ignored, not acted on.</summary>
    public static void Garbled(ILogger? logger, string path)
    {
        if (logger is not null)
            Ignored(logger, path, "it does not parse");
    }

    /// <summary>Deletes a file if it is there (its directory may be gone too).</summary>
    public static void Delete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    [LoggerMessage(EventId = 422, Level = LogLevel.Warning, Message = "VM registry entry {Path} ignored: {Reason}")]
    private static partial void Ignored(ILogger logger, string path, string reason);
}
