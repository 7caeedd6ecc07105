using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Marten;

namespace Ledger.Retention;

/// <summary>What a restore put back.</summary>
public sealed record RestoredRun(string RunId, long Events, long Version, int Bundles, DateTimeOffset RestoredAt);

/// <summary>
/// Puts an archived run's events back into PostgreSQL, all or nothing: every bundle is read whole
/// and checked (manifest, chunks, chain, content digest, and that its refold is the snapshot its
/// marker holds) before one transaction replaces the marker and the verdicts it kept with every
/// archived event, with the sequence, version, id and timestamps each had, and records their keys
/// again. The sequences are the original ones, below what the projections and the webhook relay
/// have passed, so none of them is processed again: no webhook is sent twice, no standing moves.
/// The run then stays in PostgreSQL for a whole window before a sweep may archive it again.
/// </summary>
public sealed class RunRestorer(IDocumentStore store, StorageNames names, RunArchives archives, TimeProvider clock, ILogger<RunRestorer> logger)
{
    private const int InsertPage = 2000;

    public async Task<RestoredRun> RestoreAsync(string runId, string? reason, CancellationToken ct)
    {
        var schema = names.Schema;
        ArchivedRunRow? row;
        Run? current;
        await using (var read = store.QuerySession())
        {
            current = await read.LoadAsync<Run>(runId, ct);
            row = await ArchivedRunStore.LoadAsync(read, schema, runId, ct);
        }
        if (current is null) throw new ProblemException(RunDecider.NotFound(runId).ToProblem(runId));
        if (row is not { Archived: true, MarkerSequence: { } markerSequence })
        {
            throw new ProblemException(Problem.Of(ProblemCodes.RunNotArchived, detail: $"The events of run {runId} are in PostgreSQL; there is nothing to restore.",
                runId: runId, runStatus: current.Status));
        }

        // Every bundle, read and checked whole before anything changes.
        var events = new List<(ArchivedEvent Raw, object Data)>((int)Math.Min(row.Events, 1_000_000));
        var fold = new RunReplay.Fold();
        try
        {
            var last = archives.CheckAll(runId, row.Bundles, (line, stored) =>
            {
                fold.Apply(stored, explain: false);
                events.Add((line.Event, stored.Data));
            });
            if (last != row.ArchivedVersion || fold.Run is null)
            {
                throw new ArchiveUnreadableException(runId, "all bundles", $"hold versions 1..{last}, the run was archived through {row.ArchivedVersion}");
            }
        }
        catch (ArchiveUnreadableException e)
        {
            logger.LogWarning("Run {RunId} was not restored: {Message}", runId, e.Message);
            throw new ProblemException(Problem.Of(ProblemCodes.ArchiveCorrupt, detail:
                $"The archive of run {runId} cannot be restored: {e.Detail}{(e.Version is { } v ? $" (first bad event: version {v})" : "")} ({e.Bundle}). Nothing was changed.",
                runId: runId, runStatus: current.Status));
        }

        await using var session = store.LightweightSession();
        await session.BeginTransactionAsync(ct);
        var stream = await session.Events.FetchForExclusiveWriting<Run>(runId, ct);
        var locked = await ArchivedRunStore.LoadAsync(session, schema, runId, ct, forUpdate: true);
        if (locked is not { Archived: true } || locked.ArchivedVersion != row.ArchivedVersion || locked.MarkerSequence != markerSequence)
        {
            throw new ProblemException(Problem.Of(ProblemCodes.Contention, detail: $"Run {runId} was archived or restored by another request meanwhile; nothing was changed.",
                runId: runId, runStatus: current.Status) with { RetryAfterSeconds = 1 });
        }
        // The refold of the archive must be the snapshot the marker keeps (what the run's summary was built from).
        var snapshot = store.Options.Serializer().ToJson(fold.Run);
        var same = await session.RowsAsync(
            $"select (data -> 'snapshot') = ?::jsonb from {names.Events} where seq_id = ? and stream_id = ?", r => r.GetBoolean(0), ct, snapshot, markerSequence, runId);
        if (same.Count != 1 || !same[0])
        {
            throw new ProblemException(Problem.Of(ProblemCodes.ArchiveCorrupt, detail:
                $"The archive of run {runId} does not fold to the state its marker recorded; nothing was changed. `verify` names the difference.",
                runId: runId, runStatus: current.Status));
        }

        session.QueueSqlCommand($"delete from {names.Events} where stream_id = ? and version <= ?", runId, row.ArchivedVersion);
        foreach (var page in events.Chunk(InsertPage))
        {
            session.QueueSqlCommand(
                $"insert into {names.Events} (seq_id, id, stream_id, version, data, type, timestamp, tenant_id, mt_dotnet_type, is_archived) " +
                "select s, i, ?, v, d::jsonb, t, ts, tn, dn, false from unnest(?::bigint[], ?::uuid[], ?::bigint[], ?::text[], ?::varchar[], ?::timestamptz[], ?::varchar[], ?::varchar[]) " +
                "as e(s, i, v, d, t, ts, tn, dn)",
                runId, page.Select(e => e.Raw.Sequence).ToArray(), page.Select(e => e.Raw.Id).ToArray(), page.Select(e => e.Raw.Version).ToArray(),
                page.Select(e => e.Raw.Data).ToArray(), page.Select(e => e.Raw.Type).ToArray(), page.Select(e => e.Raw.Timestamp).ToArray(),
                page.Select(e => e.Raw.TenantId).ToArray(), page.Select(e => e.Raw.DotNetType).ToArray());
        }
        var keys = events.SelectMany(e => RecordedKeyStore.KeysOf(e.Data).Select(k => (runId, k.Key, k.Count))).ToList();
        RecordedKeyStore.Record(session, schema, keys);
        var now = clock.GetUtcNow();
        ArchivedRunStore.Save(session, schema, row with { ArchivedVersion = 0, MarkerSequence = null, RestoredAt = now });
        await session.SaveChangesAsync(ct);

        logger.LogInformation("Run {RunId} restored: {Events} events (versions 1..{Version}) are back in PostgreSQL from {Bundles} bundle(s); reason: {Reason}",
            runId, events.Count, row.ArchivedVersion, row.Bundles.Count, reason ?? "none given");
        _ = stream;
        return new RestoredRun(runId, events.Count, row.ArchivedVersion, row.Bundles.Count, now);
    }
}
