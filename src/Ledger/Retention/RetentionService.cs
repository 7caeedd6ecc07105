using JasperFx;
using JasperFx.Events.Daemon;
using Ledger.Infrastructure;
using Ledger.Leaderboards;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Retention;

/// <summary>
/// Sweeps every <c>SweepInterval</c> on the one node that runs the async projections. The
/// leadership is the async daemon's own (Marten's HotCold election, <c>Ledger:DaemonMode=Leader</c>):
/// a node sweeps only while its daemon runs the standings projection, so no lock of the ledger's
/// own is involved. Should leadership move in the middle of a sweep, two sweeps may overlap for a
/// moment; each run's archive is committed under the run's row lock after checking it was not
/// archived meanwhile, so every run is archived once.
/// </summary>
public sealed class RetentionService(RetentionSweeper sweeper, IOptions<RetentionOptions> options, IServiceProvider services, TimeProvider clock,
    ILogger<RetentionService> logger) : BackgroundService
{
    private static readonly string LeaderShard = StandingsProjection.Name + ":All";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var policy = options.Value;
        if (!policy.Sweeper)
        {
            logger.LogInformation("Retention sweeps are off on this node (Ledger:Retention:Sweeper=false): it neither archives nor prunes; archives are still read and restored here");
            return;
        }
        // The sweep also prunes the logs (refusals, deliveries), so it runs with archiving off too.
        if (policy.Enabled)
        {
            logger.LogInformation("Retention: runs are archived {Window} after their verdict into {Directory}, swept every {Interval} by the node that runs the projections",
                policy.ArchiveAfter, services.GetRequiredService<ArchiveFiles>().Root, policy.SweepInterval);
        }
        else
        {
            logger.LogInformation("Retention: archiving is off (Ledger:Retention:ArchiveAfter is not set), every event stays in PostgreSQL; " +
                                  "old refusals and deliveries are pruned every {Interval} by the node that runs the projections", policy.SweepInterval);
        }

        using var timer = new PeriodicTimer(policy.SweepInterval, clock);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                if (!Leads()) continue;
                await sweeper.SweepAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (DatabaseFailures.IsTransient(e))
            {
                logger.LogWarning("Retention sweep skipped: the database is unavailable ({Message}); trying again in {Interval}", e.Message, policy.SweepInterval);
            }
            catch (Exception e)
            {
                logger.LogError(e, "Retention sweep failed; trying again in {Interval}", policy.SweepInterval);
            }
        }
    }

    /// <summary>True while this node's async daemon runs the projections (it holds the daemon's leadership).</summary>
    public bool Leads()
    {
        if (services.GetService<IProjectionCoordinator>() is not { } coordinator) return false;
        try
        {
            return coordinator.DaemonForMainDatabase().StatusFor(LeaderShard) == AgentStatus.Running;
        }
        catch (Exception e)
        {
            // Not knowing is not leading: the node that does lead sweeps.
            logger.LogDebug(e, "Could not tell whether this node runs the projections; not sweeping this time");
            return false;
        }
    }
}
