using Ledger.Contract;
using Ledger.Infrastructure;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Forensics;

/// <summary>One hour or day: runs registered in it, verdicts reached in it by status, anomalies flagged in it.</summary>
public sealed record KpiBucket(DateTimeOffset Start, long Registered, long Succeeded, long Failed, long Lost, long Cancelled,
    long Anomalies, double? LostRate);

public sealed record KpiSeries(string Bucket, DateTimeOffset From, DateTimeOffset To, IReadOnlyList<KpiBucket> Buckets);

/// <summary>
/// KPIs over time, in UTC hours or days, within a bounded window (at most <see cref="MaxBuckets"/>
/// buckets): read from the hourly kept counters (<see cref="Kpi.Registered"/>, <see cref="Kpi.Verdicts"/>,
/// <see cref="Kpi.Flagged"/>); a day is the sum of its 24 hours. The cost depends on the window,
/// never on how many runs it holds.
/// </summary>
public static class GetKpiSeriesEndpoint
{
    public const int MaxBuckets = 1000;

    [WolverineGet("/api/kpis/series", Name = "GetKpiSeries")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Tags("Forensics")]
    [EndpointSummary("KPIs over time: registrations, verdicts by status, lost rate and anomalies per hour or day (?bucket=hour|day&from=&to=; admin or read key)")]
    [ProducesResponseType<KpiSeries>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, KpiStore store,
        TimeProvider clock, string? bucket, string? from, string? to)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (window, refusal) = Window(bucket, from, to, clock.GetUtcNow());
        if (refusal is not null) return refusal.ToResult();
        return Results.Json(await Compute(store, window!, context.RequestAborted), LedgerJson.Options);
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

    public static async Task<KpiSeries> Compute(KpiStore store, SeriesWindow window, CancellationToken ct)
    {
        var hours = await store.ReadHoursAsync(window.From, window.To, ct);
        var registered = new Dictionary<DateTimeOffset, long>();
        var verdicts = new Dictionary<(DateTimeOffset, string), long>();
        var anomalies = new Dictionary<DateTimeOffset, long>();
        foreach (var (key, value) in hours)
        {
            var start = Truncate(key.Hour!.Value, window.Bucket);
            switch (key.Kpi)
            {
                case Kpi.Registered: registered[start] = registered.GetValueOrDefault(start) + value; break;
                case Kpi.Verdicts: verdicts[(start, key.Label)] = verdicts.GetValueOrDefault((start, key.Label)) + value; break;
                case Kpi.Flagged: anomalies[start] = anomalies.GetValueOrDefault(start) + value; break;
            }
        }

        var buckets = new List<KpiBucket>();
        for (var start = window.From; start < window.To; start += window.Step)
        {
            long V(string status) => verdicts.GetValueOrDefault((start, status));
            var terminal = RunStatusSets.Terminal.Sum(s => V(s.Wire()));
            buckets.Add(new KpiBucket(start, registered.GetValueOrDefault(start), V("succeeded"), V("failed"), V("lost"), V("cancelled"),
                anomalies.GetValueOrDefault(start), terminal == 0 ? null : (double)V("lost") / terminal));
        }
        return new KpiSeries(window.Bucket, window.From, window.To, buckets);
    }
}
