using FluentValidation;
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
        public Validator() => RuleFor(c => c.Reason!).NotEmpty().MaximumLength(500).When(c => c.Reason is not null);
    }
}

public sealed record RunCancelledResponse(string RunId, RunStatus Status, string? Reason);

public static class CancelRunEndpoint
{
    [WolverinePost("/api/runs/{id}/cancel", Name = "CancelRun")]
    [Tags("Runs")]
    [EndpointSummary("Cancel a run that has not finished (admin key)")]
    [ProducesResponseType<RunCancelledResponse>(200)]
    [ProducesResponseType<Problem>(401), ProducesResponseType<Problem>(404), ProducesResponseType<Problem>(409)]
    public static async Task<IResult> Post(string id, HttpContext context, Access access, RejectionLog rejections,
        IValidator<CancelRun> validator, RunDecisions decisions, IOptions<LedgerOptions> options, TimeProvider clock)
    {
        var body = await RequestBody.ReadJsonAsync(context, options.Value.MaxPayloadBytes, allowEmpty: true);
        if (access.Require(context, Role.Admin) is { } denied) return await rejections.Refuse(context, denied with { RunId = id }, body.Raw);
        if (body.Problem is not null) return await rejections.Refuse(context, body.Problem with { RunId = id }, body.Raw);

        var request = new CancelRun();
        if (body.Json is { } json)
        {
            var (bound, problem) = RequestBody.Bind<CancelRun>(json);
            if (problem is not null) return await rejections.Refuse(context, problem with { RunId = id }, body.Raw);
            request = bound!;
        }
        var validation = await validator.ValidateAsync(request, context.RequestAborted);
        if (!validation.IsValid) return await rejections.Refuse(context, RequestBody.Invalid(validation.Errors) with { RunId = id }, body.Raw);

        var outcome = await decisions.Decide<object>(id, stream =>
        {
            var run = stream.Aggregate;
            if (run is null) return RunProblems.NotFound(id);
            if (run.Status.IsTerminal()) return RunProblems.Terminal(run);
            var cancelled = new RunCancelled(request.Reason, clock.GetUtcNow());
            stream.AppendOne(cancelled);
            return new RunCancelledResponse(id, RunStatus.Cancelled, request.Reason ?? "cancelled-by-operator");
        }, context.RequestAborted);

        return outcome switch
        {
            Problem problem => await rejections.Refuse(context, problem, body.Raw),
            RunCancelledResponse response => Results.Json(response, LedgerJson.Options),
            _ => throw new InvalidOperationException("unexpected cancel outcome"),
        };
    }
}
