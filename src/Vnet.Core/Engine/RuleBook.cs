using Vnet.Daemon;
using Vnet.Forwarding;
using Vnet.Frames;

namespace Vnet.Engine;

/// <summary>An installed rule with its counters, as tools list it.</summary>
public sealed record RuleEntry(Rule Rule, RuleStats Stats);

/// <summary>
/// The rules of one daemon: the source of truth from which immutable
/// <see cref="ForwardingTable"/> versions are compiled and published to the switch. Changes are
/// made in batches (<see cref="Edit"/>); rule ids only grow, and counters stay with a rule across versions.
/// <para>
/// On the control loop a change is published once per turn of the loop, not once per edit: an edit
/// marks the book changed and the loop publishes at the end of its turn (<see cref="ControlLoop.AtEndOfTurn"/>),
/// so a Proxy locating thousands of VMs compiles its table a few times, not once per VM. Whatever
/// one turn changes (a whole change set, a host's delta) becomes visible to the data path at once,
/// and an <see cref="ControlLoop.Invoke{T}"/> answers only after that. Off the loop (no loop, a
/// test's thread) every edit publishes at once.
/// </para>
/// </summary>
public sealed class RuleBook
{
    private readonly VirtualSwitch _switch;
    private readonly ControlLoop? _loop;
    private readonly Lock _lock = new();
    private readonly SortedDictionary<long, Rule> _rules = [];
    private readonly Dictionary<long, RuleStats> _stats = [];
    // The ids of the rules that name a MAC exactly (source or destination): what a VM's arrival,
    // move or departure edits, found without a scan of every rule.
    private readonly Dictionary<MacAddress, List<long>> _byMac = [];
    private long _nextId = 1;
    private long _version;
    private bool _changed;
    private bool _publishQueued;

    public RuleBook(VirtualSwitch sw, ControlLoop? loop = null)
    {
        _switch = sw;
        _loop = loop;
    }

    /// <summary>Bumped on every published table.</summary>
    public long Version => Interlocked.Read(ref _version);

    public int Count
    {
        get
        {
            lock (_lock)
                return _rules.Count;
        }
    }

    public IReadOnlyList<RuleEntry> List()
    {
        lock (_lock)
        {
            var list = new List<RuleEntry>(_rules.Count);
            foreach (var (id, rule) in _rules)
                list.Add(new RuleEntry(rule, _stats[id]));
            return list;
        }
    }

    /// <summary>Ids of the user and adaptation rules that send to <paramref name="port"/> or match frames arriving on it.</summary>
    public List<long> UsersOf(PortRef port)
    {
        var users = new List<long>();
        lock (_lock)
        {
            foreach (var r in _rules.Values)
            {
                if (r.Origin != RuleOrigin.System && r.Uses(port))
                    users.Add(r.Id);
            }
        }
        return users;
    }

    public Rule? Find(long id)
    {
        lock (_lock)
            return _rules.GetValueOrDefault(id);
    }

    /// <summary>Applies a batch of changes; the table that has them is published with the turn's others (see above).</summary>
    public T Edit<T>(Func<Editor, T> change)
    {
        lock (_lock)
        {
            var editor = new Editor(this);
            var result = change(editor);
            if (editor.Changed)
                ChangedLocked();
            return result;
        }
    }

    public void Edit(Action<Editor> change) => Edit(e =>
    {
        change(e);
        return 0;
    });

    /// <summary>Recompiles against the current ports (after a port was added or removed), with the turn's other changes.</summary>
    public void Republish()
    {
        lock (_lock)
            ChangedLocked();
    }

    /// <summary>Publishes the changes not yet published, now. The loop calls it at the end of its turn.</summary>
    public void Flush()
    {
        lock (_lock)
        {
            _publishQueued = false;
            if (_changed)
                PublishLocked();
        }
    }

    private void ChangedLocked()
    {
        _changed = true;
        if (_loop is not { IsCurrent: true })
        {
            PublishLocked();
        }
        else if (!_publishQueued)
        {
            _publishQueued = true;
            _loop.AtEndOfTurn(Flush);
        }
    }

