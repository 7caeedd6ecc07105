using System.Diagnostics;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;

namespace Ledger.Runs;

/// <summary>The edge of the run endpoints: the one place where a decision's <see cref="Outcome"/> becomes HTTP.</summary>
public static class RunAnswers
{
    /// <summary>
    /// An accepted command is answered 200 with its answer. A refusal is answered with its problem
    /// and kept (with the request's <paramref name="payload"/> and the <paramref name="worker"/> it came
    /// from) as a rejection, under the anomaly it stands for when it flags one. Late events are answered
    /// <c>409 run-terminal</c> with their results; they are not a rejection (nothing was refused), unless
    /// they flag a late completion that could not be recorded.
    /// </summary>
    public static async Task<IResult> ToHttp(this Decision decision, HttpContext context, RejectionLog rejections,
        string runId, ReadOnlyMemory<byte> payload = default, string? worker = null) => decision.Outcome switch
    {
        Outcome.Accepted accepted => Results.Json<object>(accepted.Value, LedgerJson.Options),
        Outcome.Late { Stop.Flag: null } late => ToProblem(late, runId).ToResult(),
        Outcome.Late late => await rejections.Refuse(context, ToProblem(late, runId), payload, worker, late.Stop.Flag),
        Outcome.Refused { Refusal: var refusal } => await rejections.Refuse(context, refusal.ToProblem(runId), payload, worker, refusal.Flag),
        _ => throw new UnreachableException($"an outcome of no known kind: {decision.Outcome.GetType().Name}"),
    };

    private static Problem ToProblem(Outcome.Late late, string runId) => late.Stop.ToProblem(runId) with { Results = late.Results };
}
