using Vnet.Configuration;
using Vnet.Links.Security;
using Vnet.Tests.TestBed;

namespace Vnet.Tests.Configuration;

/// <summary>
/// A key file owned by another user is refused, as ssh refuses one: whoever owns it can read or
/// replace the daemon's identity. Needs root (to give a file away), hence here.
/// </summary>
public sealed class KeyFileOwnerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vnet-owner-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Read_KeyFileOfAnotherUserWithMode0600_RefusedNamingTheOwner()
    {
        TestBedGuard.ThrowIfUnavailable();
        using var pair = StaticKeyPair.Generate();
        var path = Path.Combine(_dir, "daemon.key");
        KeyFiles.Write(path, pair.ExportPrivate());
        Assert.Equal(pair.ExportPrivate(), KeyFiles.Read(path, "key_file").Trim());

        Sh.Run($"chown 65534 {Sh.Quote(path)}");

        var e = Assert.Throws<ConfigException>(() => KeyFiles.Read(path, "key_file"));
        Assert.Contains("belongs to another user (uid 65534)", e.Message, StringComparison.Ordinal);
    }
}
