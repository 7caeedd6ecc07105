using Ledger.Forensics;
using Microsoft.Extensions.Options;

namespace Ledger.Retention;

/// <summary>
/// The sweep's step for the logs that grow beside the runs: kept refusals (with their anomaly
/// records) and finished webhook deliveries older than what <see cref="Pruner.Policy"/> keeps. The
/// rule and the deletion are <see cref="Pruner"/>'s; this step only runs it with the sweep's time, so
/// that one schedule, one leader and one report (<c>GET /api/retention</c>) cover everything the
/// ledger removes. It runs whether or not runs are archived (<c>Ledger:Pruning:Enabled</c>).
/// </summary>
public sealed class PruneLogsStep(Pruner pruner, IOptions<PruningOptions> options) : IRetentionStep
{
    public const string StepName = "prune-logs";

    public string Name => StepName;

    public async Task RunAsync(RetentionSweepContext context, RetentionStepReport report, CancellationToken ct)
    {
        if (!options.Value.Enabled)
        {
            report.Add("disabled");
            return;
        }
        var pruned = await pruner.PruneAsync(context.Now, ct);
        report.Add("rejections", pruned.Rejections);
        report.Add("anomalies", pruned.Anomalies);
        report.Add("deliveries", pruned.Deliveries);
        await context.ReportProgressAsync();
    }

    public async Task<RetentionStepReport> PreviewAsync(DateTimeOffset now, RetentionStepReport? previous, CancellationToken ct)
    {
        var preview = new RetentionStepReport { Step = StepName, Status = "preview" };
        if (!options.Value.Enabled)
        {
            preview.Add("disabled");
            return preview;
        }
        var due = await pruner.CountAsync(now, ct);
        preview.Add("rejections", due.Rejections);
        preview.Add("deliveries", due.Deliveries);
        return preview;
    }
}
