using FluentValidation;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Infrastructure.OpenApi;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Runs;

/// <summary>An operator overrules a terminal verdict, saying why and on what evidence.</summary>
public sealed record ReclassifyRun
{
    public RunStatus? Status { get; init; }
    public string? Reason { get; init; }
    /// <summary>What the decision relies on: eventIds (e.g. the late completion's), log links, ticket ids.</summary>
    public List<string>? Evidence { get; init; }
    public string? Operator { get; init; }

    public sealed class Validator : AbstractValidator<ReclassifyRun>
    {
        public Validator()
        {
            RuleFor(r => r.Status).NotNull().Must(s => s is null || s.Value.IsTerminal())
                .WithMessage("The new status must be terminal: succeeded, failed, lost or cancelled.");
            RuleFor(r => r.Reason).NotEmpty().MaximumLength(500);
            RuleFor(r => r.Evidence).NotEmpty().WithMessage("Name the evidence the decision relies on (e.g. an eventId).");
            RuleFor(r => r.Evidence!.Count).LessThanOrEqualTo(50).OverridePropertyName("evidence").When(r => r.Evidence is not null);
            RuleForEach(r => r.Evidence).NotEmpty().MaximumLength(500);
            RuleFor(r => r.Operator).NotEmpty().MaximumLength(200).Printable().When(r => r.Operator is not null);
        }
    }
}

public static class ReclassifyRunEndpoint
{
    [WolverinePost("/api/runs/{id}/reclassify", Name = "ReclassifyRun")]
    [JsonBody(typeof(ReclassifyRun))]
    [Accepts(Credential.AdminKey)]
    [Refuses(ProblemCodes.RunNotFound, ProblemCodes.RunNotTerminal, ProblemCodes.ReclassifyNoChange, ProblemCodes.IncompleteResults, Contended = true)]
    [Tags("Runs")]
    [EndpointSummary("Overrule a terminal verdict, audited; the earlier verdict is kept (admin key)")]
    [ProducesResponseType<RunView>(200)]
    public static async Task<IResult> Post(string id, HttpContext context, RequestGate gate, RejectionLog rejections,
        IValidator<ReclassifyRun> validator, RunDecisions decisions, TimeProvider clock)
    {
        var admission = await gate.Admit<ReclassifyRun>(context, validator, [Role.Admin], runId: id);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        var outcome = await Decide(id, request, decisions, clock, context.RequestAborted);

        return outcome switch
        {
            Problem problem => await rejections.Refuse(context, problem, admission.Raw),
            RunView view => Results.Json(view, LedgerJson.Options),
            _ => throw new InvalidOperationException("unexpected reclassify outcome"),
        };
    }

    /// <summary>The decision itself, shared by the API and the console: a <see cref="Problem"/> or the <see cref="RunView"/> after it.</summary>
    public static Task<object> Decide(string id, ReclassifyRun request, RunDecisions decisions, TimeProvider clock, CancellationToken ct) =>
        decisions.Decide<object>(id, stream =>
        {
            var run = stream.Aggregate;
            if (run is null) return RunProblems.NotFound(id);
            if (!run.Status.IsTerminal())
            {
                return Problem.Of(ProblemCodes.RunNotTerminal, "Only a terminal verdict can be reclassified",
                    $"The run is {run.Status.Wire()}; cancel it instead.", runId: id, runStatus: run.Status);
            }
            if (run.Status == request.Status)
            {
                return Problem.Of(ProblemCodes.ReclassifyNoChange, "The run already has this status",
                    $"The run is already {run.Status.Wire()}.", runId: id, runStatus: run.Status);
            }
            // Succeeded means complete, even by an operator's hand: the results must be in the run.
            if (request.Status == RunStatus.Succeeded && run.MissingForSuccess() is { Count: > 0 } missing)
            {
                return Problem.Of(ProblemCodes.IncompleteResults, "A run cannot succeed without its results",
                    $"Missing: {string.Join(", ", missing)}.", runId: id, runStatus: run.Status);
            }

            var reclassified = new RunReclassified(run.Status, run.Reason, request.Status!.Value, request.Reason!,
                request.Evidence!, request.Operator, clock.GetUtcNow());
            stream.AppendOne(reclassified);
            var after = RunDecisions.Copy(run);
            after.Apply(reclassified);
            after.Version = run.Version + 1;
            return RunView.From(after);
        }, ct);
}
