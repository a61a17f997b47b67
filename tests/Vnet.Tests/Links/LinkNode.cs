using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging;
using Vnet.Engine;
using Vnet.Forwarding;
using Vnet.Frames;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Tests.Support;

namespace Vnet.Tests.Links;

/// <summary>
/// A daemon's link layer and nothing else: a switch, a frame pool, one recording interface port
/// ("vm") and a started <see cref="LinkManager"/> on loopback. Rules send what the vm port injects
/// to the routed links and what arrives on those links to the vm port.
/// </summary>
internal sealed class LinkNode : IAsyncDisposable
{
    public static readonly TimeSpan UpTimeout = TimeSpan.FromSeconds(5);

    private readonly List<string> _routes = [];
    private bool _disposed;

    /// <param name="keys">Who is who in this test's overlay (this node's key is taken from it unless <paramref name="identity"/> is given).</param>
    public LinkNode(string name, DaemonRole role, TestKeys keys, int port = 0, StaticKeyPair? identity = null, PresharedKey? psk = null,
        bool acceptTools = false, Func<ulong>? timestamp = null, TimeSpan? rekeyAfter = null)
    {
        Name = name;
        Switch.AddPort(Vm);
        Links = new LinkManager(
            new LinkManagerOptions
            {
                Name = name,
                Role = role,
                Identity = identity ?? keys.Of(name),
                Peers = keys,
                Psk = psk ?? PresharedKey.None,
                AcceptTools = acceptTools,
                Listen = new IPEndPoint(IPAddress.Loopback, port),
                Timestamp = timestamp ?? NoiseHandshake.Timestamp,
                RekeyAfter = rekeyAfter,
            },
            Switch,
            Pool,
            Log);
        Links.Events = Events;
        Links.ToolSessions = Events;
        Links.Start();
    }

    public string Name { get; }

    public VirtualSwitch Switch { get; } = new();

    public FramePool Pool { get; } = new(128);

    public RecordingPort Vm { get; } = new(PortRef.Interface("vm"));

    public ListLogger Log { get; } = new();

    public RecordingObserver Events { get; } = new();

    public LinkManager Links { get; }

    public IPEndPoint EndPoint => Links.LocalEndPoint!;

    /// <summary>Waits until the link to <paramref name="peer"/> is up and returns its port.</summary>
    public LinkPort WaitUp(string peer) =>
        Wait.For(() => Links.Find(peer) is { IsUp: true } p ? p : null, UpTimeout, $"{Name}: link {peer} up");

    /// <summary>
    /// Waits until the port let go of its session. IsUp turns false as soon as a session closes, but
    /// the reason and the observer's OnLinkDown come when its threads have finished.
    /// </summary>
    public void WaitDown(LinkPort port, TimeSpan timeout) =>
        Wait.Until(() => port.Session is null, timeout, $"{Name}: link {port.Peer} down");

    /// <summary>Routes vm &lt;-&gt; link:<paramref name="peer"/>; the link's port must exist (it is resolved now).</summary>
    public void Route(string peer)
    {
        Assert.NotNull(Links.Find(peer));
        _routes.Add(peer);
        var rules = new List<Rule>();
        var id = 0;
        foreach (var p in _routes)
        {
            rules.Add(new Rule { Id = ++id, Source = MacMatch.Any, Destination = MacMatch.Any, Ingress = PortRef.Link(p), Action = RuleAction.To(Vm.Name) });
            rules.Add(new Rule { Id = ++id, Source = MacMatch.Any, Destination = MacMatch.Any, Ingress = Vm.Name, Action = RuleAction.To(PortRef.Link(p)) });
        }
        Switch.Publish(new ForwardingTable(rules, Switch.ResolvePort, _ => new RuleStats()));
    }

    /// <summary>Injects a frame as if the vm port had read it.</summary>
    public void Send(Frame frame, byte hopLimit = 8)
    {
        frame.IngressPort = Vm.Id;
        frame.HopLimit = hopLimit;
        Switch.Forward(frame);
    }

    public void Send(byte[] bytes, byte hopLimit = 8, VirtioNetHeader offload = default)
    {
        var frame = Pool.TryRent() ?? throw new InvalidOperationException($"{Name}: frame pool empty");
        bytes.CopyTo(frame.Buffer.AsSpan(frame.Offset));
        frame.Length = bytes.Length;
        frame.Offload = offload;
        Send(frame, hopLimit);
    }

    /// <summary>An Ethernet frame between two VM addresses with a seeded random payload and its number at the start.</summary>
    public static byte[] NewFrame(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        byte[] header = [0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xB5];
        header.CopyTo(bytes, 0);
        if (length >= 18)
            System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(14), seed);
        return bytes;
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
            return;
        _disposed = true;
        await Links.DisposeAsync();
    }

    /// <summary>After disposal every buffer must be back: queues, receivers and senders released theirs.</summary>
    public void AssertPoolComplete() =>
        Wait.Until(() => Pool.Available == Pool.Created, TimeSpan.FromSeconds(3),
            $"{Name}: all {Pool.Created} frame buffers back in the pool (now {Pool.Available})");
}

