using System.Text.Json;
using Ledger.Infrastructure;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Retention;

/// <summary>What one step of a sweep did (or, as a preview, would do): counts by name, failures by reason.</summary>
public sealed class RetentionStepReport
{
    public required string Step { get; init; }
    /// <summary>running, completed, failed or stopped.</summary>
    public string Status { get; set; } = "running";
    public Dictionary<string, long> Counts { get; init; } = new(StringComparer.Ordinal);
    public Dictionary<string, long> Failures { get; init; } = new(StringComparer.Ordinal);
    /// <summary>What the step keeps for its next sweep (where it stopped).</summary>
    public Dictionary<string, string> State { get; init; } = new(StringComparer.Ordinal);
    public string? LastError { get; set; }

    public void Add(string name, long value = 1) => Counts[name] = Counts.GetValueOrDefault(name) + value;
    public void Fail(string reason) => Failures[reason] = Failures.GetValueOrDefault(reason) + 1;
}

/// <summary>The sweep a step belongs to: its time, and a way to make its progress visible while it runs.</summary>
public sealed class RetentionSweepContext(DateTimeOffset now, RetentionStepReport? previous, Func<Task> progress)
{
    public DateTimeOffset Now { get; } = now;
    /// <summary>The same step's report of the latest sweep that ran it, if any (its <see cref="RetentionStepReport.State"/>).</summary>
    public RetentionStepReport? Previous { get; } = previous;
    /// <summary>Records the sweep's progress so far (its row, read by <c>GET /api/retention</c>, and a log line).</summary>
    public Task ReportProgressAsync() => progress();
}

/// <summary>
/// One step of a retention sweep. Archiving finished runs is the first; pruning what else the
/// ledger keeps without bound (delivery and rejection logs) plugs in beside it, and each step's
/// report appears in the sweep's row and in <c>GET /api/retention</c>.
/// </summary>
public interface IRetentionStep
{
    string Name { get; }

    /// <summary>Does the step's work as of <c>context.Now</c>, filling <paramref name="report"/> as it goes.</summary>
    Task RunAsync(RetentionSweepContext context, RetentionStepReport report, CancellationToken ct);

    /// <summary>What the step would do now, without doing it (<paramref name="previous"/>: its report of the latest sweep, if any).</summary>
    Task<RetentionStepReport> PreviewAsync(DateTimeOffset now, RetentionStepReport? previous, CancellationToken ct);
}

/// <summary>A sweep as its row keeps it.</summary>
public sealed class RetentionSweepReport
{
    public required string Id { get; init; }
    public required string Node { get; init; }
    public DateTimeOffset StartedAt { get; init; }
    public DateTimeOffset? FinishedAt { get; set; }
    public string Status { get; set; } = "running";
    public List<RetentionStepReport> Steps { get; init; } = [];
}

