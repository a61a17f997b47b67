using System.Net;
using Vnet.Patterns;

namespace Vnet.Tests.Patterns;

public sealed class PatternOptionsTests
{
    [Fact]
    public void Validate_BadOptions_ThrowsNamingTheProblem()
    {
        var peers = new[] { IPEndPoint.Parse("127.0.0.1:7000"), IPEndPoint.Parse("127.0.0.1:7001") };
        var ok = new PatternOptions { Kind = PatternKind.Ring, Rank = 1, Peers = peers };
        ok.Validate();

        Assert.Contains("rank 2 is not in 0..1", Assert.Throws<ArgumentException>(() => (ok with { Rank = 2 }).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("same address", Assert.Throws<ArgumentException>(() => (ok with { Peers = [peers[0], peers[0]] }).Validate()).Message, StringComparison.Ordinal);
        Assert.Contains("no port", Assert.Throws<ArgumentException>(() => (ok with { Peers = [peers[0], IPEndPoint.Parse("127.0.0.1")] }).Validate()).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => (ok with { Peers = [] }).Validate());
        Assert.Throws<ArgumentException>(() => (ok with { Rounds = 0 }).Validate());
        Assert.Throws<ArgumentException>(() => (ok with { Bytes = -1 }).Validate());
        Assert.Throws<ArgumentException>(() => (ok with { RoundTimeout = TimeSpan.Zero }).Validate());
    }
}
