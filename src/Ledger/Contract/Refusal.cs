namespace Ledger.Contract;

/// <summary>
/// A refusal, as the decision states it: a code of the refusal catalogue and the words for the
/// caller. How it travels (an HTTP status, a page) is the edge's business.
/// </summary>
public sealed record Refusal(string Code, string Detail, RunStatus? RunStatus = null)
{
    public string? EventId { get; init; }
    /// <summary>The anomaly the refusal stands for, kept with it instead of <c>rejected</c>: a late completion that could not be recorded.</summary>
    public string? Flag { get; init; }
}

public static class Refusals
{
    /// <summary>A decision's refusal as problem details: its title, status and retryability come from the catalogue.</summary>
    public static Problem ToProblem(this Refusal refusal, string runId) =>
        Problem.Of(refusal.Code, refusal.Detail, runId, refusal.RunStatus) with
        {
            EventId = refusal.EventId,
        };
}
