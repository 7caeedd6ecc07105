using FluentValidation;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Infrastructure.OpenApi;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record CancelRun
{
    public string? Reason { get; init; }

    public sealed class Validator : AbstractValidator<CancelRun>
    {
        public Validator() => RuleFor(c => c.Reason!).NotEmpty().MaximumLength(500).When(c => c.Reason is not null);
    }
}

public sealed record RunCancelledResponse(string RunId, RunStatus Status, string? Reason);

public static class CancelRunEndpoint
{
    [WolverinePost("/api/runs/{id}/cancel", Name = "CancelRun")]
    [JsonBody(typeof(CancelRun), Optional = true)]
    [Accepts(Credential.AdminKey)]
    [Refuses(ProblemCodes.RunNotFound, ProblemCodes.RunTerminal, Contended = true)]
    [Tags("Runs")]
    [EndpointSummary("Cancel a run that has not finished (admin key)")]
    [ProducesResponseType<RunCancelledResponse>(200)]
    public static async Task<IResult> Post(string id, HttpContext context, RequestGate gate, RejectionLog rejections,
        IValidator<CancelRun> validator, RunDecisions decisions, TimeProvider clock)
    {
        var admission = await gate.Admit<CancelRun>(context, validator, [Role.Admin], runId: id, bodyOptional: true);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        var outcome = await Decide(id, request, decisions, clock, context.RequestAborted);

        return outcome switch
        {
            Problem problem => await rejections.Refuse(context, problem, admission.Raw),
            RunCancelledResponse response => Results.Json(response, LedgerJson.Options),
            _ => throw new InvalidOperationException("unexpected cancel outcome"),
        };
    }

    /// <summary>The decision itself, shared by the API and the console: a <see cref="Problem"/> or a <see cref="RunCancelledResponse"/>.</summary>
    public static Task<object> Decide(string id, CancelRun request, RunDecisions decisions, TimeProvider clock, CancellationToken ct) =>
        decisions.Decide<object>(id, stream =>
        {
            var run = stream.Aggregate;
            if (run is null) return RunProblems.NotFound(id);
            if (run.Status.IsTerminal()) return RunProblems.Terminal(run);
            var cancelled = new RunCancelled(request.Reason, clock.GetUtcNow());
            stream.AppendOne(cancelled);
            return new RunCancelledResponse(id, RunStatus.Cancelled, request.Reason ?? "cancelled-by-operator");
        }, ct);
}
