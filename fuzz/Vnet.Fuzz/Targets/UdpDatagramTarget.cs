using System.Buffers.Binary;
using System.Security.Cryptography;
using Vnet.Engine;
using Vnet.Frames;
using Vnet.Links;
using Vnet.Links.Security;

namespace Vnet.Fuzz.Targets;

/// <summary>
/// What a daemon does with received UDP datagrams, before and after opening them, for one session
/// with fixed keys. <c>UdpTransport.Handle</c> runs on a socket's receive thread and is private, so
/// the harness repeats its steps and calls the code each step calls: <see cref="Wire.TryRead"/> and
/// the length and session checks; for DATA the link's <c>UdpLinkTransport.OpenFrame</c> (opened
/// straight into a pooled frame), for anything else <see cref="SealedRecord.Open"/> in place, with
/// the session's <see cref="ReceiveCipher"/> in datagram mode (its epochs and
/// <see cref="ReplayWindow"/>); then the run's
/// <see cref="Offloads.Coalesce"/> and <see cref="VirtualSwitch.ForwardFromLink"/> (whose
/// <see cref="OffloadCheck"/> comes first). Also, a TCP message of the session opened as
/// <c>LinkSession.ReceiveSealedControl</c> does (<see cref="SealedRecord.PlaintextLength"/>, stream
/// mode), and a bare <see cref="ReplayWindow"/> with counters from the input.
/// <para>
/// Fuzzed bytes never authenticate, so besides raw datagrams the input may describe datagrams that
/// the harness seals itself (AES-256-GCM of .NET, not the code's libsodium) under the key of any
/// epoch of the session, with a counter of its choice, optionally with one byte changed afterwards.
/// A model of the receive state (which epochs are current, previous and next, the counters each
/// took) says what must happen: a genuine datagram opens exactly when its epoch is known and its
/// counter is new and inside the window; a changed one never opens; a raw one may open only if it
/// is not a replay. Nothing may throw, every frame buffer comes back to the pool, and nothing
/// allocates more than its input says (the budget check of every target).
/// </para>
/// <para>Input: records, at most 64, each a kind byte and then:</para>
/// <code>
/// kind &amp; 3 = 0  raw datagram: u16 length, its bytes (stream bit: as a TCP message instead)
/// kind &amp; 3 = 1  sealed: type, flags, hop limit, key epoch, counter, u16 plaintext length, plaintext;
///                 the harness writes the header (session and length right), seals and sends it
/// kind &amp; 3 = 2  bare window: counter; MayAccept, then Accept when it said yes (unless the stream bit)
/// kind &amp; 3 = 3  end of one receive: the run of frames is coalesced and delivered
/// kind bit 2     counter: u64 (set) or i16 added to the highest the state took so far (clear)
/// kind bit 3     stream: the session's TCP opener (counters must grow) instead of the datagram one
/// kind bits 4-7  (sealed) not zero: one more byte, a position; that byte of the datagram is XORed with them
/// </code>
/// </summary>
public sealed class UdpDatagramTarget : FuzzTarget
{
    public const uint LocalSession = 0x5e5510c4;
    private const int MaxRecords = 64;
    private const int PoolCapacity = 512;

    private static readonly byte[] DatagramKey = SHA256.HashData("vnet fuzz datagram key"u8);
    private static readonly byte[] StreamKey = SHA256.HashData("vnet fuzz stream key"u8);
    private static readonly List<byte[]> DatagramChain = [DatagramKey];
    private static readonly List<byte[]> StreamChain = [StreamKey];

    // One pool and one switch for the process, as a daemon has: a leak shows as buffers that never come back.
    private static readonly FramePool Pool = new(PoolCapacity);
    private static readonly VirtualSwitch Switch = new();

    // OpenFrame needs only the link's pool (and its switch, to count a frame it had no buffer for).
    private static readonly UdpLinkTransport Link = new(null!, null!, Switch, Pool);

