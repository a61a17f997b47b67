using Vnet.Benchmarks.Scale;

// `scale` is a plain timed run of the VM directory at the size of a real overlay (hundreds of hosts,
// a Proxy in its own process), not a micro-benchmark; `scale-table` formats its results. Anything
// else goes to BenchmarkDotNet. See docs/benchmarks.md.
return args switch
{
    ["scale", .. var rest] => await ScaleCommand.RunAsync(rest),
    ["scale-table", .. var files] => ScaleTable.Print(files),
    _ => MicroBenchmarks(args),
};

static int MicroBenchmarks(string[] args)
{
    BenchmarkDotNet.Running.BenchmarkSwitcher.FromAssembly(typeof(ScaleCommand).Assembly).Run(args);
    return 0;
}
