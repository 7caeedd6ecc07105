using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
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

    public ReclassifyCommand ToCommand(string runId) => new(runId, Status!.Value, Reason!, Evidence!, Operator);

    public sealed class Validator : AbstractValidator<ReclassifyRun>
    {
        public Validator()
        {
            RuleFor(r => r.Status).NotNull().Must(s => s is null || s.Value.IsTerminal())
                .WithMessage($"The new status must be terminal: {RunStatusSets.TerminalInWords}.");
            RuleFor(r => r.Reason).NotEmpty().MaximumLength(InputLimits.MaxReason);
            RuleFor(r => r.Evidence).NotEmpty().WithMessage("Name the evidence the decision relies on (e.g. an eventId).");
            RuleFor(r => r.Evidence!.Count).LessThanOrEqualTo(InputLimits.MaxEvidence).OverridePropertyName("evidence").When(r => r.Evidence is not null);
            RuleForEach(r => r.Evidence).NotEmpty().MaximumLength(InputLimits.MaxReason);
            RuleFor(r => r.Operator).NotEmpty().MaximumLength(InputLimits.MaxName).Printable().When(r => r.Operator is not null);
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
        IValidator<ReclassifyRun> validator, RunWriter writer)
    {
        var admission = await gate.Admit<ReclassifyRun>(context, validator, [Role.Admin], runId: id);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        var decision = await writer.Submit(request.ToCommand(id));
        return await decision.ToHttp(context, rejections, id, admission.Raw);
    }
}
