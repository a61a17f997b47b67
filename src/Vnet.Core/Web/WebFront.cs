using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Vnet.Configuration;
using Vnet.Peers;

namespace Vnet.Web;

/// <summary>
/// The Proxy's web front (docs/web.md): one page (HTML, JS, CSS embedded in this assembly, served
/// from memory) and a JSON API under <c>/api</c>. It has no access of its own to the daemon: every
/// read and every change is a command run through the dispatcher the CLI uses
/// (<see cref="ICommandHandler"/>), hosts included (through <c>remote</c>). With a token
/// (<see cref="WebToken"/>) every request but the login page's must prove it: an
/// <c>Authorization: Bearer</c> header, or the HttpOnly SameSite=Strict cookie that the login or
/// <c>GET /?token=</c> sets. Changes are POSTs that must carry <c>X-Vnet: 1</c> (a header a page of
/// another origin cannot add without a CORS preflight this server never grants) and, when the
/// browser says where it comes from, this origin. Nothing here logs a request, so a token in a URL
/// reaches no log.
/// </summary>
public sealed partial class WebFront
{
    /// <summary>Pages listening to <c>/api/events</c> at once; more are refused (503).</summary>
    public const int MaxListeners = 4;

    /// <summary>Largest request body taken (413 beyond).</summary>
    public const int MaxBody = 4096;

    /// <summary>The session cookie.</summary>
    public const string CookieName = "vnet_web";

    /// <summary>The header every POST must carry (value 1).</summary>
    public const string CsrfHeader = "X-Vnet";

    /// <summary>How often a listener gets a fresh snapshot.</summary>
    public static readonly TimeSpan EventPeriod = TimeSpan.FromSeconds(1);

    private const string ContentSecurityPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

    private static readonly Dictionary<string, (string Type, byte[] Body)> Assets = LoadAssets();

    private readonly ICommandHandler _commands;
    private readonly WebToken? _token;
    private readonly OverlaySnapshots _snapshots;
    private readonly ILogger _logger;
    // Wrong tokens come from the network: ten lines a minute at most, then a count.
    private readonly Vnet.Daemon.LogLimiter _refusals = new();
    private readonly LoginThrottle _throttle = new();
    private int _listeners;

    public WebFront(string daemon, ICommandHandler commands, WebToken? token, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(commands);
        _commands = commands;
        _token = token;
        _logger = logger;
        _snapshots = new OverlaySnapshots(commands, daemon);
    }

    /// <summary>Pages listening to <c>/api/events</c> now.</summary>
    public int Listeners => Volatile.Read(ref _listeners);

    public void Map(IEndpointRouteBuilder routes)
    {
        routes.MapGet("/", PageAsync);
        routes.MapPost("/login", LoginAsync);
        routes.MapGet("/login.js", c => AssetAsync(c, "login.js"));
        routes.MapGet("/app.css", c => AssetAsync(c, "app.css"));
        routes.MapGet("/app.js", c => Guarded(c, () => AssetAsync(c, "app.js")));
        routes.MapGet("/api/state", c => Guarded(c, async () => await JsonTextAsync(c, 200, await _snapshots.GetAsync(c.RequestAborted).ConfigureAwait(false)).ConfigureAwait(false)));
        routes.MapGet("/api/events", c => Guarded(c, () => EventsAsync(c)));
        routes.MapGet("/api/vms/sites", c => Guarded(c, () => CommandAsync(c, "vm.sites", [])));
        routes.MapPost("/api/trace", c => Change(c, "overlay.trace", ("from", "at"), ("src", "src"), ("dst", "dst")));
        routes.MapPost("/api/policy", c => Change(c, "adapt.policy", ("policy", "policy")));
        routes.MapPost("/api/vms/order", c => Change(c, "vm.order", ("site", "site"), ("size", "size"), ("name", "name")));
        routes.MapPost("/api/vms/move", c => Change(c, "vm.move", ("name", "name"), ("to", "to")));
        routes.MapPost("/api/vms/remove", c => Change(c, "vm.remove", ("name", "name")));
    }

