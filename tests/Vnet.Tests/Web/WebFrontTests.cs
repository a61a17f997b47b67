using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Vnet.Configuration;
using Vnet.Links;
using Vnet.Links.Security;
using Vnet.Web;

namespace Vnet.Tests.Web;

/// <summary>
/// The Proxy's web front on real daemons in this process (a Proxy and two hosts over loopback,
/// the dispatcher attached as the CLI attaches it): the API's snapshot, access with and without a
/// token, the cross-site defence, hostile requests, and the event stream with its cap.
/// </summary>
public sealed class WebFrontTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(15);

    private const string Secret = "0123456789abcdef-web-token-for-tests";

    private static Task<DaemonNet> Net(WebToken? token = null) =>
        DaemonNet.StartAsync([("h1", []), ("h2", [])], null, web: true, webToken: token);

    private static WebToken Token() => WebToken.TryParse(Secret, out _)!;

    /// <summary>A client that neither follows redirects nor keeps cookies: each test says what it sends.</summary>
    /// <remarks>
    /// A POST that says <c>Expect: 100-continue</c> waits for the server's go before it sends its body
    /// (long enough here): the server refuses a body too big on its length alone, so it never reads one
    /// and the client never pushes a megabyte into a connection that is closing.
    /// </remarks>
    private static HttpClient Client() =>
        new(new SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = false, Expect100ContinueTimeout = TimeSpan.FromSeconds(15) })
        {
            Timeout = TimeSpan.FromSeconds(20),
        };

    private static Uri At(DaemonNet net, string path) => new($"http://{net.Proxy.Web!.LocalEndPoint}{path}");

    private static HttpRequestMessage Post(DaemonNet net, string path, string body, bool csrfHeader = true)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, At(net, path)) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        if (csrfHeader)
            request.Headers.Add(WebFront.CsrfHeader, "1");
        return request;
    }

    private static async Task<JsonNode> Json(HttpResponseMessage response) => JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

    private static async Task<string> Policy(DaemonNet net) => (await net.Proxy.Run(net.Proxy.Adaptation.Status)).Policy.ToString();

    [Fact]
    public async Task State_OnLoopbackWithoutToken_ShowsEveryDaemonAndTheStarLinksWithTheirTransport()
    {
        await using var net = await Net();
        using var http = Client();

        using var response = await http.GetAsync(At(net, "/api/state"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var state = await Json(response);
        Assert.Equal("proxy", state["self"]!.GetValue<string>());
        var daemons = state["daemons"]!.AsArray().Select(d => d!["name"]!.GetValue<string>()).Order(StringComparer.Ordinal);
        Assert.Equal(["h1", "h2", "proxy"], daemons);
        var links = state["links"]!.AsArray().Select(l => l!.AsObject()).ToDictionary(l => l["id"]!.GetValue<string>());
        Assert.Equal(["h1-proxy", "h2-proxy"], links.Keys.Order(StringComparer.Ordinal));
        foreach (var l in links.Values)
        {
            Assert.Equal("tcp", l["transport"]!.GetValue<string>());
            Assert.True(l["star"]!.GetValue<bool>());
            Assert.True(l["up"]!.GetValue<bool>());
        }
        // Every daemon's rules, with their counters (the flood rule every daemon has).
        Assert.All(state["daemons"]!.AsArray(), d => Assert.Contains(d!["rules"]!.AsArray(), r => r!["frames"] is not null));
        Assert.NotNull(state["adaptation"]);
        Assert.NotNull(state["matrix"]);
    }

    [Fact]
    public async Task Page_OnLoopbackWithoutToken_IsServedWithItsScriptAndAStrictContentPolicy()
    {
        await using var net = await Net();
        using var http = Client();

        using var page = await http.GetAsync(At(net, "/"));
        using var script = await http.GetAsync(At(net, "/app.js"));

        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Contains("id=\"graph\"", await page.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Contains("script-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, script.StatusCode);
        Assert.Contains("EventSource", await script.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public void Config_WebOnAnAddressOtherThanLoopbackWithoutTokenFile_IsRefused()
    {
        var key = StaticKeyPair.Generate();
        var proxy = new DaemonConfig { Name = "proxy", Role = DaemonRole.Proxy, Listen = new IPEndPoint(IPAddress.Loopback, 5500), Identity = key, Web = new IPEndPoint(IPAddress.Any, 8080) };

        var refused = Assert.Throws<ConfigException>(() => proxy.Validated());
        Assert.Equal("web_token_file", refused.Field);

        // With a token it starts; on loopback it needs none; a host refuses the setting.
        Assert.NotNull((proxy with { WebToken = Token() }).Validated());
        Assert.NotNull((proxy with { Web = new IPEndPoint(IPAddress.Loopback, 8080) }).Validated());
        var host = new DaemonConfig
        {
            Name = "h1", Role = DaemonRole.Host, Listen = new IPEndPoint(IPAddress.Loopback, 5501), Identity = key, ProxyAddress = new IPEndPoint(IPAddress.Loopback, 5500),
            ProxyKey = StaticKeyPair.Generate().Public, Web = new IPEndPoint(IPAddress.Loopback, 8080),
        };
        Assert.Equal("web", Assert.Throws<ConfigException>(() => host.Validated()).Field);
    }

    [Fact]
    public void Config_FromTheFile_ReadsWebAndRefusesAnOpenAddressWithoutToken()
    {
        var dir = Directory.CreateTempSubdirectory("vnet-web-");
        try
        {
            var keyFile = Path.Combine(dir.FullName, "proxy.key");
            KeyFiles.Write(keyFile, StaticKeyPair.Generate().ExportPrivate());
            var text = $"name = \"proxy\"\nrole = \"proxy\"\nkey_file = \"{keyFile}\"\n";

            Assert.Equal(new IPEndPoint(IPAddress.Loopback, 8080), DaemonConfig.Parse(text + "web = \"8080\"\n").Validated().Web);
            Assert.EndsWith("web_token_file", Assert.Throws<ConfigException>(() => DaemonConfig.Parse(text + "web = \"0.0.0.0:8080\"\n")).Field, StringComparison.Ordinal);

            var tokenFile = Path.Combine(dir.FullName, "web.token");
            File.WriteAllText(tokenFile, Secret);
            File.SetUnixFileMode(tokenFile, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
            var open = Assert.Throws<ConfigException>(() => DaemonConfig.Parse(text + $"web = \"0.0.0.0:8080\"\nweb_token_file = \"{tokenFile}\"\n"));
            Assert.Contains("open to other users", open.Message, StringComparison.Ordinal);

            File.SetUnixFileMode(tokenFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            var config = DaemonConfig.Parse(text + $"web = \"0.0.0.0:8080\"\nweb_token_file = \"{tokenFile}\"\n").Validated();
            Assert.True(config.WebToken!.Matches(Secret));
            Assert.DoesNotContain(Secret, config.ToString(), StringComparison.Ordinal);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Token_WrongBearerCookieOrQuery_401_RightOnes200AndTheQuerySetsAStrictHttpOnlyCookie()
    {
        await using var net = await Net(Token());
        using var http = Client();

        async Task<HttpStatusCode> Get(string path, Action<HttpRequestHeaders> headers)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, At(net, path));
            headers(request.Headers);
            using var response = await http.SendAsync(request);
            return response.StatusCode;
        }

        Assert.Equal(HttpStatusCode.Unauthorized, await Get("/api/state", _ => { }));
        Assert.Equal(HttpStatusCode.Unauthorized, await Get("/api/state", h => h.Authorization = new AuthenticationHeaderValue("Bearer", "not-the-token-at-all")));
        Assert.Equal(HttpStatusCode.Unauthorized, await Get("/api/state", h => h.Add("Cookie", $"{WebFront.CookieName}=0123")));
        Assert.Equal(HttpStatusCode.Unauthorized, await Get("/app.js", _ => { }));
        Assert.Equal(HttpStatusCode.OK, await Get("/api/state", h => h.Authorization = new AuthenticationHeaderValue("Bearer", Secret)));

        using (var wrong = await http.GetAsync(At(net, "/?token=not-the-token-at-all")))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
            Assert.Contains("wrong token", await wrong.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            Assert.False(wrong.Headers.Contains("Set-Cookie"));
        }

        using var right = await http.GetAsync(At(net, "/?token=" + Secret));
        Assert.Equal(HttpStatusCode.SeeOther, right.StatusCode);
        Assert.Equal("/", right.Headers.Location!.OriginalString);
        var cookie = right.Headers.GetValues("Set-Cookie").Single();
        Assert.Contains("httponly", cookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("samesite=strict", cookie, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain(Secret, cookie, StringComparison.Ordinal);
        var pair = cookie.Split(';')[0];
        Assert.Equal(HttpStatusCode.OK, await Get("/api/state", h => h.Add("Cookie", pair)));
        Assert.Equal(HttpStatusCode.OK, await Get("/", h => h.Add("Cookie", pair)));

        // The login page's way: POST /login.
        using var login = await http.SendAsync(Post(net, "/login", $"{{\"token\":\"{Secret}\"}}"));
        Assert.Equal(HttpStatusCode.OK, login.StatusCode);
        Assert.Equal(pair, login.Headers.GetValues("Set-Cookie").Single().Split(';')[0]);
        using var badLogin = await http.SendAsync(Post(net, "/login", "{\"token\":\"not-the-token-at-all\"}"));
        Assert.Equal(HttpStatusCode.Unauthorized, badLogin.StatusCode);

        // Nothing the daemon logged holds the token, though it came in a URL, a header, a body.
        Assert.DoesNotContain(net.LogOf("proxy").Lines, l => l.Contains(Secret, StringComparison.Ordinal));
        Assert.True(net.LogOf("proxy").Contains("Web front: a wrong token from"), net.LogOf("proxy").ToString());
    }

    [Fact]
    public async Task Token_TenWrongOnesFromAnAddress_ItIsRefused429EvenWithTheRightOne()
    {
        await using var net = await Net(Token());
        using var http = Client();

        for (var i = 0; i < LoginThrottle.MaxFailures; i++)
        {
            using var wrong = new HttpRequestMessage(HttpMethod.Get, At(net, "/api/state"));
            wrong.Headers.Authorization = new AuthenticationHeaderValue("Bearer", $"guess-{i}-0123456789abcdef");
            using var refused = await http.SendAsync(wrong);
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        }
        using var right = new HttpRequestMessage(HttpMethod.Get, At(net, "/api/state"));
        right.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Secret);
        using var response = await http.SendAsync(right);
        using var page = await http.GetAsync(At(net, "/?token=" + Secret));

        Assert.Equal((HttpStatusCode)429, response.StatusCode);
        Assert.InRange(int.Parse(response.Headers.GetValues("Retry-After").Single(), System.Globalization.CultureInfo.InvariantCulture), 1, 60);
        Assert.Equal((HttpStatusCode)429, page.StatusCode);
        Assert.DoesNotContain(Secret, await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Tls_WithACertificate_ServesHttpsOnly_AndTheTokenStillCounts()
    {
        var dir = Directory.CreateTempSubdirectory("vnet-web-tls-");
        try
        {
            using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
            var request = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=vnet-proxy", key, System.Security.Cryptography.HashAlgorithmName.SHA256);
            using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
            var certFile = Path.Combine(dir.FullName, "web.crt");
            var keyFile = Path.Combine(dir.FullName, "web.key");
            File.WriteAllText(certFile, cert.ExportCertificatePem());
            File.WriteAllText(keyFile, key.ExportPkcs8PrivateKeyPem());
            File.SetUnixFileMode(keyFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            var tls = Vnet.Configuration.DaemonConfig.ReadWebTls(certFile, keyFile, "web_tls_cert_file", "web_tls_key_file")!;

            // A key file others can read is refused, as the daemon's key files are.
            File.SetUnixFileMode(keyFile, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
            var open = Assert.Throws<ConfigException>(() => Vnet.Configuration.DaemonConfig.ReadWebTls(certFile, keyFile, "web_tls_cert_file", "web_tls_key_file"));
            Assert.Contains("chmod 600", open.Message, StringComparison.Ordinal);
            Assert.Throws<ConfigException>(() => Vnet.Configuration.DaemonConfig.ReadWebTls(certFile, null, "web_tls_cert_file", "web_tls_key_file"));

            await using var net = await DaemonNet.StartAsync([("h1", [])], null, web: true, webToken: Token(), webTls: tls);
            var at = net.Proxy.Web!.LocalEndPoint;
            string? seen = null;
            using var https = new HttpClient(new SocketsHttpHandler
            {
                SslOptions = { RemoteCertificateValidationCallback = (_, presented, _, _) => (seen = presented?.GetCertHashString()) == cert.GetCertHashString() },
            })
            { Timeout = TimeSpan.FromSeconds(20) };
            using var plain = Client();

            using var anonymous = await https.GetAsync(new Uri($"https://{at}/api/state"));
            using var request2 = new HttpRequestMessage(HttpMethod.Get, new Uri($"https://{at}/api/state"));
            request2.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Secret);
            using var allowed = await https.SendAsync(request2);

            Assert.Equal(cert.GetCertHashString(), seen);
            Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
            Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
            Assert.Equal("proxy", (await Json(allowed))["self"]!.GetValue<string>());
            // Plain HTTP to the same port gets no answer a client could read as the API's.
            await Assert.ThrowsAnyAsync<HttpRequestException>(() => plain.GetAsync(new Uri($"http://{at}/api/state")));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Post_WithoutTheCsrfHeaderOrFromAnotherOrigin_IsRefusedAndChangesNothing()
    {
        await using var net = await Net();
        using var http = Client();

        using var noHeader = await http.SendAsync(Post(net, "/api/policy", "{\"policy\":\"auto\"}", csrfHeader: false));
        var foreign = Post(net, "/api/policy", "{\"policy\":\"auto\"}");
        foreign.Headers.Add("Origin", "http://evil.example");
        using var fromElsewhere = await http.SendAsync(foreign);

        Assert.Equal(HttpStatusCode.Forbidden, noHeader.StatusCode);
        Assert.Contains(WebFront.CsrfHeader, (await Json(noHeader))["error"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Forbidden, fromElsewhere.StatusCode);
        Assert.Equal("Off", await Policy(net));

        // A GET cannot change anything: the change verbs are POST only.
        using var get = await http.GetAsync(At(net, "/api/policy"));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, get.StatusCode);
    }

    [Fact]
    public async Task Post_HostileBodies_AreRefusedWith4xxAndChangeNothing_ARightOneChangesThePolicy()
    {
        await using var net = await Net();
        using var http = Client();

        async Task<(HttpStatusCode, string)> Send(string body)
        {
            using var request = Post(net, "/api/policy", body);
            request.Headers.ExpectContinue = true;
            using var response = await http.SendAsync(request);
            return (response.StatusCode, (await Json(response))["error"]?.GetValue<string>() ?? "");
        }

        var huge = "{\"policy\":\"" + new string('a', 1 << 20) + "\"}";
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, (await Send(huge)).Item1);
        Assert.Equal(HttpStatusCode.BadRequest, (await Send("{\"policy\":")).Item1);
        Assert.Equal(HttpStatusCode.BadRequest, (await Send("[1,2]")).Item1);
        Assert.Equal(HttpStatusCode.BadRequest, (await Send("{\"policy\":{\"x\":1}}")).Item1);
        var (status, error) = await Send("{\"policy\":\"banana\"}");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("not off, advise or auto", error, StringComparison.Ordinal);
        Assert.Equal("Off", await Policy(net));

        using var right = await http.SendAsync(Post(net, "/api/policy", "{\"policy\":\"advise\"}"));
        Assert.Equal(HttpStatusCode.OK, right.StatusCode);
        Assert.Equal("advise", (await Json(right))["policy"]!.GetValue<string>());
        Assert.Equal("Advise", await Policy(net));
    }

    [Fact]
    public async Task Trace_ThroughTheApi_ReturnsTheHopsFromTheDaemonAsked()
    {
        await using var net = await Net();
        using var http = Client();

        using var response = await http.SendAsync(Post(net, "/api/trace", "{\"from\":\"h1\",\"src\":\"02:00:00:00:00:01\",\"dst\":\"ff:ff:ff:ff:ff:ff\"}"));
        using var bad = await http.SendAsync(Post(net, "/api/trace", "{\"from\":\"h1\",\"src\":\"nonsense\",\"dst\":\"02:00:00:00:00:02\"}"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var hops = (await Json(response))["hops"]!.AsArray().Select(h => h!["daemon"]!.GetValue<string>()).ToList();
        // A broadcast from h1 floods along the star: h1, then the Proxy, then h2.
        Assert.Equal("h1", hops[0]);
        Assert.Contains("proxy", hops);
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("not a MAC address", (await Json(bad))["error"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task VmCommands_AreTheDaemonsOwn_TheirAnswerOrRefusalComesBackAsJson()
    {
        await using var net = await Net();
        using var http = Client();

        using var sites = await http.GetAsync(At(net, "/api/vms/sites"));
        using var move = await http.SendAsync(Post(net, "/api/vms/move", "{\"name\":\"nosuchvm\",\"to\":\"h2\"}"));

        // Whatever the daemon answers (the VM verbs come with the providers): JSON, and a refusal as {error}.
        var sitesBody = await Json(sites);
        if (sites.StatusCode == HttpStatusCode.OK)
            Assert.IsType<JsonArray>(sitesBody);
        else
            Assert.Equal(HttpStatusCode.BadRequest, sites.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, move.StatusCode);
        Assert.False(string.IsNullOrEmpty((await Json(move))["error"]!.GetValue<string>()));
    }

    [Fact]
    public async Task Events_SendsSnapshotsEverySecond_CapsTheListeners_AndLetsGoOfThemWhenTheyLeave()
    {
        await using var net = await Net();
        using var http = Client();

        var streams = new List<(HttpResponseMessage Response, StreamReader Reader)>();
        try
        {
            for (var i = 0; i < WebFront.MaxListeners; i++)
            {
                var response = await http.GetAsync(At(net, "/api/events"), HttpCompletionOption.ResponseHeadersRead);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
                streams.Add((response, new StreamReader(await response.Content.ReadAsStreamAsync())));
            }

            // Two snapshots on the first stream, a second or so apart.
            var reader = streams[0].Reader;
            var clock = Stopwatch.StartNew();
            var events = new List<JsonNode>();
            while (events.Count < 2)
            {
                var line = await reader.ReadLineAsync().WaitAsync(Deadline);
                Assert.NotNull(line);
                if (line.StartsWith("data: ", StringComparison.Ordinal))
                    events.Add(JsonNode.Parse(line["data: ".Length..])!);
            }
            Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(0.5), Deadline);
            Assert.All(events, e => Assert.Equal(3, e["daemons"]!.AsArray().Count));
            Assert.NotEqual(events[0]["at"]!.GetValue<string>(), events[1]["at"]!.GetValue<string>());

            using (var refused = await http.GetAsync(At(net, "/api/events"), HttpCompletionOption.ResponseHeadersRead))
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
                Assert.Contains("at most", (await Json(refused))["error"]!.GetValue<string>(), StringComparison.Ordinal);
            }
        }
        finally
        {
            foreach (var (response, reader) in streams)
            {
                reader.Dispose();
                response.Dispose();
            }
        }

        // Gone listeners free their places: a new one is served again.
        await DaemonNet.UntilAsync(async () =>
        {
            using var again = await http.GetAsync(At(net, "/api/events"), HttpCompletionOption.ResponseHeadersRead);
            return again.StatusCode == HttpStatusCode.OK;
        }, Deadline, "a listener's place after the others left");
    }
}
