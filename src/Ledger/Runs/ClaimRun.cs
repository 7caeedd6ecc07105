using FluentValidation;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Infrastructure.OpenApi;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record ClaimRun
{
    /// <summary>Who takes the lease (host, pod, process): shown to operators.</summary>
    public string? Worker { get; init; }

    /// <summary>
    /// The caller's idempotency key for this claim: sent again by the same worker while the lease
    /// it got is live, the claim is answered with that same lease instead of 409 lease-held.
    /// </summary>
    public string? ClaimId { get; init; }

    public sealed class Validator : AbstractValidator<ClaimRun>
    {
        public Validator()
        {
            RuleFor(c => c.Worker).NotEmpty().MaximumLength(200).Printable().When(c => c.Worker is not null);
            RuleFor(c => c.ClaimId).NotEmpty().MaximumLength(200).Printable().When(c => c.ClaimId is not null);
        }
    }
}

/// <summary>The lease, and what the run needs before it can succeed, so that a worker can check before completing.</summary>
public sealed record LeaseGranted(string RunId, string LeaseToken, DateTimeOffset LeaseExpiresAt,
    IReadOnlyList<string> RequiredScores, IReadOnlyList<string> RequiredOutputs, long? ExpectedItems)
{
    public static LeaseGranted For(Run run, string token, DateTimeOffset expires) =>
        new(run.Id, token, expires, [.. run.RequiredScores], [.. run.RequiredOutputs], run.ExpectedItems);
}

public static class ClaimRunEndpoint
{
    [WolverinePost("/api/runs/{id}/claim", Name = "ClaimRun")]
    [JsonBody(typeof(ClaimRun), Optional = true)]
    [Accepts(Credential.AdminKey, Credential.WorkerKey)]
    [Refuses(ProblemCodes.RunNotFound, ProblemCodes.RunTerminal, ProblemCodes.LeaseHeld, Contended = true)]
    [Tags("Runs")]
    [EndpointSummary("Take the run's lease (admin or worker key)")]
    [ProducesResponseType<LeaseGranted>(200)]
    public static async Task<IResult> Post(string id, HttpContext context, RequestGate gate, RejectionLog rejections,
        IValidator<ClaimRun> validator, RunDecisions decisions, LeaseTokens leases, LeaseTokenDerivation derivation,
        TimeProvider clock)
    {
        var admission = await gate.Admit<ClaimRun>(context, validator, [Role.Admin, Role.Worker], runId: id, bodyOptional: true);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        var outcome = await decisions.Decide<object>(id, stream =>
        {
            var run = stream.Aggregate;
            if (run is null) return RunProblems.NotFound(id);
            if (run.Status.IsTerminal()) return RunProblems.Terminal(run);

            var now = clock.GetUtcNow();
            if (run.LeaseExpiresAt is { } expires && expires > now)
            {
                // The same claim again (a retry after a lost answer): the same lease, nothing appended.
                if (SameClaim(run, request, derivation) is { } again) return LeaseGranted.For(run, again, expires);
                return Problem.Of(ProblemCodes.LeaseHeld, "The run is leased to another worker",
                    $"Held by '{run.Worker ?? "an unnamed worker"}' until {expires:O}.", runId: id, runStatus: run.Status);
            }

            string token, nonce = Leases.NewNonce();
            string? claimIdHash = null;
            if (request.ClaimId is { } claimId)
            {
                token = derivation.Derive(id, claimId, nonce);
                claimIdHash = Access.DigestHex(claimId);
            }
            else
            {
                token = Leases.NewToken();
            }
            var claimed = new RunClaimed(request.Worker, Access.DigestHex(token), now, now.AddSeconds(run.LeaseSeconds),
                claimIdHash, claimIdHash is null ? null : nonce);
            stream.AppendOne(claimed);
            return LeaseGranted.For(run, token, claimed.LeaseExpiresAt);
        }, context.RequestAborted);

        return outcome switch
        {
            Problem problem => await rejections.Refuse(context, problem, admission.Raw, request.Worker),
            LeaseGranted granted => Granted(granted, leases),
            _ => throw new InvalidOperationException("unexpected claim outcome"),
        };
    }

    /// <summary>
    /// The live lease's token when this request is the claim that got it: the same claimId (compared
    /// as digests, in constant time) from the same worker. Null otherwise, and also when the token
    /// can no longer be derived (the server secret changed since): then the claim is refused as held.
    /// </summary>
    private static string? SameClaim(Run run, ClaimRun request, LeaseTokenDerivation derivation)
    {
        if (request.ClaimId is not { } claimId || run.ClaimIdHash is not { } held || run.TokenNonce is not { } nonce) return null;
        if (!string.Equals(run.Worker, request.Worker, StringComparison.Ordinal)) return null;
        if (!Access.Matches(Convert.FromHexString(held), Access.Digest(claimId))) return null;
        var token = derivation.Derive(run.Id, claimId, nonce);
        return Leases.Holds(run, Access.DigestHex(token)) ? token : null;
    }

    private static IResult Granted(LeaseGranted granted, LeaseTokens leases)
    {
        leases.Remember(Access.DigestHex(granted.LeaseToken), granted.RunId);
        return Results.Json(granted, LedgerJson.Options);
    }
}

public static class RunProblems
{
    public static Problem NotFound(string runId) =>
        Problem.Of(ProblemCodes.RunNotFound, "No such run", $"No run '{runId}' is registered.", runId: runId);

    public static Problem Terminal(Run run) =>
        Problem.Of(ProblemCodes.RunTerminal, "The run is already finished",
            $"The run is {run.Status.Wire()}{(run.Reason is null ? "" : $" ({run.Reason})")}; nothing can change it. Stop sending events for it.",
            runId: run.Id, runStatus: run.Status);
}
