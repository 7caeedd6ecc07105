using Ledger.Infrastructure;
using Ledger.Infrastructure.OpenApi;
using Ledger.Runs;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Npgsql;
using Wolverine.Http;

namespace Ledger.Forensics;

/// <summary>One hour or day: runs registered in it, verdicts reached in it by status, anomalies flagged in it.</summary>
public sealed record KpiBucket(DateTimeOffset Start, long Registered, long Succeeded, long Failed, long Lost, long Cancelled,
    long Anomalies, double? LostRate);

public sealed record KpiSeries(string Bucket, DateTimeOffset From, DateTimeOffset To, IReadOnlyList<KpiBucket> Buckets);

/// <summary>
/// KPIs over time, in UTC hours or days: grouped counts over the indexed time fields of the run
/// summaries and anomaly records, within a bounded window (at most <see cref="MaxBuckets"/> buckets).
/// </summary>
public static class GetKpiSeriesEndpoint
{
    public const int MaxBuckets = 1000;

    [WolverineGet("/api/kpis/series", Name = "GetKpiSeries")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Tags("Forensics")]
    [EndpointSummary("KPIs over time: registrations, verdicts by status, lost rate and anomalies per hour or day (?bucket=hour|day&from=&to=; admin or read key)")]
    [ProducesResponseType<KpiSeries>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, ReadDatabase database, StorageNames names,
        TimeProvider clock, string? bucket, string? from, string? to)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (window, refusal) = Window(bucket, from, to, clock.GetUtcNow());
        if (refusal is not null) return refusal.ToResult();
        return Results.Json(await Compute(database, names, window!, context.RequestAborted), LedgerJson.Options);
    }

    public sealed record SeriesWindow(string Bucket, DateTimeOffset From, DateTimeOffset To)
    {
        public TimeSpan Step => Bucket == "hour" ? TimeSpan.FromHours(1) : TimeSpan.FromDays(1);
    }

    /// <summary>The window asked for (defaults: the last 30 days by day, the last 48 hours by hour), or the 422.</summary>
    public static (SeriesWindow? Window, Problem? Refusal) Window(string? bucket, string? from, string? to, DateTimeOffset now)
    {
        var unit = string.IsNullOrEmpty(bucket) ? "day" : bucket.ToLowerInvariant();
        if (unit is not ("hour" or "day"))
        {
            return (null, RequestBody.Invalid(new Dictionary<string, string[]> { ["bucket"] = ["hour or day."] }));
        }
        if (!QueryValues.TryTime(string.IsNullOrEmpty(to) ? null : to, "to", out var end, out var badTo)) return (null, badTo);
        if (!QueryValues.TryTime(string.IsNullOrEmpty(from) ? null : from, "from", out var start, out var badFrom)) return (null, badFrom);
        var step = unit == "hour" ? TimeSpan.FromHours(1) : TimeSpan.FromDays(1);
        var until = Truncate(end ?? now, unit) + step;
        var since = Truncate(start ?? until - (unit == "hour" ? TimeSpan.FromHours(48) : TimeSpan.FromDays(30)), unit);
        if (since >= until || (until - since) / step > MaxBuckets)
        {
            return (null, RequestBody.Invalid(new Dictionary<string, string[]>
            {
                ["from"] = [$"Before `to`, and at most {MaxBuckets} {unit}s before it."],
            }));
        }
        return (new SeriesWindow(unit, since, until), null);
    }

    private static DateTimeOffset Truncate(DateTimeOffset t, string unit)
    {
        var u = t.UtcDateTime;
        return new DateTimeOffset(unit == "hour" ? new DateTime(u.Year, u.Month, u.Day, u.Hour, 0, 0) : u.Date, TimeSpan.Zero);
    }

    public static async Task<KpiSeries> Compute(ReadDatabase database, StorageNames names, SeriesWindow window, CancellationToken ct)
    {
        // The same expressions as the computed indexes on the run document (mt_immutable_timestamptz), so the ranges are index scans.
        string Time(string json) => $"{names.Function("mt_immutable_timestamptz")}({json})";
        var registeredAt = Time(names.Json<Run>(r => r.RegisteredAt));
        var terminalAt = Time(names.Json<Run>(r => r.TerminalAt));
        var anomalyAt = Time(names.Json<AnomalyRecord>(a => a.At));
        var runs = names.Table<Run>();
        await using var batch = database.Source.CreateBatch();
        batch.BatchCommands.Add(Command($"""
            select date_trunc(@unit, {registeredAt}, 'UTC'), '', count(*) from {runs}
            where {registeredAt} >= @from and {registeredAt} < @to group by 1
            """, window));
        batch.BatchCommands.Add(Command($"""
            select date_trunc(@unit, {terminalAt}, 'UTC'), lower({names.Json<Run>(r => r.Status)}), count(*) from {runs}
            where {terminalAt} >= @from and {terminalAt} < @to group by 1, 2
            """, window));
        batch.BatchCommands.Add(Command($"""
            select date_trunc(@unit, {anomalyAt}, 'UTC'), '', count(*) from {names.Table<AnomalyRecord>()}
            where {anomalyAt} >= @from and {anomalyAt} < @to and {names.Json<AnomalyRecord>(a => a.Kind)} <> '{AnomalyRecord.Rejected}' group by 1
            """, window));

        var registered = new Dictionary<DateTimeOffset, long>();
        var verdicts = new Dictionary<(DateTimeOffset, string), long>();
        var anomalies = new Dictionary<DateTimeOffset, long>();
        await using (var reader = await batch.ExecuteReaderAsync(ct))
        {
            while (await reader.ReadAsync(ct)) registered[reader.GetFieldValue<DateTimeOffset>(0)] = reader.GetInt64(2);
            await reader.NextResultAsync(ct);
            while (await reader.ReadAsync(ct)) verdicts[(reader.GetFieldValue<DateTimeOffset>(0), reader.GetString(1))] = reader.GetInt64(2);
            await reader.NextResultAsync(ct);
            while (await reader.ReadAsync(ct)) anomalies[reader.GetFieldValue<DateTimeOffset>(0)] = reader.GetInt64(2);
        }

        var buckets = new List<KpiBucket>();
        for (var start = window.From; start < window.To; start += window.Step)
        {
            long V(string status) => verdicts.GetValueOrDefault((start, status));
            var terminal = V("succeeded") + V("failed") + V("lost") + V("cancelled");
            buckets.Add(new KpiBucket(start, registered.GetValueOrDefault(start), V("succeeded"), V("failed"), V("lost"), V("cancelled"),
                anomalies.GetValueOrDefault(start), terminal == 0 ? null : (double)V("lost") / terminal));
        }
        return new KpiSeries(window.Bucket, window.From, window.To, buckets);
    }

    private static NpgsqlBatchCommand Command(string sql, SeriesWindow window)
    {
        var command = new NpgsqlBatchCommand(sql);
        command.Parameters.AddWithValue("unit", window.Bucket);
        command.Parameters.AddWithValue("from", window.From);
        command.Parameters.AddWithValue("to", window.To);
        return command;
    }
}
