using Ledger.Infrastructure;
using Ledger.Infrastructure.OpenApi;
using Marten;
using Marten.Pagination;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record RunSummary(string RunId, RunStatus Status, string? Reason, string? Board, string? Participant,
    string? Batch, long Version, IReadOnlyList<string> Anomalies, DateTimeOffset RegisteredAt, DateTimeOffset? TerminalAt);

public sealed record RunPage(IReadOnlyList<RunSummary> Items, int Page, int PageSize, long Total);

public static class ListRunsEndpoint
{
    [WolverineGet("/api/runs", Name = "ListRuns")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Tags("Runs")]
    [EndpointSummary("Runs filtered by status, board, participant, batch or anomaly kind, newest first, paged (admin or read key)")]
    [ProducesResponseType<RunPage>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, IDocumentStore store,
        string? status, string? board, string? participant, string? batch, string? anomaly, int? page, int? pageSize)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        RunStatus? wanted = null;
        if (status is not null)
        {
            if (!Enum.TryParse<RunStatus>(status, ignoreCase: true, out var parsed) || int.TryParse(status, out _))
            {
                return RequestBody.Invalid(new Dictionary<string, string[]>
                {
                    ["status"] = [$"Unknown status; allowed: {string.Join(", ", RunStatusRules.WireNames)}."],
                }).ToResult();
            }
            wanted = parsed;
        }
        var (number, size) = Paging.Normalize(page, pageSize);

        await using var session = store.QuerySession();
        IQueryable<Run> query = session.Query<Run>();
        if (wanted is { } s) query = query.Where(r => r.Status == s);
        if (board is not null) query = query.Where(r => r.Board == board);
        if (participant is not null) query = query.Where(r => r.Participant == participant);
        if (batch is not null) query = query.Where(r => r.Batch == batch);
        if (anomaly is not null) query = query.Where(r => r.Anomalies.Any(a => a.Kind == anomaly));

        var runs = await query.OrderByDescending(r => r.RegisteredAt).ThenBy(r => r.Id).ToPagedListAsync(number, size, context.RequestAborted);
        var items = runs.Select(r => new RunSummary(r.Id, r.Status, r.Reason, r.Board, r.Participant, r.Batch, r.Version,
            r.Anomalies.Select(a => a.Kind).Distinct().ToList(), r.RegisteredAt, r.TerminalAt)).ToList();
        return Results.Json(new RunPage(items, number, size, runs.TotalItemCount), LedgerJson.Options);
    }
}
