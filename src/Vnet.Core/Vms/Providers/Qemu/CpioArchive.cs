using System.Globalization;
using System.IO.Compression;
using System.Text;

namespace Vnet.Vms.Providers.Qemu;

/// <summary>
/// Writes a cpio archive in the "newc" format the kernel unpacks as an initramfs, gzip-compressed.
/// Made here rather than with the cpio program so that the guest image needs one package less and
/// comes out byte for byte the same for the same files (every time stamp and owner is 0).
/// </summary>
public sealed class CpioArchive
{
    private const uint TypeDirectory = 0x4000;
    private const uint TypeCharDevice = 0x2000;
    private const uint TypeFile = 0x8000;
    private const uint TypeSymlink = 0xA000;

    private readonly List<Entry> _entries = [];

    private sealed record Entry(string Path, uint Mode, byte[] Data, uint RdevMajor, uint RdevMinor);

    public void Directory(string path) => Add(path, TypeDirectory | 0x1ED, [], 0, 0);

    /// <param name="executable">Mode 0755 rather than 0644.</param>
    public void File(string path, byte[] data, bool executable = false) =>
        Add(path, TypeFile | (executable ? 0x1EDu : 0x1A4u), data, 0, 0);

    public void Symlink(string path, string target) => Add(path, TypeSymlink | 0x1FF, Encoding.UTF8.GetBytes(target), 0, 0);

    /// <summary>A device node, e.g. /dev/console (5, 1), which the kernel opens for init before any /dev is mounted.</summary>
    public void CharDevice(string path, uint major, uint minor) => Add(path, TypeCharDevice | 0x180, [], major, minor);

    private void Add(string path, uint mode, byte[] data, uint major, uint minor)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        // Archive paths are relative to the root the kernel unpacks into.
        _entries.Add(new Entry(path.TrimStart('/'), mode, data, major, minor));
    }

    /// <summary>The archive, ending with the TRAILER!!! entry, gzip-compressed.</summary>
    public byte[] ToGzip()
    {
        using var packed = new MemoryStream();
        using (var gzip = new GZipStream(packed, CompressionLevel.Optimal, leaveOpen: true))
        {
            uint inode = 1;
            foreach (var e in _entries)
                Write(gzip, inode++, e);
            Write(gzip, 0, new Entry("TRAILER!!!", 0, [], 0, 0));
        }
        return packed.ToArray();
    }

    private static void Write(Stream s, uint inode, Entry e)
    {
        var name = Encoding.UTF8.GetBytes(e.Path + "\0");
        var header = new StringBuilder("070701");
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
        foreach (var field in new uint[] { inode, e.Mode, 0, 0, e.Mode >> 12 == 4 ? 2u : 1u, 0, (uint)e.Data.Length, 0, 0, e.RdevMajor, e.RdevMinor, (uint)name.Length, 0 })
            header.Append(field.ToString("x8", CultureInfo.InvariantCulture));
        var head = Encoding.ASCII.GetBytes(header.ToString());
        s.Write(head);
        s.Write(name);
        Pad(s, head.Length + name.Length);
        s.Write(e.Data);
        Pad(s, e.Data.Length);
    }

    // Names and data both start on a 4-byte boundary.
    private static void Pad(Stream s, int length) => s.Write(new byte[(4 - length % 4) % 4]);
}
