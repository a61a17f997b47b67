using System.Security.Cryptography;
using Vnet.Daemon;
using Vnet.Frames;

namespace Vnet.Vms.Providers;

/// <summary>What makes VMs on a host: <c>vm_provider</c> in the configuration (off by default).</summary>
public enum VmProviderKind
{
    /// <summary>The host makes no VMs (the default: a host never creates VMs unless configured).</summary>
    None,

    /// <summary>A VM is a network namespace with a veth (demos and tests).</summary>
    Netns,

    /// <summary>A VM is a QEMU guest with a virtio-net NIC on a TAP.</summary>
    Qemu,
}

/// <summary>The sizes a VM is ordered in; what each means is up to the provider (QEMU: memory and vCPUs).</summary>
public enum VmSize
{
    Small,
    Medium,
    Large,
}

/// <summary>How a move went: the VM kept running (RAM, connections), or was stopped and started again with its MAC.</summary>
public enum VmMoveMode
{
    Live,
    Restart,
}

/// <summary>One VM as a provider makes it: its name, its NIC's MAC and its size.</summary>
public sealed record VmSpec(string Name, MacAddress Mac, VmSize Size)
{
    /// <summary>Longest VM name: "vm-" + name must be a device name (at most 15 characters).</summary>
    public const int MaxNameLength = 12;

    /// <summary>The host-side device of the VM's NIC (a veth end, a TAP), the daemon's pcap interface.</summary>
    public string Device => DeviceOf(Name);

    public static string DeviceOf(string name) => "vm-" + name;
}

/// <summary>Checks and texts of VM names, sizes, providers; MACs for new VMs.</summary>
public static class VmNames
{
    /// <summary>Null when <paramref name="name"/> is a valid VM name, else why not.</summary>
    public static string? Problem(string? name)
    {
        if (string.IsNullOrEmpty(name))
            return "a VM name must not be empty";
        if (name.Length > VmSpec.MaxNameLength)
            return $"VM name '{Printable(name)}' is longer than {VmSpec.MaxNameLength} characters";
        foreach (var c in name)
        {
            if (c is not ((>= 'a' and <= 'z') or (>= '0' and <= '9') or '-'))
                return $"VM name '{Printable(name)}' may hold only a-z, 0-9 and '-'";
        }
        if (name[0] == '-' || name[^1] == '-')
            return $"VM name '{name}' must not begin or end with '-'";
        return null;
    }

    /// <summary>The name, or a refusal with the reason.</summary>
    public static string Check(string? name) =>
        Problem(name) is { } problem ? throw new DaemonCommandException(problem) : name!;

    public static VmSize ParseSize(string text) =>
        TryParseSize(text) ?? throw new DaemonCommandException($"size '{Printable(text)}' is not small, medium or large");

    public static VmSize? TryParseSize(string text) => text switch
    {
        "small" => VmSize.Small,
        "medium" => VmSize.Medium,
        "large" => VmSize.Large,
        _ => null,
    };

    public static string Text(VmSize size) => size switch
    {
        VmSize.Small => "small",
        VmSize.Medium => "medium",
        _ => "large",
    };

    public static string Text(VmProviderKind kind) => kind switch
    {
        VmProviderKind.Netns => "netns",
        VmProviderKind.Qemu => "qemu",
        _ => "none",
    };

    public static string Text(VmMoveMode mode) => mode == VmMoveMode.Live ? "live" : "restart";

    public static VmProviderKind ParseProvider(string text) => text switch
    {
        "none" or "off" => VmProviderKind.None,
        "netns" => VmProviderKind.Netns,
        "qemu" => VmProviderKind.Qemu,
        _ => throw new FormatException($"'{Printable(text)}' is not netns, qemu or none"),
    };

    public static VmMoveMode ParseMode(string text) => text switch
    {
        "live" => VmMoveMode.Live,
        "restart" => VmMoveMode.Restart,
        _ => throw new DaemonCommandException($"move mode '{Printable(text)}' is not live or restart"),
    };

    /// <summary>Whether the text is an IPv4 address with a prefix length (host bits allowed), e.g. 10.50.0.120/24.</summary>
    public static bool IsIpv4WithPrefix(string text)
    {
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        return slash > 0 &&
            System.Net.IPAddress.TryParse(text.AsSpan(0, slash), out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork &&
            int.TryParse(text.AsSpan(slash + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var prefix) &&
            prefix is >= 0 and <= 32;
    }

    /// <summary>The first letters of a user's text, with control characters shown as '?', for an error message.</summary>
    private static string Printable(string text)
    {
        var s = text.Length > 40 ? text[..40] + "..." : text;
        return string.Create(s.Length, s, static (span, src) =>
        {
            for (var i = 0; i < src.Length; i++)
                span[i] = char.IsControl(src[i]) ? '?' : src[i];
        });
    }

    /// <summary>
    /// A MAC for a new VM: locally administered (02:...), unicast, the next three bytes random, and
    /// none of <paramref name="taken"/>. 2^32 choices: a clash is retried, a full space refused.
    /// </summary>
    public static MacAddress NewMac(Func<MacAddress, bool> taken)
    {
        Span<byte> b = stackalloc byte[6];
        for (var attempt = 0; attempt < 64; attempt++)
        {
            RandomNumberGenerator.Fill(b);
            // 02: locally administered, unicast; the QEMU and veth conventions stay clear of it.
            b[0] = 0x02;
            b[1] = 0x56; // 'V'
            var mac = MacAddress.Read(b);
            if (!taken(mac))
                return mac;
        }
        throw new DaemonCommandException("no free MAC address found for the VM");
    }
}
