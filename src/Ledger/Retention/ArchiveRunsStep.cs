using System.Globalization;
using Microsoft.Extensions.Options;

namespace Ledger.Retention;

/// <summary>
/// The sweep's first step: archive every run that may leave PostgreSQL. A run may when
/// <list type="bullet">
/// <item>its latest verdict is older than <c>Ledger:Retention:ArchiveAfter</c> (and, once restored, its restore is too);</item>
/// <item>every async projection and the webhook relay have passed its last event;</item>
/// <item>its batch, if any, expects no run that is not terminal, or was defined longer ago than the window.</item>
/// </list>
/// Runs are walked in verdict order from where the last sweep stopped, in pages of
/// <c>BatchSize</c>, a few at a time; runs archived before and written since, or restored a window
/// ago, are looked at first. Each page's progress is logged and saved.
/// </summary>
public sealed class ArchiveRunsStep(RunArchiver archiver, IOptions<RetentionOptions> options, ILogger<ArchiveRunsStep> logger) : IRetentionStep
{
    public const string StepName = "archive-runs";
    private const string FloorAtKey = "floorAt";
    private const string FloorRunKey = "floorRunId";
    /// <summary>A preview looks at this many runs at most.</summary>
    private const int PreviewLimit = 100_000;

    public string Name => StepName;

    private RetentionOptions Policy => options.Value;

    public async Task RunAsync(RetentionSweepContext context, RetentionStepReport report, CancellationToken ct)
    {
        if (Policy.ArchiveAfter is not { } window)
        {
            report.Add("disabled");
            return;
        }
        var now = context.Now;
        var cutoff = now - window;
        var batches = new Dictionary<string, bool>(StringComparer.Ordinal);

        // Runs that came back: written after their archive, or restored a window ago.
        var returning = await archiver.ReturningAsync(cutoff, ct);
        foreach (var page in returning.Chunk(Math.Max(1, Policy.BatchSize)))
        {
            await ProcessAsync(page, now, cutoff, batches, report, ct);
            await context.ReportProgressAsync();
        }

        // The walk over verdicts, from where the last sweep left runs behind.
        var (afterAt, afterId) = Floor(context.Previous);
        (DateTimeOffset At, string Id)? held = null;
        var passed = (At: afterAt, Id: afterId);
        while (!ct.IsCancellationRequested)
        {
            var page = await archiver.PastWindowAsync(cutoff, afterAt, afterId, Math.Max(1, Policy.BatchSize), ct);
            if (page.Count == 0) break;
            var outcomes = await ProcessAsync(page, now, cutoff, batches, report, ct);
            foreach (var candidate in page)
            {
                if (held is not null) break;
                if (outcomes.TryGetValue(candidate.RunId, out var outcome) && outcome.Result == ArchiveOutcome.Kind.Archived
                    || outcome?.Reason == "archived-elsewhere")
                {
                    passed = (candidate.TerminalAt, candidate.RunId);
                }
                else
                {
                    held = (candidate.TerminalAt, candidate.RunId);
                }
            }
            (afterAt, afterId) = (page[^1].TerminalAt, page[^1].RunId);
            report.State[FloorAtKey] = passed.At.ToString("O", CultureInfo.InvariantCulture);
            report.State[FloorRunKey] = passed.Id;
            await context.ReportProgressAsync();
        }
        report.State[FloorAtKey] = passed.At.ToString("O", CultureInfo.InvariantCulture);
        report.State[FloorRunKey] = passed.Id;
    }

    private static (DateTimeOffset At, string Id) Floor(RetentionStepReport? previous) =>
        previous is not null && previous.State.TryGetValue(FloorAtKey, out var at)
                             && DateTimeOffset.TryParse(at, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var floor)
            ? (floor, previous.State.GetValueOrDefault(FloorRunKey) ?? "")
            : (DateTimeOffset.MinValue, "");

    /// <summary>Runs archived per transaction: their bundles are written a few at a time, then their events leave PostgreSQL in one commit.</summary>
    private const int CommitGroup = 50;

