using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Vms;

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
    // The Proxy's key list may disagree with a pin many times a minute (every digest's repair).
    private readonly LogLimiter _mismatchLog = new();
    private volatile HashSet<PublicKeyId> _admins;
    // Proxy: the configuration's [[host]] entries; host: its [[link]] keys. The configuration wins over anything learned.
    private Dictionary<string, PublicKeyId> _configured;
    // Proxy: admissions made at run time (what the hosts file keeps).
    private Dictionary<string, PublicKeyId> _runtime = new(StringComparer.Ordinal);
    // Proxy: configured hosts revoked at run time, until the next reload or restart.
    private readonly HashSet<string> _revokedConfigured = new(StringComparer.Ordinal);
    // Host: the list as the Proxy last sent it.
    private Dictionary<string, PublicKeyId> _fromProxy = new(StringComparer.Ordinal);
    private string? _hostsFile;
    private volatile Dictionary<string, PublicKeyId> _keys;
    private PeerChannel? _peers;
    private LinkManager? _links;
    private long _fromProxyVersion = -1;

    /// <param name="config">With its hosts file read (<see cref="DaemonConfig.WithHostsFile"/>): the ring reads no file itself.</param>
    public KeyRing(DaemonConfig config, ILogger logger)
    {
        _config = config;
        _logger = logger;
        _admins = [.. config.AdminKeys];
        _configured = Configured(config);
        _hostsFile = config.HostsFile;
        foreach (var h in config.RuntimeHosts)
            _runtime[h.Name] = h.PublicKey;
        _keys = Merge();
        Version = 1;
    }

    private bool IsProxy => _config.Role == DaemonRole.Proxy;

    /// <summary>Changes of the list of keys (the Proxy's admissions; on a host, the Proxy's list).</summary>
    public long Version { get; private set; }

    /// <summary>Administrators' keys changed (a reload): sessions made with a key no longer listed must end.</summary>
    public event Action? AdministratorsChanged;

    /// <summary>Whether <paramref name="key"/> is an administrator's now (any thread).</summary>
    public bool IsAdministrator(PublicKeyId key) => _admins.Contains(key);

    /// <summary>Proxy: the admissions made at run time (a reload without a hosts file keeps them).</summary>
    public IReadOnlyList<AdmittedHost> RuntimeHosts =>
        [.. _runtime.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => new AdmittedHost(k.Key, k.Value, $"run-time admission of '{k.Key}'"))];

    /// <summary>Every known name and key, sorted by name.</summary>
    public IReadOnlyList<KnownKey> List() =>
        [.. _keys.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => new KnownKey(k.Key, k.Value))];

    private static Dictionary<string, PublicKeyId> Configured(DaemonConfig config)
    {
        var configured = new Dictionary<string, PublicKeyId>(StringComparer.Ordinal);
        foreach (var h in config.Hosts)
            configured[h.Name] = h.PublicKey;
        foreach (var l in config.Links)
        {
            if (l.PublicKey is { } key)
                configured[l.Peer] = key;
        }
        return configured;
    }

    /// <summary>
    /// The list handshakes read. Proxy: the configuration's hosts (less those revoked since) and the
    /// run-time admissions. Host: the Proxy's list, where the configuration's own pins win.
    /// </summary>
    private Dictionary<string, PublicKeyId> Merge()
    {
        var keys = new Dictionary<string, PublicKeyId>(StringComparer.Ordinal);
        if (IsProxy)
        {
            foreach (var (name, key) in _configured)
            {
                if (!_revokedConfigured.Contains(name))
                    keys[name] = key;
            }
            foreach (var (name, key) in _runtime)
                keys[name] = key;
            return keys;
        }
        foreach (var (name, key) in _fromProxy)
            keys[name] = key;
        foreach (var (name, key) in _configured)
            keys[name] = key;
        return keys;
    }

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

    /// <summary>
    /// Admits (or re-keys) a host; its old key's sessions end, and every host hears of it. Refused
    /// whole, changing nothing, for the Proxy's own key, a key another host has, a host whose key
    /// the configuration sets (change it there and reload), or a hosts file that cannot be written.
    /// </summary>
    public KnownKey AdmitHost(string name, string publicKey)
    {
        RequireProxy();
        if (!Names.IsValid(name) || name == _config.Name)
            throw new DaemonCommandException($"'{name}' cannot be a host's name");
        if (!PublicKeyId.TryParse(publicKey, out var key))
            throw new DaemonCommandException($"'{publicKey}' is not a public key (32 bytes in base64; 'vnet pubkey' prints one)");
        if (key.Equals(_config.Identity.Public))
            throw new DaemonCommandException($"{key} is the Proxy's own public key: a host needs its own key pair ('vnet keygen' on the host)");
        foreach (var (other, otherKey) in _keys)
        {
            if (other != name && otherKey.Equals(key))
                throw new DaemonCommandException($"{key} is already the key of host '{other}': every host needs its own key pair ('vnet keygen' on the host)");
        }
        if (_configured.TryGetValue(name, out var pinned))
        {
            if (!pinned.Equals(key))
                throw new DaemonCommandException($"host '{name}' has key {pinned} in the configuration{Where()}; change it there and reload ('vnet reload' or SIGHUP)");
            // The configured key again: only undoes a run-time revocation.
            _revokedConfigured.Remove(name);
            Publish(_runtime);
            Log.Admitted(_logger, name, key);
            return new KnownKey(name, key);
        }
        _keys.TryGetValue(name, out var old);
        var runtime = new Dictionary<string, PublicKeyId>(_runtime, StringComparer.Ordinal) { [name] = key };
        Publish(runtime);
        if (old is not null && !old.Equals(key))
            EndSessionOf(name, "its key was replaced");
        Log.Admitted(_logger, name, key);
        return new KnownKey(name, key);
    }

    private string Where() => _config.Source is { } file ? $" ({file})" : "";

    /// <summary>
    /// Revokes a host: it is refused from now on, and its sessions end. A host of the configuration
    /// comes back at the next reload or restart unless it is removed there too.
    /// </summary>
    public void RevokeHost(string name)
    {
        RequireProxy();
        var runtime = _runtime;
        if (_runtime.ContainsKey(name))
        {
            runtime = new Dictionary<string, PublicKeyId>(_runtime, StringComparer.Ordinal);
            runtime.Remove(name);
        }
        else if (!_configured.ContainsKey(name) || !_revokedConfigured.Add(name))
        {
            throw new DaemonCommandException($"no host {name} is admitted");
        }
        Publish(runtime);
        EndSessionOf(name, "revoked");
        Log.Revoked(_logger, name);
    }

    private void RequireProxy()
    {
        if (!IsProxy)
            throw new DaemonCommandException($"{_config.Name} is a host; hosts are admitted at the Proxy");
    }

    /// <summary>Keeps <paramref name="runtime"/> in the hosts file first (a command that cannot be kept changes nothing), then publishes.</summary>
    private void Publish(Dictionary<string, PublicKeyId> runtime)
    {
        if (_hostsFile is { } file && !ReferenceEquals(runtime, _runtime))
        {
            try
            {
                HostsFile.Write(file, runtime.Select(k => (k.Key, k.Value)));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Log.HostsFileFailed(_logger, file, e.Message);
                throw new DaemonCommandException($"cannot write the hosts file {file}: {e.Message}; nothing changed");
            }
        }
        _runtime = runtime;
        _keys = Merge();
        Version++;
        SendKeys(null);
    }

    /// <summary>
    /// Takes the keys of a configuration read again (SIGHUP, <c>vnet reload</c>): administrators,
    /// the configuration's hosts or link keys, and the Proxy's hosts file (already read into
    /// <paramref name="fresh"/>). Sessions made with a key no longer listed end: a link whose
    /// name's key changed or went, and remote CLI sessions of a removed administrator.
    /// </summary>
    public void Reload(DaemonConfig fresh)
    {
        var admins = new HashSet<PublicKeyId>(fresh.AdminKeys);
        var adminsChanged = !admins.SetEquals(_admins);
        var before = _keys;
        _admins = admins;
        _configured = Configured(fresh);
        _revokedConfigured.Clear();
        _hostsFile = fresh.HostsFile;
        if (IsProxy)
        {
            _runtime = new Dictionary<string, PublicKeyId>(StringComparer.Ordinal);
            foreach (var h in fresh.RuntimeHosts)
                _runtime[h.Name] = h.PublicKey;
        }
        _keys = Merge();
        Version++;
        SendKeys(null);
        EndSessionsWhoseKeyWent(before, "its key is no longer admitted (configuration reloaded)");
        if (adminsChanged)
            AdministratorsChanged?.Invoke();
        Log.Reloaded(_logger, _keys.Count, admins.Count);
    }

    private void EndSessionsWhoseKeyWent(Dictionary<string, PublicKeyId> before, string reason)
    {
        foreach (var (name, key) in before)
        {
            if (!_keys.TryGetValue(name, out var now) || !now.Equals(key))
                EndSessionOf(name, reason);
        }
    }

    private void EndSessionOf(string name, string reason)
    {
        if (_links?.Find(name)?.Session is { } session)
            session.Close(reason);
    }

    // ---------------------------------------------------------------- distribution over the star

    /// <summary>
    /// Wires the distribution of keys: the Proxy sends its list to every host, hosts take it (control
    /// loop). Every <paramref name="antiEntropy"/> the Proxy sends a host the list's digest where the
    /// list changed since its last digest there (or the session is new), and every host one each
    /// <paramref name="heartbeat"/> (<see cref="DigestSchedule{TSession}"/>); a host whose list differs asks for it again.
    /// </summary>
    public void Start(PeerChannel peers, LinkManager links, ControlLoop loop, TimeSpan antiEntropy, TimeSpan heartbeat)
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
            var digests = new DigestSchedule<LinkSession>(heartbeat, static s => s.IsClosed);
            loop.Every(antiEntropy, () =>
            {
                digests.BeginTick(System.Diagnostics.Stopwatch.GetTimestamp());
                var version = new MapVersion(0, Version);
                List<LinkSession>? due = null;
                foreach (var port in links.Links)
                {
                    if (port.Star && port.Session is { } s && digests.Due(s, version))
                        (due ??= []).Add(s);
                }
                // One hash of the key list for all hosts, not one per host: that was N hashes of N keys
                // every interval, 14% of the Proxy's loop during a 200-host start.
                if (due is not null)
                    peers.Send(due, new PeerMessage { Type = PeerMessageType.Digest, Topic = MapTopic.Keys, Epoch = 0, Seq = Version, Count = _keys.Count, Hash = Hash(_keys) });
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

    /// <summary>Host: whether the list the Proxy sent matches the Proxy's digest (this daemon's own pins are not part of it).</summary>
    public bool Matches(PeerMessage digest) => digest.Seq == _fromProxyVersion && digest.Hash == Hash(_fromProxy);

    /// <summary>
    /// Host: the Proxy's list replaces what it said before. A key this daemon's configuration pins
    /// (<c>[[link]] public_key</c>) wins over the Proxy's: a mismatch is logged and the pin used.
    /// </summary>
    private void OnKeys(PeerEnvelope m) => TakeProxyList(m.Message);

    /// <summary>Host: the Proxy's <c>Keys</c> message (control loop).</summary>
    internal void TakeProxyList(PeerMessage message)
    {
        var fromProxy = new Dictionary<string, PublicKeyId>(StringComparer.Ordinal);
        foreach (var entry in message.Keys ?? [])
        {
            if (!Names.IsValid(entry.Name) || entry.Name == _config.ProxyName || !PublicKeyId.TryParse(entry.Key, out var key))
            {
                Log.BadKey(_logger, LogText.Safe(entry.Name));
                continue;
            }
            if (_configured.TryGetValue(entry.Name, out var pinned) && !pinned.Equals(key) && _mismatchLog.TryAcquire("pin mismatch", out var suppressed))
                Log.PinMismatch(_logger, entry.Name, key, pinned, suppressed);
            fromProxy[entry.Name] = key;
        }
        Dictionary<string, PublicKeyId> before = _keys;
        _fromProxy = fromProxy;
        _keys = Merge();
        _fromProxyVersion = message.Seq ?? 0;
        Version++;
        // A link to a daemon whose key changed or went away was made with a key no longer trusted.
        EndSessionsWhoseKeyWent(before, "its key is no longer the one the Proxy admits");
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

        [LoggerMessage(EventId = 315, Level = LogLevel.Warning,
            Message = "The Proxy's key for {Name} is {Offered}, but this daemon's configuration pins {Pinned}; the pinned key is used ({Suppressed} more such lines not logged before this one)")]
        public static partial void PinMismatch(ILogger logger, string name, PublicKeyId offered, PublicKeyId pinned, long suppressed);

        [LoggerMessage(EventId = 316, Level = LogLevel.Information, Message = "Keys reloaded: {Keys} daemons' keys, {Admins} administrators")]
        public static partial void Reloaded(ILogger logger, int keys, int admins);
    }
}
