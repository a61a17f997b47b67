using Vnet.Daemon;

namespace Vnet.Tests.Daemon;

/// <summary>
/// The loop's turns: work asked for at the end of a turn runs once per request, after the items of
/// the turn and before an Invoke hands back its result; work it asks for in turn runs too.
/// </summary>
public sealed class ControlLoopTests
{
    [Fact]
    public async Task AtEndOfTurn_AskedDuringAnInvoke_RunsAfterTheWorkAndBeforeTheResult()
    {
        await using var loop = new ControlLoop(e => throw new InvalidOperationException("error on the loop", e));
        var log = new List<string>();

        var result = await loop.Invoke(() =>
        {
            loop.AtEndOfTurn(() => log.Add("end 1"));
            loop.AtEndOfTurn(() =>
            {
                log.Add("end 2");
                loop.AtEndOfTurn(() => log.Add("end 3, asked at the end"));
            });
            log.Add("work");
            return log.Count;
        });

        Assert.Equal(1, result);
        Assert.Equal(["work", "end 1", "end 2", "end 3, asked at the end"], log);
    }

    [Fact]
    public async Task AtEndOfTurn_PostedItems_RunsOnceAfterTheItemThatAsked()
    {
        await using var loop = new ControlLoop(e => throw new InvalidOperationException("error on the loop", e));
        using var gate = new ManualResetEventSlim();
        var log = new List<string>();
        loop.Post(gate.Wait);
        loop.Post(() =>
        {
            log.Add("first");
            loop.AtEndOfTurn(() => log.Add("end"));
        });
        loop.Post(() => log.Add("second"));
        gate.Set();

        await loop.Invoke(() => 0);

        // "second" comes before "end" unless the machine stalled the loop past the turn budget in between.
        Assert.True(log is ["first", "second", "end"] or ["first", "end", "second"], string.Join(", ", log));
    }

    [Fact]
    public async Task AtEndOfTurn_OffTheLoop_Refused()
    {
        await using var loop = new ControlLoop(e => throw new InvalidOperationException("error on the loop", e));

        Assert.Throws<InvalidOperationException>(() => loop.AtEndOfTurn(() => { }));
    }
}