    private readonly byte[] _datagram = GC.AllocateUninitializedArray<byte>(Wire.HeaderSize + Wire.MaxDataPayload);
    private readonly byte[] _plain = GC.AllocateUninitializedArray<byte>(Wire.MaxDataPayload);
    private readonly List<Frame> _batch = new(MaxRecords);
    private readonly List<Frame> _merged = new(PoolCapacity);
    private readonly List<Frame> _segments = new(PoolCapacity);
    private byte _batchHop;

    public override string Name => "udp-datagram";

    public override string Description => "Vnet.Links.UdpTransport's receive path: header, SealedRecord.Open (epochs, replay window), frames";

    private enum Expect
    {
        /// <summary>Raw bytes: may open only if the model agrees it is no replay.</summary>
        NoReplay,

        /// <summary>Sealed by the harness: opens exactly when the model says.</summary>
        Model,

        /// <summary>Sealed, then changed: never opens.</summary>
        Refused,
    }

    protected override void Run(ReadOnlySpan<byte> data)
    {
        using var datagramOpener = new ReceiveCipher((byte[])DatagramKey.Clone());
        using var streamOpener = new ReceiveCipher((byte[])StreamKey.Clone());
        var datagramModel = new CipherModel(DatagramChain);
        var streamModel = new CipherModel(StreamChain);
        var window = new ReplayWindow();
        var windowModel = new WindowModel();
        var streamOpen = true;
        try
        {
            for (var n = 0; n < MaxRecords && data.Length > 0; n++)
            {
                var kind = data[0];
                data = data[1..];
                var stream = (kind & 8) != 0;
                var opener = stream ? streamOpener : datagramOpener;
                var model = stream ? streamModel : datagramModel;
                switch (kind & 3)
                {
                    case 0:
                    {
                        if (data.Length < 2)
                            return;
                        var length = Math.Min(BinaryPrimitives.ReadUInt16BigEndian(data), data.Length - 2);
                        data[2..(2 + length)].CopyTo(_datagram);
                        data = data[(2 + length)..];
                        streamOpen = Receive(_datagram.AsSpan(0, length), stream, streamOpen, opener, model, Expect.NoReplay);
                        break;
                    }
                    case 1:
                    {
                        var length = Seal(ref data, kind, model);
                        if (length < 0)
                            return;
                        streamOpen = Receive(_datagram.AsSpan(0, length), stream, streamOpen, opener, model,
                            (kind >> 4) != 0 ? Expect.Refused : Expect.Model);
                        break;
                    }
                    case 2:
                    {
                        if (!ReadCounter(ref data, kind, windowModel.Any ? windowModel.Highest : 0, out var counter))
                            return;
                        var may = window.MayAccept(counter);
                        if (may != windowModel.MayAccept(counter))
                            throw new FuzzFindingException($"ReplayWindow.MayAccept({counter}) says {may} after {windowModel}");
                        if (may && !stream)
                        {
                            window.Accept(counter);
                            windowModel.Accept(counter);
                        }
                        break;
                    }
                    default:
                        Flush();
                        break;
                }
            }
        }
        finally
        {
            Flush();
            ReleaseAll(_batch);
            ReleaseAll(_merged);
            ReleaseAll(_segments);
        }
        if (Pool.Available != Pool.Created)
            throw new FuzzFindingException($"{Pool.Created - Pool.Available} frame buffer(s) never came back to the pool");
        Check(datagramOpener, datagramModel, "datagram");
        Check(streamOpener, streamModel, "stream");
    }

    private static void Check(ReceiveCipher opener, CipherModel model, string what)
    {
        if (opener.Rekeys != model.Generation)
            throw new FuzzFindingException($"{what} opener stepped {opener.Rekeys} epoch(s), the model {model.Generation}");
        if (opener.Refused != model.Refused)
            throw new FuzzFindingException($"{what} opener counted {opener.Refused} refusal(s), the model {model.Refused}");
    }

