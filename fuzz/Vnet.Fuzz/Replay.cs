namespace Vnet.Fuzz;

/// <summary>Runs saved inputs through a target outside afl-fuzz: to reproduce a finding and see its stack trace.</summary>
internal static class Replay
{
    public static int Run(FuzzTarget target, IEnumerable<string> paths, TimeSpan hangAfter)
    {
        var files = paths.SelectMany(p => Directory.Exists(p)
            ? Directory.EnumerateFiles(p, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal)
            : (IEnumerable<string>)[p]).ToList();
        var failed = 0;
        foreach (var file in files)
        {
            var data = File.ReadAllBytes(file);
            Exception? finding = null;
            var run = Task.Factory.StartNew(() =>
            {
                try
                {
                    target.Execute(data);
                }
                catch (Exception e)
                {
                    finding = e;
                }
            }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            if (!run.Wait(hangAfter))
            {
                Console.WriteLine($"HANG {target.Name} {file}: still running after {hangAfter.TotalSeconds:0} s");
                Console.Out.Flush();
                // The stuck thread cannot be stopped; the process ends here.
                Environment.Exit(3);
            }
            if (finding is not null)
            {
                failed++;
                Console.WriteLine($"FINDING {target.Name} {file} ({data.Length} bytes):");
                Console.WriteLine(finding);
            }
        }
        Console.WriteLine($"{target.Name}: {files.Count} input(s) replayed, {failed} finding(s)");
        return failed > 0 ? 1 : 0;
    }
}
