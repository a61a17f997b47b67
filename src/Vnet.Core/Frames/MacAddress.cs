using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Vnet.Frames;

/// <summary>
/// A 48-bit Ethernet address held in the low bits of a <see cref="ulong"/>, so that it hashes and
/// compares as one machine word on the data path.
/// </summary>
public readonly struct MacAddress : IEquatable<MacAddress>, IComparable<MacAddress>, ISpanFormattable
{
    private const ulong Mask = 0xFFFF_FFFF_FFFFUL;

    public static readonly MacAddress Broadcast = new(Mask);
    public static readonly MacAddress Zero;

    public MacAddress(ulong value) => Value = value & Mask;

    public ulong Value { get; }

    /// <summary>The group bit (I/G): broadcast and multicast destinations.</summary>
    public bool IsGroup => (Value & 0x0100_0000_0000UL) != 0;

    public bool IsBroadcast => Value == Mask;

    /// <summary>The U/L bit: addresses an administrator assigned, as VNET's VMs usually have.</summary>
    public bool IsLocallyAdministered => (Value & 0x0200_0000_0000UL) != 0;

    public static MacAddress Read(ReadOnlySpan<byte> six)
    {
        ulong hi = BinaryPrimitives.ReadUInt16BigEndian(six);
        ulong lo = BinaryPrimitives.ReadUInt32BigEndian(six.Slice(2));
        return new MacAddress((hi << 32) | lo);
    }

    public void Write(Span<byte> six)
    {
        BinaryPrimitives.WriteUInt16BigEndian(six, (ushort)(Value >> 32));
        BinaryPrimitives.WriteUInt32BigEndian(six.Slice(2), (uint)Value);
    }

    /// <summary>Parses <c>aa:bb:cc:dd:ee:ff</c> (colons or dashes, either case).</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out MacAddress mac)
    {
        mac = default;
        if (text.Length != 17)
            return false;
        ulong v = 0;
        for (var i = 0; i < 6; i++)
        {
            var hi = HexValue(text[i * 3]);
            var lo = HexValue(text[(i * 3) + 1]);
            if (hi < 0 || lo < 0)
                return false;
            if (i < 5 && text[(i * 3) + 2] is not (':' or '-'))
                return false;
            v = (v << 8) | (uint)((hi << 4) | lo);
        }
        mac = new MacAddress(v);
        return true;
    }

    public static MacAddress Parse(string text) =>
        TryParse(text, out var mac) ? mac : throw new FormatException($"'{text}' is not a MAC address (expected aa:bb:cc:dd:ee:ff)");

    private static int HexValue(char c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'f' => c - 'a' + 10,
        >= 'A' and <= 'F' => c - 'A' + 10,
        _ => -1,
    };

    public bool Equals(MacAddress other) => Value == other.Value;

    public override bool Equals([NotNullWhen(true)] object? obj) => obj is MacAddress m && Equals(m);

    public override int GetHashCode() => (int)(Value ^ (Value >> 29));

    public int CompareTo(MacAddress other) => Value.CompareTo(other.Value);

    public static bool operator ==(MacAddress a, MacAddress b) => a.Value == b.Value;

    public static bool operator !=(MacAddress a, MacAddress b) => a.Value != b.Value;

    public static bool operator <(MacAddress a, MacAddress b) => a.Value < b.Value;

    public static bool operator >(MacAddress a, MacAddress b) => a.Value > b.Value;

    public static bool operator <=(MacAddress a, MacAddress b) => a.Value <= b.Value;

    public static bool operator >=(MacAddress a, MacAddress b) => a.Value >= b.Value;

    public override string ToString() => ToString(null, null);

    public string ToString(string? format, IFormatProvider? formatProvider) => string.Create(17, Value, static (span, v) =>
    {
        for (var i = 0; i < 6; i++)
        {
            var b = (byte)(v >> (40 - (i * 8)));
            span[i * 3] = "0123456789abcdef"[b >> 4];
            span[(i * 3) + 1] = "0123456789abcdef"[b & 0xF];
            if (i < 5)
                span[(i * 3) + 2] = ':';
        }
    });

    public bool TryFormat(Span<char> destination, out int charsWritten, ReadOnlySpan<char> format, IFormatProvider? provider)
    {
        charsWritten = 0;
        if (destination.Length < 17)
            return false;
        ToString().AsSpan().CopyTo(destination);
        charsWritten = 17;
        return true;
    }

    public string ToString(IFormatProvider? provider) => ToString(null, provider ?? CultureInfo.InvariantCulture);
}