    /// <summary>A counter: u64 (kind bit 2) or an i16 added to <paramref name="highest"/>.</summary>
    private static bool ReadCounter(ref ReadOnlySpan<byte> data, byte kind, ulong highest, out ulong counter)
    {
        counter = 0;
        if ((kind & 4) != 0)
        {
            if (data.Length < 8)
                return false;
            counter = BinaryPrimitives.ReadUInt64BigEndian(data);
            data = data[8..];
            return true;
        }
        if (data.Length < 2)
            return false;
        counter = unchecked(highest + (ulong)(long)BinaryPrimitives.ReadInt16BigEndian(data));
        data = data[2..];
        return true;
    }

    /// <summary>Writes a sealed datagram described by the input into the scratch buffer; its length, or -1 when the input ends.</summary>
    private int Seal(ref ReadOnlySpan<byte> data, byte kind, CipherModel model)
    {
        if (data.Length < 4)
            return -1;
        var (type, flags, hop, epoch) = ((MessageType)data[0], (MessageFlags)data[1], data[2], data[3]);
        data = data[4..];
        var state = model.StateFor(epoch, out var generation);
        var highest = state is null ? 0 : model.Stream ? (state.NextInStream == 0 ? 0 : state.NextInStream - 1) : state.Any ? state.Highest : 0;
        if (!ReadCounter(ref data, kind, highest, out var counter) || data.Length < 2)
            return -1;
        var length = Math.Min(BinaryPrimitives.ReadUInt16BigEndian(data), data.Length - 2);
        // No longer than a UDP datagram can be.
        length = Math.Min(length, ushort.MaxValue - Wire.HeaderSize - SealedRecord.Overhead);
        var plaintext = data.Slice(2, length);
        data = data[(2 + length)..];
        var total = Wire.HeaderSize + SealedRecord.Overhead + length;
        var datagram = _datagram.AsSpan(0, total);
        Wire.Write(datagram, new LinkHeader(type, flags, hop, LocalSession, SealedRecord.Overhead + length, epoch));
        BinaryPrimitives.WriteUInt64BigEndian(datagram[Wire.HeaderSize..], counter);
        Span<byte> nonce = stackalloc byte[12];
        nonce[..4].Clear();
        BinaryPrimitives.WriteUInt64BigEndian(nonce[4..], counter);
        using (var aes = new AesGcm(model.KeyOf(generation), Wire.TagSize))
        {
            var body = datagram[(Wire.HeaderSize + Wire.CounterSize)..];
            aes.Encrypt(nonce, plaintext, body[..length], body[length..], datagram[..Wire.HeaderSize]);
        }
        if ((kind >> 4) != 0)
        {
            if (data.Length < 1)
                return -1;
            datagram[data[0] % total] ^= (byte)(kind >> 4);
            data = data[1..];
        }
        return total;
    }

