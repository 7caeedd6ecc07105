using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Microsoft.Extensions.Options;

namespace Ledger.Infrastructure;

/// <summary>A request that passed the gate, or the refusal (already kept in the rejection log) to answer with.</summary>
public sealed record Admission<T>(T? Request, byte[] Raw, IResult? Refusal) where T : class;

/// <summary>
/// What every write endpoint does first, in one order: read the body within the size limit,
/// check the caller's key, bind the JSON and validate it. Each refusal is logged and kept.
/// </summary>
public sealed class RequestGate(Access access, RejectionLog rejections, IOptions<LedgerOptions> options, IRunLookup runs)
{
    public async Task<Admission<T>> Admit<T>(HttpContext context, IValidator<T> validator, Role[] roles,
        string? runId = null, bool bodyOptional = false) where T : class, new()
    {
        // Credentials first: a caller without them learns nothing, and its body is never read.
        if (access.Require(context, roles) is { } denied)
        {
            return new(null, [], await rejections.Refuse(context, runId is null ? denied : denied with { RunId = runId }));
        }
        var body = await RequestBody.ReadJsonAsync(context, options.Value.MaxPayloadBytes, allowEmpty: bodyOptional);
        if (body.Problem is not null) return await Refuse<T>(context, body.Problem, body.Raw, runId);

        var request = new T();
        if (body.Json is { } json)
        {
            var (bound, problem) = RequestBody.Bind<T>(json);
            if (problem is not null) return await Refuse<T>(context, problem, body.Raw, runId);
            request = bound!;
        }

        var validation = await validator.ValidateAsync(request, context.RequestAborted);
        return validation.IsValid
            ? new Admission<T>(request, body.Raw, null)
            : await Refuse<T>(context, RequestBody.Invalid(validation.Errors), body.Raw, runId);
    }

    private async Task<Admission<T>> Refuse<T>(HttpContext context, Problem problem, byte[] raw, string? runId) where T : class =>
        new(null, raw, await rejections.Refuse(context, runId is null ? problem : await OnRun(problem, runId), raw));

    /// <summary>
    /// A refusal on an authenticated caller's request about a run carries the run's current
    /// status, so that a worker can tell "fix the request" from "stop, the run is over".
    /// </summary>
    public async Task<Problem> OnRun(Problem problem, string runId)
    {
        if (problem.RunStatus is not null) return problem with { RunId = runId };
        return problem with { RunId = runId, RunStatus = await runs.StatusOf(runId, CancellationToken.None) };
    }
}
