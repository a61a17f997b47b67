using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Links;
using Vnet.Links.Security;

namespace Vnet.Peers;

/// <summary>A daemon's name and public key, as the Proxy admits it and tells the hosts.</summary>
public sealed record KnownKey(string Name, PublicKeyId Key);

/// <summary>
/// Who may be who on this daemon's links. A name is bound to one key: a session for a name comes
/// only from the holder of that name's key, and a key that is not admitted gets no link at all.
/// <list type="bullet">
/// <item>The Proxy admits hosts by name and key (configuration, <c>vnet host admit</c>, a hosts
/// file that keeps run-time admissions) and tells every host the whole list over the star, so
/// hosts can link to each other; a revoked host's star session ends at once.</item>
/// <item>A host pins the Proxy's key (configuration) and takes other hosts' keys from the Proxy's
/// list (plus any key its configuration gives a link); a session to a peer whose key changed or
/// went ends.</item>
/// <item>Administrators' keys may control the daemon with <c>vnet --remote</c> where it serves tools.</item>
/// </list>
/// Handshakes read it from other threads: the list is an immutable snapshot swapped at once; every
/// change happens on the control loop.
/// </summary>
public sealed partial class KeyRing : IPeerKeys
{
    private readonly DaemonConfig _config;
    private readonly ILogger _logger;
    private readonly HashSet<PublicKeyId> _admins;
    private readonly Dictionary<string, PublicKeyId> _configured = new(StringComparer.Ordinal);
    private volatile Dictionary<string, PublicKeyId> _keys;
    private PeerChannel? _peers;
    private LinkManager? _links;
    private long _fromProxyVersion = -1;

    public KeyRing(DaemonConfig config, ILogger logger)
    {
        _config = config;
        _logger = logger;
        _admins = [.. config.AdminKeys];
        foreach (var h in config.Hosts)
            _configured[h.Name] = h.PublicKey;
        foreach (var l in config.Links)
        {
            if (l.PublicKey is { } key)
                _configured[l.Peer] = key;
        }
        var keys = new Dictionary<string, PublicKeyId>(_configured, StringComparer.Ordinal);
        if (IsProxy && config.HostsFile is { } file)
        {
            foreach (var (name, key) in ReadHostsFile(file))
                keys[name] = key;
        }
        _keys = keys;
        Version = 1;
    }

    private bool IsProxy => _config.Role == DaemonRole.Proxy;

    /// <summary>Changes of the list of keys (the Proxy's admissions; on a host, the Proxy's list).</summary>
    public long Version { get; private set; }

