using System.Text.Json;
using Ledger.Contract;
using Ledger.Infrastructure;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record HistoryEntry(
    long Sequence,
    long Version,
    string Type,
    DateTimeOffset? OccurredAt,
    DateTimeOffset RecordedAt,
    string? EventId,
    EventResultKind Result,
    string? Reason,
    string? Detail,
    RunStatus StatusAfter,
    JsonElement Data);

/// <summary>
/// One page of a run's history: the events after version <c>after</c>, at most <c>limit</c> of
/// them. <c>status</c> and <c>version</c> are the run's now; <c>next</c> is the <c>after</c> of the
/// following page, null on the last one. <c>archived</c> is true when the run's events (up to a
/// version) were read from its archive rather than from PostgreSQL, and absent otherwise.
/// </summary>
public sealed record RunHistory(string RunId, RunStatus Status, long Version, IReadOnlyList<HistoryEntry> Events, long? Next, bool? Archived = null);

public static class GetRunHistoryEndpoint
{
    [WolverineGet("/api/runs/{id}/events", Name = "GetRunHistory")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Refuses(ProblemCodes.RunNotFound, ProblemCodes.RunArchived)]
    [Tags("Runs")]
    [EndpointSummary("Every event of the run, when it occurred and was recorded, and what applying it did, paged by version (?after=V&limit=N)")]
    [ProducesResponseType<RunHistory>(200)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, RunHistoryReader history, long? after, int? limit)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var from = after ?? 0;
        var size = limit ?? DefaultLimit;
        await using var reading = await history.OpenAsync(id, from, null, context.RequestAborted);
        if (reading.Current is not { } run) return RunDecider.NotFound(id).ToProblem(id).ToResult();

        if (from < 0 || size is < 1 or > MaxLimit)
        {
            return (RequestBody.Invalid(new Dictionary<string, string[]>
            {
                [from < 0 ? "after" : "limit"] = [from < 0 ? "A version, 0 or more." : $"Between 1 and {MaxLimit}."],
            }) with { RunId = id, RunStatus = run.Status }).ToResult();
        }

        // What each event did depends on every event before it: the page is refolded from the nearest snapshot.
        var page = await history.PageAsync(reading, from, size, context.RequestAborted);
        long? next = page.Count == size && page[^1].Version < run.Version ? page[^1].Version : null;
        return Results.Json(new RunHistory(id, run.Status, run.Version, page, next, reading.Archive is null ? null : true), LedgerJson.Options);
    }

    public const int DefaultLimit = 1000;
    public const int MaxLimit = 5000;
}
