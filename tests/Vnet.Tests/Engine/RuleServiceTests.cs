using Microsoft.Extensions.Logging.Abstractions;
using Vnet.Daemon;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using static Vnet.Tests.Forwarding.Fwd;

namespace Vnet.Tests.Engine;

/// <summary>
/// <c>vnet rule add</c> on a daemon's rule book: a user rule that is already there is refused,
/// naming the rule that says it, and changes nothing, since <c>vnet topo dump</c> would otherwise
/// print a description with the rule twice, which <c>vnet topo check</c> and <c>apply</c> refuse.
/// </summary>
public sealed class RuleServiceTests
{
    private readonly VirtualSwitch _switch = new();
    private readonly RuleBook _book;
    private readonly RuleService _service;

    public RuleServiceTests()
    {
        foreach (var name in Ports)
            _switch.AddPort(new NullPort(name));
        _book = new RuleBook(_switch);
        _service = new RuleService("h1", _book, _switch, NullLogger.Instance);
    }

    [Fact]
    public void Add_SameUserRuleTwice_SecondRefusedNamingTheFirstAndNothingAdded()
    {
        var first = _service.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(Mac(2)), Peer));

        var refused = Assert.Throws<DaemonCommandException>(() => _service.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(Mac(2)), Peer)));

        Assert.Contains($"rule {first.Id} is already that rule", refused.Message, StringComparison.Ordinal);
        Assert.Single(_service.List());
    }

    [Fact]
    public void Add_SameMatchOtherActionOrIngress_Added()
    {
        _service.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(Mac(2)), Peer));

        _service.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(Mac(2)), Proxy));
        _service.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(Mac(2)), Peer, ingress: Vm0));

        Assert.Equal(3, _service.List().Count);
    }

    [Fact]
    public void Add_SameAsASystemRule_Added()
    {
        _book.Edit(e => e.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(Mac(2)), Peer) with { Origin = RuleOrigin.System }));

        var added = _service.Add(NewRule(0, MacMatch.Any, MacMatch.Exact(Mac(2)), Peer));

        Assert.Equal(2, _service.List().Count);
        Assert.Equal(RuleOrigin.User, added.Origin);
    }

    private sealed class NullPort(PortRef name) : Port(name)
    {
        public override bool IsUp => true;

        public override bool InFloodTree => true;

        public override void Transmit(Frame frame) => frame.Release();
    }
}
