using System.Collections.Concurrent;
using Vnet.Configuration;
using Vnet.Frames;

namespace Vnet.Interfaces;

/// <summary>
/// An interface in memory: what a test injects is read as if a VM had sent it, and what the daemon
/// writes is kept for the test to look at. Plain frames in, and by default plain frames out, like a
/// device without offloads; a test may give it an <see cref="OffloadSet"/> to see what a TAP that
/// agreed to it (or a packet socket, which takes them all) gets. With more than one queue, an
/// injected frame goes to the queue a multi-queue TAP would hand it to (<see cref="TapSteering"/>),
/// or to the one the test names.
/// For tests and simulations; the daemon itself never makes one.
/// </summary>
public sealed class MemoryInterface : ILocalInterface
{
    /// <summary>Frames written and not yet taken are kept up to this many (the oldest go first).</summary>
    public const int MaxKept = 4096;

    private const int MaxInbound = 4096;

    private readonly Queue[] _queues;
    private readonly ConcurrentQueue<byte[]> _written = new();
    private readonly CancellationTokenSource _closed = new();
    private long _writes;

    public MemoryInterface(string name, int mtu = 1500, OffloadSet offloads = OffloadSet.None, int queues = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(queues, 1);
        Name = name;
        MaxFrameSize = mtu + 14;
        Offloads = offloads;
        _queues = new Queue[queues];
        for (var i = 0; i < queues; i++)
            _queues[i] = new Queue(this);
    }

    public string Name { get; }

    public OffloadSet Offloads { get; }

    /// <summary>The offload header of every frame written, in order, up to <see cref="MaxKept"/>.</summary>
    public ConcurrentQueue<VirtioNetHeader> WrittenOffloads { get; } = new();

    public int MaxFrameSize { get; }

    public IReadOnlyList<IReceiveQueue> Queues => _queues;

    public bool IsClosed => _closed.IsCancellationRequested;

    /// <summary>Frames the daemon wrote to this interface, ever.</summary>
    public long Writes => Interlocked.Read(ref _writes);

    /// <summary>Raised on the writing thread for every frame the daemon writes (must not block).</summary>
    public event Action<MemoryInterface, byte[]>? FrameWritten;

    /// <summary>
    /// Hands the daemon a frame as if it came from the device, on the queue a multi-queue TAP would
    /// choose; false when closed or full.
    /// </summary>
    public bool Inject(ReadOnlySpan<byte> frame) => Inject(frame, TapSteering.QueueOf(frame, _queues.Length));

    /// <summary>Hands the daemon a frame on queue <paramref name="queue"/>; false when closed or full.</summary>
    public bool Inject(ReadOnlySpan<byte> frame, int queue) => !IsClosed && _queues[queue].Add(frame);

    /// <summary>Takes the oldest written frame not yet taken.</summary>
    public bool TryTake(out byte[] frame) => _written.TryDequeue(out frame!);

    public ReadStatus TryRead(Frame frame) => _queues[0].TryRead(frame);

    /// <summary>Waits until a frame may be waiting on the first queue (a wake-up may be spurious: the caller reads and sees).</summary>
    public void WaitReadable() => _queues[0].WaitReadable();

    public bool Write(Frame frame)
    {
        if (IsClosed)
            return false;
        var copy = frame.Data.ToArray();
        Interlocked.Increment(ref _writes);
        _written.Enqueue(copy);
        WrittenOffloads.Enqueue(frame.Offload);
        while (_written.Count > MaxKept && _written.TryDequeue(out _))
        {
        }
        while (WrittenOffloads.Count > MaxKept && WrittenOffloads.TryDequeue(out _))
        {
        }
        FrameWritten?.Invoke(this, copy);
        return true;
    }

    public void Close()
    {
        if (!_closed.IsCancellationRequested)
            _closed.Cancel();
    }

    public void Dispose()
    {
        Close();
        foreach (var q in _queues)
            q.Dispose();
        _closed.Dispose();
    }

    /// <summary>
    /// One receive queue: frames to read, and a count of injections that wakes WaitReadable without
    /// taking a frame (as poll on a device does not read it: a reader and a helper may take turns).
    /// </summary>
    private sealed class Queue(MemoryInterface device) : IReceiveQueue, IDisposable
    {
        private readonly ConcurrentQueue<byte[]> _inbound = new();
        private readonly SemaphoreSlim _arrived = new(0);

        public bool Add(ReadOnlySpan<byte> frame)
        {
            if (_inbound.Count >= MaxInbound)
                return false;
            _inbound.Enqueue(frame.ToArray());
            _arrived.Release();
            return true;
        }

        public ReadStatus TryRead(Frame frame)
        {
            if (!_inbound.TryDequeue(out var data))
                return device.IsClosed ? ReadStatus.Closed : ReadStatus.Empty;
            if (data.Length < 14 || data.Length > device.MaxFrameSize)
                return ReadStatus.Bad;
            data.CopyTo(frame.Buffer.AsSpan(Frame.Headroom));
            frame.SetBounds(Frame.Headroom, data.Length);
            return ReadStatus.Frame;
        }

        public void WaitReadable()
        {
            if (!_inbound.IsEmpty)
                return;
            try
            {
                _arrived.Wait(device._closed.Token);
            }
            catch (OperationCanceledException)
            {
            }
            catch (ObjectDisposedException)
            {
            }
        }

        public void Dispose() => _arrived.Dispose();
    }
}

/// <summary>
/// Makes <see cref="MemoryInterface"/>s for configured interfaces, and lets a test reach them by
/// name. As on a real machine, a TAP is created by opening it, while a NIC opened as a packet socket
/// must exist: only the names in <see cref="Nics"/> open as pcap interfaces.
/// </summary>
public sealed class MemoryInterfaceFactory : IInterfaceFactory
{
    private readonly ConcurrentDictionary<string, MemoryInterface> _open = new(StringComparer.Ordinal);

    /// <summary>The NICs this simulated machine has (pcap interfaces open only on these).</summary>
    public ConcurrentDictionary<string, bool> Nics { get; } = new(StringComparer.Ordinal);

    /// <summary>Raised when the daemon opens an interface (a test attaches its VM here).</summary>
    public event Action<MemoryInterface>? Opened;

    /// <summary>The interface most recently opened under this name.</summary>
    public MemoryInterface this[string name] => _open[name];

    public bool TryGet(string name, out MemoryInterface device) => _open.TryGetValue(name, out device!);

    /// <summary>A TAP can always be made; a pcap device exists while its name is in <see cref="Nics"/>.</summary>
    public bool DeviceExists(string name) => Nics.ContainsKey(name);

    public OpenedDevice Open(InterfaceConfig config, string? filter)
    {
        if (config.Kind == InterfaceKind.Pcap && !Nics.ContainsKey(config.Name))
            throw new IOException($"{config.Name}: no such device");
        var device = new MemoryInterface(config.Name, config.Mtu, queues: config.Queues);
        _open[config.Name] = device;
        Opened?.Invoke(device);
        return new OpenedDevice(device, null);
    }
}
