using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Operations;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Runs;

public sealed class WriterOptions
{
    public const string Section = "Ledger:Writer";

    /// <summary>Most commands decided and committed in one transaction.</summary>
    public int MaxGroupSize { get; set; } = 256;
    /// <summary>
    /// How long a group smaller than <see cref="MaxGroupSize"/> waits for more commands before it is
    /// committed. 0 (the default) commits at once: a group is then whatever arrived while the
    /// previous one was committing, so it grows with the load and costs nothing when idle.
    /// </summary>
    public int MaxWaitMilliseconds { get; set; }
    /// <summary>Commands waiting for the writer; when full, requests are refused with a retryable 503.</summary>
    public int QueueCapacity { get; set; } = 10_000;
    /// <summary>Attempts at one group when other nodes keep changing its runs.</summary>
    public int ConflictAttempts { get; set; } = 8;
    /// <summary>
    /// Independent writers, each owning the runs whose id hashes to it (so a run's commands keep
    /// their order), each with its own queue share and group commit. 1 is one transaction at a time;
    /// more lets one group read while another commits.
    /// </summary>
    public int Writers { get; set; } = 1;
    /// <summary>
    /// Read every run of a group under a row lock (true, the default), taken in run-id order, so
    /// that nodes writing the same run queue behind each other instead of failing and retrying
    /// (or deadlocking). False reads optimistically and locks only runs found contended.
    /// </summary>
    public bool LockRuns { get; set; } = true;
    /// <summary>
    /// Runs whose decided state and version each writer keeps after a commit, so that the next
    /// command on one of them is decided without reading it (0: every group reads its runs).
    /// </summary>
    public int CachedRuns { get; set; } = 1_000;
    /// <summary>How long a kept run may go unwritten by this writer before it is read again.</summary>
    public int CachedRunSeconds { get; set; } = 300;
}

