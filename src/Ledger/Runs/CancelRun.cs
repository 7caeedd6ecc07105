using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record CancelRun
{
    public string? Reason { get; init; }

    public sealed class Validator : AbstractValidator<CancelRun>
    {
        public Validator() => RuleFor(c => c.Reason!).NotEmpty().MaximumLength(InputLimits.MaxReason).When(c => c.Reason is not null);
    }
}

public sealed record RunCancelledResponse(string RunId, RunStatus Status, string? Reason) : IAnswer;

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
        IValidator<CancelRun> validator, RunWriter writer)
    {
        var admission = await gate.Admit<CancelRun>(context, validator, [Role.Admin], runId: id, bodyOptional: true);
        if (admission.Refusal is not null) return admission.Refusal;
        var request = admission.Request!;

        var decision = await writer.Submit(new CancelCommand(id, request.Reason));
        return await decision.ToHttp(context, rejections, id, admission.Raw);
    }
}
