using System.Security.Claims;
using System.Text.Encodings.Web;
using System.Threading.RateLimiting;
using Ledger.Infrastructure;
using Marten;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace Ledger.Web;

public sealed class ConsoleOptions
{
    public const string Section = "Ledger:Console";
    /// <summary>Sign-in attempts allowed per client address per minute.</summary>
    public int SignInAttemptsPerMinute { get; set; } = 10;
    /// <summary>How long a session lasts without use.</summary>
    public int SessionMinutes { get; set; } = 480;
    /// <summary>How long a session lasts after sign-in, however much it is used.</summary>
    public int SessionAbsoluteMinutes { get; set; } = 720;
}

/// <summary>A signed-in console user: the role of the key they signed in with, and the form token for their posts.</summary>
public sealed record ConsoleSession(Role Role, AntiforgeryField Form)
{
    public bool IsAdmin => Role == Role.Admin;
    public string RoleName => Role == Role.Admin ? "admin" : "reader";
}

public sealed record AntiforgeryField(string Name, string Value);

public static class ConsoleSetup
{
    public const string Scheme = "ledger-console";
    public const string SessionCookie = "ledger-session";
    public const string AntiforgeryCookie = "ledger-antiforgery";
    public const string AntiforgeryField = "__antiforgery";
    public const string SignInPolicy = "console-sign-in";

    public static IServiceCollection AddLedgerConsole(this IServiceCollection services, IConfiguration configuration)
    {
        services.Configure<ConsoleOptions>(configuration.GetSection(ConsoleOptions.Section));
        var options = configuration.GetSection(ConsoleOptions.Section).Get<ConsoleOptions>() ?? new ConsoleOptions();
        services.AddRazorComponents();
        // The console's forms are a key, a reason, a few lines of evidence: a post never needs more.
        services.Configure<Microsoft.AspNetCore.Http.Features.FormOptions>(o =>
        {
            o.ValueLengthLimit = 16 * 1024;
            o.ValueCountLimit = 64;
            o.KeyLengthLimit = 256;
            o.MultipartBodyLengthLimit = 64 * 1024;
        });

        // The key ring in PostgreSQL, encrypted at rest when a certificate is configured (KeyRingProtection).
        services.AddLedgerKeyRing(configuration);

        services.AddAntiforgery(o =>
        {
            o.Cookie.Name = AntiforgeryCookie;
            o.Cookie.SameSite = SameSiteMode.Strict;
            o.Cookie.HttpOnly = true;
            o.Cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest;
            o.FormFieldName = AntiforgeryField;
            o.HeaderName = null;
        });

        services.AddAuthentication().AddCookie(Scheme, o =>
        {
            o.Cookie.Name = SessionCookie;
            o.Cookie.HttpOnly = true;
            o.Cookie.SameSite = SameSiteMode.Lax;
            o.Cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest;
            o.ExpireTimeSpan = TimeSpan.FromMinutes(Math.Max(1, options.SessionMinutes));
            o.SlidingExpiration = true;
        });
        // Sessions are rows in PostgreSQL; the cookie holds only a token naming one (ConsoleSessionStore),
        // which also ends a session whose key was removed from the configuration.
        // The console's two tables: its sessions, and the Data Protection key ring (KeyRingProtection).
        services.ConfigureMarten(o =>
        {
            o.Schema.For<ConsoleSessionRecord>();
            o.Schema.For<DataProtectionKey>();
        });
        services.AddSingleton<ConsoleSessionStore>();
        services.AddOptions<CookieAuthenticationOptions>(Scheme).Configure<ConsoleSessionStore>((o, store) => o.SessionStore = store);

        services.AddRateLimiter(o =>
        {
            o.AddPolicy(SignInPolicy, context => RateLimitPartition.GetFixedWindowLimiter(
                context.Connection.RemoteIpAddress?.ToString() ?? "unknown",
                _ => new FixedWindowRateLimiterOptions
                {
                    PermitLimit = Math.Max(1, options.SignInAttemptsPerMinute), Window = TimeSpan.FromMinutes(1), QueueLimit = 0,
                }));
            o.OnRejected = async (context, ct) =>
            {
                context.HttpContext.Response.Headers.RetryAfter = "60";
                await ConsoleHtml.WriteError(context.HttpContext, StatusCodes.Status429TooManyRequests, "Too many sign-in attempts",
                    "Wait a minute before trying again.");
            };
        });
        return services;
    }

