using Ledger.Forensics;
using Ledger.Web;

namespace Ledger.Tests.Console;

/// <summary>What the KPI charts range over (<see cref="KpiChartRange"/>): the unit and the first bucket follow the data.</summary>
public sealed class KpiChartRangeTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 6, 15, 20, 0, TimeSpan.Zero);

    /// <summary>A series of <paramref name="count"/> buckets ending with the current one, with runs registered <paramref name="dataAgo"/> buckets back.</summary>
    private static KpiSeries Series(string unit, int count, params int[] dataAgo)
    {
        var step = unit == "hour" ? TimeSpan.FromHours(1) : TimeSpan.FromDays(1);
        var current = unit == "hour" ? new DateTimeOffset(Now.Year, Now.Month, Now.Day, Now.Hour, 0, 0, TimeSpan.Zero) : new DateTimeOffset(Now.Date, TimeSpan.Zero);
        var buckets = Enumerable.Range(0, count)
            .Select(i => count - 1 - i)
            .Select(ago => new KpiBucket(current - ago * step, dataAgo.Contains(ago) ? 3 : 0, 0, 0, 0, 0, 0, null))
            .ToList();
        return new KpiSeries(unit, buckets[0].Start, current + step, buckets);
    }

    [Theory]
    [InlineData(0, "hour")]
    [InlineData(1, "hour")]
    [InlineData(2, "day")]
    [InlineData(12, "day")]
    public void hours_while_all_the_data_is_from_the_last_two_days_days_otherwise(int daysAgo, string unit) =>
        Assert.Equal(unit, KpiChartRange.Unit(Series("day", 31, daysAgo), null, Now));

    [Fact]
    public void a_ledger_without_data_is_shown_by_day_and_a_bucket_asked_for_is_kept()
    {
        Assert.Equal("day", KpiChartRange.Unit(Series("day", 31), null, Now));
        Assert.Equal("hour", KpiChartRange.Unit(Series("day", 31, 20), "hour", Now));
        Assert.Equal("day", KpiChartRange.Unit(Series("day", 31, 0), "day", Now));
    }

    [Theory]
    [InlineData("hour", 49, 0, 6)]     // only this hour: the last six hours
    [InlineData("hour", 49, 10, 11)]   // ten hours back: from that hour to now
    [InlineData("hour", 49, 47, 48)]
    [InlineData("day", 31, 3, 7)]      // three days back: still a week
    [InlineData("day", 31, 12, 13)]    // twelve days back: from that day
    public void the_charts_start_at_the_first_bucket_with_data_and_show_at_least_a_few(string unit, int count, int firstAgo, int shown)
    {
        var series = Series(unit, count, firstAgo, 0);

        var trimmed = KpiChartRange.Trim(series);

        Assert.Equal(shown, trimmed.Buckets.Count);
        Assert.Equal(series.Buckets[^1], trimmed.Buckets[^1]);
        Assert.Equal(trimmed.Buckets[0].Start, trimmed.From);
        if (shown > KpiChartRange.MinimumBuckets(unit)) Assert.Equal(3, trimmed.Buckets[0].Registered);
    }

    [Fact]
    public void without_data_the_last_few_buckets_are_shown()
    {
        Assert.Equal(6, KpiChartRange.Trim(Series("hour", 49)).Buckets.Count);
        Assert.Equal(7, KpiChartRange.Trim(Series("day", 31)).Buckets.Count);
    }
}
