using System.Security.Cryptography;
using System.Text;
using Ledger.Contract;
using Microsoft.Extensions.Options;

namespace Ledger.Infrastructure;

public enum Role { Admin, Worker, Reader }

/// <summary>
/// Bearer credentials. Keys are held and compared only as SHA-256 digests, in constant time,
/// and never logged.
/// </summary>
public sealed class Access
{
    private readonly byte[]? _admin;
    private readonly byte[][] _workers;
    private readonly byte[][] _readers;

    public Access(IOptions<LedgerOptions> options)
    {
        var o = options.Value;
        _admin = string.IsNullOrWhiteSpace(o.AdminKey) ? null : Digest(o.AdminKey);
        _workers = o.WorkerKeys.Where(k => !string.IsNullOrWhiteSpace(k)).Select(Digest).ToArray();
        _readers = o.ReadKeys.Where(k => !string.IsNullOrWhiteSpace(k)).Select(Digest).ToArray();
    }

    public static byte[] Digest(string secret) => SHA256.HashData(Encoding.UTF8.GetBytes(secret));

    public static string DigestHex(string secret) => Convert.ToHexStringLower(Digest(secret));

    public static string? BearerToken(HttpContext context)
    {
        var header = context.Request.Headers.Authorization.ToString();
        if (header.Length == 0) return null;
        const string scheme = "Bearer ";
        if (!header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return "";
        return header[scheme.Length..].Trim();
    }

    /// <summary>Null when the caller holds one of the allowed roles, else the refusal.</summary>
    public Problem? Require(HttpContext context, params Role[] allowed)
    {
        var token = BearerToken(context);
        if (string.IsNullOrEmpty(token))
        {
            return Problem.Of(ProblemCodes.MissingCredentials,
                "Send `Authorization: Bearer <key>`.");
        }

        var role = RoleOfDigest(Digest(token));
        if (role is null)
        {
            return Problem.Of(ProblemCodes.InvalidCredentials,
                "The bearer key is not one this ledger knows.");
        }
        return allowed.Contains(role.Value)
            ? null
            : Problem.Of(ProblemCodes.Forbidden,
                $"A {role.Value.ToString().ToLowerInvariant()} key cannot do this; it needs one of: {string.Join(", ", allowed.Select(a => a.ToString().ToLowerInvariant()))}.");
    }

    /// <summary>The role of a key given as its digest (the console keeps only the digest in its session), or null.</summary>
    public Role? RoleOfDigest(byte[] digest) =>
        Matches(_admin, digest) ? Role.Admin
        : _workers.Any(w => Matches(w, digest)) ? Role.Worker
        : _readers.Any(r => Matches(r, digest)) ? Role.Reader
        : null;

    /// <summary>What a console session keeps of its key: HMAC-SHA256 of the key's digest under the session's own random salt.</summary>
    public static byte[] SaltedDigest(byte[] salt, byte[] keyDigest) => HMACSHA256.HashData(salt, keyDigest);

    /// <summary>The role of a key known only by <see cref="SaltedDigest"/>, or null (e.g. once the key is removed from the configuration).</summary>
    public Role? RoleOfSalted(byte[] salt, byte[] salted) =>
        _admin is not null && Matches(SaltedDigest(salt, _admin), salted) ? Role.Admin
        : _workers.Any(w => Matches(SaltedDigest(salt, w), salted)) ? Role.Worker
        : _readers.Any(r => Matches(SaltedDigest(salt, r), salted)) ? Role.Reader
        : null;

    /// <summary>True when the token is one of the configured keys, whatever its role.</summary>
    public bool IsKey(string token) => RoleOfDigest(Digest(token)) is not null;

    public static bool Matches(byte[]? expected, byte[] actual) =>
        expected is not null && CryptographicOperations.FixedTimeEquals(expected, actual);
}
