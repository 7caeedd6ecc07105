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
    private readonly string _terminalAt = $"{names.Function("mt_immutable_timestamptz")}({names.Json<Run>(r => r.TerminalAt)})";
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
            $"where {_terminalAt} < ? and ({_terminalAt}, r.id) > (?, ?) " +
            "and (a.run_id is null or (a.archived_version < (r.data ->> 'version')::bigint and (a.restored_at is null or a.restored_at < ?))) " +
            // Streams flagged by Marten's own ArchiveStream are left as they are.
            $"and not exists (select 1 from {names.Streams} s where s.id = r.id and s.is_archived) " +
            $"order by {_terminalAt}, r.id limit ?",
            Candidate, ct, cutoff, afterAt, afterId, cutoff, limit);
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

    /// <summary>Archives the events of one run not archived yet; the run must already be known to be eligible.</summary>
    public async Task<ArchiveOutcome> ArchiveAsync(ArchiveCandidate candidate, DateTimeOffset now, CancellationToken ct)
    {
        var runId = candidate.RunId;
        try
        {
            return await ArchiveOneAsync(candidate, now, ct);
        }
        catch (ArchiveWriteException e)
        {
            return Failed(runId, e.Reason, e.Message);
        }
        catch (ArchiveUnreadableException e)
        {
            return Failed(runId, "read-back-mismatch", e.Message);
        }
        catch (ArchiveRefusedException e)
        {
            return Failed(runId, e.Reason, e.Message);
        }
        catch (Exception e) when (DatabaseFailures.IsConcurrency(e) || e is RunChangedException)
        {
            await using var session = store.QuerySession();
            var row = await ArchivedRunStore.LoadAsync(session, names.Schema, runId, ct);
            return new ArchiveOutcome(runId, ArchiveOutcome.Kind.Skipped, row is { Archived: true } && row.ArchivedVersion >= candidate.Version ? "archived-elsewhere" : "changed");
        }
        catch (Exception e) when (DatabaseFailures.IsTransient(e))
        {
            return Failed(runId, "database-unavailable", e.Message);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            logger.LogError(e, "Archiving run {RunId} failed unexpectedly; its events stay in PostgreSQL", runId);
            metrics?.RetentionFailed("internal");
            return new ArchiveOutcome(runId, ArchiveOutcome.Kind.Failed, "internal", Message: $"run {runId}: {e.GetType().Name}: {e.Message}");
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

    private async Task<ArchiveOutcome> ArchiveOneAsync(ArchiveCandidate candidate, DateTimeOffset now, CancellationToken ct)
    {
        var runId = candidate.RunId;
        var schema = names.Schema;
        ArchivedRunRow? previous;
        RunArchived? previousMarker = null;
        await using (var read = store.QuerySession())
        {
            previous = await ArchivedRunStore.LoadAsync(read, schema, runId, ct);
            if (previous is { Archived: true, MarkerSequence: { } previousSequence })
            {
                previousMarker = await MarkerAsync(read, previousSequence, ct);
            }
        }
        var from = previous is { Archived: true } ? previous.ArchivedVersion : 0;
        if (from >= candidate.Version) return new ArchiveOutcome(runId, ArchiveOutcome.Kind.Skipped, "archived-elsewhere");
        if (from != candidate.ArchivedVersion) return new ArchiveOutcome(runId, ArchiveOutcome.Kind.Skipped, "changed");
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

        // 1. The bundle, written and read back before anything changes in PostgreSQL.
        var written = await WriteBundleAsync(runId, number, from, through, chainStart, Start(), ct);
        var check = Start();
        var checkedBundle = archives.CheckBundle(runId, written.Path, $"bundle {number}, {written.Path}",
            written.Fresh ? written.ManifestSha256 : null, written.ContentSha256, from + 1, chainStart,
            e => check.Apply(archives.ToStored(runId, e), explain: false));
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

        // 2. One transaction: the run must be where it was, and its refold must be its summary.
        var archivedAt = clock.GetUtcNow();
        await using var session = store.LightweightSession();
        await session.BeginTransactionAsync(ct);
        var stream = await session.Events.FetchForExclusiveWriting<Run>(runId, ct);
        var row = await ArchivedRunStore.LoadAsync(session, schema, runId, ct, forUpdate: true);
        if (row is { Archived: true } && row.ArchivedVersion >= through)
        {
            // Another sweep (another node) archived it meanwhile, maybe from the same bundle.
            return new ArchiveOutcome(runId, ArchiveOutcome.Kind.Skipped, "archived-elsewhere");
        }
        if ((stream.StartingVersion ?? 0) != through || (row is { Archived: true } ? row.ArchivedVersion : 0) != from
            || row?.MarkerSequence != previous?.MarkerSequence)
        {
            return new ArchiveOutcome(runId, ArchiveOutcome.Kind.Skipped, "changed");
        }
        var folded = store.Options.Serializer().ToJson(check.Run);
        var same = await session.RowsAsync($"select data = ?::jsonb, data::text from {_runs} where id = ?", r => (Same: r.GetBoolean(0), Stored: r.GetString(1)),
            ct, folded, runId);
        if (same.Count != 1 || !same[0].Same)
        {
            throw new ArchiveRefusedException("fold-mismatch",
                $"The refold of run {runId}'s events is not its stored summary ({(same.Count == 1 ? Ledger.Forensics.JsonDiff.Describe(same[0].Stored, folded) : "no summary")}). " +
                "Nothing is archived until they agree; `verify` reports it too.");
        }

        // The marker takes the place of the run's last verdict (or, for a run without one, of its last event).
        var kept = await session.RowsAsync(
            $"select seq_id, version, type from {names.Events} where stream_id = ? and version <= ? and type in (?, ?) order by version",
            r => (Sequence: r.GetInt64(0), Version: r.GetInt64(1), Type: r.GetString(2)), ct, runId, through, _verdictType, _markerType);
        var verdictRows = kept.Where(k => k.Type == _verdictType).ToList();
        var lastVerdict = verdictRows.Count > 0 ? verdictRows[^1] : default;
        var newVerdictInBundle = verdictRows.Count > 0 && lastVerdict.Version > from;
        long markerSequence;
        VerdictReached? markerVerdict;
        if (newVerdictInBundle)
        {
            markerSequence = lastVerdict.Sequence;
            markerVerdict = await VerdictAsync(session, markerSequence, ct);
            if (previousMarker is not null && previous!.MarkerSequence is { } old)
            {
                // The earlier marker goes back to being the verdict it stood for (a run without one loses it).
                if (previousMarker.Verdict is { } verdict) session.Events.CompletelyReplaceEvent(old, verdict);
                else session.QueueSqlCommand($"delete from {names.Events} where seq_id = ?", old);
            }
        }
        else if (previousMarker is not null)
        {
            markerSequence = previous!.MarkerSequence!.Value;
            markerVerdict = previousMarker.Verdict;
        }
        else
        {
            var last = await session.RowsAsync($"select seq_id from {names.Events} where stream_id = ? and version = ?", r => r.GetInt64(0), ct, runId, through);
            markerSequence = last[0];
            markerVerdict = null;
        }

        var count = bundles.Sum(b => b.Count);
        var marker = new RunArchived(check.Run, runId, bundle.Path, bundle.Sha256, count, through, bundles, markerVerdict, archivedAt);
        session.Events.CompletelyReplaceEvent(markerSequence, marker);
        session.QueueSqlCommand(
            $"delete from {names.Events} where stream_id = ? and version > ? and version <= ? and type <> ? and seq_id <> ?",
            runId, from, through, _verdictType, markerSequence);
        RecordedKeyStore.DeleteForRun(session, schema, runId);
        RunSnapshotStore.Store(session, names.Own(RunSnapshotStore.TableName), runId, [], purge: true);
        ArchivedRunStore.Save(session, schema, new ArchivedRunRow(runId, through, markerSequence, bundles, count, bundles.Sum(b => b.Bytes),
            check.Sequence, check.RecordedThrough!.Value.UtcTicks, checkedBundle.Manifest.LastTimestamp, candidate.TerminalAt, archivedAt, null));
        await session.SaveChangesAsync(ct);

        metrics?.RetentionArchived();
        logger.LogInformation("Run {RunId} archived: versions {From}..{Through} ({Events} events, {Bytes} bytes) in {Bundle}{Reused}",
            runId, from + 1, through, bundle.Count, bundle.Bytes, bundle.Path, written.Fresh ? "" : " (an identical archive already there was reused)");
        return new ArchiveOutcome(runId, ArchiveOutcome.Kind.Archived, null, bundle.Count, bundle.Bytes, !written.Fresh, archivedAt - candidate.TerminalAt);
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
                    var page = await session.RowsAsync(
                        $"select version, seq_id, id, type, mt_dotnet_type, coalesce(tenant_id, '*DEFAULT*'), timestamp, data::text, bdata is not null " +
                        $"from {names.Events} where stream_id = ? and version >= ? and version <= ? order by version",
                        r => (Event: new ArchivedEvent(r.GetInt64(0), r.GetInt64(1), r.GetGuid(2), r.GetString(3), r.IsDBNull(4) ? null : r.GetString(4),
                            r.GetString(5), r.GetFieldValue<DateTimeOffset>(6), r.GetString(7)), Binary: r.GetBoolean(8)),
                        ct, runId, version, Math.Min(through, version + ReadPage - 1));
                    foreach (var (e, binary) in page)
                    {
                        // Another node archived the run meanwhile: its events are gone but for the marker.
                        if (e.Version != from + 1 + writer.Count || e.Type == _markerType) throw new RunChangedException();
                        if (binary) throw new ArchiveRefusedException("unsupported-event", $"Run {runId} holds a binary event (version {e.Version}); only JSON events are archived.");
                        writer.Add(e, archives.ToStored(runId, e).Data);
                    }
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

    private async Task<VerdictReached?> VerdictAsync(IQuerySession session, long sequence, CancellationToken ct)
    {
        var data = await session.RowsAsync($"select data::text from {names.Events} where seq_id = ?", r => r.GetString(0), ct, sequence);
        return data.Count == 0 ? null : Deserialize<VerdictReached>(data[0]);
    }

    private T? Deserialize<T>(string json)
    {
        using var stream = new MemoryStream(System.Text.Encoding.UTF8.GetBytes(json));
        return (T?)store.Options.Serializer().FromJson(typeof(T), stream);
    }
}