/// <summary>
/// A test class of <see cref="LinkNode"/>s: one overlay's keys, and the nodes it made, disposed
/// after each test with every frame buffer checked back in its pool.
/// </summary>
public abstract class LinkNodeTests : IAsyncLifetime
{
    internal TestKeys Keys { get; } = new();

    internal List<LinkNode> Nodes { get; } = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var node in Nodes)
            await node.DisposeAsync();
        foreach (var node in Nodes)
            node.AssertPoolComplete();
    }
}

/// <summary>What arrived on a recording port: a copy, so the buffer goes back to its pool at once.</summary>
internal sealed record ReceivedFrame(byte[] Bytes, VirtioNetHeader Offload, byte HopLimit)
{
    /// <summary>An unpooled frame with these bytes and metadata, for checks written against <see cref="Frame"/>.</summary>
    public Frame ToFrame()
    {
        var frame = Frame.CreateUnpooled();
        Bytes.CopyTo(frame.Buffer.AsSpan(frame.Offset));
        frame.Length = Bytes.Length;
        frame.Offload = Offload;
        frame.HopLimit = HopLimit;
        return frame;
    }
}

/// <summary>An interface port that records what it is given; safe for the links' receiver threads.</summary>
internal sealed class RecordingPort(PortRef name) : Port(name)
{
    private readonly ConcurrentQueue<ReceivedFrame> _frames = new();

    public override bool IsUp => true;

    public override bool InFloodTree => true;

    public int Count => _frames.Count;

    public IReadOnlyList<ReceivedFrame> Frames => [.. _frames];

    public override void Transmit(Frame frame)
    {
        _frames.Enqueue(new ReceivedFrame(frame.Data.ToArray(), frame.Offload, frame.HopLimit));
        frame.Release();
    }

    public IReadOnlyList<ReceivedFrame> WaitFor(int count, TimeSpan? timeout = null)
    {
        Wait.Until(() => _frames.Count >= count, timeout ?? TimeSpan.FromSeconds(5), $"{Name}: {count} frames (have {_frames.Count})");
        return Frames;
    }

    public void Clear() => _frames.Clear();
}

internal sealed class RecordingObserver : ILinkEvents, IToolSessionHost
{
    private readonly ConcurrentQueue<string> _events = new();

    public IReadOnlyList<string> Events => [.. _events];

    public void OnLinkUp(LinkPort port, LinkSession session) => _events.Enqueue($"up {port.Peer}");

    public void OnLinkDown(LinkPort port, LinkSession session, string reason) => _events.Enqueue($"down {port.Peer}: {reason}");

    /// <summary>The payloads of the control messages received, in order.</summary>
    public ConcurrentQueue<byte[]> ControlPayloads { get; } = new();

    public void OnControl(LinkPort port, LinkSession session, byte[] payload)
    {
        ControlPayloads.Enqueue(payload);
        _events.Enqueue($"control {port.Peer}");
    }

    public Task ServeAsync(System.Net.Sockets.Socket socket, PeerIdentity peer, uint localSession, CancellationToken ct)
    {
        _events.Enqueue($"tool {peer.Name}");
        return Task.CompletedTask;
    }
}

/// <summary>Keeps every log line, so tests can check why a link was refused.</summary>
internal sealed class ListLogger : ILogger
{
    private readonly ConcurrentQueue<string> _lines = new();

    public IReadOnlyList<string> Lines => [.. _lines];

    public bool Contains(string text) => _lines.Any(l => l.Contains(text, StringComparison.Ordinal));

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        ArgumentNullException.ThrowIfNull(formatter);
        _lines.Enqueue($"{logLevel}: {formatter(state, exception)}");
    }

    public override string ToString() => string.Join('\n', _lines);
}

/// <summary>
/// The keys of a test's overlay: every name gets a key pair the first time it is asked for, and is
/// admitted under it (every node trusts every other, as a Proxy that admitted them all would have
/// them). A stranger is a key pair nobody admitted; administrators may use tool sessions.
/// </summary>
internal sealed class TestKeys : IPeerKeys
{
    private readonly ConcurrentDictionary<string, StaticKeyPair> _pairs = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, PublicKeyId> _admitted = new(StringComparer.Ordinal);

    public StaticKeyPair Admin { get; } = StaticKeyPair.Generate();

    /// <summary>The key pair of <paramref name="name"/>, admitted.</summary>
    public StaticKeyPair Of(string name)
    {
        var pair = _pairs.GetOrAdd(name, _ => StaticKeyPair.Generate());
        _admitted.TryAdd(name, pair.Public);
        return pair;
    }

    /// <summary>A key pair nobody admitted (the name stays the admitted one's, if any).</summary>
    public static StaticKeyPair Stranger() => StaticKeyPair.Generate();

    public void Revoke(string name) => _admitted.TryRemove(name, out _);

    public PublicKeyId? KeyOf(string peer) => _admitted.GetValueOrDefault(peer);

    public Admission Admit(PublicKeyId key, string name, DaemonRole role)
    {
        if (role == DaemonRole.Tool)
            return key.Equals(Admin.Public) ? Admission.Yes : Admission.No("not an administrator's key");
        return _admitted.TryGetValue(name, out var expected) && expected.Equals(key) ? Admission.Yes : Admission.No("not admitted");
    }
}
