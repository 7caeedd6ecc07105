using Ledger.Forensics;

namespace Ledger.Web;

/// <summary>
/// What the console's KPI charts range over, from the series alone: hours while all the data is
/// from the last two days (unless a bucket is asked for), days otherwise; and from the first
/// bucket with any count to now, but at least <see cref="MinimumBuckets"/> buckets.
/// </summary>
public static class KpiChartRange
{
    public static string Unit(KpiSeries byDay, string? asked, DateTimeOffset now) =>
        asked ?? (byDay.Buckets.FirstOrDefault(HasData)?.Start is { } first && now - first < TimeSpan.FromDays(2) ? "hour" : "day");

    public static int MinimumBuckets(string unit) => unit == "hour" ? 6 : 7;

    /// <summary>The series from its first bucket with data (or its last <see cref="MinimumBuckets"/>, if that leaves fewer).</summary>
    public static KpiSeries Trim(KpiSeries series)
    {
        var first = series.Buckets.ToList().FindIndex(HasData);
        var minimum = MinimumBuckets(series.Bucket);
        var keepFrom = Math.Max(0, series.Buckets.Count - minimum);
        var skip = first < 0 ? keepFrom : Math.Min(first, keepFrom);
        var kept = series.Buckets.Skip(skip).ToList();
        return series with { From = kept.Count > 0 ? kept[0].Start : series.From, Buckets = kept };
    }

    private static bool HasData(KpiBucket b) => b.Registered + b.Succeeded + b.Failed + b.Lost + b.Cancelled + b.Anomalies > 0;
}
