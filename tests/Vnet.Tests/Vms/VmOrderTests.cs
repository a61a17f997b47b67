using System.Text.Json.Nodes;
using Vnet.Control;
using Vnet.Daemon;
using Vnet.Frames;
using Vnet.Vms;
using Vnet.Vms.Providers;

namespace Vnet.Tests.Vms;

/// <summary>VM names, sizes, generated MACs, the host-side arguments and the contract's JSON shapes.</summary>
public sealed class VmOrderTests
{
    [Theory]
    [InlineData("web1")]
    [InlineData("a")]
    [InlineData("vm-12ab")]
    [InlineData("abcdefghijkl")]
    public void Names_Valid(string name) => Assert.Null(VmNames.Problem(name));

    [Theory]
    [InlineData("")]
    [InlineData("Web1")]
    [InlineData("web_1")]
    [InlineData("web 1")]
    [InlineData("-web")]
    [InlineData("web-")]
    [InlineData("abcdefghijklm")]
    [InlineData("web1;rm -rf /")]
    [InlineData("w\u00e9b")]
    [InlineData("web\n1")]
    public void Names_Invalid_AreRefusedWithTheReason(string name)
    {
        Assert.NotNull(VmNames.Problem(name));
        var e = Assert.Throws<DaemonCommandException>(() => VmNames.Check(name));
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Sizes_ParseAndPrint()
    {
        foreach (var size in Enum.GetValues<VmSize>())
            Assert.Equal(size, VmNames.ParseSize(VmNames.Text(size)));
        Assert.Throws<DaemonCommandException>(() => VmNames.ParseSize("huge"));
        Assert.Throws<DaemonCommandException>(() => VmNames.ParseSize("Small"));
        Assert.Equal((128, 1), Vnet.Vms.Providers.Qemu.QemuVmProvider.Resources(VmSize.Small));
        Assert.Equal((256, 1), Vnet.Vms.Providers.Qemu.QemuVmProvider.Resources(VmSize.Medium));
        Assert.Equal((512, 2), Vnet.Vms.Providers.Qemu.QemuVmProvider.Resources(VmSize.Large));
    }

    [Fact]
    public void NewMacs_AreLocalUnicastAndUnique()
    {
        var taken = new HashSet<MacAddress>();
        for (var i = 0; i < 5000; i++)
        {
            var mac = VmNames.NewMac(taken.Contains);
            Assert.True(mac.IsLocallyAdministered, $"{mac}");
            Assert.False(mac.IsGroup, $"{mac}");
            Assert.True(taken.Add(mac), $"{mac} twice");
        }
    }

    [Fact]
    public void NewMac_WhenEveryChoiceIsTaken_IsRefused() =>
        Assert.Throws<DaemonCommandException>(() => VmNames.NewMac(_ => true));

    [Fact]
    public void Spec_FromArguments_ChecksEachPart()
    {
        var spec = VmArgs.Spec(new JsonObject { ["name"] = "web1", ["mac"] = "02:56:00:00:00:01", ["size"] = "large" });
        Assert.Equal(new VmSpec("web1", MacAddress.Parse("02:56:00:00:00:01"), VmSize.Large), spec);
        Assert.Equal("vm-web1", spec.Device);
        Assert.Throws<DaemonCommandException>(() => VmArgs.Spec(new JsonObject { ["name"] = "web1", ["mac"] = "ff:ff:ff:ff:ff:ff" }));
        Assert.Throws<DaemonCommandException>(() => VmArgs.Spec(new JsonObject { ["name"] = "web1", ["mac"] = "01:00:5e:00:00:01" }));
        Assert.Throws<DaemonCommandException>(() => VmArgs.Spec(new JsonObject { ["name"] = "Web1", ["mac"] = "02:56:00:00:00:01" }));
        Assert.Throws<DaemonCommandException>(() => VmArgs.Spec(new JsonObject { ["mac"] = "02:56:00:00:00:01" }));
    }

    [Fact]
    public void Handover_RoundTrips_AndHostileOnesAreRefused()
    {
        var h = new VmHandover(VmMoveMode.Live, ["10.50.0.120/24"], "10.50.0.1");
        var back = VmArgs.Handover(VmArgs.ToNode(h));
        Assert.Equal(h.Mode, back.Mode);
        Assert.Equal(h.Addresses, back.Addresses);
        Assert.Equal(h.Gateway, back.Gateway);
        Assert.Throws<DaemonCommandException>(() => VmArgs.Handover(new JsonObject { ["mode"] = "live", ["addresses"] = new JsonArray("10.50.0.120") }));
        Assert.Throws<DaemonCommandException>(() => VmArgs.Handover(new JsonObject { ["mode"] = "live", ["addresses"] = new JsonArray("10.50.0.120/33") }));
        Assert.Throws<DaemonCommandException>(() => VmArgs.Handover(new JsonObject { ["mode"] = "live", ["addresses"] = new JsonArray("dev eth0/24") }));
        Assert.Throws<DaemonCommandException>(() => VmArgs.Handover(new JsonObject { ["mode"] = "live", ["gateway"] = "10.50.0.1; reboot" }));
        Assert.Throws<DaemonCommandException>(() => VmArgs.Handover(new JsonObject { ["mode"] = "teleport" }));
        Assert.Throws<DaemonCommandException>(() => VmArgs.Handover(new JsonObject
        {
            ["mode"] = "live",
            ["addresses"] = new JsonArray([.. Enumerable.Range(0, 17).Select(i => (JsonNode)JsonValue.Create($"10.0.0.{i}/24"))]),
        }));
    }

    [Fact]
    public void OrderedVm_HasTheContractsFields()
    {
        var vm = new OrderedVm("web1", MacAddress.Parse("02:56:00:00:00:01"), "h1", VmSize.Small, VmProviderKind.Netns, OrderedVmState.Running);
        var json = VmInventory.Describe(vm);
        Assert.Equal("web1", json["name"]!.GetValue<string>());
        Assert.Equal("02:56:00:00:00:01", json["mac"]!.GetValue<string>());
        Assert.Equal("h1", json["site"]!.GetValue<string>());
        Assert.Equal("small", json["size"]!.GetValue<string>());
        Assert.Equal("netns", json["kind"]!.GetValue<string>());
    }

    [Fact]
    public void VmListRow_AlwaysHasAddressNameAndSite()
    {
        var learned = DaemonJson.ToNode(new VmStatus(MacAddress.Parse("02:00:00:00:00:01"), "h1", "tap0", true))!.AsObject();
        Assert.True(learned.ContainsKey("address"));
        Assert.Null(learned["address"]);
        Assert.True(learned.ContainsKey("name"));
        Assert.Null(learned["name"]);
        Assert.Equal("h1", learned["site"]!.GetValue<string>());
        Assert.Equal("h1", learned["daemon"]!.GetValue<string>());
        Assert.Equal("02:00:00:00:00:01", learned["mac"]!.GetValue<string>());

        var ordered = DaemonJson.ToNode(new VmStatus(MacAddress.Parse("02:56:00:00:00:01"), "h2", null, false, "10.50.0.120", "web1", "small", "netns", "running"))!.AsObject();
        Assert.Equal("10.50.0.120", ordered["address"]!.GetValue<string>());
        Assert.Equal("web1", ordered["name"]!.GetValue<string>());
        Assert.Equal("h2", ordered["site"]!.GetValue<string>());
        // Rows read back as the CLI reads them.
        var back = DaemonJson.FromNode<VmStatus>(ordered)!;
        Assert.Equal("web1", back.Name);
        Assert.Equal("10.50.0.120", back.Address);
    }

    [Fact]
    public void ProviderSetting_ParsesAndTheProxyRefusesIt()
    {
        Assert.Equal(VmProviderKind.Netns, Vnet.Configuration.DaemonConfig.ReadVmProvider("netns", "vm_provider"));
        Assert.Equal(VmProviderKind.Qemu, Vnet.Configuration.DaemonConfig.ReadVmProvider("qemu", "vm_provider"));
        Assert.Equal(VmProviderKind.None, Vnet.Configuration.DaemonConfig.ReadVmProvider(null, "vm_provider"));
        var e = Assert.Throws<Vnet.Configuration.ConfigException>(() => Vnet.Configuration.DaemonConfig.ReadVmProvider("xen", "vm_provider"));
        Assert.Contains("vm_provider", e.Message, StringComparison.Ordinal);
    }
}
