using Ledger.Infrastructure;
using Ledger.Infrastructure.OpenApi;
using Ledger.Runs;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Npgsql;
using Wolverine.Http;

namespace Ledger.Forensics;

public sealed record TimeToTerminal(long Runs, double? P50Seconds, double? P95Seconds, double? P99Seconds);

public sealed record Kpis(
    long Runs,
    IReadOnlyDictionary<string, long> RunsByStatus,
    double? LostRate,
    long GhostTransitionsPrevented,
    long CompletionsBeforeResults,
    long AccountingMismatches,
    long StatusMismatches,
    long LateEvents,
    IReadOnlyDictionary<string, long> AnomaliesByKind,
    IReadOnlyDictionary<string, long> RejectionsByReason,
    TimeToTerminal TimeToTerminal);

/// <summary>
/// KPIs are aggregates over the projections (run summaries, anomaly and rejection records):
/// grouped counts on indexed columns and one percentile pass over terminal runs, in one round trip.
/// </summary>
public static class GetKpisEndpoint
{
    [WolverineGet("/api/kpis", Name = "GetKpis")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Tags("Forensics")]
    [EndpointSummary("Runs by status, lost rate, ghost transitions prevented, mismatches, rejections, time to terminal (admin or read key)")]
    [ProducesResponseType<Kpis>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, ReadDatabase database, StorageNames names,
        UnauthenticatedRefusals unauthenticated)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var kpis = await Compute(database, names, unauthenticated, context.RequestAborted);
        return Results.Json(kpis, LedgerJson.Options);
    }

    /// <summary>The KPIs now (shared with the console).</summary>
    public static async Task<Kpis> Compute(ReadDatabase database, StorageNames names, UnauthenticatedRefusals unauthenticated, CancellationToken ct)
    {
        await unauthenticated.FlushAsync(ct);
        var runs = names.Table<Run>();
        var runStatus = names.Json<Run>(r => r.Status);
        var terminalAt = names.Json<Run>(r => r.TerminalAt);
        var registeredAt = names.Json<Run>(r => r.RegisteredAt);
        var reason = names.Json<Rejection>(r => r.Reason);

        await using var batch = database.Source.CreateBatch();
        batch.BatchCommands.Add(new NpgsqlBatchCommand($"select lower({runStatus}), count(*) from {runs} group by 1"));
        batch.BatchCommands.Add(new NpgsqlBatchCommand($"select {names.Json<AnomalyRecord>(a => a.Kind)}, count(*) from {names.Table<AnomalyRecord>()} group by 1"));
        // Kept refusals of authenticated callers, plus the counted ones of callers without credentials (not their samples).
        batch.BatchCommands.Add(new NpgsqlBatchCommand($"""
            select reason, sum(n)::bigint from (
                select {reason} as reason, count(*) as n from {names.Table<Rejection>()}
                where coalesce(({names.Json<Rejection>(r => r.Unauthenticated)})::boolean, false) = false group by 1
                union all
                select reason, sum(count) from {names.Own(UnauthenticatedRefusals.TableName)} group by 1) r
            group by 1
            """));
        batch.BatchCommands.Add(new NpgsqlBatchCommand($"""
            select count(*), percentile_cont(array[0.5, 0.95, 0.99]) within group (order by seconds)
            from (select extract(epoch from (({terminalAt})::timestamptz - ({registeredAt})::timestamptz))::float8 as seconds
                  from {runs} where {terminalAt} is not null) t
            """));
        await using var reader = await batch.ExecuteReaderAsync(ct);

        var byStatus = await Counts(reader, ct);
        await reader.NextResultAsync(ct);
        var anomalies = await Counts(reader, ct);
        await reader.NextResultAsync(ct);
        var rejections = await Counts(reader, ct);
        await reader.NextResultAsync(ct);
        await reader.ReadAsync(ct);
        var terminalRuns = reader.GetInt64(0);
        var percentiles = reader.IsDBNull(1) ? null : reader.GetFieldValue<double[]>(1);

        foreach (var status in RunStatusRules.WireNames) byStatus.TryAdd(status, 0);
        var terminal = byStatus["succeeded"] + byStatus["failed"] + byStatus["lost"] + byStatus["cancelled"];
        long Anomalies(string kind) => anomalies.GetValueOrDefault(kind);

        return new Kpis(
            byStatus.Values.Sum(),
            byStatus,
            terminal == 0 ? null : (double)byStatus["lost"] / terminal,
            Anomalies(AnomalyKinds.LateCompletion),
            Anomalies(AnomalyKinds.CompletedBeforeResults),
            Anomalies(AnomalyKinds.AccountingMismatch),
            Anomalies(AnomalyKinds.StatusMismatch),
            Anomalies(AnomalyKinds.LateEvent),
            anomalies,
            rejections,
            new TimeToTerminal(terminalRuns, percentiles?[0], percentiles?[1], percentiles?[2]));
    }

    private static async Task<Dictionary<string, long>> Counts(NpgsqlDataReader reader, CancellationToken ct)
    {
        var counts = new Dictionary<string, long>();
        while (await reader.ReadAsync(ct))
        {
            if (!reader.IsDBNull(0)) counts[reader.GetString(0)] = reader.GetInt64(1);
        }
        return counts;
    }
}