/// <summary>
/// The one writer of run streams in this process: commands for different runs that arrive together
/// are decided and appended in one transaction (one round of statements, one fsync), and every
/// caller is answered only after that commit. Per group:
/// <list type="number">
/// <item>a run this writer wrote recently is decided on the state and version it kept after that
/// commit (<see cref="WriterOptions.CachedRuns"/>), without a read; any other run is read in one
/// round trip (Marten's FetchForWriting, in a batch, under a row lock taken in run-id order),
/// with which of the commands' eventIds and chunk ids it already recorded;</item>
/// <item>each command is decided by <see cref="RunDecider"/>, in arrival order per run, on the
/// state the previous one left; a refusal, a duplicate or a failure of one command touches no other;</item>
/// <item>the transaction locks every run of the group in run-id order and checks that each is at
/// the version it was decided on (<see cref="RunLocks"/>), inserts the recorded keys (a key already
/// there fails it: that event was a duplicate after all), then the events go through Marten,
/// beside the new anomaly records, and it commits; only then is each caller answered.</item>
/// </list>
/// Nodes writing the same run queue on its row lock; locks are always taken in the same order, so
/// they cannot deadlock. Should a run have moved under a group (another node wrote a kept run, or
/// optimistic reads, see <see cref="WriterOptions.LockRuns"/>), nothing is appended: the group is
/// read again and only the runs whose version moved are decided again; a key found already
/// recorded has the group read with its keys and decided again. Both checks come before any
/// append, so a refused transaction leaves no gap in the event sequence. A database failure
/// answers every caller of the group with a retryable 503; an acknowledged event is always committed.
/// </summary>
public sealed class RunWriter(IDocumentStore store, TimeProvider clock, IOptions<WriterOptions> options,
    IOptions<LedgerOptions> ledger, ILogger<RunWriter> logger, LedgerMetrics? metrics = null) : BackgroundService
{
    /// <summary>A queued command, with the request's trace context (a group serves many requests: its span links to each).</summary>
    private sealed record Pending(RunCommand Command, TaskCompletionSource<Decision> Done, ActivityContext Caller);

    /// <summary>
    /// What was decided for one run in a group: valid while the run is still at <see cref="Version"/>
    /// and, when <see cref="KeysKnown"/> is false (decided on a kept state, keys not looked up), only
    /// as long as no key of it turns out to be recorded already.
    /// </summary>
    private sealed record RunDecisions(long Version, Run? Before, Run? After, List<object> Events,
        List<(Pending Pending, Decision? Decision, Exception? Failure)> Outcomes, bool KeysKnown)
    {
        /// <summary>Late events beyond the run's cap, not appended: added to the count of the cap's anomaly.</summary>
        public long LateEventsBeyondCap => Outcomes.Sum(o => o.Decision?.LateEventsBeyondCap ?? 0);
    }

    /// <summary>
    /// A run's state as this writer's last commit on it left it, its stream version then, and the
    /// keys this writer last saw recorded on it (what it appended, what it looked up): a resend of a
    /// recent event is a duplicate without a round trip; an older one is caught by the keys' table.
    /// </summary>
    private sealed record Held(Run State, long Version, RecordedKeys Recent);

    /// <summary>Keys kept per held run, at most (a resend is usually of the latest request; older ones meet the keys' table).</summary>
    private const int RecentKeys = 64;

    private readonly RunCache[] _caches = Enumerable.Range(0, Math.Max(1, options.Value.Writers))
        .Select(_ => new RunCache(options.Value.CachedRuns, TimeSpan.FromSeconds(Math.Max(1, options.Value.CachedRunSeconds))))
        .ToArray();

    private readonly Channel<Pending>[] _queues = Enumerable.Range(0, Math.Max(1, options.Value.Writers))
        .Select(_ => Channel.CreateBounded<Pending>(new BoundedChannelOptions(
            Math.Max(1, options.Value.QueueCapacity / Math.Max(1, options.Value.Writers)))
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        }))
        .ToArray();

    // Runs another node wrote while this one was deciding: their next groups are read under row locks at once.
    private readonly ConcurrentDictionary<string, long> _contended = new(StringComparer.Ordinal);
    private static readonly long ContendedFor = Stopwatch.Frequency * 10;

    private readonly string _schema = ledger.Value.SchemaName;

    /// <summary>Queues a command; the task completes once its decision is committed (or refused, which commits nothing).</summary>
    public Task<Decision> Submit(RunCommand command)
    {
        var pending = new Pending(command, new TaskCompletionSource<Decision>(TaskCreationOptions.RunContinuationsAsynchronously),
            Activity.Current?.Context ?? default);
        var queue = _queues[(uint)StringComparer.Ordinal.GetHashCode(command.RunId) % (uint)_queues.Length];
        if (!queue.Writer.TryWrite(pending))
        {
            throw new ProblemException(Problem.Of(ProblemCodes.Overloaded, detail:
                "The ledger's write queue is full or it is shutting down; nothing from this request was recorded.",
                runId: command.RunId) with { RetryAfterSeconds = 1 });
        }
        return pending.Done.Task;
    }

    /// <summary>Commands waiting now (for health and metrics).</summary>
    public int Queued => _queues.Sum(q => q.Reader.Count);

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        // Before the first command: runs written before the recorded-keys table get their keys.
        await RecordedKeyStore.MigrateAsync(store, _schema, logger, cancellationToken);
        await RunStorage.LeaveRoomForUpdatesAsync(store, logger, cancellationToken);
        await base.StartAsync(cancellationToken);
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        // No new commands; what is queued is still decided and committed before the process exits.
        foreach (var queue in _queues) queue.Writer.TryComplete();
        await base.StopAsync(cancellationToken);
    }

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Task.WhenAll(_queues.Select((queue, i) => Task.Run(() => Drain(queue.Reader, _caches[i]), CancellationToken.None)));

    private async Task Drain(ChannelReader<Pending> reader, RunCache cache)
    {
        var max = Math.Max(1, options.Value.MaxGroupSize);
        var wait = TimeSpan.FromMilliseconds(Math.Max(0, options.Value.MaxWaitMilliseconds));
        var group = new List<Pending>(max);
        // Not cancelled by the stopping token: the loop ends when the queue is completed and drained.
        while (await reader.WaitToReadAsync(CancellationToken.None))
        {
            group.Clear();
            while (group.Count < max && reader.TryRead(out var pending)) group.Add(pending);
            if (group.Count < max && wait > TimeSpan.Zero)
            {
                using var timeout = new CancellationTokenSource(wait);
                try
                {
                    while (group.Count < max && await reader.WaitToReadAsync(timeout.Token))
                    {
                        while (group.Count < max && reader.TryRead(out var pending)) group.Add(pending);
                    }
                }
                catch (OperationCanceledException)
                {
                    // the wait is over: commit what there is
                }
            }
            await Commit(group, cache);
        }
    }

    /// <summary>
    /// Commits one group: read what is not kept, work out the group's effects (<see cref="Effects"/>,
    /// no I/O), write them in one transaction, then keep the runs' states and answer; a failed attempt
    /// goes by the writer's retry policy (<see cref="Retry"/>).
    /// </summary>
    private async Task Commit(List<Pending> group, RunCache cache)
    {
        var runs = group.GroupBy(p => p.Command.RunId, StringComparer.Ordinal)
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => (RunId: g.Key, Pending: g.ToList()))
            .ToList();
        var decided = new Dictionary<string, RunDecisions>(StringComparer.Ordinal);
        var now = Stopwatch.GetTimestamp();
        var exclusive = options.Value.LockRuns || runs.Any(r => IsContended(r.RunId, now));
        var attempts = Math.Max(1, options.Value.ConflictAttempts);
        // The kept states of the group's runs are taken out: whatever happens to this group, a kept
        // state is only put back by a commit that is known to have succeeded.
        var held = new Dictionary<string, Held>(StringComparer.Ordinal);
        foreach (var (runId, _) in runs)
        {
            if (cache.TryTake<Held>(runId, out var kept) && !IsContended(runId, now)) held[runId] = kept;
        }
        var lookUpKeys = false;
        using var span = LedgerTracing.Group(runs.Count, group.Select(p => p.Caller));

        for (var attempt = 1; ; attempt++)
        {
            var committing = false;
            try
            {
                await using var session = store.LightweightSession();
                var toRead = runs.Where(r => !held.ContainsKey(r.RunId)).ToList();
                var streams = new Dictionary<string, (JasperFx.Events.IEventStream<Run> Stream, RecordedKeys Recorded)>(StringComparer.Ordinal);
                if (toRead.Count > 0 || lookUpKeys)
                {
                    using (LedgerTracing.Step("ledger.writer.read")) streams = await Read(session, toRead, lookUpKeys ? runs : toRead, exclusive);
                }

                GroupEffects effects;
                using (LedgerTracing.Step("ledger.writer.decide"))
                {
                    effects = Effects(runs, held, streams, decided, lookUpKeys, clock.GetUtcNow());
                    Write(session, _schema, effects, held, streams);
                }

                committing = true;
                var started = Stopwatch.GetTimestamp();
                using (LedgerTracing.Step("ledger.writer.commit")) await session.SaveChangesAsync();
                metrics?.Committed(group.Count, Stopwatch.GetElapsedTime(started), effects.AnomalyKinds);
                Keep(cache, decided, effects.Seen);
                Answer(decided.Values);
                return;
            }
            catch (Exception e)
            {
                switch (Retry(e, attempt, attempts, committing, group.Count))
                {
                    case Next.WithKeys:
                        lookUpKeys = true;
                        break;
                    case Next.Exclusively:
                        // Read the group's runs again under row locks, and decide again only those whose version changed.
                        MarkContended(runs);
                        held.Clear();
                        exclusive = true;
                        await Task.Delay(Random.Shared.Next(1, 2 << Math.Min(attempt, 5)));
                        break;
                    case Next.Fail fail:
                        Fail(group, fail.Failure);
                        return;
                }
            }
        }
    }

    /// <summary>What the writer does after an attempt at a group failed: the closed set of its retry policy.</summary>
    private abstract record Next
    {
        /// <summary>Try the group again as it is.</summary>
        public sealed record Again : Next;
        /// <summary>Try again with every run's keys looked up.</summary>
        public sealed record WithKeys : Next;
        /// <summary>Try again reading the runs under row locks.</summary>
        public sealed record Exclusively : Next;
        /// <summary>Answer every caller of the group with <paramref name="Failure"/>.</summary>
        public sealed record Fail(Exception Failure) : Next;
    }

    /// <summary>
    /// The writer's retry policy, for an attempt at a group that failed with <paramref name="e"/>
    /// (a failed attempt appended nothing: the version and key checks come before any append). While
    /// attempts remain (<see cref="WriterOptions.ConflictAttempts"/>): a prepared statement that another
    /// node's schema change invalidated is run again (Npgsql prepares it afresh); an eventId or chunk id
    /// of a run decided on its kept state that was recorded already (a resend) has the group decided
    /// again knowing its keys; runs another node moved are read again under row locks. Contended beyond
    /// the attempts: 503 contention. A database failure while committing: the outcome is unknown, each
    /// caller is told to resend. Anything else fails the group as it is.
    /// </summary>
    private Next Retry(Exception e, int attempt, int attempts, bool committing, int commands)
    {
        var contended = DatabaseFailures.IsConcurrency(e) || RecordedKeyStore.IsKnownKey(e);
        if (attempt < attempts && ConnectionSettings.IsStalePreparedStatement(e))
        {
            logger.LogInformation("A group of {Count} commands met a prepared statement invalidated by a schema change (attempt {Attempt}); running it again", commands, attempt);
            return new Next.Again();
        }
        if (attempt < attempts && RecordedKeyStore.IsKnownKey(e))
        {
            logger.LogDebug("A group of {Count} commands carried keys already recorded (attempt {Attempt}); deciding again with them", commands, attempt);
            return new Next.WithKeys();
        }
        if (attempt < attempts && DatabaseFailures.IsConcurrency(e))
        {
            logger.LogDebug("Runs of a group of {Count} changed elsewhere while deciding (attempt {Attempt}); deciding again", commands, attempt);
            return new Next.Exclusively();
        }
        if (contended)
        {
            logger.LogWarning("A group of {Count} commands stayed contended for {Attempts} attempts", commands, attempts);
            return new Next.Fail(new ProblemException(Problem.Of(ProblemCodes.Contention,
                "Retry shortly; nothing from this request was recorded.") with { RetryAfterSeconds = 1 }));
        }
        if (committing && DatabaseFailures.IsTransient(e))
        {
            logger.LogWarning(e, "The database failed while committing a group of {Count} commands; each caller is told to resend", commands);
            return new Next.Fail(new CommitOutcomeUnknownException(e));
        }
        if (!DatabaseFailures.IsTransient(e)) logger.LogError(e, "A group of {Count} commands failed", commands);
        return new Next.Fail(e);
    }

    private bool IsContended(string runId, long now) => _contended.TryGetValue(runId, out var until) && until > now;

    /// <summary>Runs another node wrote: their next groups are read under row locks at once, for a while.</summary>
    private void MarkContended(List<(string RunId, List<Pending> Pending)> runs)
    {
        var until = Stopwatch.GetTimestamp() + ContendedFor;
        foreach (var (runId, _) in runs) _contended[runId] = until;
        if (_contended.Count > 10_000) _contended.Clear();
    }

    /// <summary>What committing one run's decisions writes beside its events: its new anomaly records, and late events to add to the count of its cap's existing record.</summary>
    private sealed record RunEffects(string RunId, RunDecisions Decisions, List<AnomalyRecord> Anomalies, long AddToCapCount);

    /// <summary>
    /// The effects of a group: per run, its decisions (events to append) and anomaly records; for the
    /// group, the versions to check, the keys to record, the KPI delta, the anomaly kinds (for metrics)
    /// and the keys seen per run (kept with the run after the commit).
    /// </summary>
    private sealed record GroupEffects(List<RunEffects> Runs, List<(string RunId, long Version)> Versions,
        List<(string RunId, string Key, long? Count)> Keys, KpiDelta Kpis, List<string> AnomalyKinds, Dictionary<string, RecordedKeys> Seen);

    /// <summary>
    /// The pure step: decides each run of the group on its kept state or the one read (a decision of an
    /// earlier attempt stands while its run is at the same version, unless it was made without the run's
    /// keys and one of them turned out to be recorded), and works out what the decisions write.
    /// </summary>
    private static GroupEffects Effects(List<(string RunId, List<Pending> Pending)> runs, Dictionary<string, Held> held,
        Dictionary<string, (JasperFx.Events.IEventStream<Run> Stream, RecordedKeys Recorded)> read,
        Dictionary<string, RunDecisions> decided, bool lookUpKeys, DateTimeOffset at)
    {
        var effects = new GroupEffects([], new(runs.Count), [], new KpiDelta(), [], new(StringComparer.Ordinal));
        foreach (var (runId, pending) in runs)
        {
            var wasRead = read.TryGetValue(runId, out var found);
            var kept = held.GetValueOrDefault(runId);
            var state = kept?.State ?? found.Stream?.Aggregate;
            var version = kept?.Version ?? found.Stream?.StartingVersion ?? 0;
            var recorded = wasRead ? found.Recorded : kept?.Recent ?? RecordedKeys.None;
            effects.Seen[runId] = recorded;
            if (!decided.TryGetValue(runId, out var decision) || decision.Version != version || (lookUpKeys && !decision.KeysKnown))
            {
                decided[runId] = decision = DecideRun(state, version, pending, recorded, at, keysKnown: wasRead);
            }
            if (decision.Before is not null) effects.Versions.Add((runId, version));

            var beyondCap = decision.LateEventsBeyondCap;
            var anomalies = new List<AnomalyRecord>();
            if (decision.Events.Count == 0)
            {
                if (beyondCap > 0) effects.Runs.Add(new RunEffects(runId, decision, anomalies, beyondCap));
                continue;
            }
            effects.Kpis.Run(decision.Before, decision.After);
            var capBefore = decision.After!.LateEventsCapAnomaly < decision.Before!.Anomalies.Count;
            for (var i = decision.Before.Anomalies.Count; i < decision.After.Anomalies.Count; i++)
            {
                var anomaly = AnomalyRecord.From(decision.After, i);
                // The cap's anomaly, new in this group, starts with the count of what went beyond it here.
                if (i == decision.After.LateEventsCapAnomaly) anomaly.Count = beyondCap;
                anomalies.Add(anomaly);
                effects.Kpis.Anomaly(anomaly);
                effects.AnomalyKinds.Add(anomaly.Kind);
            }
            foreach (var (key, count) in KeysToRecord(decision)) effects.Keys.Add((runId, key, count));
            effects.Runs.Add(new RunEffects(runId, decision, anomalies, capBefore ? beyondCap : 0));
        }
        return effects;
    }

    /// <summary>
    /// Queues a group's effects in the session: per run its events (onto its kept state, or the stream
    /// read), the count beyond its cap and its anomaly records; then, first in the transaction, every run
    /// still at the version it was decided on, then the keys; the KPI counters move in the same
    /// transaction, one statement for the group.
    /// </summary>
    private static void Write(IDocumentSession session, string schema, GroupEffects effects, Dictionary<string, Held> held,
        Dictionary<string, (JasperFx.Events.IEventStream<Run> Stream, RecordedKeys Recorded)> read)
    {
        foreach (var (runId, decision, anomalies, addToCapCount) in effects.Runs)
        {
            if (decision.Events.Count > 0)
            {
                if (held.TryGetValue(runId, out var kept))
                {
                    // Marten's inline projection folds the events onto this copy instead of loading the run.
                    Hold(session, runId, kept.State.Clone());
                    session.Events.Append(runId, decision.Version + decision.Events.Count, decision.Events);
                }
                else
                {
                    read[runId].Stream.AppendMany(decision.Events);
                }
            }
            if (addToCapCount > 0) AnomalyRecord.CountBeyondCap(session, decision.After!, addToCapCount);
            foreach (var anomaly in anomalies) session.Store(anomaly);
        }
        RunLocks.Queue(session, schema, effects.Versions);
        RecordedKeyStore.Record(session, schema, effects.Keys);
        effects.Kpis.Queue(session, schema);
    }

    /// <summary>After a commit: each run's state, version and recent keys kept for its next command.</summary>
    private static void Keep(RunCache cache, Dictionary<string, RunDecisions> decided, Dictionary<string, RecordedKeys> seen)
    {
        foreach (var (runId, run) in decided)
        {
            if (run.After is not { } after) continue;
            var recent = seen[runId].With(run.Events);
            if (recent.EventIds.Count + recent.Chunks.Count > RecentKeys) recent = RecordedKeys.None.With(run.Events);
            if (recent.EventIds.Count + recent.Chunks.Count > RecentKeys) recent = RecordedKeys.None;
            cache.Put(runId, new Held(after, run.Version + run.Events.Count, recent));
        }
    }

    /// <summary>
    /// The keys the appended events record: every eventId, and the chunk id of each chunk committed
    /// while the run was live. A chunk sent to a finished run is recorded as late whatever its id
    /// (a finished run never checks chunk ids again), so its id is not kept: it may repeat one.
    /// </summary>
    private static IEnumerable<(string Key, long? Count)> KeysToRecord(RunDecisions decision)
    {
        var before = decision.Before!;
        // Only a group that finishes the run needs the status at each event.
        var probe = !before.Status.IsTerminal() && decision.After!.Status.IsTerminal() ? before.Clone() : null;
        foreach (var e in decision.Events)
        {
            var finished = before.Status.IsTerminal() || probe?.Status.IsTerminal() == true;
            foreach (var (key, count) in RecordedKeyStore.KeysOf(e))
            {
                if (!finished || count is null) yield return (key, count);
            }
            probe?.Fold(e);
        }
    }

    /// <summary>Puts a run's state in the session's identity map, where Marten's inline projection looks before loading it.</summary>
    private static void Hold(IDocumentSession session, string runId, Run state)
    {
        session.UseIdentityMapFor<Run>();
        var items = ((Marten.Internal.Sessions.QuerySession)session).ItemMap;
        if (!items.TryGetValue(typeof(Run), out var map)) items[typeof(Run)] = map = new Dictionary<string, Run>();
        ((Dictionary<string, Run>)map)[runId] = state;
    }

    /// <summary>
    /// One round trip: the streams of <paramref name="runs"/> (state and version), then the keys the
    /// commands of <paramref name="keysOf"/> carry, read after the versions so that a key committed
    /// elsewhere is either seen or moves the version.
    /// </summary>
    private async Task<Dictionary<string, (JasperFx.Events.IEventStream<Run> Stream, RecordedKeys Recorded)>> Read(
        IDocumentSession session, List<(string RunId, List<Pending> Pending)> runs, List<(string RunId, List<Pending> Pending)> keysOf, bool exclusive)
    {
        var batch = session.CreateBatchQuery();
        var fetches = runs.Select(r => exclusive
            ? batch.Events.FetchForExclusiveWriting<Run>(r.RunId)
            : batch.Events.FetchForWriting<Run>(r.RunId)).ToList();

        var lookups = keysOf.SelectMany(r => r.Pending.Select(p => p.Command).OfType<RecordEventsCommand>()
            .SelectMany(RecordedKeyStore.KeysToLookUp).Distinct(StringComparer.Ordinal).Select(key => (r.RunId, Key: key))).ToList();
        var keys = lookups.Count == 0
            ? Task.FromResult<IReadOnlyDictionary<string, List<(string Key, long? Count)>>>(new Dictionary<string, List<(string, long?)>>())
            : batch.AddItem(new RecordedKeyStore.Lookup(_schema, lookups.Select(l => l.RunId).ToArray(), lookups.Select(l => l.Key).ToArray()));
        await batch.Execute();

        var found = await keys;
        var result = new Dictionary<string, (JasperFx.Events.IEventStream<Run>, RecordedKeys)>(StringComparer.Ordinal);
        for (var i = 0; i < runs.Count; i++)
        {
            var runId = runs[i].RunId;
            result[runId] = (await fetches[i], found.TryGetValue(runId, out var rows) ? RecordedKeyStore.ToRecorded(rows) : RecordedKeys.None);
        }
        // Runs kept by this writer whose keys were looked up: no stream read, the keys only.
        foreach (var (runId, _) in keysOf)
        {
            if (!result.ContainsKey(runId)) result[runId] = (null!, found.TryGetValue(runId, out var rows) ? RecordedKeyStore.ToRecorded(rows) : RecordedKeys.None);
        }
        return result;
    }

    /// <summary>Decides a run's commands in arrival order, each on the state the previous one left.</summary>
    private static RunDecisions DecideRun(Run? state, long version, List<Pending> pending, RecordedKeys recorded, DateTimeOffset now, bool keysKnown)
    {
        var events = new List<object>();
        var outcomes = new List<(Pending, Decision?, Exception?)>(pending.Count);
        var current = state;
        foreach (var p in pending)
        {
            try
            {
                // Keys appended by an earlier command of this group count as recorded too.
                var command = p.Command is RecordEventsCommand record
                    ? record with { Recorded = events.Count == 0 ? recorded : recorded.With(events) }
                    : p.Command;
                var decision = RunDecider.Decide(current, command, now);
                outcomes.Add((p, decision, null));
                if (decision.Events.Count == 0) continue;
                events.AddRange(decision.Events);
                current = decision.After;
            }
            catch (Exception e)
            {
                // A defect in deciding one command fails that command alone.
                outcomes.Add((p, null, e));
            }
        }
        return new RunDecisions(version, state, current, events, outcomes, keysKnown);
    }

    private void Answer(IEnumerable<RunDecisions> decided)
    {
        foreach (var run in decided)
        {
            foreach (var (pending, decision, failure) in run.Outcomes)
            {
                if (decision is null)
                {
                    pending.Done.TrySetException(failure!);
                    continue;
                }
                metrics?.Answered(pending.Command, decision);
                pending.Done.TrySetResult(decision);
            }
        }
    }

    private static void Fail(List<Pending> group, Exception e)
    {
        foreach (var pending in group) pending.Done.TrySetException(e);
    }
}

