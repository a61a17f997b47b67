using Vnet.Patterns;

namespace Vnet.Tests.Patterns;

public sealed class ByteSizeTests
{
    [Theory]
    [InlineData("0", 0L)]
    [InlineData("512", 512L)]
    [InlineData("64K", 65536L)]
    [InlineData("64k", 65536L)]
    [InlineData("64KB", 65536L)]
    [InlineData("64KiB", 65536L)]
    [InlineData("1M", 1048576L)]
    [InlineData("10M", 10485760L)]
    [InlineData("1G", 1073741824L)]
    [InlineData("512B", 512L)]
    [InlineData(" 2m ", 2097152L)]
    public void TryParse_Size_Bytes(string text, long expected)
    {
        Assert.True(ByteSize.TryParse(text, out var bytes));
        Assert.Equal(expected, bytes);
    }

    [Theory]
    [InlineData("")]
    [InlineData("K")]
    [InlineData("-1")]
    [InlineData("1.5M")]
    [InlineData("10Q")]
    [InlineData("0x10")]
    [InlineData("99999999999999999999")]
    [InlineData("9999999999999T")]
    public void TryParse_NotASize_False(string text)
    {
        Assert.False(ByteSize.TryParse(text, out _));
    }

    [Theory]
    [InlineData(0L, "0")]
    [InlineData(1000L, "1000")]
    [InlineData(1024L, "1K")]
    [InlineData(1536L, "1536")]
    [InlineData(65536L, "64K")]
    [InlineData(10485760L, "10M")]
    [InlineData(3221225472L, "3G")]
    public void Format_Bytes_ShortestExactForm(long bytes, string expected)
    {
        Assert.Equal(expected, ByteSize.Format(bytes));
        Assert.True(ByteSize.TryParse(expected, out var back));
        Assert.Equal(bytes, back);
    }
}