    // ---------------------------------------------------------------- access

    /// <summary>Whether the request proves the token; a wrong one it carried (not a missing one) is counted against its address.</summary>
    private bool Authorized(HttpContext c)
    {
        if (_token is null)
            return true;
        var header = c.Request.Headers.Authorization.ToString();
        bool right;
        if (header.Length > 0)
            right = header.StartsWith("Bearer ", StringComparison.Ordinal) && _token.Matches(header[7..].Trim());
        else if (c.Request.Cookies.TryGetValue(CookieName, out var cookie))
            right = _token.MatchesCookie(cookie);
        else
            return false;
        if (!right)
            _throttle.Failed(c.Connection.RemoteIpAddress);
        return right;
    }

    /// <summary>429 with Retry-After when the client's address is refused for its wrong tokens (<see cref="LoginThrottle"/>); true if it was.</summary>
    private async Task<bool> Throttled(HttpContext c)
    {
        if (_token is null || _throttle.Blocked(c.Connection.RemoteIpAddress) is not { } left)
            return false;
        c.Response.Headers.RetryAfter = Math.Ceiling(left.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture);
        await ErrorAsync(c, 429, $"too many wrong tokens from this address: try again in {Math.Ceiling(left.TotalSeconds)} s").ConfigureAwait(false);
        return true;
    }

    private async Task Guarded(HttpContext c, Func<Task> serve)
    {
        Secure(c);
        if (await Throttled(c).ConfigureAwait(false))
            return;
        if (!Authorized(c))
        {
            await ErrorAsync(c, 401, "wrong or missing token (log in at /)").ConfigureAwait(false);
            return;
        }
        await serve().ConfigureAwait(false);
    }

    /// <summary>A POST from this origin's page: the custom header, and the Origin when the browser sends one.</summary>
    private static string? CrossSiteRefusal(HttpContext c)
    {
        if (c.Request.Headers[CsrfHeader].ToString() != "1")
            return $"a change needs the header {CsrfHeader}: 1";
        var origin = c.Request.Headers.Origin.ToString();
        if (origin.Length > 0 && !string.Equals(origin, $"{c.Request.Scheme}://{c.Request.Host}", StringComparison.OrdinalIgnoreCase))
            return $"origin {origin} is not this server's";
        return null;
    }

    private static void Secure(HttpContext c)
    {
        var h = c.Response.Headers;
        h.CacheControl = "no-store";
        h.XContentTypeOptions = "nosniff";
        h.XFrameOptions = "DENY";
        h["Referrer-Policy"] = "no-referrer";
        h.ContentSecurityPolicy = ContentSecurityPolicy;
    }

    private void SetCookie(HttpContext c) =>
        c.Response.Cookies.Append(CookieName, _token!.CookieValue, new CookieOptions
        {
            HttpOnly = true,
            SameSite = SameSiteMode.Strict,
            Secure = c.Request.IsHttps,
            Path = "/",
        });

    // ---------------------------------------------------------------- pages

    /// <summary><c>/</c>: the page; the login page (401) without a token; <c>?token=</c> logs in and comes back without it.</summary>
    private async Task PageAsync(HttpContext c)
    {
        Secure(c);
        if (await Throttled(c).ConfigureAwait(false))
            return;
        if (c.Request.Query.TryGetValue("token", out var given))
        {
            if (_token is not null && !_token.Matches(given.ToString()))
            {
                _throttle.Failed(c.Connection.RemoteIpAddress);
                Refused(c);
                await AssetAsync(c, "wrong-token.html", 401).ConfigureAwait(false);
                return;
            }
            if (_token is not null)
                SetCookie(c);
            // The token leaves the address bar (and the history) at once.
            c.Response.StatusCode = 303;
            c.Response.Headers.Location = "/";
            return;
        }
        if (!Authorized(c))
        {
            await AssetAsync(c, "login.html", 401).ConfigureAwait(false);
            return;
        }
        await AssetAsync(c, "index.html").ConfigureAwait(false);
    }

