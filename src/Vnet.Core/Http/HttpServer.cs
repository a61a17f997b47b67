using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Vnet.Http;

/// <summary>
/// A daemon's HTTP port: a small Kestrel server on one address, serving the routes it is given
/// (<c>GET /metrics</c>, or the Proxy's web front on a port of its own; what is not routed gets
/// 404). It is its own host, apart from the process's: it takes no signals (the process stops it by
/// disposing it) and logs warnings and errors only, into the daemon's log. Plain HTTP, and no
/// authentication of its own: whoever reaches the address may read what the routes serve (the web
/// front checks its token itself). Connections are capped at <see cref="MaxConnections"/>.
/// </summary>
public sealed class HttpServer : IAsyncDisposable
{
    /// <summary>Connections open at once; more wait in the kernel's backlog.</summary>
    public const int MaxConnections = 16;

    /// <summary>How long a stop waits for requests still running.</summary>
    public static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(2);

    private readonly WebApplication _app;
    private int _disposed;

    private HttpServer(WebApplication app, IPEndPoint local)
    {
        _app = app;
        LocalEndPoint = local;
    }

    /// <summary>Where it listens (with the port the kernel chose, when asked for port 0).</summary>
    public IPEndPoint LocalEndPoint { get; }

    /// <summary>
    /// Binds <paramref name="endPoint"/> and serves the routes <paramref name="map"/> adds. A port in
    /// use or an address the machine does not have throws an <see cref="IOException"/>.
    /// </summary>
    public static async Task<HttpServer> StartAsync(IPEndPoint endPoint, Action<IEndpointRouteBuilder> map, ILoggerFactory loggers,
        X509Certificate2? certificate = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        ArgumentNullException.ThrowIfNull(map);
        ArgumentNullException.ThrowIfNull(loggers);
        // The empty builder: no configuration files, no environment variables, no HTTPS, no
        // static files; only Kestrel and routing.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { ApplicationName = "vnet" });
        builder.Services.AddSingleton<IHostLifetime, NoSignals>();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = StopTimeout);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Logging.AddProvider(new DaemonLog(loggers));
        builder.Services.AddRoutingCore();
        builder.WebHost.UseKestrelCore().ConfigureKestrel(o =>
        {
            o.AddServerHeader = false;
            o.Limits.MaxConcurrentConnections = MaxConnections;
            o.Limits.MaxRequestBodySize = 64 * 1024;
            o.Listen(endPoint, l =>
            {
                // HTTPS with this certificate only (no development certificate, no configuration).
                if (certificate is not null)
                    l.UseHttps(certificate);
            });
        });
        var app = builder.Build();
        try
        {
            map(app);
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            var local = new IPEndPoint(endPoint.Address, new Uri(address).Port);
            return new HttpServer(app, local);
        }
        catch
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Stops serving: requests still running get <see cref="StopTimeout"/>, then their connections close.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        using (var stop = new CancellationTokenSource(StopTimeout))
        {
            try
            {
                await _app.StopAsync(stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }
        await _app.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>The process handles SIGTERM and SIGINT; this host only starts and stops when told.</summary>
    private sealed class NoSignals : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    /// <summary>The server's lines (warnings and errors; the builder filters) go to the daemon's log.</summary>
    private sealed class DaemonLog(ILoggerFactory loggers) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => loggers.CreateLogger("vnet.http");

        public void Dispose()
        {
        }
    }
}
