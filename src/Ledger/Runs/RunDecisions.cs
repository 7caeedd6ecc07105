using System.Text.Json;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Marten;
using JasperFx.Events;
using Microsoft.Extensions.Options;

namespace Ledger.Runs;

/// <summary>
/// Every decision about a run is taken under optimistic concurrency: read the run at version N,
/// decide, append expecting N. When another writer got there first, decide again on the new
/// state; after the configured attempts, answer a retryable 503.
/// </summary>
public sealed class RunDecisions(IDocumentStore store, IOptions<LedgerOptions> options, ILogger<RunDecisions> logger)
{
    // Decisions on one run inside this process queue up instead of racing: striped, so memory
    // stays fixed whatever the number of runs. Across processes, optimistic concurrency decides.
    private readonly SemaphoreSlim[] _stripes = Enumerable.Range(0, 4096).Select(_ => new SemaphoreSlim(1, 1)).ToArray();

    public Task<T> Decide<T>(string runId, Func<IEventStream<Run>, T> decide, CancellationToken ct) =>
        Decide(runId, (stream, _) => decide(stream), ct);

    /// <summary>
    /// Decides with a context where the decision can hand over the run as it will be after its
    /// events (it usually has folded them already), sparing a second fold.
    /// </summary>
    public async Task<T> Decide<T>(string runId, Func<IEventStream<Run>, DecisionContext, T> decide, CancellationToken ct)
    {
        var stripe = _stripes[(uint)StringComparer.Ordinal.GetHashCode(runId) % (uint)_stripes.Length];
        await stripe.WaitAsync(ct);
        try
        {
            return await DecideUnderConcurrency(runId, decide, ct);
        }
        finally
        {
            stripe.Release();
        }
    }

    private async Task<T> DecideUnderConcurrency<T>(string runId, Func<IEventStream<Run>, DecisionContext, T> decide, CancellationToken ct)
    {
        var attempts = Math.Max(1, options.Value.ConcurrencyRetries);
        for (var attempt = 1; ; attempt++)
        {
            // Optimistic first; a run that keeps being contended is decided under its stream lock,
            // so a hot run still makes progress instead of bouncing every writer.
            var exclusive = attempt > OptimisticAttempts;
            await using var session = store.LightweightSession();
            try
            {
                var stream = exclusive
                    ? await session.Events.FetchForExclusiveWriting<Run>(runId, ct)
                    : await session.Events.FetchForWriting<Run>(runId, ct);
                var context = new DecisionContext();
                var decision = decide(stream, context);
                Derive(session, stream, context.After);
                await session.SaveAsync(ct);
                return decision;
            }
            catch (Exception e) when (DatabaseFailures.IsConcurrency(e) && attempt < attempts)
            {
                logger.LogDebug("Run {RunId} changed while deciding (attempt {Attempt}); deciding again", runId, attempt);
                await Task.Delay(Random.Shared.Next(1, 4 << Math.Min(attempt, 4)), ct);
            }
            catch (Exception e) when (DatabaseFailures.IsConcurrency(e))
            {
                logger.LogWarning("Run {RunId} stayed contended for {Attempts} attempts", runId, attempts);
                throw new ProblemException(Problem.Of(ProblemCodes.Contention,
                    "The run is being changed by other requests", "Retry shortly; nothing from this request was recorded.", runId: runId) with { RetryAfterSeconds = 1 });
            }
        }
    }

    private const int OptimisticAttempts = 2;

    /// <summary>
    /// What the appended events imply beyond the run itself: a new terminal verdict is published
    /// beside them, and each new anomaly becomes a queryable record, in the same transaction.
    /// </summary>
    private static void Derive(IDocumentSession session, IEventStream<Run> stream, Run? after)
    {
        if (stream.Aggregate is not { } before || stream.Events.Count == 0) return;
        if (after is null)
        {
            if (!stream.Events.Any(e => MayConclude(before, e.Data))) return;
            after = Copy(before);
            foreach (var e in stream.Events) after.Fold(e.Data);
        }

        if (after.Verdicts.Count > before.Verdicts.Count && after.LatestVerdict() is { } verdict)
        {
            stream.AppendOne(verdict);
        }
        for (var i = before.Anomalies.Count; i < after.Anomalies.Count; i++)
        {
            session.Store(AnomalyRecord.From(after, i));
        }
    }

    // Only these can end a run; the common heartbeat and log skip the extra fold entirely.
    private static bool MayConclude(Run before, object e) => e switch
    {
        RunCompleted or RunFailed or ItemsCommitted or RunCancelled or LeaseExpired or RunReclassified => true,
        ScoresReported or OutputRecorded or StepCompleted => before.CompletionReported,
        _ => false,
    };

    /// <summary>A private copy to evaluate a batch on, so the fetched aggregate is never mutated.</summary>
    public static Run Copy(Run run) =>
        JsonSerializer.Deserialize<Run>(JsonSerializer.SerializeToUtf8Bytes(run, LedgerJson.Options), LedgerJson.Options)!;
}

public sealed class DecisionContext
{
    /// <summary>The run as it will be once the appended events are folded, when the decision already knows it.</summary>
    public Run? After { get; set; }
}