    /// <summary>Checks a page's runs against the conditions and archives those that meet them, in groups.</summary>
    private async Task<Dictionary<string, ArchiveOutcome>> ProcessAsync(IReadOnlyList<ArchiveCandidate> page, DateTimeOffset now, DateTimeOffset cutoff,
        Dictionary<string, bool> batches, RetentionStepReport report, CancellationToken ct)
    {
        var eligible = await EligibleAsync(page, now, batches, report, ct);
        var outcomes = new Dictionary<string, ArchiveOutcome>(StringComparer.Ordinal);
        foreach (var slice in eligible.Chunk(CommitGroup))
        {
            var prepared = new System.Collections.Concurrent.ConcurrentBag<RunArchiver.Prepared>();
            var refused = new System.Collections.Concurrent.ConcurrentBag<ArchiveOutcome>();
            await Parallel.ForEachAsync(slice, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Policy.Parallelism), CancellationToken = ct },
                async (candidate, token) =>
                {
                    var (ready, outcome) = await archiver.PrepareAsync(candidate, token);
                    if (ready is not null) prepared.Add(ready);
                    else refused.Add(outcome!);
                });
            var committed = prepared.IsEmpty ? [] : await archiver.CommitAsync(prepared.ToList(), ct);
            foreach (var outcome in refused.Concat(committed)) Record(outcome, report, outcomes);
        }
        return outcomes;
    }

    private static void Record(ArchiveOutcome outcome, RetentionStepReport report, Dictionary<string, ArchiveOutcome> outcomes)
    {
        outcomes[outcome.RunId] = outcome;
        switch (outcome.Result)
        {
            case ArchiveOutcome.Kind.Archived:
                report.Add("runs");
                report.Add("events", outcome.Events);
                report.Add("bytes", outcome.Bytes);
                if (outcome.Reused) report.Add("reused");
                if (outcome.Lag is { } lag) report.Counts["lagMaxSeconds"] = Math.Max(report.Counts.GetValueOrDefault("lagMaxSeconds"), (long)lag.TotalSeconds);
                break;
            case ArchiveOutcome.Kind.Skipped:
                report.Add("skipped-" + outcome.Reason);
                break;
            default:
                report.Fail(outcome.Reason ?? "internal");
                report.LastError = outcome.Message ?? $"run {outcome.RunId}: {outcome.Reason}";
                break;
        }
    }

    /// <summary>The page's runs that meet every condition now; the others are counted by what holds them back.</summary>
    private async Task<List<ArchiveCandidate>> EligibleAsync(IReadOnlyList<ArchiveCandidate> page, DateTimeOffset now,
        Dictionary<string, bool> batches, RetentionStepReport report, CancellationToken ct)
    {
        var reached = await archiver.ProjectionsReachedAsync(ct);
        var last = await archiver.LastSequencesAsync(page, ct);
        var eligible = new List<ArchiveCandidate>(page.Count);
        foreach (var candidate in page)
        {
            if (!last.TryGetValue(candidate.RunId, out var sequence) || sequence > reached)
            {
                report.Add("waiting-for-projections");
                continue;
            }
            if (candidate.Batch is { } batch)
            {
                if (!batches.TryGetValue(batch, out var allowed)) batches[batch] = allowed = await archiver.BatchAllowsAsync(batch, now, ct);
                if (!allowed)
                {
                    report.Add("waiting-for-batch");
                    continue;
                }
            }
            eligible.Add(candidate);
        }
        return eligible;
    }

    public async Task<RetentionStepReport> PreviewAsync(DateTimeOffset now, RetentionStepReport? previous, CancellationToken ct)
    {
        var preview = new RetentionStepReport { Step = StepName, Status = "preview" };
        if (Policy.ArchiveAfter is not { } window)
        {
            preview.Add("disabled");
            return preview;
        }
        var cutoff = now - window;
        var batches = new Dictionary<string, bool>(StringComparer.Ordinal);
        long runs = 0, events = 0, looked = 0;
        async Task Count(IReadOnlyList<ArchiveCandidate> page)
        {
            foreach (var candidate in await EligibleAsync(page, now, batches, preview, ct))
            {
                runs++;
                events += candidate.Version - candidate.ArchivedVersion;
            }
            looked += page.Count;
        }

        foreach (var page in (await archiver.ReturningAsync(cutoff, ct)).Chunk(1000)) await Count(page);
        // From where the last sweep left runs behind, as the next sweep will walk.
        var (afterAt, afterId) = Floor(previous);
        while (looked < PreviewLimit)
        {
            var page = await archiver.PastWindowAsync(cutoff, afterAt, afterId, 1000, ct);
            if (page.Count == 0) break;
            await Count(page);
            (afterAt, afterId) = (page[^1].TerminalAt, page[^1].RunId);
        }
        preview.Counts["runs"] = runs;
        preview.Counts["events"] = events;
        preview.Counts["bytes"] = (long)(events * await archiver.AverageEventBytesAsync(ct));
        if (looked >= PreviewLimit) preview.State["truncated"] = $"only the first {PreviewLimit} runs past the window were looked at";
        logger.LogDebug("Retention preview: {Runs} runs, {Events} events", runs, events);
        return preview;
    }
}