    /// <summary><c>POST /login {token}</c> (the login page's script): the cookie, or 401.</summary>
    private async Task LoginAsync(HttpContext c)
    {
        Secure(c);
        if (await Throttled(c).ConfigureAwait(false))
            return;
        if (await ReadChangeAsync(c).ConfigureAwait(false) is not { } body)
            return;
        var given = body["token"] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        if (_token is not null && !_token.Matches(given))
        {
            _throttle.Failed(c.Connection.RemoteIpAddress);
            Refused(c);
            await ErrorAsync(c, 401, "wrong token").ConfigureAwait(false);
            return;
        }
        if (_token is not null)
            SetCookie(c);
        await JsonTextAsync(c, 200, "{}").ConfigureAwait(false);
    }

    private static async Task AssetAsync(HttpContext c, string name, int status = 200)
    {
        Secure(c);
        var (type, body) = Assets[name];
        c.Response.StatusCode = status;
        c.Response.ContentType = type;
        c.Response.ContentLength = body.Length;
        await c.Response.Body.WriteAsync(body, c.RequestAborted).ConfigureAwait(false);
    }

    private static Dictionary<string, (string, byte[])> LoadAssets()
    {
        var assembly = typeof(WebFront).Assembly;
        var assets = new Dictionary<string, (string, byte[])>(StringComparer.Ordinal);
        foreach (var name in (string[])["index.html", "login.html", "wrong-token.html", "login.js", "app.js", "app.css"])
        {
            using var stream = assembly.GetManifestResourceStream($"Vnet.Web.{name}")
                ?? throw new InvalidOperationException($"the web front's {name} is not embedded in {assembly.GetName().Name}");
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            var type = Path.GetExtension(name) switch
            {
                ".html" => "text/html; charset=utf-8",
                ".js" => "text/javascript; charset=utf-8",
                _ => "text/css; charset=utf-8",
            };
            assets[name] = (type, copy.ToArray());
        }
        return assets;
    }

    // ---------------------------------------------------------------- API

    /// <summary>
    /// A POST that runs one command: checked for the session and the cross-site header, its body
    /// read (bounded, a JSON object of strings), and only the named fields passed on, renamed to
    /// the command's arguments. The command's refusal is a 400 with its reason.
    /// </summary>
    private Task Change(HttpContext c, string command, params (string Field, string Argument)[] fields) => Guarded(c, async () =>
    {
        if (await ReadChangeAsync(c).ConfigureAwait(false) is not { } body)
            return;
        var args = new JsonObject();
        foreach (var (field, argument) in fields)
        {
            if (!body.TryGetPropertyValue(field, out var value) || value is null)
                continue;
            if (value is not JsonValue v || !v.TryGetValue<string>(out var text))
            {
                await ErrorAsync(c, 400, $"'{field}' must be a string").ConfigureAwait(false);
                return;
            }
            if (text.Length > 0)
                args[argument] = text;
        }
        await CommandAsync(c, command, args).ConfigureAwait(false);
    });

    private async Task CommandAsync(HttpContext c, string command, JsonObject args)
    {
        CommandResult result;
        try
        {
            result = await _commands.HandleAsync(command, args).WaitAsync(OverlaySnapshots.CommandTimeout, c.RequestAborted).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            await ErrorAsync(c, 504, $"{command}: no answer within {OverlaySnapshots.CommandTimeout.TotalSeconds:0} s").ConfigureAwait(false);
            return;
        }
        if (!result.Ok)
        {
            await ErrorAsync(c, 400, result.Error ?? $"{command} failed").ConfigureAwait(false);
            return;
        }
        await JsonTextAsync(c, 200, result.Data?.ToJsonString() ?? "{}").ConfigureAwait(false);
    }