    /// <summary>The headers every console answer carries: no inline script, no framing, no caching of run data.</summary>
    public static IApplicationBuilder UseConsoleHeaders(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        if (ConsolePaths.IsConsole(context))
        {
            context.Response.OnStarting(() =>
            {
                var headers = context.Response.Headers;
                headers.ContentSecurityPolicy =
                    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
                headers.XContentTypeOptions = "nosniff";
                headers.XFrameOptions = "DENY";
                headers["Referrer-Policy"] = "no-referrer";
                if (!context.Request.Path.Equals("/console.css")) headers.CacheControl = "no-store";
                return Task.CompletedTask;
            });
        }
        await next(context);
    });

    /// <summary>The session of this request, or null; also makes its user the request's user (antiforgery tokens are bound to it).</summary>
    public static async Task<ConsoleSession?> SessionOf(HttpContext context)
    {
        var result = await context.AuthenticateAsync(Scheme);
        if (!result.Succeeded || result.Principal is null) return null;
        context.User = result.Principal;
        var role = Enum.TryParse<Role>(result.Principal.FindFirstValue(ClaimTypes.Role), out var r) ? r : (Role?)null;
        if (role is not (Role.Admin or Role.Reader)) return null;
        return new ConsoleSession(role.Value, Form(context));
    }

    public static AntiforgeryField Form(HttpContext context)
    {
        var tokens = context.RequestServices.GetRequiredService<IAntiforgery>().GetAndStoreTokens(context);
        return new AntiforgeryField(tokens.FormFieldName, tokens.RequestToken!);
    }

    /// <summary>Opens a session for a read key or the admin key; null when the key is neither (a worker key included).</summary>
    public static async Task<Role?> SignIn(HttpContext context, Access access, string key)
    {
        var digest = Access.Digest(key);
        var role = access.RoleOfDigest(digest);
        if (role is not (Role.Admin or Role.Reader)) return null;
        var identity = new ClaimsIdentity(
        [
            // A fresh id per sign-in: antiforgery tokens are bound to this session, not just to the role.
            new Claim(ClaimTypes.NameIdentifier, Guid.NewGuid().ToString("N")),
            new Claim(ClaimTypes.Role, role.Value.ToString()),
            .. ConsoleSessionStore.KeyClaims(digest),
        ], Scheme, ClaimTypes.NameIdentifier, ClaimTypes.Role);
        await context.SignInAsync(Scheme, new ClaimsPrincipal(identity));
        return role;
    }

    /// <summary>Ends the session: its row is deleted, so a copy of the cookie no longer opens it.</summary>
    public static Task SignOut(HttpContext context) => context.SignOutAsync(Scheme);

    /// <summary>True when the post carries the antiforgery token of this session.</summary>
    public static async Task<bool> Genuine(HttpContext context)
    {
        try
        {
            await context.RequestServices.GetRequiredService<IAntiforgery>().ValidateRequestAsync(context);
            return true;
        }
        catch (Exception e) when (e is AntiforgeryValidationException or InvalidDataException or IOException)
        {
            // No token, a foreign one, or a form too large or malformed to read (FormOptions below): nothing is done.
            return false;
        }
    }
}

/// <summary>HTML answers written without a component: error pages from middleware.</summary>
public static class ConsoleHtml
{
    public static async Task WriteError(HttpContext context, int status, string title, string detail)
    {
        var e = HtmlEncoder.Default;
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/html; charset=utf-8";
        await context.Response.WriteAsync($"""
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>{e.Encode(title)} · Run Ledger</title><link rel="stylesheet" href="/console.css"></head>
            <body><main><h1>{e.Encode(title)}</h1><p class="error">{e.Encode(detail)}</p><p><a href="/runs">Runs</a> · <a href="/">Sign in</a></p></main></body></html>
            """);
    }
}
