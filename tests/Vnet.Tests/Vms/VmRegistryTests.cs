using Microsoft.Extensions.Logging.Abstractions;
using Vnet.Vms.Providers;

namespace Vnet.Tests.Vms;

/// <summary>
/// A VM registry entry is acted on by a restarted daemon (a device attached, a process killed), so
/// it is read strictly (<see cref="VmRegistry.Read"/>): real files with hostile owners, modes,
/// links and sizes are each ignored.
/// </summary>
public sealed class VmRegistryTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vnet-registry-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Path(string name) => System.IO.Path.Combine(_dir, name);

    [Fact]
    public void Written_IsPrivate_AndReadBack()
    {
        VmRegistry.Write(Path("web1.qemu"), "4242 02:56:00:00:00:01 small");

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path("web1.qemu")));
        Assert.Equal("4242 02:56:00:00:00:01 small", VmRegistry.Read(Path("web1.qemu"), NullLogger.Instance));
        Assert.False(File.Exists(Path("web1.qemu.new")));
    }

    [Fact]
    public void Missing_IsNone()
    {
        Assert.Null(VmRegistry.Read(Path("nothing.netns"), NullLogger.Instance));
    }

    [Theory]
    [InlineData(UnixFileMode.OtherWrite)]
    [InlineData(UnixFileMode.GroupWrite)]
    public void WritableByOthers_IsIgnored(UnixFileMode extra)
    {
        VmRegistry.Write(Path("web1.netns"), "1 net:[1] 02:56:00:00:00:01 small");
        File.SetUnixFileMode(Path("web1.netns"), UnixFileMode.UserRead | UnixFileMode.UserWrite | extra);

        Assert.Null(VmRegistry.Read(Path("web1.netns"), NullLogger.Instance));
    }

    [Fact]
    public void OwnedByAnotherUser_IsIgnored()
    {
        if (Vnet.Native.LibC.GetEffectiveUserId() != 0)
            return; // Only root can give a file away; the daemon that reads these runs as root.
        VmRegistry.Write(Path("web1.netns"), "1 net:[1] 02:56:00:00:00:01 small");
        var chown = System.Diagnostics.Process.Start("chown", ["65534", Path("web1.netns")])!;
        Assert.True(chown.WaitForExit(10_000));
        Assert.Equal(0, chown.ExitCode);

        Assert.Null(VmRegistry.Read(Path("web1.netns"), NullLogger.Instance));
    }

    [Fact]
    public void SymbolicLink_IsIgnored_EvenToAGoodEntry()
    {
        VmRegistry.Write(Path("real.netns"), "1 net:[1] 02:56:00:00:00:01 small");
        File.CreateSymbolicLink(Path("web1.netns"), Path("real.netns"));

        Assert.Null(VmRegistry.Read(Path("web1.netns"), NullLogger.Instance));
        Assert.NotNull(VmRegistry.Read(Path("real.netns"), NullLogger.Instance));
    }

    [Fact]
    public void Directory_Or_Oversized_IsIgnored()
    {
        Directory.CreateDirectory(Path("dir.netns"));
        VmRegistry.Write(Path("big.netns"), new string('1', VmRegistry.MaxBytes + 1));

        Assert.Null(VmRegistry.Read(Path("dir.netns"), NullLogger.Instance));
        Assert.Null(VmRegistry.Read(Path("big.netns"), NullLogger.Instance));
    }
}