    /// <summary>
    /// One datagram as <c>UdpTransport.Handle</c> takes it, or (stream) one message of the session's
    /// TCP connection as <c>LinkSession.ReceiveSealedControl</c> opens it. Returns whether the
    /// stream is still open (a TCP message that does not open ends the session).
    /// </summary>
    private bool Receive(Span<byte> datagram, bool stream, bool streamOpen, ReceiveCipher opener, CipherModel model, Expect expect)
    {
        if (stream && !streamOpen)
            return false;
        if (Wire.TryRead(datagram, out var header) != WireError.None ||
            header.PayloadLength != datagram.Length - Wire.HeaderSize ||
            (!stream && header.PayloadLength < SealedRecord.Overhead) ||
            header.Session != LocalSession)
        {
            return streamOpen;
        }
        var sealedPayload = datagram[Wire.HeaderSize..];
        var sealedFlag = (header.Flags & MessageFlags.Encrypted) != 0;
        var counter = sealedPayload.Length >= Wire.CounterSize ? BinaryPrimitives.ReadUInt64BigEndian(sealedPayload) : 0;
        var state = model.StateFor(header.Epoch, out _);
        var fresh = sealedFlag && sealedPayload.Length >= SealedRecord.Overhead && state is not null &&
            (stream ? counter >= state.NextInStream : state.MayAccept(counter));
        bool opened;
        Span<byte> plain = default;
        Frame? frame = null;
        if (stream)
        {
            var length = SealedRecord.PlaintextLength(sealedPayload.Length);
            plain = length >= 0 ? _plain.AsSpan(0, length) : default;
            opened = length >= 0 && SealedRecord.Open(opener, header, datagram, sealedPayload, stream: true, plain);
        }
        else if (header.Type == MessageType.Data)
        {
            // As the receive thread does: DATA opened straight into a pooled frame.
            var outcome = Link.OpenFrame(opener, header, datagram, sealedPayload, out frame);
            opened = outcome is UdpLinkTransport.DataOpening.Opened or UdpLinkTransport.DataOpening.TooShort or UdpLinkTransport.DataOpening.NoBuffer;
            var extra = (header.Flags & MessageFlags.Offload) != 0 ? VirtioNetHeader.Size : 0;
            var plainLength = SealedRecord.PlaintextLength(sealedPayload.Length);
            if (frame is not null && frame.Length != plainLength - extra)
                throw new FuzzFindingException($"OpenFrame made a {frame.Length}-byte frame of a {plainLength}-byte payload (offload {extra > 0})");
            if ((frame is not null) != (outcome == UdpLinkTransport.DataOpening.Opened))
                throw new FuzzFindingException($"OpenFrame said {outcome} with{(frame is null ? "out" : "")} a frame");
        }
        else
        {
            // In place, as the receive thread does: the plaintext where the ciphertext starts.
            plain = sealedPayload.Slice(Wire.CounterSize, sealedPayload.Length - SealedRecord.Overhead);
            opened = SealedRecord.Open(opener, header, datagram, sealedPayload, stream: false, plain);
        }
        var what = $"{(stream ? "stream" : "datagram")} {header.Type} epoch {header.Epoch} counter {counter} ({model})";
        switch (expect)
        {
            case Expect.Model when opened != fresh:
                throw new FuzzFindingException(opened ? $"opened a replayed or unknown-epoch {what}" : $"refused a genuine, fresh {what}");
            case Expect.Refused when opened:
                throw new FuzzFindingException($"opened a changed {what}");
            case Expect.NoReplay when opened && !fresh:
                throw new FuzzFindingException($"opened a replayed {what}");
            default:
                break;
        }
        // The opener counts what reaches it: sealed, with room for a counter and a tag.
        if (!opened && sealedFlag && sealedPayload.Length >= SealedRecord.Overhead)
            model.Refused++;
        if (!opened)
        {
            frame?.Release();
            return !stream && streamOpen;
        }
        model.Took(header.Epoch, counter);
        if (frame is not null)
            Add(header.HopLimit, frame);
        return streamOpen;
    }

    /// <summary>An opened data frame joins the run (UdpTransport.Collect); keep-alives and probes go to the live session.</summary>
    private void Add(byte hopLimit, Frame frame)
    {
        if (_batch.Count > 0 && _batchHop != hopLimit)
            Flush();
        _batchHop = hopLimit;
        _batch.Add(frame);
    }

    /// <summary>The end of a receive (UdpTransport.FlushBatch): the run is coalesced and each frame goes to the switch.</summary>
    private void Flush()
    {
        if (_batch.Count == 0)
            return;
        if (_batch.Count == 1)
        {
            var only = _batch[0];
            _batch.Clear();
            Deliver(only);
            return;
        }
        _merged.Clear();
        Offloads.Coalesce(_batch, Pool, _merged);
        if (_batch.Count != 0)
            throw new FuzzFindingException("Coalesce left frames in its input list");
        foreach (var frame in _merged)
            Deliver(frame);
        _merged.Clear();
    }