/// <summary>
/// The runs one writer wrote last, as its commits left them: at most <c>capacity</c>, the least
/// recently written dropped first, none older than <c>maxAge</c>. Used by that writer's loop only.
/// An entry is taken out while a group uses it and put back only after that group's commit, so a
/// failed or doubtful commit leaves the run to be read again.
/// </summary>
internal sealed class RunCache(int capacity, TimeSpan maxAge)
{
    private readonly Dictionary<string, LinkedListNode<(string RunId, object Value, long At)>> _entries = new(StringComparer.Ordinal);
    private readonly LinkedList<(string RunId, object Value, long At)> _recent = new();
    private readonly long _maxAge = (long)(maxAge.TotalSeconds * Stopwatch.Frequency);

    public int Count => _entries.Count;

    public bool TryTake<T>(string runId, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out T? value) where T : class
    {
        value = null;
        if (!_entries.Remove(runId, out var node)) return false;
        _recent.Remove(node);
        if (Stopwatch.GetTimestamp() - node.Value.At > _maxAge) return false;
        value = (T)node.Value.Value;
        return true;
    }

    public void Put(string runId, object value)
    {
        if (capacity <= 0) return;
        if (_entries.Remove(runId, out var old)) _recent.Remove(old);
        _entries[runId] = _recent.AddFirst((runId, value, Stopwatch.GetTimestamp()));
        while (_entries.Count > capacity)
        {
            var last = _recent.Last!;
            _recent.RemoveLast();
            _entries.Remove(last.Value.RunId);
        }
    }
}

