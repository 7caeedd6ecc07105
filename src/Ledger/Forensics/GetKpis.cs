using Ledger.Contract;
using Ledger.Infrastructure;
using Microsoft.AspNetCore.Mvc;
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
/// KPIs read from the kept counters (<see cref="KpiCounters"/>): one grouped read of the all-time
/// rows, whose cost depends on how many statuses, kinds, reasons and histogram buckets there are,
/// never on how many runs. Time to terminal comes from the histogram (<see cref="KpiHistogram"/>).
/// </summary>
public static class GetKpisEndpoint
{
    [WolverineGet("/api/kpis", Name = "GetKpis")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Tags("Forensics")]
    [EndpointSummary("Runs by status, lost rate, ghost transitions prevented, mismatches, rejections, time to terminal (admin or read key)")]
    [ProducesResponseType<Kpis>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, KpiStore store, CountedRefusals counted)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var kpis = await Compute(store, counted, context.RequestAborted);
        return Results.Json(kpis, LedgerJson.Options);
    }

    /// <summary>The KPIs now (shared with the console).</summary>
    public static async Task<Kpis> Compute(KpiStore store, CountedRefusals counted, CancellationToken ct)
    {
        // This node's refusals counted in memory (without credentials, beyond a budget) join the stored counters first.
        await counted.FlushAsync(ct);
        return From(await store.ReadTotalsAsync(ct));
    }

    /// <summary>The KPIs of a set of all-time counters.</summary>
    public static Kpis From(IReadOnlyDictionary<KpiKey, long> totals)
    {
        Dictionary<string, long> Labels(string kpi) => totals.Where(t => t.Key.Kpi == kpi && t.Key.Hour is null && t.Value != 0)
            .ToDictionary(t => t.Key.Label, t => t.Value);

        var byStatus = Labels(Kpi.Runs);
        foreach (var status in RunStatusRules.WireNames) byStatus.TryAdd(status, 0);
        var anomalies = Labels(Kpi.Anomalies);
        var rejections = Labels(Kpi.Rejections);
        var histogram = Labels(Kpi.TimeToTerminal).ToDictionary(b => int.Parse(b.Key, System.Globalization.CultureInfo.InvariantCulture), b => b.Value);

        var terminal = RunStatusSets.Terminal.Sum(s => byStatus[s.Wire()]);
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
            new TimeToTerminal(histogram.Values.Sum(), KpiHistogram.Percentile(histogram, 0.5), KpiHistogram.Percentile(histogram, 0.95),
                KpiHistogram.Percentile(histogram, 0.99)));
    }
}