    /// <summary>
    /// LinkSession.DeliverFrame: the switch checks the offload header and forwards (here, with no
    /// port, every frame ends as a drop). Before that, a super-frame that the check lets through
    /// must segment into at most <see cref="OffloadCheck.MaxSegments"/> frames, as it is where a
    /// port without offloads takes it.
    /// </summary>
    private void Deliver(Frame frame)
    {
        var header = frame.Offload;
        if (OffloadCheck.FromPeer(ref header, frame.Data) == OffloadFault.None && header.IsGso)
        {
            frame.AddReference();
            var description = $"{frame.Length} bytes, gso {header.GsoType}/{header.GsoSize}, csum {header.CsumStart}+{header.CsumOffset}, hdr {header.HdrLen}";
            var saved = frame.Offload;
            frame.Offload = header;
            var ok = Offloads.Segment(frame, Pool, _segments, completeChecksums: true);
            frame.Offload = saved;
            if (ok && _segments.Count > OffloadCheck.MaxSegments)
                throw new FuzzFindingException($"a super-frame OffloadCheck let through made {_segments.Count} segments: {description}");
            ReleaseAll(_segments);
        }
        frame.IngressPort = 0;
        Switch.ForwardFromLink(frame, _batchHop);
    }

    private static void ReleaseAll(List<Frame> frames)
    {
        foreach (var f in frames)
            f.Release();
        frames.Clear();
    }

    // ---------------------------------------------------------------- the model

    /// <summary>What one key's counters must look like: the accepted ones, in a set (bounded by the input).</summary>
    private sealed class WindowModel
    {
        private readonly HashSet<ulong> _taken = [];

        public bool Any { get; private set; }

        public ulong Highest { get; private set; }

        public ulong NextInStream { get; private set; }

        /// <summary>New, and either above every counter taken or within <see cref="ReplayWindow.Size"/> of the highest.</summary>
        public bool MayAccept(ulong counter) =>
            !Any || counter > Highest || (Highest - counter < ReplayWindow.Size && !_taken.Contains(counter));

        public void Accept(ulong counter)
        {
            _taken.Add(counter);
            if (!Any || counter > Highest)
                Highest = counter;
            Any = true;
            NextInStream = counter + 1;
        }

        public override string ToString() => Any ? $"{_taken.Count} taken, highest {Highest}" : "none taken";
    }

    /// <summary>The receive side's epochs: the current one, the previous one, and the next (derived when one of its messages opens).</summary>
    private sealed class CipherModel(List<byte[]> chain)
    {
        private WindowModel _current = new();
        private WindowModel? _previous;
        private WindowModel? _next;

        public bool Stream => ReferenceEquals(chain, StreamChain);

        /// <summary>Epochs stepped (the current epoch is this, mod 256).</summary>
        public int Generation { get; private set; }

        public long Refused { get; set; }

        /// <summary>The state a message of <paramref name="epoch"/> is checked against, and the generation of its key; null: no key.</summary>
        public WindowModel? StateFor(byte epoch, out int generation)
        {
            generation = Generation;
            if (epoch == (byte)Generation)
                return _current;
            if (_previous is not null && epoch == (byte)(Generation - 1))
            {
                generation = Generation - 1;
                return _previous;
            }
            if (epoch != (byte)(Generation + 1))
                return null;
            generation = Generation + 1;
            return _next ??= new WindowModel();
        }

        public void Took(byte epoch, ulong counter)
        {
            var state = StateFor(epoch, out var generation);
            state!.Accept(counter);
            if (generation > Generation)
            {
                _previous = _current;
                _current = state;
                _next = null;
                Generation++;
            }
        }

        /// <summary>The raw key of a generation: the first, ratcheted as EpochKey.Ratchet documents.</summary>
        public byte[] KeyOf(int generation)
        {
            lock (chain)
            {
                while (chain.Count <= generation)
                    chain.Add(HMACSHA256.HashData(chain[^1], "vnet2 rekey\x01"u8));
                return chain[generation];
            }
        }

