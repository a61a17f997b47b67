using System.Text.Json.Nodes;
using Vnet.Frames;
using Vnet.Vms;
using Vnet.Vms.Providers;

namespace Vnet.Tests.Vms;

/// <summary>
/// The Proxy's inventory against a host's report (<see cref="VmInventory.PlanReconcile"/>): what a
/// restart of either end leaves, and every conflict a confused or hostile host could report, which
/// must change nothing.
/// </summary>
public sealed class VmInventoryReconcileTests
{
    private static readonly MacAddress MacA = MacAddress.Parse("02:56:00:00:00:0a");
    private static readonly MacAddress MacB = MacAddress.Parse("02:56:00:00:00:0b");

    private static OrderedVm Ordered(string name, MacAddress mac, string site, OrderedVmState state = OrderedVmState.Running) =>
        new(name, mac, site, VmSize.Small, VmProviderKind.Netns, state);

    private static ReportedVm Reported(string name, MacAddress mac, HostedVmState state = HostedVmState.Running, VmSize size = VmSize.Small) =>
        new(new VmSpec(name, mac, size), VmProviderKind.Netns, state);

    [Fact]
    public void EmptyInventory_HostRunsAVm_ItIsAdoptedWithItsSiteSizeAndKind()
    {
        var plan = VmInventory.PlanReconcile([], "h1", [Reported("web1", MacA, size: VmSize.Large)]);

        var vm = Assert.Single(plan.Add);
        Assert.Equal(new OrderedVm("web1", MacA, "h1", VmSize.Large, VmProviderKind.Netns, OrderedVmState.Running), vm);
        Assert.Empty(plan.Forget);
        Assert.Empty(plan.Conflicts);
    }

    [Fact]
    public void RunningVm_HostNoLongerRunsIt_IsForgotten_OtherSitesUntouched()
    {
        var plan = VmInventory.PlanReconcile([Ordered("web1", MacA, "h1"), Ordered("db1", MacB, "h2")], "h1", []);

        Assert.Equal("web1", Assert.Single(plan.Forget).Name);
        Assert.Empty(plan.Add);
    }

    [Fact]
    public void KnownVm_SameHostSameMac_NothingChanges()
    {
        var plan = VmInventory.PlanReconcile([Ordered("web1", MacA, "h1")], "h1", [Reported("web1", MacA)]);

        Assert.True(plan.IsEmpty);
        Assert.Empty(plan.Conflicts);
    }

    [Fact]
    public void LostVm_RunningWhereItWasGoing_IsFoundAgain()
    {
        var lost = Ordered("web1", MacA, "h2", OrderedVmState.Lost) with { OtherHost = "h1" };
        var plan = VmInventory.PlanReconcile([lost], "h2", [Reported("web1", MacA)]);

        var found = Assert.Single(plan.Found);
        Assert.Equal(OrderedVmState.Running, found.State);
        Assert.Equal("h2", found.Site);
        // Running again: nothing is left on the source to clean at a later vm.remove.
        Assert.Null(found.OtherHost);
    }

    [Fact]
    public void LostVm_ReportedByTheHostItLeft_IsAConflict_NotFound()
    {
        // The site of a lost VM is the move's target; its source runs it only if something is wrong.
        var lost = Ordered("web1", MacA, "h2", OrderedVmState.Lost) with { OtherHost = "h1" };
        var plan = VmInventory.PlanReconcile([lost], "h1", [Reported("web1", MacA)]);

        Assert.True(plan.IsEmpty);
        Assert.Single(plan.Conflicts);
    }

    [Fact]
    public void LostVm_NotReported_StaysLost()
    {
        // Only a running record is forgotten: a lost one waits for the user's vm.remove.
        var plan = VmInventory.PlanReconcile([Ordered("web1", MacA, "h2", OrderedVmState.Lost)], "h2", []);

        Assert.True(plan.IsEmpty);
    }

    [Theory]
    [InlineData(HostedVmState.Creating)]
    [InlineData(HostedVmState.Arriving)]
    [InlineData(HostedVmState.Leaving)]
    [InlineData(HostedVmState.Removing)]
    public void HostVmUnderWay_NeitherAdoptedNorItsRecordForgotten(HostedVmState state)
    {
        var fresh = VmInventory.PlanReconcile([], "h1", [Reported("web1", MacA, state)]);
        var known = VmInventory.PlanReconcile([Ordered("web1", MacA, "h1")], "h1", [Reported("web1", MacA, state)]);

        Assert.True(fresh.IsEmpty);
        Assert.True(known.IsEmpty);
    }

