using SharpFuzz;
using Vnet.Fuzz;

// Vnet.Fuzz list                    the targets
// Vnet.Fuzz TARGET                  run under afl-fuzz (input on stdin, out-of-process fork server)
// Vnet.Fuzz TARGET PATH...          replay files (or every file of a folder): prints each finding's
//                                   stack trace; exit 1 on a finding, 3 on a hang
// Vnet.Fuzz seeds TARGET FOLDER     writes the target's generated seeds into FOLDER
if (args.Length != 1 || args[0] == "list")
{
    // Outside afl-fuzz the instrumented Vnet.Core still writes its coverage somewhere.
    Coverage.UseScratchMap();
}
if (args.Length == 0 || args[0] is "-h" or "--help")
{
    Console.Error.WriteLine("usage: Vnet.Fuzz list | TARGET [PATH...] | seeds TARGET FOLDER");
    return 2;
}
if (args[0] == "list")
{
    foreach (var t in FuzzTarget.All)
        Console.WriteLine($"{t.Name,-14} {t.Description}");
    return 0;
}
if (args[0] == "seeds")
{
    if (args.Length != 3 || FuzzTarget.Find(args[1]) is not { } seeded)
    {
        Console.Error.WriteLine("usage: Vnet.Fuzz seeds TARGET FOLDER");
        return 2;
    }
    Directory.CreateDirectory(args[2]);
    foreach (var (name, data) in seeded.Seeds())
        File.WriteAllBytes(Path.Combine(args[2], name), data);
    return 0;
}
if (FuzzTarget.Find(args[0]) is not { } target)
{
    Console.Error.WriteLine($"unknown target '{args[0]}' (known: {string.Join(", ", FuzzTarget.All.Select(t => t.Name))})");
    return 2;
}
if (args.Length == 1)
{
    // Out of process: a hang or an uncatchable crash (stack overflow, out of memory) kills a child
    // that the fork server restarts, instead of ending the fuzzing session.
    Fuzzer.OutOfProcess.Run(stream =>
    {
        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        target.Execute(buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
    });
    return 0;
}
return Replay.Run(target, args.Skip(1), TimeSpan.FromSeconds(10));
