using System.Diagnostics.Metrics;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Webhooks;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Operations;

public sealed class MetricsOptions
{
    public const string Section = "Ledger:Metrics";

    /// <summary>How long the gauges read from the database (runs by status, projection lag) are reused between scrapes.</summary>
    public double StoredStateCacheSeconds { get; set; } = 5;
    /// <summary>How long a Prometheus scrape is reused (the exporter's cache; 0 renders every scrape).</summary>
    public int ScrapeCacheMilliseconds { get; set; } = 300;
}

/// <summary>
/// Gauges derived from stored state, not from what this process saw: runs by status (the kept KPI
/// counters, <see cref="KpiStore"/>) and the async projections' lag (Marten's progression
/// table) and webhook subscriptions by state. Every node reads the same rows, so they are right after a restart and equal on every node;
/// read once per <see cref="MetricsOptions.StoredStateCacheSeconds"/> whatever the number of scrapers.
/// </summary>
public sealed class StoredStateGauges(IDocumentStore store, KpiStore kpis, IOptions<MetricsOptions> options, ILogger<StoredStateGauges> logger)
{
    private sealed record Snapshot(long At, IReadOnlyList<Measurement<long>> Runs, IReadOnlyList<Measurement<long>> Lag,
        IReadOnlyList<Measurement<long>> Subscriptions);

    private static readonly RunStatus[] Statuses = Enum.GetValues<RunStatus>();
    private readonly SemaphoreSlim _reading = new(1, 1);
    private volatile Snapshot? _snapshot;
    // When the last reading failed: no new attempt for a few seconds, so that scrapes during a database outage stay fast.
    private long _failedAt;

    private bool Fresh(Snapshot? s) => s is not null
        && System.Diagnostics.Stopwatch.GetElapsedTime(s.At).TotalSeconds < options.Value.StoredStateCacheSeconds;

    /// <summary>Reads the stored state unless a fresh enough reading is cached (the scrape endpoint calls this before rendering).</summary>
    public async Task RefreshAsync(CancellationToken ct)
    {
        if (Fresh(_snapshot) || RecentlyFailed()) return;
        await _reading.WaitAsync(ct);
        try
        {
            if (Fresh(_snapshot) || RecentlyFailed()) return;
            // Runs by status are the KPI's own kept counters: one definition, the same numbers as GET /api/kpis.
            var byStatus = GetKpisEndpoint.From(await kpis.ReadTotalsAsync(ct)).RunsByStatus;
            var runs = Statuses.Select(s => new Measurement<long>(byStatus.GetValueOrDefault(s.Wire()),
                new KeyValuePair<string, object?>("status", s.Wire()))).ToList();

            var progress = await store.Advanced.AllProjectionProgress(token: ct);
            var highWater = progress.FirstOrDefault(p => p.ShardName == "HighWaterMark")?.Sequence ?? 0;
            var done = progress.Where(p => p.ShardName != "HighWaterMark").ToDictionary(p => p.ShardName, p => p.Sequence);
            // An async projection that has not run yet (no progression row) lags by every event.
            if (store is DocumentStore documents)
            {
                foreach (var shard in documents.Options.Projections.AllShards()) done.TryAdd(shard.Name.Identity, 0);
            }
            var lag = done.Select(p => new Measurement<long>(Math.Max(0, highWater - p.Value), new KeyValuePair<string, object?>("projection", p.Key)))
                .ToList();
            // Webhook subscribers by state; a handful of rows (their number is capped).
            await using var session = store.QuerySession();
            var states = await session.Query<WebhookSubscription>().Select(w => w.State).ToListAsync(ct);
            var subscriptions = SubscriptionStates.All.Select(state => new Measurement<long>(states.Count(x => x == state),
                new KeyValuePair<string, object?>("state", state))).ToList();
            _snapshot = new Snapshot(System.Diagnostics.Stopwatch.GetTimestamp(), runs, lag, subscriptions);
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            Interlocked.Exchange(ref _failedAt, System.Diagnostics.Stopwatch.GetTimestamp());
            logger.LogWarning(e, "Could not read runs by status and projection progress for the metrics");
            throw;
        }
        finally
        {
            _reading.Release();
        }
    }

    public IEnumerable<Measurement<long>> RunsByStatus() => Current()?.Runs ?? [];

    public IEnumerable<Measurement<long>> ProjectionLag() => Current()?.Lag ?? [];

    public IEnumerable<Measurement<long>> SubscriptionsByState() => Current()?.Subscriptions ?? [];

    /// <summary>
    /// For a reader that did not refresh first (an OTLP export): read now, within a few seconds, or
    /// report the last reading (nothing rather than a wrong number when the database is down).
    /// </summary>
    private Snapshot? Current()
    {
        if (Fresh(_snapshot)) return _snapshot;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(3));
            RefreshAsync(timeout.Token).GetAwaiter().GetResult();
        }
        catch (Exception)
        {
            // logged where it failed; the last reading (or none) is reported
        }
        return _snapshot;
    }

    private bool RecentlyFailed()
    {
        var failed = Interlocked.Read(ref _failedAt);
        return failed != 0 && System.Diagnostics.Stopwatch.GetElapsedTime(failed).TotalSeconds < Math.Max(5, options.Value.StoredStateCacheSeconds);
    }
}
