using System.Buffers.Binary;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Interfaces;
using Vnet.Links;

namespace Vnet.Tests.Links;

/// <summary>
/// A link's receiver reads the answers of the interfaces it has just written to (InterfacePort's
/// Help): over a real TCP or UDP link on loopback, the host's interface is a memory device that
/// answers every frame inside the write that delivered it, as a VM's kernel does. The answers must
/// all come back, in the order of the requests, and (for a ping-like exchange) mostly be read by
/// the link's receiver, not the interface's reader thread.
/// </summary>
public sealed class InterfaceHelpTests : IAsyncLifetime, IDisposable
{
    private readonly TestKeys _keys = new();
    private LinkNode _proxy = null!;
    private LinkNode _host = null!;
    private MemoryInterface _echo = null!;
    private InterfacePort _port = null!;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        _port?.Dispose();
        await _host.DisposeAsync();
        await _proxy.DisposeAsync();
    }

    // xunit calls DisposeAsync first; this only satisfies the analyser (both are idempotent).
    public void Dispose() => _echo?.Dispose();

    private void Start(LinkTransport transport)
    {
        _proxy = new LinkNode("proxy", DaemonRole.Proxy, _keys);
        _host = new LinkNode("host1", DaemonRole.Host, _keys);
        _host.Links.AddLink("proxy", transport, star: true, _proxy.EndPoint);
        _host.WaitUp("proxy");
        _proxy.WaitUp("host1");
        _proxy.Route("host1");

        // The host's "VM": every frame written to it is answered at once, on the writing thread,
        // with the same payload and the addresses swapped.
        _echo = new MemoryInterface("echo", mtu: 9000);
        _echo.FrameWritten += (device, bytes) =>
        {

            var answer = (byte[])bytes.Clone();
            bytes.AsSpan(0, 6).CopyTo(answer.AsSpan(6));
            bytes.AsSpan(6, 6).CopyTo(answer);
            device.Inject(answer);
        };
        _port = new InterfacePort(_echo, _host.Switch, _host.Pool);
        _host.Switch.AddPort(_port);
        var rules = new List<Rule>
        {
            new() { Id = 1, Source = MacMatch.Any, Destination = MacMatch.Any, Ingress = PortRef.Link("proxy"), Action = RuleAction.To(_port.Name) },
            new() { Id = 2, Source = MacMatch.Any, Destination = MacMatch.Any, Ingress = _port.Name, Action = RuleAction.To(PortRef.Link("proxy")) },
        };
        _host.Switch.Publish(new ForwardingTable(rules, _host.Switch.ResolvePort, _ => new RuleStats()));
        _port.Start();
    }

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void PingLike_EveryAnswerBack_MostReadByTheLinksReceiver(LinkTransport transport)
    {
        Start(transport);
        const int rounds = 200;
        for (var i = 0; i < rounds; i++)
        {
            _proxy.Send(LinkNode.NewFrame(100, i));
            var got = _proxy.Vm.WaitFor(i + 1, TimeSpan.FromSeconds(5));
            Assert.Equal(i, BinaryPrimitives.ReadInt32BigEndian(got[i].Bytes.AsSpan(14)));
        }
        // Racy by nature (the reader thread is woken too and may take an answer first), but with
        // no helping at all this is 0: the answers would all be the reader's.
        Assert.True(_port.HelpedFrames >= rounds / 4, $"only {_port.HelpedFrames} of {rounds} answers were read by the link's receiver");
    }

    [Theory]
    [InlineData(LinkTransport.Tcp)]
    [InlineData(LinkTransport.Udp)]
    public void Burst_ReaderAndHelperBothReading_AnswersKeepTheRequestsOrder(LinkTransport transport)
    {
        Start(transport);
        const int count = 3000;
        for (var i = 0; i < count; i++)
        {
            _proxy.Send(LinkNode.NewFrame(200 + (i % 1000), i));
            // Bounded in-flight requests: neither side's pool or queue should be the subject here.
            if (i % 50 == 49)
                _proxy.Vm.WaitFor(i - 40, TimeSpan.FromSeconds(10));
        }
        var got = _proxy.Vm.WaitFor(count, TimeSpan.FromSeconds(20));
        var seqs = new int[count];
        for (var i = 0; i < count; i++)
            seqs[i] = BinaryPrimitives.ReadInt32BigEndian(got[i].Bytes.AsSpan(14));
        for (var i = 0; i < count; i++)
            Assert.True(i == seqs[i], $"at {i}: {string.Join(",", seqs.Skip(Math.Max(0, i - 5)).Take(15))}; distinct {seqs.Distinct().Count()}");
        Assert.True(_port.HelpedFrames > 0, "no answer was read by the link's receiver");
    }
}
