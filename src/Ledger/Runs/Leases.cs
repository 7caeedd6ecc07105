using System.Security.Cryptography;
using JasperFx.Events;
using Ledger.Infrastructure;
using Marten;
using Marten.Events.Projections;

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

    private static string Base64Url(byte[] bytes) =>
        Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public static bool Holds(Run run, string tokenHash) =>
        run.LeaseTokenHash is { } current &&
        Access.Matches(Convert.FromHexString(current), Convert.FromHexString(tokenHash));

    /// <summary>The refusal for a token that is not this run's current lease.</summary>
    public static async Task<Problem> Mismatch(IDocumentStore store, string runId, RunStatus status, string tokenHash, CancellationToken ct)
    {
        await using var query = store.QuerySession();
        var holder = await query.LoadAsync<LeaseHolder>(tokenHash, ct);
        if (holder is null)
        {
            return Problem.Of(401, ProblemCodes.InvalidCredentials, "The lease token is not recognised",
                "Claim the run to get a lease token.", runId: runId, runStatus: status);
        }
        if (holder.RunId != runId)
        {
            return Problem.Of(403, ProblemCodes.ForeignLease, "The lease token belongs to another run",
                $"This token was issued for run '{holder.RunId}'.", runId: runId, runStatus: status);
        }
        return Problem.Of(409, ProblemCodes.LeaseLost, "The lease was taken over",
            "The run was claimed again after this lease; this worker must stop.", runId: runId, runStatus: status);
    }

    public static Problem Expired(Run run) =>
        Problem.Of(409, ProblemCodes.LeaseExpired, "The lease has expired",
            $"The lease expired at {run.LeaseExpiresAt:O}; events from it are not accepted. Stop working on this run.",
            runId: run.Id, runStatus: run.Status);
}
