using Ledger.Contract;
using Ledger.Infrastructure;
using Marten;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record LeaseView(string? Worker, DateTimeOffset? ExpiresAt, int Claims);
public sealed record ItemsView(long? Expected, long? ReportedTotal, long Committed, long Chunks);

/// <summary>The run as a reader sees it: status, why, and what is still missing.</summary>
public sealed record RunView(
    string RunId,
    RunStatus Status,
    string? Reason,
    long Version,
    string? Board,
    string? Participant,
    string? Batch,
    IReadOnlyDictionary<string, string> Labels,
    LeaseView Lease,
    bool CompletionReported,
    IReadOnlyList<string> Missing,
    IReadOnlyList<string> RequiredScores,
    IReadOnlyList<string> RequiredOutputs,
    IReadOnlyDictionary<string, double> Scores,
    IReadOnlyDictionary<string, RunOutput> Outputs,
    ItemsView Items,
    IReadOnlyList<RunStep> Steps,
    long LogLines,
    string? ErrorClass,
    string? ErrorMessage,
    IReadOnlyList<string> Warnings,
    IReadOnlyList<RunAnomaly> Anomalies,
    IReadOnlyList<RunObservation> Observations,
    IReadOnlyList<Verdict> Verdicts,
    DateTimeOffset RegisteredAt,
    DateTimeOffset? ClaimedAt,
    DateTimeOffset? StartedAt,
    DateTimeOffset? LastEventAt,
    DateTimeOffset? TerminalAt) : IAnswer
{
    public static RunView From(Run run) => new(
        run.Id, run.Status, run.Reason, run.Version, run.Board, run.Participant, run.Batch, run.Labels,
        new LeaseView(run.Worker, run.LeaseExpiresAt, run.Claims),
        run.CompletionReported,
        run.Status == RunStatus.Succeeded ? [] : run.MissingForSuccess(),
        run.RequiredScores, run.RequiredOutputs, run.Scores, run.Outputs,
        new ItemsView(run.ExpectedItems, run.ItemsTotalReported, run.CommittedItems, run.CommittedChunks),
        run.Steps.Values.OrderBy(s => s.StartedAt).ThenBy(s => s.StepId, StringComparer.Ordinal).ToList(),
        run.LogLines, run.ErrorClass, run.ErrorMessage, run.Warnings, run.Anomalies, run.Observations, run.Verdicts,
        run.RegisteredAt, run.ClaimedAt, run.StartedAt, run.LastEventAt, run.TerminalAt);
}

public static class GetRunEndpoint
{
    [WolverineGet("/api/runs/{id}", Name = "GetRun")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Refuses(ProblemCodes.RunNotFound)]
    [Tags("Runs")]
    [EndpointSummary("The run's current state (admin or read key)")]
    [ProducesResponseType<RunView>(200)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, IDocumentStore store)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        await using var session = store.QuerySession();
        var run = await session.LoadAsync<Run>(id, context.RequestAborted);
        return run is null ? RunDecider.NotFound(id).ToProblem(id).ToResult() : Results.Json(RunView.From(run), LedgerJson.Options);
    }
}
