using System.Data.Common;
using Ledger.Batches;
using Ledger.Infrastructure;
using Ledger.Labels;
using Ledger.Operations;
using Ledger.Runs;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Retention;

/// <summary>What became of one run in a sweep.</summary>
public sealed record ArchiveOutcome(string RunId, ArchiveOutcome.Kind Result, string? Reason = null, long Events = 0, long Bytes = 0,
    bool Reused = false, TimeSpan? Lag = null, string? Message = null)
{
    public enum Kind { Archived, Skipped, Failed }
}

/// <summary>A run the sweep looks at: past the window, and not archived through its version.</summary>
public sealed record ArchiveCandidate(string RunId, long Version, DateTimeOffset TerminalAt, string? Batch, long ArchivedVersion);

/// <summary>
/// Archives runs, one at a time, in two steps that a crash can separate safely:
/// <list type="number">
/// <item>the run's events not archived yet are read from PostgreSQL and written as a bundle (temporary
/// file, flushed, renamed, folder flushed; an identical bundle already there is reused), then read
/// back whole and checked: manifest, chunks, chain, digest, and their refold;</item>
/// <item>one transaction, under the same row lock the run writer takes, checks that the run is
/// still at the version archived and that its refold equals its stored summary, puts the marker
/// (<see cref="RunArchived"/>) in place of the run's last verdict, removes every other archived
/// event through the session, with the run's recorded keys and history snapshots, and records the
/// archive.</item>
/// </list>
/// A crash before the commit leaves every event in PostgreSQL and, at worst, a bundle that the next
/// attempt reuses; nothing is removed without an archive that was read back.
/// </summary>
public sealed class RunArchiver(IDocumentStore store, StorageNames names, RunArchives archives, IOptions<RetentionOptions> options,
    LabelVocabulary vocabulary, IOptions<BatchOptions> batchOptions, TimeProvider clock, ILogger<RunArchiver> logger, LedgerMetrics? metrics = null)
{
    private const int ReadPage = 5000;
    private readonly string _runs = names.Table<Run>();
    private readonly string _archived = names.Own(ArchivedRunStore.TableName);
    // The verdict's time as the run summary's copied, indexed column (a sweep pages through it in order).
    private readonly string _terminalAt = names.Column<Run>(r => r.TerminalAt, "r");
    private readonly string _verdictType = names.EventType<VerdictReached>();
    private readonly string _markerType = names.EventType<RunArchived>();

    private RetentionOptions Policy => options.Value;

    /// <summary>Runs past the window after (<paramref name="afterAt"/>, <paramref name="afterId"/>) in verdict order, not archived through their version.</summary>
    public async Task<IReadOnlyList<ArchiveCandidate>> PastWindowAsync(DateTimeOffset cutoff, DateTimeOffset afterAt, string afterId, int limit,
        CancellationToken ct)
    {
        await using var session = store.QuerySession();
        return await session.RowsAsync(
            $"select r.id, (r.data ->> 'version')::bigint, {_terminalAt}, r.data ->> 'batch', coalesce(a.archived_version, 0) " +
            $"from {_runs} r left join {_archived} a on a.run_id = r.id " +
            $"where {_terminalAt} < ? and {_terminalAt} >= ? and ({_terminalAt}, r.id) > (?, ?) " +
            "and (a.run_id is null or (a.archived_version < (r.data ->> 'version')::bigint and (a.restored_at is null or a.restored_at < ?))) " +
            // Streams flagged by Marten's own ArchiveStream are left as they are.
            $"and not exists (select 1 from {names.Streams} s where s.id = r.id and s.is_archived) " +
            $"order by {_terminalAt}, r.id limit ?",
            Candidate, ct, cutoff, afterAt, afterAt, afterId, cutoff, limit);
    }

    /// <summary>
    /// Runs archived before and written since (a late event, an observation, a reclassification),
    /// and runs restored more than a window ago: whatever the verdict-ordered walk has passed.
    /// </summary>
    public async Task<IReadOnlyList<ArchiveCandidate>> ReturningAsync(DateTimeOffset cutoff, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        return await session.RowsAsync(
            $"select r.id, (r.data ->> 'version')::bigint, {_terminalAt}, r.data ->> 'batch', a.archived_version " +
            $"from {_archived} a join {names.Streams} s on s.id = a.run_id join {_runs} r on r.id = a.run_id " +
            // A reclassification after the archive moves the verdict: the window counts again from it.
            $"where a.archived_version > 0 and s.version > a.archived_version and {_terminalAt} < ? " +
            "union all " +
            $"select r.id, (r.data ->> 'version')::bigint, {_terminalAt}, r.data ->> 'batch', a.archived_version " +
            $"from {_archived} a join {_runs} r on r.id = a.run_id where a.restored_at is not null and a.restored_at < ? and a.archived_version = 0 and {_terminalAt} < ?",
            Candidate, ct, cutoff, cutoff, cutoff);
    }

    private static ArchiveCandidate Candidate(DbDataReader r) =>
        new(r.GetString(0), r.GetInt64(1), r.GetFieldValue<DateTimeOffset>(2), r.IsDBNull(3) ? null : r.GetString(3), r.GetInt64(4));

    /// <summary>The position every async projection and the webhook relay have reached (0 when one has not started).</summary>
    public async Task<long> ProjectionsReachedAsync(CancellationToken ct)
    {
        var progress = await store.Advanced.AllProjectionProgress(token: ct);
        var done = progress.Where(p => p.ShardName != "HighWaterMark").ToDictionary(p => p.ShardName, p => p.Sequence);
        if (store is DocumentStore documents)
        {
            foreach (var shard in documents.Options.Projections.AllShards()) done.TryAdd(shard.Name.Identity, 0);
        }
        return done.Count == 0 ? long.MaxValue : done.Values.Min();
    }

    /// <summary>The sequence of each candidate's last event: a run is archived only once every projection has passed it.</summary>
    public async Task<IReadOnlyDictionary<string, long>> LastSequencesAsync(IReadOnlyList<ArchiveCandidate> candidates, CancellationToken ct)
    {
        if (candidates.Count == 0) return new Dictionary<string, long>();
        await using var session = store.QuerySession();
        var rows = await session.RowsAsync(
            $"select e.stream_id, e.seq_id from unnest(?::varchar[], ?::bigint[]) as c(id, version) " +
            $"join {names.Events} e on e.stream_id = c.id and e.version = c.version",
            r => (r.GetString(0), r.GetInt64(1)), ct,
            candidates.Select(c => c.RunId).ToArray(), candidates.Select(c => c.Version).ToArray());
        return rows.ToDictionary(r => r.Item1, r => r.Item2, StringComparer.Ordinal);
    }

    /// <summary>
    /// Whether a run's batch lets it go: every run the batch expects is terminal, or the batch was
    /// defined longer ago than the window. A batch never defined expects nothing beyond the runs
    /// registered with it: they must all be terminal.
    /// </summary>
    public async Task<bool> BatchAllowsAsync(string batchId, DateTimeOffset now, CancellationToken ct)
    {
        var window = Policy.ArchiveAfter ?? TimeSpan.MaxValue;
        var view = await GetBatchEndpoint.Load(batchId, store, vocabulary, batchOptions.Value, clock, ct);
        if (view is not null) return view.Complete || view.CreatedAt < now - window;
        await using var session = store.QuerySession();
        var open = await session.Query<Run>().Where(r => r.Batch == batchId && r.TerminalAt == null).AnyAsync(ct);
        return !open;
    }

    /// <summary>A run whose bundle is written and read back, ready for the transaction that removes its events.</summary>
    public sealed record Prepared(ArchiveCandidate Candidate, long From, long Through, ArchivedRunRow? Previous, RunArchived? PreviousMarker,
        List<ArchiveBundle> Bundles, ArchiveBundle Bundle, Run Run, long LastSequence, DateTimeOffset RecordedThrough, DateTimeOffset? LastTimestamp, bool Fresh);

    /// <summary>Archives the events of one run not archived yet (the run must already be known to be eligible): prepared, then committed alone.</summary>
    public async Task<ArchiveOutcome> ArchiveAsync(ArchiveCandidate candidate, DateTimeOffset now, CancellationToken ct)
    {
        var (prepared, outcome) = await PrepareAsync(candidate, ct);
        return prepared is null ? outcome! : (await CommitAsync([prepared], ct))[0];
    }

    /// <summary>
    /// Step 1: writes the run's bundle and reads it back whole (manifest, chunks, chain, digest, and
    /// its refold). Nothing changes in PostgreSQL. Either the prepared run or why not.
    /// </summary>
    public async Task<(Prepared? Prepared, ArchiveOutcome? Outcome)> PrepareAsync(ArchiveCandidate candidate, CancellationToken ct)
    {
        var runId = candidate.RunId;
        try
        {
            var prepared = await PrepareOneAsync(candidate, ct);
            return prepared.Prepared is not null ? prepared : (null, prepared.Outcome);
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            return (null, await FailureAsync(candidate, e, ct));
        }
    }

    private async Task<ArchiveOutcome> FailureAsync(ArchiveCandidate candidate, Exception e, CancellationToken ct)
    {
        var runId = candidate.RunId;
        // Thrown while a row was being read, ours may come wrapped by the library.
        for (var inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is ArchiveWriteException or ArchiveUnreadableException or ArchiveRefusedException or RunChangedException)
            {
                e = inner;
                break;
            }
        }
        switch (e)
        {
            case ArchiveWriteException w:
                return Failed(runId, w.Reason, w.Message);
            case ArchiveUnreadableException:
                return Failed(runId, "read-back-mismatch", e.Message);
            case ArchiveRefusedException r:
                return Failed(runId, r.Reason, r.Message);
            case not null when DatabaseFailures.IsConcurrency(e) || e is RunChangedException:
            {
                await using var session = store.QuerySession();
                var row = await ArchivedRunStore.LoadAsync(session, names.Schema, runId, ct);
                return new ArchiveOutcome(runId, ArchiveOutcome.Kind.Skipped,
                    row is { Archived: true } && row.ArchivedVersion >= candidate.Version ? "archived-elsewhere" : "changed");
            }
            case not null when DatabaseFailures.IsTransient(e):
                return Failed(runId, "database-unavailable", e.Message);
            default:
                logger.LogError(e, "Archiving run {RunId} failed unexpectedly; its events stay in PostgreSQL", runId);
                metrics?.RetentionFailed("internal");
                return new ArchiveOutcome(runId, ArchiveOutcome.Kind.Failed, "internal", Message: $"run {runId}: {e!.GetType().Name}: {e.Message}");
        }
    }

    private ArchiveOutcome Failed(string runId, string reason, string message)
    {
        logger.LogWarning("Run {RunId} was not archived ({Reason}): {Message} Its events stay in PostgreSQL; the next sweep tries again", runId, reason, message);
        metrics?.RetentionFailed(reason);
        return new ArchiveOutcome(runId, ArchiveOutcome.Kind.Failed, reason, Message: message);
    }

    private sealed class ArchiveRefusedException(string reason, string message) : Exception(message)
    {
        public string Reason { get; } = reason;
    }

    /// <summary>The run's events are not what they were when it was picked (another node archived or restored it).</summary>
    private sealed class RunChangedException() : Exception("The run changed while it was being archived.");

    private async Task<(Prepared? Prepared, ArchiveOutcome? Outcome)> PrepareOneAsync(ArchiveCandidate candidate, CancellationToken ct)
    {
        var runId = candidate.RunId;
        var schema = names.Schema;
        ArchivedRunRow? previous = null;
        RunArchived? previousMarker = null;
        if (candidate.ArchivedVersion > 0)
        {
            // A run archived before: its bundles, and the state its marker keeps, are where this bundle starts.
            await using var read = store.QuerySession();
            previous = await ArchivedRunStore.LoadAsync(read, schema, runId, ct);
            if (previous is { Archived: true, MarkerSequence: { } previousSequence }) previousMarker = await MarkerAsync(read, previousSequence, ct);
        }
        var from = previous is { Archived: true } ? previous.ArchivedVersion : 0;
        if (from >= candidate.Version) return (null, new ArchiveOutcome(runId, ArchiveOutcome.Kind.Skipped, "archived-elsewhere"));
        if (from != candidate.ArchivedVersion) return (null, new ArchiveOutcome(runId, ArchiveOutcome.Kind.Skipped, "changed"));
        var through = candidate.Version;
        var bundles = from == 0 ? new List<ArchiveBundle>() : [.. previous!.Bundles];
        var number = bundles.Count + 1;

        // Where the bundle's chain and refold start: the run's origin, or the end of its last bundle.
        string chainStart;
        RunReplay.Fold Start()
        {
            if (from == 0) return new RunReplay.Fold();
            var snapshot = previousMarker?.Snapshot
                           ?? throw new ArchiveRefusedException("marker-missing", $"The marker of archived run {runId} is not in the event store.");
            // A copy each time: a fold goes on changing the state it starts from.
            return new RunReplay.Fold(new RunSnapshot(from, previous!.LastSequence, new DateTimeOffset(previous.RecordedThrough, TimeSpan.Zero),
                RunSnapshotStore.Deserialize(RunSnapshotStore.Serialize(snapshot))));
        }
        if (from == 0)
        {
            chainStart = ArchiveFormat.ChainOrigin(runId);
        }
        else
        {
            using var last = archives.Open(runId, bundles[^1]);
            chainStart = last.Manifest.ChainEnd;
        }

        var written = await WriteBundleAsync(runId, number, from, through, chainStart, Start(), ct);
        var check = Start();
        var checkedBundle = archives.CheckBundle(runId, written.Path, $"bundle {number}, {written.Path}",
            written.Fresh ? written.ManifestSha256 : null, written.ContentSha256, from + 1, chainStart,
            line => check.Apply(archives.ToStored(runId, line), explain: false));
        if (check.Version != through || check.Run is null)
        {
            throw new ArchiveRefusedException("read-back-mismatch", $"The bundle of run {runId} read back folds to version {check.Version}, not {through}.");
        }
        var bundle = new ArchiveBundle(number, written.Path, written.ContentSha256, checkedBundle.ManifestSha256, checkedBundle.Manifest.Count,
            from + 1, through, checkedBundle.Manifest.FirstSequence, checkedBundle.Manifest.LastSequence, checkedBundle.Bytes);
        bundles.Add(bundle);
        if (Policy.FaultPauseAfterWrite > TimeSpan.Zero)
        {
            logger.LogWarning("Archive of run {RunId} written and checked ({Bundle}); pausing {Pause} before its events are removed (fault drill)",
                runId, bundle.Path, Policy.FaultPauseAfterWrite);
            await Task.Delay(Policy.FaultPauseAfterWrite, ct);
        }
        return (new Prepared(candidate, from, through, previous, previousMarker, bundles, bundle, check.Run, check.Sequence, check.RecordedThrough!.Value,
            checkedBundle.Manifest.LastTimestamp, written.Fresh), null);
    }

    private sealed record Locked(string RunId, long Version);

    /// <summary>
    /// Step 2, for a group of prepared runs in one transaction (one commit for the group, as the run
    /// writer groups commands): their streams are locked in run-id order (the writer's order), then
    /// each run must still be at the version archived, with the archive row it had, and its refold
    /// must equal its stored summary; those that are not are left as they are. For the others the
    /// marker takes the place of the last verdict, their other archived events, recorded keys and
    /// history snapshots are removed, and their archive rows written.
    /// </summary>
    public async Task<IReadOnlyList<ArchiveOutcome>> CommitAsync(IReadOnlyList<Prepared> group, CancellationToken ct)
    {
        var schema = names.Schema;
        var ordered = group.OrderBy(p => p.Candidate.RunId, StringComparer.Ordinal).ToList();
        var ids = ordered.Select(p => p.Candidate.RunId).ToArray();
        var outcomes = new Dictionary<string, ArchiveOutcome>(StringComparer.Ordinal);
        try
        {
            var serializer = store.Options.Serializer();
            var folded = ordered.Select(p => serializer.ToJson(p.Run)).ToArray();
            var archivedAt = clock.GetUtcNow();
            await using var session = store.LightweightSession();
            await session.BeginTransactionAsync(ct);
            // One round trip: the locks first, then what is checked under them.
            var batch = session.CreateBatchQuery();
            var locks = batch.AddItem(new SqlRows<Locked>($"select id, coalesce(version, 0) from {names.Streams} where id = any(?) order by id for update",
                [ids], r => new Locked(r.GetString(0), r.GetInt64(1))));
            var rows = batch.AddItem(new ArchivedRunStore.Many(schema, ids));
            var same = batch.AddItem(new SqlRows<(string Id, bool Same)>(
                $"select d.id, d.data = x.f::jsonb from unnest(?::varchar[], ?::text[]) as x(id, f) join {_runs} d on d.id = x.id",
                [ids, folded], r => (r.GetString(0), r.GetBoolean(1))));
            var kept = batch.AddItem(new SqlRows<(string RunId, long Sequence, long Version, string Type, string Data)>(
                $"select stream_id, seq_id, version, type, data::text from {names.Events} where stream_id = any(?) and type in (?, ?) order by stream_id, version",
                [ids, _verdictType, _markerType], r => (r.GetString(0), r.GetInt64(1), r.GetInt64(2), r.GetString(3), r.GetString(4))));
            await batch.Execute(ct);
            var versions = (await locks).ToDictionary(l => l.RunId, l => l.Version, StringComparer.Ordinal);
            var archivedRows = await rows;
            var equal = (await same).ToDictionary(x => x.Id, x => x.Same, StringComparer.Ordinal);
            var verdictsOf = (await kept).ToLookup(k => k.RunId, StringComparer.Ordinal);

            var committing = new List<(Prepared Prepared, long MarkerSequence)>();
            for (var i = 0; i < ordered.Count; i++)
            {
                var p = ordered[i];
                var runId = p.Candidate.RunId;
                var row = archivedRows.GetValueOrDefault(runId);
                if (row is { Archived: true } && row.ArchivedVersion >= p.Through)
                {
                    // Another sweep (another node) archived it meanwhile, maybe from the same bundle.
                    outcomes[runId] = new ArchiveOutcome(runId, ArchiveOutcome.Kind.Skipped, "archived-elsewhere");
                    continue;
                }
                if (versions.GetValueOrDefault(runId) != p.Through || (row is { Archived: true } ? row.ArchivedVersion : 0) != p.From
                    || row?.MarkerSequence != p.Previous?.MarkerSequence)
                {
                    outcomes[runId] = new ArchiveOutcome(runId, ArchiveOutcome.Kind.Skipped, "changed");
                    continue;
                }
                if (!equal.GetValueOrDefault(runId))
                {
                    var stored = await session.RowsAsync($"select data::text from {_runs} where id = ?", r => r.GetString(0), ct, runId);
                    outcomes[runId] = Failed(runId, "fold-mismatch",
                        $"The refold of run {runId}'s events is not its stored summary ({(stored.Count == 1 ? Ledger.Forensics.JsonDiff.Describe(stored[0], folded[i]) : "no summary")}). " +
                        "Nothing is archived until they agree; `verify` reports it too.");
                    continue;
                }
                committing.Add((p, await QueueAsync(session, p, verdictsOf[runId].Where(k => k.Version <= p.Through).ToList(), archivedAt, ct)));
            }
            if (committing.Count > 0) await session.SaveChangesAsync(ct);

            foreach (var (p, _) in committing)
            {
                metrics?.RetentionArchived();
                logger.LogInformation("Run {RunId} archived: versions {From}..{Through} ({Events} events, {Bytes} bytes) in {Bundle}{Reused}",
                    p.Candidate.RunId, p.From + 1, p.Through, p.Bundle.Count, p.Bundle.Bytes, p.Bundle.Path,
                    p.Fresh ? "" : " (an identical archive already there was reused)");
                outcomes[p.Candidate.RunId] = new ArchiveOutcome(p.Candidate.RunId, ArchiveOutcome.Kind.Archived, null, p.Bundle.Count, p.Bundle.Bytes,
                    !p.Fresh, archivedAt - p.Candidate.TerminalAt);
            }
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            // Nothing of the group was committed: each run says why, as if alone.
            foreach (var p in ordered.Where(p => !outcomes.ContainsKey(p.Candidate.RunId) || outcomes[p.Candidate.RunId].Result == ArchiveOutcome.Kind.Archived))
            {
                outcomes[p.Candidate.RunId] = await FailureAsync(p.Candidate, e, ct);
            }
        }
        return group.Select(p => outcomes[p.Candidate.RunId]).ToList();
    }

    /// <summary>Queues what archiving one checked run does; the sequence its marker takes.</summary>
    private async Task<long> QueueAsync(IDocumentSession session, Prepared p, List<(string RunId, long Sequence, long Version, string Type, string Data)> kept,
        DateTimeOffset archivedAt, CancellationToken ct)
    {
        var runId = p.Candidate.RunId;
        var verdictRows = kept.Where(k => k.Type == _verdictType).ToList();
        long markerSequence;
        VerdictReached? markerVerdict;
        if (verdictRows.Count > 0 && verdictRows[^1].Version > p.From)
        {
            // The marker takes the place of the run's last verdict.
            markerSequence = verdictRows[^1].Sequence;
            markerVerdict = Deserialize<VerdictReached>(verdictRows[^1].Data);
            if (p.PreviousMarker is not null && p.Previous!.MarkerSequence is { } old)
            {
                // The earlier marker goes back to being the verdict it stood for (a run without one loses it).
                if (p.PreviousMarker.Verdict is { } verdict) session.Events.CompletelyReplaceEvent(old, verdict);
                else session.QueueSqlCommand($"delete from {names.Events} where seq_id = ?", old);
            }
        }
        else if (p.PreviousMarker is not null)
        {
            markerSequence = p.Previous!.MarkerSequence!.Value;
            markerVerdict = p.PreviousMarker.Verdict;
        }
        else
        {
            // A run without a verdict (written before verdicts were published): the marker takes the place of its last event.
            var last = await session.RowsAsync($"select seq_id from {names.Events} where stream_id = ? and version = ?", r => r.GetInt64(0), ct, runId, p.Through);
            markerSequence = last[0];
            markerVerdict = null;
        }

        var count = p.Bundles.Sum(b => b.Count);
        session.Events.CompletelyReplaceEvent(markerSequence,
            new RunArchived(p.Run, runId, p.Bundle.Path, p.Bundle.Sha256, count, p.Through, p.Bundles, markerVerdict, archivedAt));
        session.QueueSqlCommand(
            $"delete from {names.Events} where stream_id = ? and version > ? and version <= ? and type <> ? and seq_id <> ?",
            runId, p.From, p.Through, _verdictType, markerSequence);
        RecordedKeyStore.DeleteKeysOf(session, names.Schema, runId);
        RunSnapshotStore.Store(session, names.Own(RunSnapshotStore.TableName), runId, [], purge: true);
        ArchivedRunStore.Save(session, names.Schema, new ArchivedRunRow(runId, p.Through, markerSequence, p.Bundles, count, p.Bundles.Sum(b => b.Bytes),
            p.LastSequence, p.RecordedThrough.UtcTicks, p.LastTimestamp, p.Candidate.TerminalAt, archivedAt, null));
        return markerSequence;
    }

    private sealed record Written(string Path, string ContentSha256, string ManifestSha256, bool Fresh);

    /// <summary>
    /// Reads the run's events (from..through] a page at a time straight into the bundle's temporary
    /// file. Its name carries its content's digest, known once the last event is written.
    /// </summary>
    private async Task<Written> WriteBundleAsync(string runId, int number, long from, long through, string chainStart, RunReplay.Fold fold,
        CancellationToken ct)
    {
        archives.Files.SweepTemporaries(runId);
        string? manifestSha = null, contentSha = null;
        var (relative, fresh) = await archives.Files.WriteAsync(runId, number, async output =>
        {
            var writer = new ArchiveFormat.Writer(output, runId, number, chainStart, fold, Policy.ChunkEvents);
            await using (var session = store.QuerySession())
            {
                for (var version = from + 1; version <= through; version += ReadPage)
                {
                    // Each row goes into the bundle as it is read: nothing of the run is held beyond the current event.
                    await session.EachAsync(
                        $"select version, seq_id, id, type, mt_dotnet_type, coalesce(tenant_id, '*DEFAULT*'), timestamp, data::text, bdata is not null " +
                        $"from {names.Events} where stream_id = ? and version >= ? and version <= ? order by version",
                        r =>
                        {
                            var e = new ArchivedEvent(r.GetInt64(0), r.GetInt64(1), r.GetGuid(2), r.GetString(3), r.IsDBNull(4) ? null : r.GetString(4),
                                r.GetString(5), r.GetFieldValue<DateTimeOffset>(6), r.GetString(7));
                            // Another node archived the run meanwhile: its events are gone but for the marker.
                            if (e.Version != from + 1 + writer.Count || e.Type == _markerType) throw new RunChangedException();
                            if (r.GetBoolean(8)) throw new ArchiveRefusedException("unsupported-event", $"Run {runId} holds a binary event (version {e.Version}); only JSON events are archived.");
                            writer.Add(e, archives.ToStored(runId, e).Data);
                        },
                        ct, runId, version, Math.Min(through, version + ReadPage - 1));
                }
            }
            if (writer.Count != through - from) throw new RunChangedException();
            var (manifest, sha) = writer.Complete();
            manifestSha = sha;
            contentSha = manifest.ContentSha256;
            return manifest.ContentSha256;
        });
        return new Written(relative, contentSha!, manifestSha!, fresh);
    }

    /// <summary>What an event row takes in PostgreSQL on average, indexes included (the preview's bytes).</summary>
    public async Task<double> AverageEventBytesAsync(CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var rows = await session.RowsAsync(
            $"select pg_total_relation_size(c.oid)::float8 / greatest(c.reltuples, 1)::float8 from pg_class c where c.oid = ?::regclass",
            r => r.GetDouble(0), ct, names.Events);
        return rows.Count == 0 ? 0 : rows[0];
    }

    private async Task<RunArchived?> MarkerAsync(IQuerySession session, long sequence, CancellationToken ct)
    {
        var data = await session.RowsAsync($"select data::text from {names.Events} where seq_id = ? and type = ?", r => r.GetString(0), ct, sequence, _markerType);
        return data.Count == 0 ? null : Deserialize<RunArchived>(data[0]);
    }

    private T? Deserialize<T>(string json)
    {
        using var stream = new MemoryStream(System.Text.Encoding.UTF8.GetBytes(json));
        return (T?)store.Options.Serializer().FromJson(typeof(T), stream);
    }
}
