using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Marten;
using Marten.Pagination;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Forensics;

/// <summary>
/// Every anomaly of every kind in one queryable place: those a run's fold derived (late events,
/// ghost completions, completion before results, accounting mismatches, status mismatches) and
/// those of refused requests (score conflicts, other rejections).
/// </summary>
public sealed class AnomalyRecord : IAnomaly
{
    /// <summary><c>runId#n</c> for the n-th anomaly of a run (so a refold reproduces it); the rejection id otherwise.</summary>
    public string Id { get; set; } = "";
    public required string Kind { get; set; }
    public string? RunId { get; set; }
    public DateTimeOffset At { get; set; }
    public required string Detail { get; set; }
    public string? EventId { get; set; }
    /// <summary>
    /// For the anomaly of a run whose late events reached their cap: how many were sent beyond it and
    /// not recorded, added to as they come (so not derived from the events: verify leaves it out).
    /// </summary>
    public long? Count { get; set; }

    /// <summary>Adds late events beyond the run's cap to the count of its cap's anomaly record, in the session's transaction.</summary>
    public static void CountBeyondCap(Marten.IDocumentSession session, Run run, long beyond)
    {
        if (run.LateEventsCapAnomaly is not { } index || beyond <= 0) return;
        var names = new StorageNames(session.DocumentStore);
        var count = names.JsonKey<AnomalyRecord>(a => a.Count);
        session.QueueSqlCommand(
            $"update {names.Table<AnomalyRecord>()} set data = jsonb_set(data, '{{{count}}}', to_jsonb(coalesce((data ->> '{count}')::bigint, 0) + ?)) where id = ?",
            beyond, $"{run.Id}#{index}");
    }

    public static AnomalyRecord From(Run run, int index)
    {
        var anomaly = run.Anomalies[index];
        return new AnomalyRecord
        {
            Id = $"{run.Id}#{index}",
            Kind = anomaly.Kind,
            RunId = run.Id,
            At = anomaly.At,
            Detail = anomaly.Detail,
            EventId = anomaly.EventId,
        };
    }

    /// <summary>The anomaly of a kept refusal: <paramref name="kind"/> when it flags one (a late completion refused after the grace), else by its reason.</summary>
    public static AnomalyRecord From(Rejection rejection, string? kind = null) => new()
    {
        Id = $"rejection:{rejection.Id}",
        Kind = kind ?? (rejection.Reason == ProblemCodes.ScoreConflict ? AnomalyKinds.ScoreConflict : AnomalyKinds.Rejected),
        RunId = rejection.RunId,
        At = rejection.At,
        Detail = $"{rejection.Method} {rejection.Path} refused with {rejection.HttpStatus} {rejection.Reason}: {rejection.Detail}",
    };
}

public sealed record AnomalyPage(IReadOnlyList<AnomalyRecord> Items, int Page, int PageSize, long Total);

public static class GetAnomaliesEndpoint
{
    [WolverineGet("/api/anomalies", Name = "GetAnomalies")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Tags("Forensics")]
    [EndpointSummary("Anomalies of every kind, newest first, by kind, run and time (admin or read key)")]
    [ProducesResponseType<AnomalyPage>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, IDocumentStore store,
        string? kind, string? runId, string? since, int? page, int? pageSize)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        if (!QueryValues.TryTime(since, "since", out var from, out var badTime)) return badTime!.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);

        await using var session = store.QuerySession();
        IQueryable<AnomalyRecord> query = session.Query<AnomalyRecord>();
        if (kind is not null) query = query.Where(a => a.Kind == kind);
        if (runId is not null) query = query.Where(a => a.RunId == runId);
        if (from is { } f) query = query.Where(a => a.At >= f);
        var items = await query.OrderByDescending(a => a.At).ThenBy(a => a.Id).ToPagedListAsync(number, size, context.RequestAborted);
        return Results.Json(new AnomalyPage(items.ToList(), number, size, items.TotalItemCount), LedgerJson.Options);
    }
}
