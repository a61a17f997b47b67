using System.Diagnostics;
using System.Security.Cryptography;

namespace Vnet.Links.Security;

/// <summary>
/// One key of one direction of a session, with its epoch and the counter that makes each nonce.
/// The counter belongs to the key: whoever still holds an old key after a rekey keeps counting on
/// that key, so no nonce is ever used twice with one key.
/// </summary>
internal sealed class EpochKey : IDisposable
{
    private long _next = -1;

    public EpochKey(byte epoch, byte[] raw)
    {
        Epoch = epoch;
        Raw = raw;
        Key = new AesGcmKey(raw);
        Created = Stopwatch.GetTimestamp();
    }

    public byte Epoch { get; }

    public byte[] Raw { get; }

    /// <summary>
    /// AES-256-GCM through libsodium, expanded once: AES-NI and a small per-call cost (datagrams are
    /// small). OpenSSL's AES-GCM measured 7x slower per 1.4 KB datagram here (its per-call set-up).
    /// </summary>
    public AesGcmKey Key { get; }

    public long Created { get; }

    /// <summary>Counters handed out so far.</summary>
    public long Used => Interlocked.Read(ref _next) + 1;

    public ulong NextCounter() => (ulong)Interlocked.Increment(ref _next);

    /// <summary>The key of the next epoch: a one-way step, so a later key does not give away an earlier one.</summary>
    public byte[] Ratchet() => HMACSHA256.HashData(Raw, "vnet2 rekey\x01"u8);

    public void Dispose()
    {
        Key.Dispose();
        CryptographicOperations.ZeroMemory(Raw);
    }
}

/// <summary>
/// The sealing side of a session (what this daemon sends): AES-256-GCM with a 96-bit nonce made of
/// 32 zero bits and the key's 64-bit counter, the message header as associated data, the tag
/// after the ciphertext. The key steps to the next epoch after <see cref="RekeyAfter"/> or
/// <see cref="RekeyAfterMessages"/>; the epoch travels in the header so the receiver follows.
/// Seal never allocates. Thread-safe: every call takes its own counter value.
/// </summary>
internal sealed class SendCipher : IDisposable
{
    public const int TagSize = 16;
    public const int CounterSize = 8;

    /// <summary>A key is used for at most this long (WireGuard rekeys after 2 minutes).</summary>
    public static readonly TimeSpan RekeyAfter = TimeSpan.FromMinutes(2);

    /// <summary>... or for at most this many messages (far below AES-GCM's limits).</summary>
    public const long RekeyAfterMessages = 1L << 32;

    private readonly long _rekeyTicks;
    private EpochKey _current;
    private EpochKey? _retired;

    /// <param name="rekeyAfter">Tests only: a shorter key lifetime than <see cref="RekeyAfter"/>.</param>
    public SendCipher(byte[] key, TimeSpan? rekeyAfter = null)
    {
        _current = new EpochKey(0, key);
        _rekeyTicks = (long)((rekeyAfter ?? RekeyAfter).TotalSeconds * Stopwatch.Frequency);
    }

    public EpochKey Current => Volatile.Read(ref _current);

    /// <summary>Epochs stepped since the session began.</summary>
    public long Rekeys { get; private set; }

    /// <summary>
    /// Steps to the next epoch when the key is old or worn. Called by the one thread that owns the
    /// send path (the session's send lock holder), once per batch; cheap when nothing is due.
    /// </summary>
    public void RekeyIfDue()
    {
        var key = _current;
        if (Stopwatch.GetTimestamp() - key.Created < _rekeyTicks && key.Used < RekeyAfterMessages)
            return;
        // Never past a key that sealed nothing: the receiver follows one epoch at a time, when a
        // message of the next one opens, so a sender idle for two periods (the connection of a UDP
        // link carries nothing for minutes) would otherwise step where the receiver cannot follow.
        if (key.Used == 0)
            return;
        var next = new EpochKey(unchecked((byte)(key.Epoch + 1)), key.Ratchet());
        // A probe may still be sealing with the key being retired; it is freed one step later.
        _retired?.Dispose();
        _retired = key;
        Volatile.Write(ref _current, next);
        Rekeys++;
    }

    /// <summary>
    /// Seals <paramref name="plaintext"/> into <paramref name="destination"/> (its length plus the
    /// tag; the two may be the same memory) with <paramref name="key"/>'s next counter, which it returns.
    /// </summary>
    public static ulong Seal(EpochKey key, ReadOnlySpan<byte> associatedData, ReadOnlySpan<byte> plaintext, Span<byte> destination)
    {
        var counter = key.NextCounter();
        key.Key.Seal(counter, associatedData, plaintext, destination[..(plaintext.Length + TagSize)]);
        return counter;
    }

    public void Dispose()
    {
        _current.Dispose();
        _retired?.Dispose();
    }
}

