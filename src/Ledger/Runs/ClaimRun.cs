using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record ClaimRun
{
    /// <summary>Who takes the lease (host, pod, process): shown to operators.</summary>
    public string? Worker { get; init; }

    /// <summary>
    /// The caller's idempotency key for this claim: sent again by the same worker with the same key
    /// while the lease it got is live, the claim is answered with that same lease instead of 409 lease-held.
    /// </summary>
    public string? ClaimId { get; init; }

    public sealed class Validator : AbstractValidator<ClaimRun>
    {
        public Validator()
        {
            RuleFor(c => c.Worker).NotEmpty().MaximumLength(InputLimits.MaxName).Printable().When(c => c.Worker is not null);
            RuleFor(c => c.ClaimId).NotEmpty().MaximumLength(InputLimits.MaxName).Printable().When(c => c.ClaimId is not null);
        }
    }
}

/// <summary>The lease, and what the run needs before it can succeed, so that a worker can check before completing.</summary>
public sealed record LeaseGranted(string RunId, string LeaseToken, DateTimeOffset LeaseExpiresAt,
    IReadOnlyList<string> RequiredScores, IReadOnlyList<string> RequiredOutputs, long? ExpectedItems) : IAnswer
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
        IValidator<ClaimRun> validator, RunWriter writer, LeaseTokens leases, LeaseTokenDerivation derivation)
    {
        var admission = await gate.Admit<ClaimRun>(context, validator, [Role.Admin, Role.Worker], runId: id, bodyOptional: true);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        var decision = await writer.Submit(new ClaimCommand(id, request.Worker, request.ClaimId, Leases.NewToken(), Leases.NewNonce(), derivation)
        {
            // The gate let only a configured key through: the claimId binds to it.
            KeyHash = derivation.ClaimKeyDigest(id, Access.BearerToken(context)!),
        });
        if (decision.Answer is LeaseGranted granted) leases.Remember(Access.DigestHex(granted.LeaseToken), granted.RunId);
        return await decision.ToHttp(context, rejections, id, admission.Raw, request.Worker);
    }
}