    /// <summary>Every known name and key, sorted by name.</summary>
    public IReadOnlyList<KnownKey> List() =>
        [.. _keys.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => new KnownKey(k.Key, k.Value))];

    // ---------------------------------------------------------------- IPeerKeys (any thread)

    public PublicKeyId? KeyOf(string peer) =>
        !IsProxy && peer == _config.ProxyName ? _config.ProxyKey : _keys.GetValueOrDefault(peer);

    public Admission Admit(PublicKeyId key, string name, DaemonRole role)
    {
        switch (role)
        {
            case DaemonRole.Tool:
                return _admins.Contains(key) ? Admission.Yes : Admission.No("not an administrator's key");
            case DaemonRole.Proxy:
                return Admission.No("a Proxy dials no daemon");
        }
        if (!IsProxy && name == _config.ProxyName)
            return Admission.No("the Proxy's name is taken by the Proxy");
        if (!_keys.TryGetValue(name, out var expected))
            return Admission.No(IsProxy ? "no host of that name is admitted ('vnet host admit NAME KEY')" : "the Proxy has not introduced that host");
        return expected.Equals(key) ? Admission.Yes : Admission.No("that name belongs to another key");
    }

    // ---------------------------------------------------------------- the Proxy's admissions (control loop)

    /// <summary>Admits (or re-keys) a host; its old key's sessions end, and every host hears of it.</summary>
    public KnownKey AdmitHost(string name, string publicKey)
    {
        RequireProxy();
        if (!Names.IsValid(name) || name == _config.Name)
            throw new DaemonCommandException($"'{name}' cannot be a host's name");
        if (!PublicKeyId.TryParse(publicKey, out var key))
            throw new DaemonCommandException($"'{publicKey}' is not a public key (32 bytes in base64; 'vnet pubkey' prints one)");
        var keys = new Dictionary<string, PublicKeyId>(_keys, StringComparer.Ordinal);
        keys.TryGetValue(name, out var old);
        keys[name] = key;
        Publish(keys);
        if (old is not null && !old.Equals(key))
            EndSessionOf(name, "its key was replaced");
        Log.Admitted(_logger, name, key);
        return new KnownKey(name, key);
    }

    /// <summary>Revokes a host: it is refused from now on, and its sessions end.</summary>
    public void RevokeHost(string name)
    {
        RequireProxy();
        var keys = new Dictionary<string, PublicKeyId>(_keys, StringComparer.Ordinal);
        if (!keys.Remove(name))
            throw new DaemonCommandException($"no host {name} is admitted");
        Publish(keys);
        EndSessionOf(name, "revoked");
        Log.Revoked(_logger, name);
    }

    private void RequireProxy()
    {
        if (!IsProxy)
            throw new DaemonCommandException($"{_config.Name} is a host; hosts are admitted at the Proxy");
    }

    private void Publish(Dictionary<string, PublicKeyId> keys)
    {
        _keys = keys;
        Version++;
        if (_config.HostsFile is { } file)
            WriteHostsFile(file, keys);
        SendKeys(null);
    }

    private void EndSessionOf(string name, string reason)
    {
        if (_links?.Find(name)?.Session is { } session)
            session.Close(reason);
    }

    // ---------------------------------------------------------------- distribution over the star

    /// <summary>Wires the distribution of keys: the Proxy sends its list to every host, hosts take it (control loop).</summary>
    public void Start(PeerChannel peers, LinkManager links, ControlLoop loop, TimeSpan antiEntropy)
    {
        _peers = peers;
        _links = links;
        if (IsProxy)
        {
            peers.PeerUp += (port, session) =>
            {
                if (port.Star)
                    SendKeys(session);
            };
            loop.Every(antiEntropy, () =>
            {
                foreach (var port in links.Links)
                {
                    if (port.Star && port.Session is { } s)
                        peers.Send(s, new PeerMessage { Type = PeerMessageType.Digest, Topic = MapTopic.Keys, Epoch = 0, Seq = Version, Count = _keys.Count, Hash = Hash(_keys) });
                }
            });
        }
        else
        {
            peers.On(PeerMessageType.Keys, OnKeys);
        }
        peers.On(PeerMessageType.Digest, m =>
        {
            if (m.Message.Topic != MapTopic.Keys || IsProxy || Matches(m.Message))
                return;
            Interlocked.Increment(ref _repairs);
            Log.KeysRepair(_logger, m.Peer);
            peers.Send(m.Session, new PeerMessage { Type = PeerMessageType.Sync, Topic = MapTopic.Keys, Reason = "keys differ" });
        });
        peers.On(PeerMessageType.Sync, m =>
        {
            if (m.Message.Topic == MapTopic.Keys && IsProxy)
                SendKeys(m.Session);
        });
    }

    private long _repairs;

    /// <summary>Host: times its list differed from the Proxy's digest and was asked for again.</summary>
    public long Repairs => Interlocked.Read(ref _repairs);

    /// <summary>Proxy: the whole list to one host, or to every host on the star.</summary>
    private void SendKeys(LinkSession? to)
    {
        if (_peers is null || _links is null)
            return;
        var message = new PeerMessage
        {
            Type = PeerMessageType.Keys,
            Seq = Version,
            Keys = [.. _keys.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => new KeyEntry(k.Key, k.Value.ToString()))],
        };
        if (to is not null)
        {
            _peers.Send(to, message);
            return;
        }
        _peers.Send(_links.Links.Where(p => p.Star && p.Session is not null).Select(p => p.Session!).ToList(), message);
    }

    /// <summary>Host: whether its list matches the Proxy's digest.</summary>
    public bool Matches(PeerMessage digest) => digest.Seq == _fromProxyVersion && digest.Hash == Hash(_keys);

    /// <summary>Host: the Proxy's list replaces what it said before (keys from this daemon's own configuration stay).</summary>
    private void OnKeys(PeerEnvelope m)
    {
        var keys = new Dictionary<string, PublicKeyId>(_configured, StringComparer.Ordinal);
        foreach (var entry in m.Message.Keys ?? [])
        {
            if (!Names.IsValid(entry.Name) || entry.Name == _config.ProxyName || !PublicKeyId.TryParse(entry.Key, out var key))
            {
                Log.BadKey(_logger, LogText.Safe(entry.Name));
                continue;
            }
            keys[entry.Name] = key;
        }
        Dictionary<string, PublicKeyId> before = _keys;
        _keys = keys;
        _fromProxyVersion = m.Message.Seq ?? 0;
        Version++;
        // A link to a daemon whose key changed or went away was made with a key no longer trusted.
        foreach (var (name, key) in before)
        {
            if (!keys.TryGetValue(name, out var now) || !now.Equals(key))
                EndSessionOf(name, "its key is no longer the one the Proxy admits");
        }
    }

    /// <summary>An order-independent digest of the list (names and keys).</summary>
    private static ulong Hash(Dictionary<string, PublicKeyId> keys)
    {
        ulong sum = 0;
        foreach (var (name, key) in keys)
        {
            var bytes = SHA256.HashData([.. Encoding.UTF8.GetBytes(name), 0, .. key.Bytes]);
            sum += BitConverter.ToUInt64(bytes, 0);
        }
        return sum;
    }

    // ---------------------------------------------------------------- the hosts file

    private static IEnumerable<(string Name, PublicKeyId Key)> ReadHostsFile(string file)
    {
        if (!File.Exists(file))
            yield break;
        var number = 0;
        foreach (var line in File.ReadLines(file))
        {
            number++;
            var text = line.Trim();
            if (text.Length == 0 || text.StartsWith('#'))
                continue;
            var parts = text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length != 2 || !Names.IsValid(parts[0]) || !PublicKeyId.TryParse(parts[1], out var key))
                throw new ConfigException($"{file}:{number}", "expected 'NAME PUBLIC_KEY'");
            yield return (parts[0], key);
        }
    }

    /// <summary>Keeps run-time admissions (public keys only: no secret) in a file replaced at once.</summary>
    private void WriteHostsFile(string file, Dictionary<string, PublicKeyId> keys)
    {
        var text = new StringBuilder("# hosts admitted to the overlay: NAME PUBLIC_KEY (written by the Proxy)\n");
        foreach (var (name, key) in keys.OrderBy(k => k.Key, StringComparer.Ordinal))
            text.Append(name).Append(' ').Append(key).Append('\n');
        try
        {
            var temp = file + ".new";
            File.WriteAllText(temp, text.ToString());
            File.Move(temp, file, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.HostsFileFailed(_logger, file, e.Message);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 310, Level = LogLevel.Information, Message = "Host {Name} admitted with key {Key}")]
        public static partial void Admitted(ILogger logger, string name, PublicKeyId key);

        [LoggerMessage(EventId = 311, Level = LogLevel.Warning, Message = "Host {Name} revoked")]
        public static partial void Revoked(ILogger logger, string name);

        [LoggerMessage(EventId = 312, Level = LogLevel.Warning, Message = "The Proxy's key list has a bad entry '{Name}'; left out")]
        public static partial void BadKey(ILogger logger, string name);

        [LoggerMessage(EventId = 314, Level = LogLevel.Warning, Message = "Repair: the key list from {Peer} differs from its digest; asking for it again")]
        public static partial void KeysRepair(ILogger logger, string peer);

        [LoggerMessage(EventId = 313, Level = LogLevel.Error, Message = "Cannot write the hosts file {File}: {Reason}")]
        public static partial void HostsFileFailed(ILogger logger, string file, string reason);
    }
}
