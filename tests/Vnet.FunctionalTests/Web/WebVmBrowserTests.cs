using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Microsoft.Playwright;
using Vnet.Tests.Functional;
using Vnet.Vms.Providers;
using Xunit.Abstractions;

namespace Vnet.Tests.Web;

/// <summary>
/// Virtuoso's promise in a real browser: on the web front's VMs page a user orders a VM on a site,
/// sees it appear with an address from the home LAN's DHCP server, moves it to another site while
/// it holds an open TCP connection to the LAN machine (the connection carries on, the address
/// stays), and removes it. Headless Chromium through Playwright, run in the Proxy's namespace;
/// the hosts make VMs with the netns provider (docs/vms.md).
/// </summary>
[Collection("Netns")]
public sealed class WebVmBrowserTests(ITestOutputHelper output)
{
    private const string Token = "browser-vm-test-token-0123456789";
    private const float Timeout = 20_000;
    private static readonly string WebAt = "192.0.2.1:8080";
    private static readonly string Url = $"http://{WebAt}/";

    [Fact]
    public async Task Browser_OrderedVmLeasesALanAddress_MoveKeepsAddressAndConnection_RemoveEndsIt()
    {
        using var o = new OverlayBed(output, hosts: 2);
        var leases = Path.Combine(Path.GetTempPath(), $"vnet-leases-{Guid.NewGuid():N}");
        var name = o.Bed.Prefix + "-w";
        Process? client = null;
        try
        {
            VmProviderTests.StartDnsmasq(o, leases);
            o.StartProxy(web: WebAt, webToken: Token);
            o.StartHost(1, vmProvider: "netns");
            o.StartHost(2, vmProvider: "netns");
            o.WaitStar(2);
            o.Daemon("proxy").WaitForOutput($"Web front at http://{WebAt}/ (token required)", TimeSpan.FromSeconds(5));

            using var playwright = await Playwright.CreateAsync();
            await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
            {
                ExecutablePath = WebFrontBrowserTests.BrowserIn(o, "proxy"),
                Headless = true,
                Timeout = 60_000,
            });
            var page = await browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1400, Height = 900 } });
            page.SetDefaultTimeout(Timeout);
            var shots = o.Bed.LogDirectory;
            var start = await page.GotoAsync(Url + "?token=" + Token);
            Assert.Equal(200, start!.Status);
            await page.ClickAsync("#tabs [data-tab=\"vms\"]");

            // Order: a site and a size, as a user picks them.
            await page.Locator("#order-site option[value=\"h1\"]").WaitForAsync(new() { State = WaitForSelectorState.Attached });
            await page.SelectOptionAsync("#order-site", "h1");
            await page.SelectOptionAsync("#order-size", "small");
            await page.FillAsync("#order-name", name);
            await page.ClickAsync("#order-go");
            var row = $"#vms [data-vm=\"{name}\"]";
            await page.Locator($"{row}[data-host=\"h1\"]").WaitForAsync(new() { Timeout = 30_000 });

            // Its address comes from the LAN's dnsmasq (10.50.0.100-150), through the Proxy.
            const string addressOf = "sel => document.querySelector(sel)?.children[4]?.dataset.address || ''";
            await page.WaitForFunctionAsync($"sel => ({addressOf})(sel).startsWith('10.50.0.')", row, new() { Timeout = 60_000, PollingInterval = 250 });
            var address = await page.EvaluateAsync<string>(addressOf, row);
            output.WriteLine($"{name} ordered from the page on h1, leased {address}");
            var last = IPAddress.Parse(address).GetAddressBytes()[3];
            Assert.InRange(last, (byte)100, (byte)150);
            Assert.Contains(o.Vms("proxy"), v => v.Name == name && v.Address == address && v.Site == "h1");
            await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "web-vm-ordered.png") });

            // An open TCP connection from the VM to the LAN machine, carrying data across the move.
            var holder = NetnsVmProvider.HolderOf(name) ?? throw new InvalidOperationException($"no namespace registered for {name}");
            var server = o.Bed.Start("lanhost", "iperf3-server", "iperf3", "-s", "-1", "--forceflush");
            server.WaitForOutput("Server listening", TimeSpan.FromSeconds(10));
            client = Process.Start(new ProcessStartInfo("nsenter",
                ["-t", holder.ToString(CultureInfo.InvariantCulture), "-n", "iperf3", "-c", OverlayBed.LanHostIp, "-t", "12", "-b", "20M", "-i", "1", "-J"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            })!;
            var stdout = client.StandardOutput.ReadToEndAsync();
            await Task.Delay(2500);

            // Move, from the page: to h2.
            await page.Locator($"{row} .move-to").SelectOptionAsync("h2");
            await page.Locator($"{row} .move").ClickAsync();
            await page.Locator($"{row}[data-host=\"h2\"]").WaitForAsync(new() { Timeout = 40_000 });
            await page.WaitForFunctionAsync($"([sel, want]) => ({addressOf})(sel) === want", new object[] { row, address }, new() { Timeout = 30_000, PollingInterval = 250 });
            Assert.Contains(o.Vms("proxy"), v => v.Name == name && v.Address == address && v.Site == "h2");
            await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "web-vm-moved.png") });

            Assert.True(client.WaitForExit(TimeSpan.FromSeconds(40)), "iperf3 did not finish");
            var report = JsonNode.Parse(await stdout)!;
            Assert.True(client.ExitCode == 0, $"iperf3 failed: {report["error"]}");
            var intervals = report["intervals"]!.AsArray();
            var lastBytes = intervals[^1]!["sum"]!["bytes"]!.GetValue<long>();
            output.WriteLine($"iperf3 across the move: {intervals.Count} intervals, {lastBytes} bytes in the last");
            Assert.True(lastBytes > 0, "the connection carried nothing after the move");

            // Remove, from the page: the row goes, and so does the VM.
            await page.Locator($"{row} .remove").ClickAsync();
            await page.Locator(row).WaitForAsync(new() { State = WaitForSelectorState.Detached, Timeout = 30_000 });
            Assert.Null(NetnsVmProvider.HolderOf(name));
            Assert.DoesNotContain(o.Vms("proxy"), v => v.Name == name);
        }
        finally
        {
            if (client is { HasExited: false })
                client.Kill(entireProcessTree: true);
            client?.Dispose();
            VmProviderTests.RemoveNamespace(name);
            File.Delete(leases);
        }
    }
}