        public override string ToString() => $"epoch {(byte)Generation} ({Generation} steps): {_current}; previous {_previous?.ToString() ?? "none"}";
    }

    // ---------------------------------------------------------------- seeds

    public override IEnumerable<(string Name, byte[] Data)> Seeds()
    {
        static byte[] U16(int value) => [(byte)(value >> 8), (byte)value];
        static byte[] U64(ulong value)
        {
            var b = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(b, value);
            return b;
        }
        static byte[] I16(int value) => U16(value & 0xFFFF);

        // A sealed record the harness seals: absolute counter (kind bit 2), optionally stream (bit 3).
        static byte[] Sealed(MessageType type, MessageFlags flags, byte epoch, ulong counter, byte[] plaintext, bool stream = false, int tamper = 0, byte at = 0) =>
        [
            (byte)(1 | 4 | (stream ? 8 : 0) | (tamper << 4)), (byte)type, (byte)(flags | MessageFlags.Encrypted), 8, epoch, .. U64(counter),
            .. U16(plaintext.Length), .. plaintext, .. (tamper != 0 ? new[] { at } : []),
        ];
        // A sealed record whose counter is the highest taken so far plus delta (kind bit 2 clear).
        static byte[] Next(MessageType type, int delta, byte[] plaintext) =>
            [1, (byte)type, (byte)MessageFlags.Encrypted, 8, 0, .. I16(delta), .. U16(plaintext.Length), .. plaintext];
        // A raw record: a datagram sealed here under the fixed key of epoch 0, as a peer sends it.
        static byte[] Raw(byte[] datagram, bool stream = false) => [(byte)(stream ? 8 : 0), .. U16(datagram.Length), .. datagram];
        static byte[] Datagram(MessageType type, MessageFlags flags, ulong counter, byte[] plaintext, byte[]? key = null)
        {
            var d = new byte[Wire.HeaderSize + SealedRecord.Overhead + plaintext.Length];
            Wire.Write(d, new LinkHeader(type, flags | MessageFlags.Encrypted, 8, LocalSession, SealedRecord.Overhead + plaintext.Length));
            BinaryPrimitives.WriteUInt64BigEndian(d.AsSpan(Wire.HeaderSize), counter);
            var nonce = new byte[12];
            BinaryPrimitives.WriteUInt64BigEndian(nonce.AsSpan(4), counter);
            using var aes = new AesGcm(key ?? DatagramKey, Wire.TagSize);
            aes.Encrypt(nonce, plaintext, d.AsSpan(Wire.HeaderSize + Wire.CounterSize, plaintext.Length),
                d.AsSpan(Wire.HeaderSize + Wire.CounterSize + plaintext.Length, Wire.TagSize), d.AsSpan(0, Wire.HeaderSize));
            return d;
        }

        var flow = OffloadsTarget.TcpFlow(4, 1000).ToArray();
        var none = new byte[VirtioNetHeader.Size];
        byte[] keepAlive = [0, 0, 0, 0, 0, 0x12, 0x34, 0x56];

        // Genuine datagrams of a TCP flow (one receive: coalesced into one super-frame), then a keep-alive.
        yield return ("raw-data-run", [.. Raw(Datagram(MessageType.Data, MessageFlags.None, 0, flow[0])),
            .. Raw(Datagram(MessageType.Data, MessageFlags.None, 1, flow[1])), .. Raw(Datagram(MessageType.Data, MessageFlags.None, 2, flow[2])),
            .. Raw(Datagram(MessageType.Data, MessageFlags.Offload, 3, [.. none, .. flow[3]])), 3,
            .. Raw(Datagram(MessageType.KeepAlive, MessageFlags.None, 4, keepAlive))]);
        // A replay from an earlier word of the window: refused.
        yield return ("raw-replay", [.. Raw(Datagram(MessageType.UdpProbe, MessageFlags.None, 0, [])),
            .. Raw(Datagram(MessageType.UdpProbeAck, MessageFlags.None, 64, [])), .. Raw(Datagram(MessageType.UdpProbe, MessageFlags.None, 0, []))]);
        yield return ("raw-stream-control", Raw(Datagram(MessageType.Control, MessageFlags.None, 0, "{\"type\":\"sync\",\"topic\":\"vms\"}"u8.ToArray(), StreamKey), stream: true));
        yield return ("raw-short", Raw(Datagram(MessageType.Data, MessageFlags.None, 0, [])));
        // Epochs: 0, a step to 1, a late datagram of 0, a step to 2, one of 0 (no key any more), the counter of a flipped tag.
        yield return ("sealed-epochs", [.. Sealed(MessageType.Data, MessageFlags.None, 0, 5, flow[0]),
            .. Sealed(MessageType.KeepAlive, MessageFlags.None, 1, 0, keepAlive), .. Sealed(MessageType.Data, MessageFlags.None, 0, 6, flow[1]),
            .. Sealed(MessageType.KeepAliveAck, MessageFlags.None, 2, 0, keepAlive), .. Sealed(MessageType.Data, MessageFlags.None, 0, 7, flow[2]),
            .. Sealed(MessageType.UdpProbe, MessageFlags.None, 2, 1, [], tamper: 1, at: 30), 3]);
        yield return ("sealed-offload-gso", Sealed(MessageType.Data, MessageFlags.Offload, 0, 0, [.. GsoHeader(), .. flow[0]]));
        yield return ("sealed-stream", [.. Sealed(MessageType.Control, MessageFlags.None, 0, 0, "{}"u8.ToArray(), stream: true),
            .. Sealed(MessageType.Control, MessageFlags.None, 0, 9, "{}"u8.ToArray(), stream: true),
            .. Sealed(MessageType.Bye, MessageFlags.None, 0, 9, [], stream: true), .. Sealed(MessageType.Bye, MessageFlags.None, 0, 10, [], stream: true)]);
        yield return ("sealed-wrong-epoch-and-type", [.. Sealed(MessageType.Data, MessageFlags.None, 7, 0, flow[0]),
            .. Sealed(MessageType.HandshakeInit, MessageFlags.None, 0, 0, flow[0]), .. Sealed(MessageType.Control, MessageFlags.None, 0, 1, [1, 2])]);
        // Counters one after the other, as a sender seals them: a replay is one changed delta away.
        yield return ("sealed-next", [.. Next(MessageType.KeepAlive, 0, keepAlive), .. Next(MessageType.Data, 1, flow[0]),
            .. Next(MessageType.Data, 1, flow[1]), .. Next(MessageType.UdpProbe, 1, []), .. Next(MessageType.KeepAliveAck, 2, keepAlive)]);
        // A bare window: 0, 64, 130, 64 again (refused), a jump past the window and one more, an old one, relative steps back.
        yield return ("window", [6, .. U64(0), 6, .. U64(64), 6, .. U64(130), 6, .. U64(64), 6, .. U64(2200), 2, .. I16(1), 6, .. U64(100),
            2, .. I16(-70), 2, .. I16(-2100)]);
    }

    /// <summary>A TCP super-frame's virtio-net header for a complete frame (GSO size below its payload).</summary>
    private static byte[] GsoHeader()
    {
        var header = new VirtioNetHeader
        {
            Flags = VirtioNetHeader.FlagNeedsCsum,
            GsoType = VirtioNetHeader.GsoTcpV4,
            HdrLen = 14 + 20 + 32,
            GsoSize = 400,
            CsumStart = 14 + 20,
            CsumOffset = 16,
        };
        var bytes = new byte[VirtioNetHeader.Size];
        header.Write(bytes);
        return bytes;
    }
}
