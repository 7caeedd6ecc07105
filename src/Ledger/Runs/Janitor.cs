using System.Diagnostics;
using Ledger.Contract;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Runs;

public sealed class JanitorOptions
{
    public const string Section = "Ledger:Janitor";

    public bool Enabled { get; set; } = true;
    /// <summary>How often the sweep runs.</summary>
    public int IntervalSeconds { get; set; } = 15;
    /// <summary>How long after its lease expired a run is left alone before it is marked.</summary>
    public int GraceSeconds { get; set; } = 30;
    /// <summary>Runs decided per query; a sweep keeps querying until none is left.</summary>
    public int BatchSize { get; set; } = 200;
}

/// <summary>
/// Marks runs whose lease expired without a heartbeat: <c>lost</c>, or <c>failed</c>
/// (incomplete-results) when completion was reported but its results never arrived.
/// Each run is decided by the run writer like a worker's events, from the state read in that
/// decision, so a completion racing the janitor yields exactly one terminal status and two
/// janitors on one database never mark a run twice.
/// </summary>
public sealed class Janitor(IDocumentStore store, RunWriter writer, TimeProvider clock,
    IOptions<JanitorOptions> options, ILogger<Janitor> logger)
{
    public sealed record SweepResult(int Lost, int Failed, int Skipped);

    public async Task<SweepResult> SweepAsync(CancellationToken ct)
    {
        var grace = TimeSpan.FromSeconds(options.Value.GraceSeconds);
        int lost = 0, failed = 0, skipped = 0;
        var seen = new HashSet<string>();
        var live = RunStatusSets.Live.ToArray();
        while (!ct.IsCancellationRequested)
        {
            var cutoff = clock.GetUtcNow() - grace;
            IReadOnlyList<string> candidates;
            await using (var query = store.QuerySession())
            {
                candidates = await query.Query<Run>()
                    .Where(r => r.Status.IsOneOf(live) && r.LeaseExpiresAt < cutoff)
                    .OrderBy(r => r.LeaseExpiresAt)
                    .Select(r => r.Id)
                    .Take(options.Value.BatchSize)
                    .ToListAsync(ct);
            }
            var fresh = candidates.Where(seen.Add).ToList();
            if (fresh.Count == 0) break;

            foreach (var runId in fresh)
            {
                var decision = await writer.Submit(new ExpireLeaseCommand(runId, grace));
                // The janitor's command is answered with what it marked, if anything; it is never refused (DeciderRefusalTests).
                var marked = decision.Outcome switch
                {
                    Outcome.Accepted { Value: LeaseExpiryOutcome expiry } => expiry.Marked,
                    var other => throw new UnreachableException($"the janitor's command was answered {other.GetType().Name}"),
                };

                switch (marked)
                {
                    case RunStatus.Lost:
                        lost++;
                        logger.LogWarning("Run {RunId} marked lost: its lease expired without a heartbeat", runId);
                        break;
                    case RunStatus.Failed:
                        failed++;
                        logger.LogWarning("Run {RunId} failed: completion was reported but its results never arrived", runId);
                        break;
                    default:
                        skipped++;
                        break;
                }
            }
        }
        return new SweepResult(lost, failed, skipped);
    }
}

/// <summary>Runs the janitor's sweep periodically. A failed sweep is logged and retried next interval.</summary>
public sealed class JanitorService(Janitor janitor, TimeProvider clock, IOptions<JanitorOptions> options, ILogger<JanitorService> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!options.Value.Enabled)
        {
            logger.LogInformation("The janitor is disabled (Ledger:Janitor:Enabled=false): expired leases are not marked by this instance");
            return;
        }

        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(Math.Max(1, options.Value.IntervalSeconds)), clock);
        do
        {
            try
            {
                var result = await janitor.SweepAsync(stoppingToken);
                if (result.Lost + result.Failed > 0)
                {
                    logger.LogInformation("Janitor sweep: {Lost} lost, {Failed} failed with incomplete results", result.Lost, result.Failed);
                }
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogError(e, "Janitor sweep failed; retrying in {Interval}s", options.Value.IntervalSeconds);
            }
        } while (await timer.WaitForNextTickAsync(stoppingToken));
    }
}
