using System.Globalization;

namespace Vnet.Native;

/// <summary>
/// Takes a descriptor out of every epoll set of this process that watches it. .NET keeps no public
/// handle on its socket engine's epoll descriptor, so the sets are found the way the kernel shows
/// them: each <c>anon_inode:[eventpoll]</c> descriptor in /proc/self/fd lists the descriptors it
/// watches in /proc/self/fdinfo ("tfd:" lines). Control path only (a session's start).
/// </summary>
internal static unsafe class EpollSet
{
    /// <summary>Returns how many epoll sets let go of <paramref name="fd"/> (0 when none watched it).</summary>
    public static int Forget(int fd)
    {
        var removed = 0;
        string[] entries;
        try
        {
            entries = Directory.GetFileSystemEntries("/proc/self/fd");
        }
        catch (IOException)
        {
            return 0;
        }
        foreach (var entry in entries)
        {
            if (!int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out var epfd) || epfd == fd)
                continue;
            try
            {
                if (new FileInfo(entry).LinkTarget != "anon_inode:[eventpoll]" || !Watches(epfd, fd))
                    continue;
            }
            catch (IOException)
            {
                continue; // closed meanwhile
            }
            catch (UnauthorizedAccessException)
            {
                continue;
            }
            if (LibC.EpollCtl(epfd, LibC.EPOLL_CTL_DEL, fd, null) == 0)
                removed++;
        }
        return removed;
    }

    private static bool Watches(int epfd, int fd)
    {
        foreach (var line in File.ReadLines($"/proc/self/fdinfo/{epfd}"))
        {
            // "tfd:       42 events:       19 data: ...  pos:0 ino:... sdev:..."
            if (!line.StartsWith("tfd:", StringComparison.Ordinal))
                continue;
            var rest = line.AsSpan(4).TrimStart();
            var end = rest.IndexOf(' ');
            if (end > 0 && int.TryParse(rest[..end], NumberStyles.None, CultureInfo.InvariantCulture, out var watched) && watched == fd)
                return true;
        }
        return false;
    }
}
