using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Labels;
using Marten;
using Marten.Pagination;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record RunSummary(string RunId, RunStatus Status, string? Reason, string? Board, string? Participant,
    string? Batch, long Version, IReadOnlyList<string> Anomalies, DateTimeOffset RegisteredAt, DateTimeOffset? TerminalAt)
{
    public static RunSummary From(Run r) => new(r.Id, r.Status, r.Reason, r.Board, r.Participant, r.Batch, r.Version,
        r.Anomalies.Select(a => a.Kind).Distinct().ToList(), r.RegisteredAt, r.TerminalAt);
}

public sealed record RunPage(IReadOnlyList<RunSummary> Items, int Page, int PageSize, long Total);

public static class ListRunsEndpoint
{
    [WolverineGet("/api/runs", Name = "ListRuns")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Tags("Runs")]
    [EndpointSummary("Runs filtered by status, board, participant, batch, anomaly kind, label (key:value), registration time (from, to) or stuckFor=SECONDS (claimed or running, no heartbeat for that long), newest first, paged (admin or read key)")]
    [ProducesResponseType<RunPage>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, IDocumentStore store, LabelVocabulary vocabulary, TimeProvider clock,
        string? status, string? board, string? participant, string? batch, string? anomaly, string? label, string? from, string? to,
        string? stuckFor, int? page, int? pageSize)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (filter, refusal) = RunFilter.Parse(status, board, participant, batch, anomaly, label, from, to, stuckFor, vocabulary);
        if (refusal is not null) return refusal.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);

        await using var session = store.QuerySession();
        var result = await filter!.PageAsync(session, clock.GetUtcNow(), number, size, context.RequestAborted);
        return Results.Json(result, LedgerJson.Options);
    }
}
