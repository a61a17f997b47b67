using Vnet.Links.Security;

namespace Vnet.Links;

public enum DaemonRole : byte
{
    Host = 0,
    Proxy = 1,

    /// <summary>The vnet CLI controlling a daemon over TCP with an administrator key: no link, commands only.</summary>
    Tool = 2,
}

public enum LinkTransport : byte
{
    Tcp = 0,
    Udp = 1,
}

/// <summary>Who is at the other end of an authenticated link: its name, proven public key, and this session's keys.</summary>
public sealed record PeerIdentity(
    string Name,
    DaemonRole Role,
    LinkTransport Transport,
    bool Star,
    uint RemoteSession,
    PublicKeyId PublicKey,
    SessionKeys Keys,
    byte Stream = 0)
{
    // The session keys are secrets: a record would print them.
    public override string ToString() => $"{Name} ({Role}, {Transport}{(Star ? ", star" : "")}{(Stream > 0 ? $", stream {Stream}" : "")}, key {PublicKey})";
}

/// <summary>Whether a proven key may be a given daemon (or an administrator's tool).</summary>
public readonly record struct Admission(bool Admitted, string? Reason)
{
    public static Admission Yes { get; } = new(true, null);

    public static Admission No(string reason) => new(false, reason);
}

/// <summary>
/// Who may be who on this daemon's links (the daemon's key ring). Called from handshake tasks, off
/// the control loop: implementations answer from an immutable snapshot.
/// </summary>
public interface IPeerKeys
{
    /// <summary>The key <paramref name="peer"/> must prove when this daemon dials it; null: unknown (no dial).</summary>
    PublicKeyId? KeyOf(string peer);

    /// <summary>Whether a peer that proved <paramref name="key"/> may be <paramref name="name"/> in <paramref name="role"/>.</summary>
    Admission Admit(PublicKeyId key, string name, DaemonRole role);
}
