namespace Vnet.Fuzz;

/// <summary>
/// One decoder under fuzzing. A target feeds the input bytes to the code under test and lets only
/// the exceptions that code documents for bad input pass silently; anything else escaping
/// <see cref="Run"/> is a finding (afl-fuzz records the input as a crash). A subclass is found by
/// reflection: adding a target is one class here and one folder <c>fuzz/corpus/NAME</c> of seeds.
/// </summary>
public abstract class FuzzTarget
{
    /// <summary>The name on the command line and of the corpus folder (lower case, '-').</summary>
    public abstract string Name { get; }

    /// <summary>What is fuzzed, one line (shown by <c>list</c>).</summary>
    public abstract string Description { get; }

    /// <summary>
    /// Managed bytes one input may allocate: beyond this the decoder's memory use does not follow
    /// from the input's size, which for a daemon fed by the network is a finding.
    /// </summary>
    public virtual long AllocationBudget(int inputLength) => (64L << 20) + (1024L * inputLength);

    /// <summary>Feeds one input to the code under test; throws only on a finding.</summary>
    protected abstract void Run(ReadOnlySpan<byte> data);

    /// <summary>Seeds made by code (binary formats); text targets keep theirs as files only.</summary>
    public virtual IEnumerable<(string Name, byte[] Data)> Seeds() => [];

    /// <summary><see cref="Run"/>, with the allocation check.</summary>
    public void Execute(ReadOnlySpan<byte> data)
    {
        var before = GC.GetAllocatedBytesForCurrentThread();
        Run(data);
        var used = GC.GetAllocatedBytesForCurrentThread() - before;
        var budget = AllocationBudget(data.Length);
        if (used > budget)
            throw new FuzzFindingException($"{Name}: a {data.Length}-byte input allocated {used:N0} bytes (budget {budget:N0})");
    }

    /// <summary>Every target in this assembly, by name.</summary>
    public static IReadOnlyList<FuzzTarget> All { get; } = [.. typeof(FuzzTarget).Assembly.GetTypes()
        .Where(t => t.IsSubclassOf(typeof(FuzzTarget)) && !t.IsAbstract)
        .Select(t => (FuzzTarget)Activator.CreateInstance(t)!)
        .OrderBy(t => t.Name, StringComparer.Ordinal)];

    public static FuzzTarget? Find(string name) => All.FirstOrDefault(t => t.Name == name);
}

/// <summary>A broken property that no exception of the code under test shows (a leak, a bad round trip, too much memory).</summary>
public sealed class FuzzFindingException : Exception
{
    public FuzzFindingException()
    {
    }

    public FuzzFindingException(string message)
        : base(message)
    {
    }

    public FuzzFindingException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