/// <summary>
/// Runs the retention steps, one sweep at a time, and keeps a row per sweep with its progress
/// (<c>ledger_retention_sweeps</c>, the last 50). The service runs it on the node that runs the
/// async projections (<see cref="RetentionService"/>); a test or an operator may run it anywhere:
/// two sweeps at once archive each run once.
/// </summary>
public sealed class RetentionSweeper(IDocumentStore store, StorageNames names, IEnumerable<IRetentionStep> steps, TimeProvider clock,
    ILogger<RetentionSweeper> logger)
{
    private const int KeptSweeps = 50;
    private readonly SemaphoreSlim _one = new(1, 1);
    private readonly string _table = names.Own(ArchivedRunStore.SweepsTable);

    public static readonly JsonSerializerOptions ReportJson = new(LedgerJson.Options);

    public IReadOnlyList<IRetentionStep> Steps { get; } = steps.ToList();

    /// <summary>One sweep of every step; in this process, one at a time.</summary>
    public async Task<RetentionSweepReport> SweepAsync(CancellationToken ct)
    {
        await _one.WaitAsync(ct);
        try
        {
            var report = new RetentionSweepReport
            {
                Id = Guid.NewGuid().ToString("N"),
                Node = Environment.MachineName + ":" + Environment.ProcessId,
                StartedAt = clock.GetUtcNow(),
            };
            var recent = await RecentAsync(5, ct);
            await SaveAsync(report, CancellationToken.None);
            logger.LogInformation("Retention sweep {Sweep} started", report.Id);
            try
            {
                foreach (var step in Steps)
                {
                    var stepReport = new RetentionStepReport { Step = step.Name };
                    report.Steps.Add(stepReport);
                    var previous = recent.SelectMany(r => r.Steps).FirstOrDefault(s => s.Step == step.Name && s.State.Count > 0);
                    var context = new RetentionSweepContext(report.StartedAt, previous, async () =>
                    {
                        await SaveAsync(report, CancellationToken.None);
                        logger.LogInformation("Retention sweep {Sweep}, step {Step}: {Counts}; failures {Failures}", report.Id, step.Name,
                            Describe(stepReport.Counts), Describe(stepReport.Failures));
                    });
                    try
                    {
                        await step.RunAsync(context, stepReport, ct);
                        stepReport.Status = "completed";
                    }
                    catch (OperationCanceledException) when (ct.IsCancellationRequested)
                    {
                        stepReport.Status = "stopped";
                        throw;
                    }
                    catch (Exception e)
                    {
                        // One step failing does not keep the others from their work.
                        stepReport.Status = "failed";
                        stepReport.LastError = e.Message;
                        if (DatabaseFailures.IsTransient(e)) logger.LogWarning("Retention step {Step} stopped: the database is unavailable ({Message})", step.Name, e.Message);
                        else logger.LogError(e, "Retention step {Step} failed", step.Name);
                    }
                }
                report.Status = report.Steps.Any(s => s.Status == "failed") ? "failed" : "completed";
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                report.Status = "stopped";
            }
            report.FinishedAt = clock.GetUtcNow();
            try
            {
                await SaveAsync(report, CancellationToken.None);
            }
            catch (Exception e) when (DatabaseFailures.IsTransient(e))
            {
                logger.LogWarning("The report of retention sweep {Sweep} could not be saved: {Message}", report.Id, e.Message);
            }
            logger.LogInformation("Retention sweep {Sweep} {Status} in {Seconds:0.0} s: {Steps}", report.Id, report.Status,
                (report.FinishedAt.Value - report.StartedAt).TotalSeconds,
                string.Join("; ", report.Steps.Select(s => $"{s.Step} {Describe(s.Counts)}{(s.Failures.Count > 0 ? ", failures " + Describe(s.Failures) : "")}")));
            ct.ThrowIfCancellationRequested();
            return report;
        }
        finally
        {
            _one.Release();
        }
    }

    private static string Describe(Dictionary<string, long> counts) =>
        counts.Count == 0 ? "none" : string.Join(", ", counts.Select(c => $"{c.Key} {c.Value}"));

    /// <summary>The last sweeps, newest first.</summary>
    public async Task<IReadOnlyList<RetentionSweepReport>> RecentAsync(int count, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var rows = await session.RowsAsync($"select report::text from {_table} order by started_at desc limit ?", r => r.GetString(0), ct, count);
        return rows.Select(r => JsonSerializer.Deserialize<RetentionSweepReport>(r, ReportJson)!).ToList();
    }

    /// <summary>What each step would do now, each given its report of the latest sweep that ran it.</summary>
    public async Task<IReadOnlyList<RetentionStepReport>> PreviewAsync(DateTimeOffset now, CancellationToken ct)
    {
        var recent = await RecentAsync(5, ct);
        var previews = new List<RetentionStepReport>();
        foreach (var step in Steps)
        {
            var previous = recent.SelectMany(r => r.Steps).FirstOrDefault(s => s.Step == step.Name && s.State.Count > 0);
            previews.Add(await step.PreviewAsync(now, previous, ct));
        }
        return previews;
    }

    private async Task SaveAsync(RetentionSweepReport report, CancellationToken ct)
    {
        await using var session = store.LightweightSession();
        session.QueueSqlCommand(
            $"insert into {_table} (id, node, started_at, finished_at, status, report) values (?, ?, ?, ?, ?, ?::json) " +
            "on conflict (id) do update set finished_at = excluded.finished_at, status = excluded.status, report = excluded.report",
            report.Id, report.Node, report.StartedAt, (object?)report.FinishedAt ?? DBNull.Value, report.Status,
            JsonSerializer.Serialize(report, ReportJson));
        session.QueueSqlCommand(
            $"delete from {_table} where id in (select id from {_table} order by started_at desc offset {KeptSweeps})");
        await session.SaveChangesAsync(ct);
    }
}
