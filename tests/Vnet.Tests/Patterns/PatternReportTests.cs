using System.Text.Json.Nodes;
using Vnet.Patterns;

namespace Vnet.Tests.Patterns;

public sealed class PatternReportTests
{
    private static readonly PatternReport Report = new(0, PatternKind.NeighborMesh, 6, 65536, 3,
        [TimeSpan.FromMilliseconds(412), TimeSpan.FromMilliseconds(5.5), TimeSpan.FromSeconds(1)], TimeSpan.FromMilliseconds(1417.5), 589824, 589824);

    [Fact]
    public void ToJson_Report_NamesAsOnTheCommandLineAndSeconds()
    {
        var json = JsonNode.Parse(Report.ToJson())!.AsObject();

        Assert.Equal(0, (int)json["rank"]!);
        Assert.Equal("neighbor-mesh", (string)json["kind"]!);
        Assert.Equal(6, (int)json["n"]!);
        Assert.Equal(65536, (int)json["bytes"]!);
        Assert.Equal(3, (int)json["rounds"]!);
        Assert.Equal([0.412, 0.0055, 1.0], json["roundSeconds"]!.AsArray().Select(n => (double)n!));
        Assert.Equal(1.4175, (double)json["totalSeconds"]!);
        Assert.Equal(589824, (long)json["bytesSent"]!);
        Assert.Equal(589824, (long)json["bytesReceived"]!);
    }

    [Fact]
    public void FromJson_ToJson_SameReport()
    {
        var back = PatternReport.FromJson(Report.ToJson())!;

        Assert.Equal(Report.RoundTimes, back.RoundTimes);
        Assert.Equal(Report with { RoundTimes = back.RoundTimes }, back);
    }
}