    [Fact]
    public void ArrivalOfAVmRunningElsewhere_TheHostIsAskedToAbortIt()
    {
        // A move's prepare answered on a session that ended before the answer came: the Proxy kept
        // the VM on h1, and h2 would wait for it for good, refusing every later move of it to h2.
        var plan = VmInventory.PlanReconcile([Ordered("web1", MacA, "h1")], "h2", [Reported("web1", MacA, HostedVmState.Arriving)]);

        Assert.Equal("web1", Assert.Single(plan.Abort));
        Assert.Empty(plan.Add);
        Assert.Empty(plan.Forget);
        Assert.Empty(plan.Conflicts);
    }

    [Fact]
    public void ArrivalOfALostOrUnknownVmOrAnotherMac_LeftAlone()
    {
        // Lost on its way to h2: it may still arrive there (and be found), or be removed from both.
        var lost = Ordered("web1", MacA, "h2", OrderedVmState.Lost) with { OtherHost = "h1" };
        Assert.Empty(VmInventory.PlanReconcile([lost], "h2", [Reported("web1", MacA, HostedVmState.Arriving)]).Abort);
        // Unknown (a Proxy restarted during a move): its source's report places it first.
        Assert.Empty(VmInventory.PlanReconcile([], "h2", [Reported("web1", MacA, HostedVmState.Arriving)]).Abort);
        // Another VM of that name: not ours to end.
        Assert.Empty(VmInventory.PlanReconcile([Ordered("web1", MacA, "h1")], "h2", [Reported("web1", MacB, HostedVmState.Arriving)]).Abort);
        // Leaving, or arriving where the Proxy has it: a move under way records its own outcome.
        Assert.Empty(VmInventory.PlanReconcile([Ordered("web1", MacA, "h1")], "h2", [Reported("web1", MacA, HostedVmState.Leaving)]).Abort);
        Assert.Empty(VmInventory.PlanReconcile([Ordered("web1", MacA, "h2")], "h2", [Reported("web1", MacA, HostedVmState.Arriving)]).Abort);
    }

    [Fact]
    public void LostAtItsSourceAfterAnUnansweredRelease_ReportedThere_IsFoundThere()
    {
        // The source went away during its release: the VM is lost at the source, the target the other host.
        var lost = Ordered("web1", MacA, "h1", OrderedVmState.Lost) with { OtherHost = "h2" };
        var plan = VmInventory.PlanReconcile([lost], "h1", [Reported("web1", MacA)]);

        var found = Assert.Single(plan.Found);
        Assert.Equal(("h1", OrderedVmState.Running, (string?)null), (found.Site, found.State, found.OtherHost));
    }

    [Fact]
    public void NameOfAVmOnAnotherSite_Conflict_NothingChanges()
    {
        var plan = VmInventory.PlanReconcile([Ordered("web1", MacA, "h2")], "h1", [Reported("web1", MacA)]);

        Assert.True(plan.IsEmpty);
        Assert.Contains("h2", Assert.Single(plan.Conflicts), StringComparison.Ordinal);
    }

    [Fact]
    public void KnownNameWithAnotherMac_Conflict_NothingChanges()
    {
        var plan = VmInventory.PlanReconcile([Ordered("web1", MacA, "h1")], "h1", [Reported("web1", MacB)]);

        Assert.True(plan.IsEmpty);
        Assert.Single(plan.Conflicts);
    }

    [Fact]
    public void NewNameWithAnotherVmsMac_Conflict_NotAdopted()
    {
        // A host claiming a MAC the Proxy gave to another VM gets nothing for it.
        var plan = VmInventory.PlanReconcile([Ordered("web1", MacA, "h2")], "h1", [Reported("evil", MacA)]);

        Assert.Empty(plan.Add);
        Assert.Contains("web1", Assert.Single(plan.Conflicts), StringComparison.Ordinal);
    }

    [Fact]
    public void ReportWithTheSameMacTwice_OnlyTheFirstIsAdopted()
    {
        var plan = VmInventory.PlanReconcile([], "h1", [Reported("one", MacA), Reported("two", MacA)]);

        Assert.Equal("one", Assert.Single(plan.Add).Name);
        Assert.Single(plan.Conflicts);
    }

