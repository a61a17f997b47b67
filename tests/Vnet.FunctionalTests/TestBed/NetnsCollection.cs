namespace Vnet.Tests.TestBed;

/// <summary>
/// Tests that build namespaces, run daemons or measure traffic: run one at a time, so that timing
/// and throughput assertions do not compete for the two CI cores.
/// </summary>
[CollectionDefinition("Netns", DisableParallelization = true)]
public sealed class NetnsCollection;
