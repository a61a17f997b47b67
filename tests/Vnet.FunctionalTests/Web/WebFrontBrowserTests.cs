using System.Diagnostics;
using Microsoft.Playwright;
using Vnet.Forwarding;
using Vnet.Tests.Functional;
using Xunit.Abstractions;
using static Vnet.Tests.Functional.OverlayBed;

namespace Vnet.Tests.Web;

/// <summary>
/// The web front in a real browser: Debian's Chromium, headless, driven by Playwright, against a
/// Proxy and two hosts in namespaces with VMs that talk (iperf3). The Proxy serves the front on its
/// WAN address with a token, so the browser runs in the Proxy's namespace (a wrapper execs
/// /usr/bin/chromium under <c>ip netns exec</c>; Playwright speaks to it over a pipe, so the
/// namespace is no obstacle). Screenshots go to the bed's log directory.
/// </summary>
[Collection("Netns")]
public sealed class WebFrontBrowserTests(ITestOutputHelper output)
{
    private const string Chromium = "/usr/bin/chromium";
    private const string Token = "browser-test-token-0123456789abcdef";
    private const float Timeout = 15_000;
    private static readonly string WebAt = "192.0.2.1:8080";
    private static readonly string Url = $"http://{WebAt}/";

    [Fact]
    public async Task Browser_TokenGraphHeatMapAutoPolicyAndTrace_AllShownAndDrivenFromThePage()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: apt-get install chromium (test.sh and .ci/run do)");
        using var o = new OverlayBed(output, hosts: 2, lan: false);
        o.StartProxy(lanNic: false, web: WebAt, webToken: Token);
        o.StartHost(1);
        o.StartHost(2);
        o.WaitStar(2);
        o.Daemon("proxy").WaitForOutput($"Web front at http://{WebAt}/ (token required)", TimeSpan.FromSeconds(5));
        o.AddVm(1, 1);
        o.AddVm(2, 2);
        Assert.True(o.Bed.Ping("vm1", VmIp(2), count: 2, timeoutSeconds: 10));

        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = BrowserIn(o, "proxy"),
            Headless = true,
            Timeout = 60_000,
        });
        var page = await browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1400, Height = 900 } });
        page.SetDefaultTimeout(Timeout);
        var shots = o.Bed.LogDirectory;

        // A wrong token is refused, in the address and on the login page.
        var wrong = await page.GotoAsync(Url + "?token=not-the-token-0000000");
        Assert.Equal(401, wrong!.Status);
        Assert.Equal("wrong token", await page.TextContentAsync("#wrong-token"));
        var login = await page.GotoAsync(Url);
        Assert.Equal(401, login!.Status);
        await page.FillAsync("#token", "not-the-token-0000000");
        await page.ClickAsync("#login");
        await page.Locator("#login-error", new() { HasText = "wrong token" }).WaitForAsync();
        await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "web-wrong-token.png") });

        // The right one: the page, the daemons and the star links.
        await page.FillAsync("#token", Token);
        await page.ClickAsync("#login");
        foreach (var node in new[] { "proxy", "h1", "h2" })
            await page.Locator($"#graph [data-node=\"{node}\"]").WaitForAsync();
        foreach (var link in new[] { "h1-proxy", "h2-proxy" })
        {
            var l = page.Locator($"#graph [data-link=\"{link}\"]");
            await l.WaitForAsync();
            Assert.Equal("star", await l.GetAttributeAsync("data-role"));
            Assert.Contains("TCP · star", await l.TextContentAsync(), StringComparison.Ordinal);
        }
        // The VMs hang off their hosts.
        await page.Locator($"#graph [data-node=\"{VmMac(1)}\"][data-host=\"h1\"]").WaitForAsync();
        await page.Locator($"#graph [data-node=\"{VmMac(2)}\"][data-host=\"h2\"]").WaitForAsync();
        await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "web-overlay-star.png") });

        // Traffic between the VMs: its cell in the heat map gets a rate.
        var server = o.Bed.Start("vm2", "iperf3-server", "iperf3", "-s", "--forceflush");
        server.WaitForOutput("Server listening", TimeSpan.FromSeconds(10));
        var client = o.Bed.Start("vm1", "iperf3-client", "iperf3", "-c", VmIp(2), "-t", "300", "-b", "4M", "-l", "16K", "--forceflush");
        await page.ClickAsync("#tabs [data-tab=\"traffic\"]");
        // (The warm-up pings may have coloured it faintly already: wait for iperf3's rate.)
        var cell = $"#heatmap [data-cell=\"{VmMac(1)}|{VmMac(2)}\"]";
        await page.WaitForFunctionAsync("sel => Number(document.querySelector(sel)?.dataset.rate ?? 0) > 100000", cell,
            new() { Timeout = 30_000, PollingInterval = 250 });
        var rate = double.Parse((await page.GetAttributeAsync(cell, "data-rate"))!, System.Globalization.CultureInfo.InvariantCulture);
        output.WriteLine($"heat map vm1 -> vm2: {rate:0} B/s");
        await page.Locator($"#topology [data-edge]").First.WaitForAsync(new() { Timeout = 30_000 });
        await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "web-traffic.png"), FullPage = true });

        // The policy switch: auto, and adaptation's link appears on the graph.
        Assert.Equal("off", await page.InputValueAsync("#policy"));
        var clock = Stopwatch.StartNew();
        await page.SelectOptionAsync("#policy", "auto");
        await page.Locator("#adapt-log tbody tr.applied").First.WaitForAsync(new() { Timeout = 40_000 });
        await page.ClickAsync("#tabs [data-tab=\"overlay\"]");
        var added = page.Locator("#graph [data-link=\"h1-h2\"][data-role=\"added\"]");
        await added.WaitForAsync(new() { Timeout = 40_000 });
        output.WriteLine($"the added link on the graph {clock.Elapsed.TotalSeconds:0.0} s after the switch");
        Assert.Contains("added by adaptation", await added.TextContentAsync(), StringComparison.Ordinal);
        // The page changed the daemon's policy, as the CLI sees it.
        Assert.Equal("auto", System.Text.Json.Nodes.JsonNode.Parse(o.Cli("proxy", "adapt status --json"))!["policy"]!.GetValue<string>());
        await Task.Delay(2500);
        await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "web-overlay.png") });

        // A trace from h1 for vm1 -> vm2: adaptation's rule sends it straight to h2; the path is drawn.
        Wait.Until(() => o.Rules("h1").Any(r => r.Origin == RuleOrigin.Adaptation && r.Destination.ToString() == VmMac(2)),
            TimeSpan.FromSeconds(20), "h1's adaptation rule for vm2");
        await page.ClickAsync("#tabs [data-tab=\"rules\"]");
        await page.Locator("[data-rules=\"h1\"] tr.adaptation").First.WaitForAsync();
        await page.SelectOptionAsync("#trace-from", "h1");
        await page.FillAsync("#trace-src", VmMac(1));
        await page.FillAsync("#trace-dst", VmMac(2));
        await page.ClickAsync("#trace-go");
        var path = page.Locator("#graph-trace path[data-trace]");
        await path.WaitForAsync(new() { State = WaitForSelectorState.Attached });
        await page.Locator("#graph-trace [data-trace-hop=\"h2\"]").WaitForAsync();
        Assert.Equal("h1>h2", await path.GetAttributeAsync("data-trace"));
        Assert.Contains("on-trace", await page.GetAttributeAsync("#graph [data-link=\"h1-h2\"]", "class") ?? "", StringComparison.Ordinal);
        await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "web-trace.png") });

        // The VMs page lists both VMs at their hosts, with their traffic; what the daemon says of
        // the sites (the VM verbs' answer or refusal) is shown, not swallowed.
        await page.ClickAsync("#tabs [data-tab=\"vms\"]");
        await page.Locator($"#vms [data-vm=\"{VmMac(1)}\"][data-host=\"h1\"]").WaitForAsync();
        await page.Locator($"#vms [data-vm=\"{VmMac(2)}\"][data-host=\"h2\"]").WaitForAsync();
        await page.WaitForFunctionAsync("() => document.getElementById('sites').textContent.startsWith('sites: ')", null, new() { Timeout = Timeout });
        output.WriteLine("VMs page: " + await page.TextContentAsync("#sites"));
        await page.ScreenshotAsync(new() { Path = Path.Combine(shots, "web-vms.png") });

        Assert.False(client.HasExited, "iperf3 ended early: " + client.Output);
        client.Stop();
        server.Stop();
        // The token came in a URL and a login; the Proxy's log (at debug level) has it nowhere.
        Assert.DoesNotContain(o.Daemon("proxy").Lines, l => l.Contains(Token, StringComparison.Ordinal));
    }

    /// <summary>
    /// An executable that runs /usr/bin/chromium inside one of the bed's namespaces, for Playwright
    /// to launch (it talks to the browser over a pipe, which crosses namespaces).
    /// </summary>
    internal static string BrowserIn(OverlayBed o, string ns)
    {
        var path = o.FileOf("chromium-in-" + ns);
        File.WriteAllText(path, $"#!/bin/sh\nexec ip netns exec {o.Bed.Prefix}-{ns} {Chromium} \"$@\"\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }
}
