using Vnet.Daemon;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using static Vnet.Tests.Forwarding.Fwd;

namespace Vnet.Tests.Forwarding;

/// <summary>
/// The rule book on a control loop: edits publish once per turn of the loop, the published table is
/// the one its rules compile to (the per-MAC index removes exactly what a scan would), an
/// <see cref="ControlLoop.Invoke{T}"/> answers only once its edits are live, and off the loop every
/// edit publishes at once.
/// </summary>
public sealed class RuleBookTests : IAsyncDisposable
{
    private static readonly MacAddress[] Macs = [Mac(1), Mac(2), Mac(3), Mac(4), Mac(5), Group(1)];

    private readonly ControlLoop _loop = new(e => throw new InvalidOperationException("error on the loop", e));
    private readonly VirtualSwitch _switch = new();
    private readonly RuleBook _book;

    public RuleBookTests()
    {
        foreach (var name in Ports)
            _switch.AddPort(new NullPort(name));
        _book = new RuleBook(_switch, _loop);
    }

    public async ValueTask DisposeAsync() => await _loop.DisposeAsync();

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(2026)]
    public async Task Edit_ManyEditsInOneTurn_PublishedOnceAndTableEqualsTheRulesCompiled(int seed)
    {
        var rng = new Random(seed);
        var model = new List<Rule>();
        var before = _book.Version;

        var publishedDuringTheTurn = await _loop.Invoke(() =>
        {
            for (var i = 0; i < 500; i++)
                RandomEdit(rng, model);
            return _book.Version != before;
        });

        Assert.False(publishedDuringTheTurn);
        Assert.Equal(before + 1, _book.Version);
        AssertBookAndTableEqual(model);
    }

    [Fact]
    public async Task Edit_PostedItemsInOneBatch_PublishedFarFewerTimesThanEdited()
    {
        using var gate = new ManualResetEventSlim();
        var before = _book.Version;
        // The loop waits at the gate while the edits queue up behind it, so that one turn finds them all.
        _loop.Post(gate.Wait);
        for (var i = 0; i < 200; i++)
        {
            var mac = Mac(1000 + i);
            _loop.Post(() => _book.Edit(e => e.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(mac), action: Vm0) with { Origin = RuleOrigin.System })));
        }
        gate.Set();
        await _loop.Invoke(() => 0);

        // One turn, unless the machine stalled the loop past the turn budget a few times.
        Assert.InRange(_book.Version - before, 1, 10);
        for (var i = 0; i < 200; i++)
            Assert.Single(Lookup(_switch.Table, Mac(1), Mac(1000 + i)));
    }

    [Fact]
    public async Task Invoke_EditThenThrow_EditLiveBeforeTheCallerSeesTheException()
    {
        var mac = Mac(7);

        await Assert.ThrowsAsync<InvalidOperationException>(() => _loop.Invoke<int>(() =>
        {
            _book.Edit(e => e.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(mac), action: Vm1)));
            throw new InvalidOperationException("refused after the edit");
        }));

        Assert.Single(Lookup(_switch.Table, Mac(1), mac));
    }

    [Fact]
    public void Edit_OffTheLoop_PublishedAtOnce()
    {
        var before = _book.Version;

        _book.Edit(e => e.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(Mac(9)), action: Vm1)));
        _book.Edit(e => e.Add(NewRule(0, MacMatch.Exact(Mac(9)), MacMatch.None, action: Proxy)));

        Assert.Equal(before + 2, _book.Version);
        Assert.Single(Lookup(_switch.Table, Mac(9), Mac(1)));
    }

    [Fact]
    public async Task RemoveWhereMac_RulesNamingTheMacOnEitherSide_OnlyThoseTheyAndThePredicateSelect()
    {
        var a = Mac(1);
        var b = Mac(2);
        var removed = await _loop.Invoke(() =>
        {
            _book.Edit(e =>
            {
                e.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(a), action: Vm0));
                e.Add(NewRule(0, MacMatch.Exact(a), MacMatch.None, action: Proxy));
                e.Add(NewRule(0, MacMatch.Exact(a), MacMatch.Exact(a), action: Peer));
                e.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(b), action: Vm1));
                e.Add(NewRule(0, MacMatch.Any, MacMatch.Any, action: Proxy));
            });
            return _book.Edit(e => e.RemoveWhere(a, r => r.Action.Port != Vm0));
        });

        Assert.Equal(2, removed);
        Assert.Equal(
            ["any → 02:00:00:00:00:01 → if:vm0", "any → 02:00:00:00:00:02 → if:vm1", "any → any → link:proxy"],
            _book.List().Select(r => $"{r.Rule.Source} → {r.Rule.Destination} → {r.Rule.Action}"));
        // The rules left are still found by the MAC, and the ones removed are not found again.
        Assert.Equal(1, await _loop.Invoke(() => _book.Edit(e => e.RemoveWhere(a, _ => true))));
        Assert.Equal(0, await _loop.Invoke(() => _book.Edit(e => e.RemoveWhere(a, _ => true))));
    }

    /// <summary>One random edit, to the book and to a plain list; removals by MAC are scans in the list.</summary>
    private void RandomEdit(Random rng, List<Rule> model)
    {
        switch (rng.Next(4))
        {
            case 0 or 1:
            {
                var src = rng.Next(3) == 0 ? MacMatch.Any : MacMatch.Exact(Macs[rng.Next(Macs.Length - 1)]);
                var dst = rng.Next(4) switch
                {
                    0 => MacMatch.None,
                    1 => MacMatch.Multicast,
                    _ => MacMatch.Exact(Macs[rng.Next(Macs.Length)]),
                };
                var rule = NewRule(0, src, dst, action: Ports[rng.Next(Ports.Length)], ingress: rng.Next(4) == 0 ? Ports[rng.Next(Ports.Length)] : null);
                model.Add(_book.Edit(e => e.Add(rule)));
                break;
            }
            case 2 when model.Count > 0:
            {
                var victim = model[rng.Next(model.Count)];
                Assert.True(_book.Edit(e => e.Remove(victim.Id)));
                model.Remove(victim);
                break;
            }
            default:
            {
                var mac = Macs[rng.Next(Macs.Length)];
                var exact = MacMatch.Exact(mac);
                var port = Ports[rng.Next(Ports.Length)];
                bool Selected(Rule r) => r.Action.Port != port;
                var expected = model.RemoveAll(r => (r.Source == exact || r.Destination == exact) && Selected(r));
                Assert.Equal(expected, _book.Edit(e => e.RemoveWhere(mac, Selected)));
                break;
            }
        }
    }

    private void AssertBookAndTableEqual(List<Rule> model)
    {
        Assert.Equal(model.Select(r => r.Id).Order(), _book.List().Select(r => r.Rule.Id));
        var reference = new ForwardingTable(model, _switch.ResolvePort, static _ => new RuleStats());
        var live = _switch.Table;
        MacAddress[] sources = [.. Macs[..^1], Mac(0x99)];
        MacAddress[] destinations = [.. Macs, Mac(0x99), MacAddress.Broadcast];
        foreach (var src in sources)
        {
            foreach (var dst in destinations)
            {
                for (var ingress = -1; ingress < Ports.Length; ingress++)
                    Assert.Equal(Lookup(reference, src, dst, ingress), Lookup(live, src, dst, ingress));
            }
        }
    }

    private sealed class NullPort(PortRef name) : Port(name)
    {
        public override bool IsUp => true;

        public override bool InFloodTree => true;

        public override void Transmit(Frame frame) => frame.Release();
    }
}
