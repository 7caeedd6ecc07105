using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using JasperFx.Events;
using Ledger.Contract;
using Ledger.Infrastructure;
using Marten;
using Marten.Events.Projections;
using Microsoft.Extensions.Options;

namespace Ledger.Runs;

/// <summary>Which run a lease token digest was issued for: tells a foreign token (403) from a forged one (401).</summary>
public sealed class LeaseHolder
{
    public string Id { get; set; } = "";
    public string RunId { get; set; } = "";
    public DateTimeOffset IssuedAt { get; set; }
}

public sealed partial class LeaseHolderProjection : EventProjection
{
    public LeaseHolder Create(IEvent<RunClaimed> e) => new()
    {
        Id = e.Data.LeaseTokenHash,
        RunId = e.StreamKey ?? e.StreamId.ToString(),
        IssuedAt = e.Data.ClaimedAt,
    };
}

public static class Leases
{
    public static string NewToken() => "lt_" + Base64Url(RandomNumberGenerator.GetBytes(32));

    /// <summary>A fresh random value a claim's token is derived from, kept in the claim's event.</summary>
    public static string NewNonce() => Base64Url(RandomNumberGenerator.GetBytes(16));

    internal static string Base64Url(byte[] bytes) =>
        Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public static bool Holds(Run run, string tokenHash) =>
        run.LeaseTokenHash is { } current &&
        Access.Matches(Convert.FromHexString(current), Convert.FromHexString(tokenHash));
}

/// <summary>
/// Authenticates a lease token before anything else about the request is looked at. A token
/// maps to the run it was issued for, forever, so the mapping is cached (bounded); the cache
/// misses read the inline <see cref="LeaseHolder"/> document. The answers disclose nothing about
/// the run in the path: an unknown token is the same 401 whether or not that run exists.
/// </summary>
public sealed class LeaseTokens(IDocumentStore store)
{
    /// <summary>
    /// Tokens kept. An entry costs about 260 bytes (the digest, the run id and the dictionary's
    /// node), so 10,000 is about 2.5 MB: far more tokens than leases are held at once on one node.
    /// Every claim adds one, so the cache fills over hours whatever the load; when full it is
    /// emptied, and each lease still in use costs one primary-key read to be cached again.
    /// (At 100,000 it grew to about 25 MB before it was emptied: a tenth of the memory target.)
    /// </summary>
    internal const int Capacity = 10_000;
    private readonly ConcurrentDictionary<string, string> _runOf = new(StringComparer.Ordinal);

    /// <summary>Tokens cached now.</summary>
    internal int Cached => _runOf.Count;

    public void Remember(string tokenHash, string runId)
    {
        if (_runOf.Count >= Capacity) _runOf.Clear();
        _runOf[tokenHash] = runId;
    }

    /// <summary>The run a token was issued for, or null for a token this ledger never issued.</summary>
    public async Task<string?> RunOf(string tokenHash, CancellationToken ct)
    {
        if (_runOf.TryGetValue(tokenHash, out var runId)) return runId;
        await using var query = store.QuerySession();
        var holder = await query.LoadAsync<LeaseHolder>(tokenHash, ct);
        if (holder is null) return null;
        Remember(tokenHash, holder.RunId);
        return holder.RunId;
    }

    /// <summary>The token's digest when it was issued for <paramref name="runId"/>; otherwise the 401 or 403.</summary>
    public async Task<(string? TokenHash, Problem? Refusal)> Authenticate(HttpContext context, string runId)
    {
        var token = Access.BearerToken(context);
        if (string.IsNullOrEmpty(token))
        {
            return (null, Problem.Of(ProblemCodes.MissingCredentials,
                "Send `Authorization: Bearer <leaseToken>` from the claim."));
        }
        var tokenHash = Access.DigestHex(token);
        var owner = await RunOf(tokenHash, context.RequestAborted);
        if (owner is null)
        {
            return (null, Problem.Of(ProblemCodes.InvalidCredentials,
                "Claim the run to get a lease token."));
        }
        return owner == runId
            ? (tokenHash, null)
            : (null, Problem.Of(ProblemCodes.ForeignLease, detail: $"This token was issued for run '{owner}', not for this one."));
    }
}

/// <summary>
/// Lease tokens of claims that carry a <c>claimId</c>: <c>lt_</c> + HMAC-SHA256 over
/// (run id, claimId, a random nonce of that claim), keyed by a server secret. The ledger keeps
/// only the token's digest, the claimId's digest and the nonce, so neither the database nor the
/// run's history holds what is needed to rebuild a token: that takes the claimId, which only the
/// claiming worker sent, and the server key, which is never stored. A retry of the same claim
/// brings the claimId again, and the same token is derived and checked against the stored digest.
/// </summary>
public sealed class LeaseTokenDerivation
{
    private static readonly byte[] Purpose = "run-ledger lease tokens v1"u8.ToArray();
    private static readonly byte[] ClaimKeyPurpose = "run-ledger claim key digests v1"u8.ToArray();
    private readonly byte[] _key;
    private readonly byte[] _claimKey;

    public LeaseTokenDerivation(IOptions<LedgerOptions> options)
    {
        var secret = options.Value.LeaseTokenSecret is { Length: > 0 } configured ? configured : options.Value.AdminKey ?? "";
        _key = HKDF.DeriveKey(HashAlgorithmName.SHA256, Encoding.UTF8.GetBytes(secret), 32, salt: [], info: Purpose);
        _claimKey = HKDF.DeriveKey(HashAlgorithmName.SHA256, Encoding.UTF8.GetBytes(secret), 32, salt: [], info: ClaimKeyPurpose);
    }

    /// <summary>
    /// The digest a claim with a claimId keeps of the key it was made with, so that only that key can
    /// retry it: HMAC-SHA256 over (run id, key), keyed by a secret of its own derived as the tokens' is.
    /// Keyed and bound to the run, it tells whoever reads the history or the database nothing about the
    /// key (an unkeyed digest of a key could be tested against guesses, and would be the same in every run).
    /// </summary>
    public string ClaimKeyDigest(string runId, string key) =>
        Convert.ToHexStringLower(HMACSHA256.HashData(_claimKey, Encoding.UTF8.GetBytes($"{runId}\n{key}")));

    /// <summary>The token for this claim. Run ids and claim ids hold no control characters, so the separator is unambiguous.</summary>
    public string Derive(string runId, string claimId, string nonce) =>
        "lt_" + Leases.Base64Url(HMACSHA256.HashData(_key, Encoding.UTF8.GetBytes($"{runId}\n{claimId}\n{nonce}")));
}
