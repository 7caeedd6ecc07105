using System.Security.Claims;
using System.Security.Cryptography;
using Ledger.Infrastructure;
using Marten;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.Extensions.Options;

namespace Ledger.Web;

/// <summary>
/// A console session as PostgreSQL holds it (every node reads the same rows). The cookie carries
/// only a random token; the row is found by the token's SHA-256, so a database reader cannot
/// turn a row into a cookie. Of the key it keeps only HMAC-SHA256(salt, SHA-256(key)) under a
/// salt of its own: enough to end the session when the key leaves the configuration, nothing to
/// sign in with.
/// </summary>
public sealed class ConsoleSessionRecord
{
    /// <summary>Lower-case hex SHA-256 of the session token (the token itself is only in the cookie).</summary>
    public string Id { get; set; } = "";
    public Role Role { get; set; }
    /// <summary>Base64 HMAC-SHA256 of the key's SHA-256 digest under <see cref="Salt"/> (<see cref="Access.SaltedDigest"/>).</summary>
    public string KeyDigest { get; set; } = "";
    public string Salt { get; set; } = "";
    /// <summary>A random id the antiforgery tokens of this session are bound to.</summary>
    public string Subject { get; set; } = "";
    public DateTimeOffset CreatedAt { get; set; }
    public DateTimeOffset LastSeenAt { get; set; }
    /// <summary>When the sliding lifetime was last renewed.</summary>
    public DateTimeOffset RenewedAt { get; set; }
    /// <summary>The end of the sliding lifetime (<c>Ledger:Console:SessionMinutes</c> after the last renewal), never past <see cref="ExpiresAt"/>.</summary>
    public DateTimeOffset IdleExpiresAt { get; set; }
    /// <summary>The absolute end (<c>Ledger:Console:SessionAbsoluteMinutes</c> after sign-in), whatever the use.</summary>
    public DateTimeOffset ExpiresAt { get; set; }
}

/// <summary>
/// The cookie handler's session store (<see cref="CookieAuthenticationOptions.SessionStore"/>):
/// sign-in writes a row, every request reads it, sign-out deletes it, so a copy of the cookie
/// dies with the session. A session ends at its sliding or its absolute lifetime, or when its key
/// is no longer configured. Rows past their end are deleted at each sign-in.
/// </summary>
public sealed class ConsoleSessionStore(IDocumentStore store, Access access, TimeProvider clock, IOptions<ConsoleOptions> options) : ITicketStore
{
    public const string KeyDigestClaim = "ledger:key-digest";
    public const string KeySaltClaim = "ledger:key-salt";
    /// <summary>A row's last use is written at most this often.</summary>
    private static readonly TimeSpan LastSeenResolution = TimeSpan.FromMinutes(1);

    private TimeSpan Sliding => TimeSpan.FromMinutes(Math.Max(1, options.Value.SessionMinutes));
    private TimeSpan Absolute => TimeSpan.FromMinutes(Math.Max(1, options.Value.SessionAbsoluteMinutes));

    public static string IdOf(string token) => Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(token)));

    public async Task<string> StoreAsync(AuthenticationTicket ticket)
    {
        var principal = ticket.Principal;
        var role = Enum.Parse<Role>(principal.FindFirstValue(ClaimTypes.Role)!);
        var token = Base64Url(RandomNumberGenerator.GetBytes(32));
        var now = clock.GetUtcNow();
        var expires = now + Absolute;
        await using var session = store.LightweightSession();
        session.DeleteWhere<ConsoleSessionRecord>(s => s.ExpiresAt <= now || s.IdleExpiresAt <= now);
        session.Store(new ConsoleSessionRecord
        {
            Id = IdOf(token),
            Role = role,
            KeyDigest = principal.FindFirstValue(KeyDigestClaim)!,
            Salt = principal.FindFirstValue(KeySaltClaim)!,
            Subject = principal.FindFirstValue(ClaimTypes.NameIdentifier)!,
            CreatedAt = now,
            LastSeenAt = now,
            RenewedAt = now,
            IdleExpiresAt = Min(now + Sliding, expires),
            ExpiresAt = expires,
        });
        await session.SaveChangesAsync();
        return token;
    }

    public async Task<AuthenticationTicket?> RetrieveAsync(string key)
    {
        await using var session = store.LightweightSession();
        var record = await session.LoadAsync<ConsoleSessionRecord>(IdOf(key));
        if (record is null) return null;
        var now = clock.GetUtcNow();
        var role = access.RoleOfSalted(Convert.FromBase64String(record.Salt), Convert.FromBase64String(record.KeyDigest));
        if (now >= record.ExpiresAt || now >= record.IdleExpiresAt || role != record.Role)
        {
            // Over, or its key was removed from the configuration (or given another role).
            session.Delete(record);
            await session.SaveChangesAsync();
            return null;
        }
        if (now - record.LastSeenAt >= LastSeenResolution)
        {
            record.LastSeenAt = now;
            session.Store(record);
            await session.SaveChangesAsync();
        }
        return Ticket(record);
    }

    public async Task RenewAsync(string key, AuthenticationTicket ticket)
    {
        await using var session = store.LightweightSession();
        var record = await session.LoadAsync<ConsoleSessionRecord>(IdOf(key));
        if (record is null) return;
        var now = clock.GetUtcNow();
        record.RenewedAt = ticket.Properties.IssuedUtc ?? now;
        record.IdleExpiresAt = Min(ticket.Properties.ExpiresUtc ?? now + Sliding, record.ExpiresAt);
        record.LastSeenAt = now;
        session.Store(record);
        await session.SaveChangesAsync();
    }

    public async Task RemoveAsync(string key)
    {
        await using var session = store.LightweightSession();
        session.Delete<ConsoleSessionRecord>(IdOf(key));
        await session.SaveChangesAsync();
    }

    /// <summary>The request's user as the console sees it: the session's subject and role; nothing of the key.</summary>
    private static AuthenticationTicket Ticket(ConsoleSessionRecord record)
    {
        var identity = new ClaimsIdentity(
        [
            new Claim(ClaimTypes.NameIdentifier, record.Subject),
            new Claim(ClaimTypes.Role, record.Role.ToString()),
        ], ConsoleSetup.Scheme, ClaimTypes.NameIdentifier, ClaimTypes.Role);
        var properties = new AuthenticationProperties
        {
            IssuedUtc = record.RenewedAt,
            ExpiresUtc = Min(record.IdleExpiresAt, record.ExpiresAt),
            AllowRefresh = true,
        };
        return new AuthenticationTicket(new ClaimsPrincipal(identity), properties, ConsoleSetup.Scheme);
    }

    /// <summary>The claims sign-in passes to <see cref="StoreAsync"/> (they reach the row, never the cookie).</summary>
    public static IEnumerable<Claim> KeyClaims(byte[] keyDigest)
    {
        var salt = RandomNumberGenerator.GetBytes(16);
        yield return new Claim(KeySaltClaim, Convert.ToBase64String(salt));
        yield return new Claim(KeyDigestClaim, Convert.ToBase64String(Access.SaltedDigest(salt, keyDigest)));
    }

    private static DateTimeOffset Min(DateTimeOffset a, DateTimeOffset b) => a < b ? a : b;

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