    [Fact]
    public void FullInventory_NothingMoreAdopted()
    {
        var inventory = new List<OrderedVm>();
        for (var i = 0; i < VmInventory.MaxVms; i++)
            inventory.Add(Ordered($"vm{i}", MacAddress.Parse($"02:56:00:00:{i >> 8:x2}:{i & 0xff:x2}"), "h2"));

        var plan = VmInventory.PlanReconcile(inventory, "h1", [Reported("web1", MacAddress.Parse("02:57:00:00:00:01"))]);

        Assert.Empty(plan.Add);
        Assert.Single(plan.Conflicts);
    }

    [Fact]
    public void ParseReport_WhatHostsSend_IsRead()
    {
        var answer = JsonNode.Parse("""
            {"provider":"qemu","vms":[
              {"name":"web1","mac":"02:56:00:00:00:0a","size":"large","state":"running","device":"vm-web1"},
              {"name":"db1","mac":"02:56:00:00:00:0b","size":"small","state":"arriving","device":"vm-db1"}]}
            """);

        var (vms, refused) = VmInventory.ParseReport(answer);

        Assert.Equal(0, refused);
        Assert.Equal([Reported("web1", MacA, size: VmSize.Large) with { Kind = VmProviderKind.Qemu },
            Reported("db1", MacB, HostedVmState.Arriving) with { Kind = VmProviderKind.Qemu }], vms);
    }

    [Theory]
    [InlineData("""{"name":"Web1","mac":"02:56:00:00:00:0a","size":"small","state":"running"}""")]
    [InlineData("""{"name":"web1;reboot","mac":"02:56:00:00:00:0a","size":"small","state":"running"}""")]
    [InlineData("""{"name":"web1","mac":"ff:ff:ff:ff:ff:ff","size":"small","state":"running"}""")]
    [InlineData("""{"name":"web1","mac":"01:00:5e:00:00:01","size":"small","state":"running"}""")]
    [InlineData("""{"name":"web1","mac":"nonsense","size":"small","state":"running"}""")]
    [InlineData("""{"name":"web1","mac":"02:56:00:00:00:0a","size":"huge","state":"running"}""")]
    [InlineData("""{"name":"web1","mac":"02:56:00:00:00:0a","size":"small","state":"Running"}""")]
    [InlineData("""{"name":"web1","mac":"02:56:00:00:00:0a","size":"small","state":"1"}""")]
    [InlineData("""{"name":"web1","mac":"02:56:00:00:00:0a","size":"small","state":"zombie"}""")]
    [InlineData("""{"name":"web1","mac":"02:56:00:00:00:0a","size":"small"}""")]
    [InlineData("""{"name":7,"mac":"02:56:00:00:00:0a","size":"small","state":"running"}""")]
    [InlineData("""{"name":"web1","mac":["02:56:00:00:00:0a"],"size":"small","state":"running"}""")]
    [InlineData("""{"name":"web1","mac":"02:56:00:00:00:0a","size":{"a":1},"state":"running"}""")]
    [InlineData("""{"name":"web1","mac":"02:56:00:00:00:0a","size":"small","state":{"running":true}}""")]
    [InlineData("\"web1\"")]
    [InlineData("null")]
    public void ParseReport_HostileEntry_RefusedAndCounted_TheOthersKept(string entry)
    {
        var answer = JsonNode.Parse($$"""{"provider":"netns","vms":[{{entry}},{"name":"db1","mac":"02:56:00:00:00:0b","size":"small","state":"running"}]}""");

        var (vms, refused) = VmInventory.ParseReport(answer);

        Assert.Equal(1, refused);
        Assert.Equal("db1", Assert.Single(vms).Spec.Name);
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("\"vms\"")]
    [InlineData("{\"vms\":{}}")]
    [InlineData("{\"provider\":\"netns\"}")]
    public void ParseReport_NotAReport_NothingRead(string json)
    {
        var (vms, refused) = VmInventory.ParseReport(JsonNode.Parse(json));

        Assert.Empty(vms);
        Assert.Equal(1, refused);
    }

    [Fact]
    public void ParseReport_MoreEntriesThanAHostRuns_ReadsAtMostItsLimit()
    {
        var list = new JsonArray();
        for (var i = 0; i < 1000; i++)
            list.Add(new JsonObject { ["name"] = $"vm{i}", ["mac"] = $"02:56:00:00:{i >> 8:x2}:{i & 0xff:x2}", ["size"] = "small", ["state"] = "running" });

        var (vms, refused) = VmInventory.ParseReport(new JsonObject { ["provider"] = "netns", ["vms"] = list });

        Assert.Equal(VmHostService.MaxVms, vms.Count);
        Assert.Equal(1000 - VmHostService.MaxVms, refused);
    }
}
