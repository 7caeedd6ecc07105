using System.Net;
using System.Net.Sockets;
using System.Threading.RateLimiting;
using Ledger.Contract;
using Microsoft.Extensions.Options;

namespace Ledger.Infrastructure;

/// <summary><c>Ledger:WrongKeys</c>: how many wrong keys a client address may send to /api per window.</summary>
public sealed class WrongKeyOptions
{
    public const string Section = "Ledger:WrongKeys";

    /// <summary>Requests with a key or lease token the ledger does not know, per client address and window; 0 turns the throttle off.</summary>
    public int Limit { get; set; } = 20;
    public int WindowSeconds { get; set; } = 60;
}

/// <summary>
/// Slows down the guessing of keys: a client address (an IPv6 one by its /64) that sent
/// <see cref="WrongKeyOptions.Limit"/> wrong keys to /api within a window is answered
/// <c>429 too-many-wrong-keys</c> with Retry-After for the rest of the window, whatever it sends.
/// Only wrong keys count (a 401 invalid-credentials), never a request with valid credentials nor
/// one without any, so many workers behind one address are throttled only by a wrong key among
/// them. Counts are per node. Behind a proxy the address is the client's only with
/// <c>Ledger:ForwardedHeaders</c> configured.
/// </summary>
public sealed class WrongKeyThrottle : IDisposable
{
    private readonly PartitionedRateLimiter<string>? _limiter;
    private readonly int _windowSeconds;

    public WrongKeyThrottle(IOptions<WrongKeyOptions> options)
    {
        var o = options.Value;
        _windowSeconds = Math.Max(1, o.WindowSeconds);
        if (o.Limit <= 0) return;
        _limiter = PartitionedRateLimiter.Create<string, string>(address => RateLimitPartition.GetFixedWindowLimiter(address, _ =>
            new FixedWindowRateLimiterOptions { PermitLimit = o.Limit, Window = TimeSpan.FromSeconds(_windowSeconds), QueueLimit = 0 }));
    }

    /// <summary>The partition of a client: its IPv4 address, or the /64 of its IPv6 address (one host can hold the whole /64).</summary>
    public static string PartitionOf(IPAddress? address)
    {
        if (address is null) return "unknown";
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (address.AddressFamily != AddressFamily.InterNetworkV6) return address.ToString();
        var bytes = address.GetAddressBytes();
        Array.Clear(bytes, 8, 8);
        return new IPAddress(bytes) + "/64";
    }

    /// <summary>Seconds until the address may try again, or null when it is not throttled.</summary>
    public int? Throttled(string partition)
    {
        if (_limiter is null) return null;
        using var lease = _limiter.AttemptAcquire(partition, 0);
        if (lease.IsAcquired) return null;
        return lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds)) : _windowSeconds;
    }

    public void WrongKey(string partition)
    {
        if (_limiter is null) return;
        using var _ = _limiter.AttemptAcquire(partition, 1);
    }

    public void Dispose() => _limiter?.Dispose();
}

public static class WrongKeyThrottling
{
    public static IServiceCollection AddWrongKeyThrottle(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<WrongKeyOptions>().Bind(configuration.GetSection(WrongKeyOptions.Section))
            .Validate(o => o.Limit >= 0, "Ledger:WrongKeys:Limit must be 0 (off) or more.")
            .Validate(o => o.WindowSeconds >= 1, "Ledger:WrongKeys:WindowSeconds must be at least 1.")
            .ValidateOnStart();
        return services.AddSingleton<WrongKeyThrottle>();
    }

    /// <summary>Before /api is served: a throttled address is refused at once; after: a wrong key is counted.</summary>
    public static IApplicationBuilder UseWrongKeyThrottle(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        if (!context.Request.Path.StartsWithSegments("/api"))
        {
            await next(context);
            return;
        }
        var throttle = context.RequestServices.GetRequiredService<WrongKeyThrottle>();
        var partition = WrongKeyThrottle.PartitionOf(context.Connection.RemoteIpAddress);
        if (throttle.Throttled(partition) is { } seconds)
        {
            await ErrorHandling.Answer(context, Problem.Of(ProblemCodes.TooManyWrongKeys,
                detail: $"This address sent too many keys or lease tokens the ledger does not know; try again in {seconds} s.") with { RetryAfterSeconds = seconds });
            return;
        }
        await next(context);
        if (context.Items[typeof(Problem)] is Problem { Code: ProblemCodes.InvalidCredentials }) throttle.WrongKey(partition);
    });
}
