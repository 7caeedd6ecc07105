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

    public sealed class Validator : AbstractValidator<ClaimRun>
    {
        public Validator() => RuleFor(c => c.Worker).NotEmpty().MaximumLength(200).Printable().When(c => c.Worker is not null);
    }
}

public sealed record LeaseGranted(string RunId, string LeaseToken, DateTimeOffset LeaseExpiresAt);

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
        IValidator<ClaimRun> validator, RunDecisions decisions, LeaseTokens leases, TimeProvider clock)
    {
        var admission = await gate.Admit<ClaimRun>(context, validator, [Role.Admin, Role.Worker], runId: id, bodyOptional: true);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        var token = Leases.NewToken();
        var tokenHash = Access.DigestHex(token);
        var outcome = await decisions.Decide<object>(id, stream =>
        {
            var run = stream.Aggregate;
            if (run is null) return RunProblems.NotFound(id);
            if (run.Status.IsTerminal()) return RunProblems.Terminal(run);

            var now = clock.GetUtcNow();
            if (run.LeaseExpiresAt is { } expires && expires > now)
            {
                return Problem.Of(ProblemCodes.LeaseHeld, "The run is leased to another worker",
                    $"Held by '{run.Worker ?? "an unnamed worker"}' until {expires:O}.", runId: id, runStatus: run.Status);
            }

            var claimed = new RunClaimed(request.Worker, tokenHash, now, now.AddSeconds(run.LeaseSeconds));
            stream.AppendOne(claimed);
            return new LeaseGranted(id, token, claimed.LeaseExpiresAt);
        }, context.RequestAborted);

        return outcome switch
        {
            Problem problem => await rejections.Refuse(context, problem, admission.Raw, request.Worker),
            LeaseGranted granted => Granted(granted, tokenHash, leases),
            _ => throw new InvalidOperationException("unexpected claim outcome"),
        };
    }

    private static IResult Granted(LeaseGranted granted, string tokenHash, LeaseTokens leases)
    {
        leases.Remember(tokenHash, granted.RunId);
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