    private void PublishLocked()
    {
        _changed = false;
        _switch.PublishRules(_rules.Values, id => _stats[id]);
        Interlocked.Increment(ref _version);
    }

    private void IndexLocked(Rule rule, bool add)
    {
        if (rule.Source.Kind == MacMatchKind.Exact)
            IndexLocked(rule.Source.Address, rule.Id, add);
        if (rule.Destination.Kind == MacMatchKind.Exact && rule.Destination != rule.Source)
            IndexLocked(rule.Destination.Address, rule.Id, add);
    }

    private void IndexLocked(MacAddress mac, long id, bool add)
    {
        if (add)
        {
            if (!_byMac.TryGetValue(mac, out var ids))
                _byMac[mac] = ids = [];
            ids.Add(id);
        }
        else if (_byMac.TryGetValue(mac, out var ids) && ids.Remove(id) && ids.Count == 0)
        {
            _byMac.Remove(mac);
        }
    }

    /// <summary>Changes inside one <see cref="Edit"/> batch.</summary>
    public sealed class Editor
    {
        private readonly RuleBook _book;

        internal Editor(RuleBook book) => _book = book;

        internal bool Changed { get; private set; }

        public IEnumerable<Rule> Rules => _book._rules.Values;

        /// <summary>Adds a rule and returns it with its new id. The rule must be valid.</summary>
        public Rule Add(Rule rule)
        {
            if (rule.Validate() is { } problem)
                throw new ArgumentException(problem, nameof(rule));
            var installed = rule with { Id = _book._nextId++ };
            _book._rules[installed.Id] = installed;
            _book._stats[installed.Id] = new RuleStats();
            _book.IndexLocked(installed, add: true);
            Changed = true;
            return installed;
        }

        /// <summary>Adds the rule unless one with the same match, action and origin exists.</summary>
        public Rule AddUnique(Rule rule)
        {
            foreach (var r in _book._rules.Values)
            {
                if (r.Origin == rule.Origin && r.SameMatchAndAction(rule))
                    return r;
            }
            return Add(rule);
        }

        public bool Remove(long id)
        {
            if (!_book._rules.Remove(id, out var rule))
                return false;
            _book._stats.Remove(id);
            _book.IndexLocked(rule, add: false);
            Changed = true;
            return true;
        }

        /// <summary>Removes every rule the predicate selects (a scan of every rule); returns how many.</summary>
        public int RemoveWhere(Func<Rule, bool> predicate) => RemoveAll(_book._rules.Values, predicate);

        /// <summary>
        /// Removes the rules that name <paramref name="mac"/> exactly (source or destination) and that
        /// the predicate selects; returns how many. Only those rules are looked at, so a VM's edit
        /// costs the same with ten rules or ten thousand.
        /// </summary>
        public int RemoveWhere(MacAddress mac, Func<Rule, bool> predicate)
        {
            if (!_book._byMac.TryGetValue(mac, out var ids))
                return 0;
            var rules = new List<Rule>(ids.Count);
            foreach (var id in ids)
                rules.Add(_book._rules[id]);
            return RemoveAll(rules, predicate);
        }

        private int RemoveAll(IEnumerable<Rule> candidates, Func<Rule, bool> predicate)
        {
            List<long>? doomed = null;
            foreach (var r in candidates)
            {
                if (predicate(r))
                    (doomed ??= []).Add(r.Id);
            }
            if (doomed is null)
                return 0;
            foreach (var id in doomed)
                Remove(id);
            return doomed.Count;
        }

        /// <summary>Re-inserts a rule with its old id (rollback of a removal).</summary>
        internal void Restore(Rule rule, RuleStats stats)
        {
            Remove(rule.Id);
            _book._rules[rule.Id] = rule;
            _book._stats[rule.Id] = stats;
            _book.IndexLocked(rule, add: true);
            Changed = true;
        }
    }
}