/// <summary>
/// The opening side of a session (what this daemon receives). It keeps the current epoch's key and
/// the previous one (datagrams sealed just before a rekey may arrive after it) and derives the next
/// when a message of the next epoch authenticates. Every sealed message carries its counter: over
/// TCP it must grow (a sender may skip counters it sealed but could not send), over UDP a sliding
/// window refuses replays and stragglers. Open never allocates; one thread per session opens (the
/// connection's receiver, or the UDP receiver).
/// </summary>
internal sealed class ReceiveCipher : IDisposable
{
    private State _current;
    private State? _previous;

    public ReceiveCipher(byte[] key) => _current = new State(new EpochKey(0, key));

    /// <summary>Messages refused: they did not authenticate, were replayed or too old, or named an unknown epoch.</summary>
    public long Refused { get; private set; }

    public long Rekeys { get; private set; }

    private sealed class State(EpochKey key) : IDisposable
    {
        public EpochKey Key { get; } = key;

        public ReplayWindow Window { get; } = new();

        /// <summary>The lowest counter a stream message may still have.</summary>
        public ulong NextInStream { get; set; }

        public void Dispose() => Key.Dispose();
    }

    /// <summary>
    /// Opens a sealed message in place or into <paramref name="plaintext"/> (the ciphertext's length
    /// minus the tag; it may start where the ciphertext starts). <paramref name="stream"/>: a TCP
    /// message, whose counter must be above every earlier one; else a datagram, checked against the
    /// replay window. False when it is refused (nothing is changed then).
    /// </summary>
    public bool Open(byte epoch, ulong counter, bool stream, ReadOnlySpan<byte> associatedData, ReadOnlySpan<byte> ciphertext, Span<byte> plaintext)
    {
        var state = StateFor(epoch, out var isNext);
        var fresh = state is not null && (stream ? counter >= state.NextInStream : state.Window.MayAccept(counter));
        if (!fresh || !Decrypt(state!.Key, counter, associatedData, ciphertext, plaintext))
        {
            Refused++;
            if (isNext)
                state?.Dispose();
            return false;
        }
        // Marked only once it authenticated: a forged message cannot burn a counter.
        if (stream)
            state.NextInStream = counter + 1;
        else
            state.Window.Accept(counter);
        if (isNext)
            Advance(state);
        return true;
    }

    private static bool Decrypt(EpochKey key, ulong counter, ReadOnlySpan<byte> associatedData, ReadOnlySpan<byte> ciphertext, Span<byte> plaintext)
    {
        if (ciphertext.Length < SendCipher.TagSize || plaintext.Length < ciphertext.Length - SendCipher.TagSize)
            return false;
        return key.Key.Open(counter, associatedData, ciphertext, plaintext[..(ciphertext.Length - SendCipher.TagSize)]);
    }

    /// <summary>The state of an epoch: current, previous, or (made here, not yet kept) the next one.</summary>
    private State? StateFor(byte epoch, out bool isNext)
    {
        isNext = false;
        if (epoch == _current.Key.Epoch)
            return _current;
        if (_previous is { } previous && epoch == previous.Key.Epoch)
            return previous;
        if (epoch != unchecked((byte)(_current.Key.Epoch + 1)))
            return null;
        isNext = true;
        return new State(new EpochKey(epoch, _current.Key.Ratchet()));
    }

    private void Advance(State next)
    {
        _previous?.Dispose();
        _previous = _current;
        _current = next;
        Rekeys++;
    }

    public void Dispose()
    {
        _current.Dispose();
        _previous?.Dispose();
    }
}

/// <summary>
/// Which counters of a key were already accepted, over the last <see cref="Size"/> (RFC 6479's
/// sliding window, as WireGuard keeps it): a counter seen before, or older than the window, is a
/// replay or hopelessly late and is refused.
/// </summary>
internal sealed class ReplayWindow
{
    public const int Size = 2048;

    // One word more than the window, so the oldest word of the window never shares a slot with the newest.
    private const int Words = (Size / 64) + 1;

    private readonly ulong[] _bits = new ulong[Words];
    private ulong _highest;
    private bool _any;

    public bool MayAccept(ulong counter)
    {
        if (!_any || counter > _highest)
            return true;
        if (_highest - counter >= Size)
            return false;
        return (_bits[(int)(counter / 64 % Words)] & (1UL << (int)(counter % 64))) == 0;
    }

    /// <summary>Records an authenticated counter (call after <see cref="MayAccept"/> said yes and the tag verified).</summary>
    public void Accept(ulong counter)
    {
        if (!_any || counter > _highest)
        {
            // Clear the words the window slides over: none when the new highest shares the old one's
            // word (from is then past to; unsigned, to - from would wrap and wipe every bit, and every
            // counter below the highest would open again: a replay).
            var from = _any ? (_highest / 64) + 1 : counter / 64;
            var to = counter / 64;
            if (!_any || (to >= from && to - from >= Words))
            {
                Array.Clear(_bits);
            }
            else
            {
                for (var w = from; w <= to; w++)
                    _bits[(int)(w % Words)] = 0;
            }
            _highest = counter;
            _any = true;
        }
        _bits[(int)(counter / 64 % Words)] |= 1UL << (int)(counter % 64);
    }
}
