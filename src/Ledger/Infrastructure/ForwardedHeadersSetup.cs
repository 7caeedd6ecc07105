using System.Net;
using Microsoft.AspNetCore.HttpOverrides;
using IPNetwork = System.Net.IPNetwork;

namespace Ledger.Infrastructure;

/// <summary>
/// <c>Ledger:ForwardedHeaders</c>: the reverse proxies whose X-Forwarded-For and X-Forwarded-Proto
/// are believed. With none configured the headers are ignored (anybody could send them).
/// </summary>
public sealed class ForwardedHeadersSettings
{
    public const string Section = "Ledger:ForwardedHeaders";

    /// <summary>Addresses of the proxies in front of the ledger, e.g. 10.0.0.5 (127.0.0.1 for one on the same machine).</summary>
    public List<string> KnownProxies { get; set; } = [];
    /// <summary>Networks of such proxies in CIDR form, e.g. 10.0.0.0/24.</summary>
    public List<string> KnownNetworks { get; set; } = [];
    /// <summary>How many proxies in a row are unwrapped.</summary>
    public int ForwardLimit { get; set; } = 1;

    public bool Configured => KnownProxies.Any(p => !string.IsNullOrWhiteSpace(p)) || KnownNetworks.Any(n => !string.IsNullOrWhiteSpace(n));
}

public static class ForwardedHeadersSetup
{
    /// <summary>
    /// When proxies are configured, the request's scheme and client address become the original
    /// ones they forward: the console's cookies are then Secure when the browser used HTTPS, and
    /// the per-address limits see the client. (ASP.NET's ASPNETCORE_FORWARDEDHEADERS_ENABLED=true,
    /// which believes any sender, keeps working as documented by ASP.NET.)
    /// </summary>
    public static IServiceCollection AddLedgerForwardedHeaders(this IServiceCollection services, IConfiguration configuration)
    {
        if (Read(configuration) is not var (settings, proxies, networks)) return services;
        services.Configure<ForwardedHeadersOptions>(o =>
        {
            o.ForwardedHeaders = ForwardedHeaders.XForwardedFor | ForwardedHeaders.XForwardedProto;
            o.ForwardLimit = Math.Max(1, settings.ForwardLimit);
            // Only the configured ones: not even loopback by default.
            o.KnownProxies.Clear();
            o.KnownIPNetworks.Clear();
            foreach (var proxy in proxies) o.KnownProxies.Add(proxy);
            foreach (var network in networks) o.KnownIPNetworks.Add(network);
        });
        services.AddSingleton(settings);
        return services;
    }

    /// <summary>The configured proxies, or null when there are none; a plain refusal (exit 2) for an entry that is not an address or network.</summary>
    public static (ForwardedHeadersSettings Settings, List<IPAddress> Proxies, List<IPNetwork> Networks)? Read(IConfiguration configuration)
    {
        var settings = configuration.GetSection(ForwardedHeadersSettings.Section).Get<ForwardedHeadersSettings>() ?? new ForwardedHeadersSettings();
        if (!settings.Configured) return null;
        var proxies = settings.KnownProxies.Where(p => !string.IsNullOrWhiteSpace(p)).Select(p => IPAddress.TryParse(p.Trim(), out var a) ? a : throw Refused("KnownProxies", p, "address")).ToList();
        var networks = settings.KnownNetworks.Where(n => !string.IsNullOrWhiteSpace(n)).Select(n => IPNetwork.TryParse(n.Trim(), out var net) ? net : throw Refused("KnownNetworks", n, "network in CIDR form (10.0.0.0/24)")).ToList();
        return (settings, proxies, networks);
    }

    public static IApplicationBuilder UseLedgerForwardedHeaders(this IApplicationBuilder app) =>
        app.ApplicationServices.GetService<ForwardedHeadersSettings>() is not null ? app.UseForwardedHeaders() : app;

    private static StartupFailureException Refused(string setting, string value, string what) =>
        new(StartupFailure.Configuration, $"Ledger:ForwardedHeaders:{setting} holds '{value}', which is not an IP {what}.");
}