    /// <summary>A POST's body, once its cross-site check passed; else null, the refusal answered.</summary>
    private static async Task<JsonObject?> ReadChangeAsync(HttpContext c)
    {
        if (CrossSiteRefusal(c) is { } refused)
        {
            await ErrorAsync(c, 403, refused).ConfigureAwait(false);
            return null;
        }
        var (body, status, error) = await ReadBodyAsync(c).ConfigureAwait(false);
        if (body is null)
            await ErrorAsync(c, status, error!).ConfigureAwait(false);
        return body;
    }

    /// <summary>A JSON object of at most <see cref="MaxBody"/> bytes, or the status and reason of the refusal.</summary>
    private static async Task<(JsonObject? Body, int Status, string? Error)> ReadBodyAsync(HttpContext c)
    {
        if (c.Request.ContentLength > MaxBody)
            return (null, 413, $"a request body is at most {MaxBody} bytes");
        var buffer = new byte[MaxBody + 1];
        var length = 0;
        try
        {
            int read;
            while (length < buffer.Length && (read = await c.Request.Body.ReadAsync(buffer.AsMemory(length), c.RequestAborted).ConfigureAwait(false)) > 0)
                length += read;
        }
        catch (BadHttpRequestException e)
        {
            return (null, e.StatusCode, e.Message);
        }
        if (length > MaxBody)
            return (null, 413, $"a request body is at most {MaxBody} bytes");
        try
        {
            return JsonNode.Parse(buffer.AsSpan(0, length)) is JsonObject o
                ? (o, 200, null)
                : (null, 400, "the body must be a JSON object");
        }
        catch (JsonException e)
        {
            return (null, 400, $"malformed JSON: {e.Message}");
        }
    }

    /// <summary>
    /// Server-sent events: a snapshot at once and then every <see cref="EventPeriod"/>, until the
    /// page goes or the server stops. At most <see cref="MaxListeners"/> at once.
    /// </summary>
    private async Task EventsAsync(HttpContext c)
    {
        if (Interlocked.Increment(ref _listeners) > MaxListeners)
        {
            Interlocked.Decrement(ref _listeners);
            await ErrorAsync(c, 503, $"too many pages listening (at most {MaxListeners}); close one").ConfigureAwait(false);
            return;
        }
        try
        {
            var stopping = c.RequestServices.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;
            using var end = CancellationTokenSource.CreateLinkedTokenSource(c.RequestAborted, stopping);
            c.Response.ContentType = "text/event-stream; charset=utf-8";
            using var timer = new PeriodicTimer(EventPeriod);
            do
            {
                var snapshot = await _snapshots.GetAsync(end.Token).ConfigureAwait(false);
                await c.Response.WriteAsync($"event: state\ndata: {snapshot}\n\n", end.Token).ConfigureAwait(false);
                await c.Response.Body.FlushAsync(end.Token).ConfigureAwait(false);
            }
            while (await timer.WaitForNextTickAsync(end.Token).ConfigureAwait(false));
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException)
        {
            // The page went, or the server is stopping.
        }
        finally
        {
            Interlocked.Decrement(ref _listeners);
        }
    }

    private void Refused(HttpContext c)
    {
        if (_refusals.TryAcquire("wrong token", out var suppressed))
            Log.LoginRefused(_logger, c.Connection.RemoteIpAddress, suppressed);
    }

    private static Task ErrorAsync(HttpContext c, int status, string error) =>
        JsonTextAsync(c, status, new JsonObject { ["error"] = error }.ToJsonString());

    private static async Task JsonTextAsync(HttpContext c, int status, string json)
    {
        c.Response.StatusCode = status;
        c.Response.ContentType = "application/json; charset=utf-8";
        var body = Encoding.UTF8.GetBytes(json);
        c.Response.ContentLength = body.Length;
        await c.Response.Body.WriteAsync(body, c.RequestAborted).ConfigureAwait(false);
    }

    private static partial class Log
    {
        // The address only: what was tried is never written.
        [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "Web front: a wrong token from {Remote} ({Suppressed} more not logged)")]
        public static partial void LoginRefused(ILogger logger, IPAddress? remote, long suppressed);
    }
}
