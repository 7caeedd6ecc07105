using System.Data.Common;
using Marten.Internal;
using Marten.Linq.QueryHandlers;
using Weasel.Postgresql;
using Weasel.Storage;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Retention;
using Marten;
using Microsoft.Extensions.Options;

namespace Ledger.Runs;

/// <summary>
/// Reads a run's history and past states without refolding the whole stream: the refold starts
/// from the nearest snapshot (<see cref="RunSnapshotStore"/>) and fetches only the events from it
/// to the last one answered, a chunk at a time. A read that folds past a multiple of
/// <see cref="HistoryOptions.SnapshotEvery"/> not stored yet stores the state it computed there,
/// before it answers, best effort: runs written before snapshots existed (or under another
/// fold revision) fill in on their first reads, and a failure to store changes no answer.
/// An archived run's events up to the version it was archived through are read from its archive
/// (<see cref="RunArchives"/>), a chunk at a time, each chunk starting from the state it carries;
/// any later ones from PostgreSQL, starting from the state its marker carries.
/// </summary>
public sealed class RunHistoryReader(IDocumentStore store, IOptions<HistoryOptions> options, StorageNames names,
    RunArchives archives, ILogger<RunHistoryReader> logger)
{
    /// <summary>Events fetched per round trip, so that a cold read of a long run never holds all of them.</summary>
    private const int Chunk = 5000;

    private readonly string _snapshots = names.Own(RunSnapshotStore.TableName);
    private readonly EventRange.Types _types = EventRange.TypesOf(store);
    private long Every => Math.Max(1, options.Value.SnapshotEvery);

    /// <summary>One read of one run: the run now and what its snapshots offer, found in one round trip.</summary>
    public sealed class Reading(IQuerySession session, string runId, Run? current, RunSnapshotStore.Found snapshots, ArchivedRunRow? archive)
        : IAsyncDisposable
    {
        internal IQuerySession Session { get; } = session;
        public string RunId { get; } = runId;
        /// <summary>The run now (its stored summary); null when there is no such run.</summary>
        public Run? Current { get; } = current;
        internal RunSnapshotStore.Found Snapshots { get; } = snapshots;
        /// <summary>The run's archive, when its history (up to a version) is read from one.</summary>
        public ArchivedRunRow? Archive { get; } = archive is { Archived: true } ? archive : null;
        public ValueTask DisposeAsync() => Session.DisposeAsync();
    }

    /// <summary>What a refold reached: the state after the last event folded, and that event (null when none qualified).</summary>
    public sealed record Folded(Run? Run, StoredEvent? Last);

    /// <summary>
    /// Opens a read that will fold up to <paramref name="upTo"/> (and, with <paramref name="recordedBy"/>,
    /// only through events recorded by then).
    /// </summary>
    public async Task<Reading> OpenAsync(string runId, long upTo, DateTimeOffset? recordedBy, CancellationToken ct)
    {
        var session = store.QuerySession();
        try
        {
            var batch = session.CreateBatchQuery();
            // The snapshots first: the run read after them is at least as far along as any of them.
            var snapshots = batch.AddItem(new RunSnapshotStore.Lookup(_snapshots, runId, Math.Max(0, upTo), recordedBy));
            var current = batch.Load<Run>(runId);
            var archive = batch.AddItem(new ArchivedRunStore.Lookup(names.Schema, runId));
            await batch.Execute(ct);
            return new Reading(session, runId, await current, await snapshots, await archive);
        }
        catch
        {
            await session.DisposeAsync();
            throw;
        }
    }

    /// <summary>The entries of the events after <paramref name="after"/>, at most <paramref name="limit"/>, up to the run's version now.</summary>
    public async Task<IReadOnlyList<HistoryEntry>> PageAsync(Reading reading, long after, int limit, CancellationToken ct)
    {
        var now = reading.Current?.Version ?? 0;
        if (after >= now) return [];
        var entries = new List<HistoryEntry>(Math.Min(limit, (int)Math.Min(int.MaxValue, now - after)));
        await FoldAsync(reading, after + 1, Math.Min(now, after + limit), null, (e, fold) =>
        {
            if (fold.Apply(e, explain: e.Version > after) is { } entry) entries.Add(entry);
        }, ct);
        return entries;
    }

    /// <summary>
    /// The state after the longest prefix of the stream whose events are all at or below
    /// <paramref name="version"/> and, with <paramref name="recordedBy"/>, recorded at or before it.
    /// </summary>
    public Task<Folded> StateAsync(Reading reading, long version, DateTimeOffset? recordedBy, CancellationToken ct)
    {
        var end = Math.Min(version, reading.Current?.Version ?? 0);
        return FoldAsync(reading, end, end, recordedBy, (e, fold) => fold.Apply(e, explain: false), ct);
    }

    /// <summary>Folds through <paramref name="end"/>, from a state at or before <paramref name="first"/> - 1 (the first version the caller needs).</summary>
    private Task<Folded> FoldAsync(Reading reading, long first, long end, DateTimeOffset? recordedBy, Action<StoredEvent, RunReplay.Fold> apply,
        CancellationToken ct) =>
        reading.Archive is { } archive
            ? FoldArchivedAsync(reading, archive, first, end, recordedBy, apply, ct)
            : FoldStoredAsync(reading, end, recordedBy, apply, ct);

    private async Task<Folded> FoldStoredAsync(Reading reading, long end, DateTimeOffset? recordedBy, Action<StoredEvent, RunReplay.Fold> apply,
        CancellationToken ct)
    {
        var found = reading.Snapshots;
        var snapshot = found.Nearest is { } nearest && nearest.Version <= end ? nearest : null;
        var storedUpTo = found.StoredUpTo;
        // Time travel need not fold past the first snapshot whose events were not all recorded by then.
        if (recordedBy is not null && found.Bound is { } bound) end = Math.Min(end, bound);
        var purge = false;

        while (true)
        {
            var fold = snapshot is null ? new RunReplay.Fold() : new RunReplay.Fold(snapshot);
            var pending = new List<RunSnapshotStore.Pending>();
            StoredEvent? last = null;
            var stale = false;
            var stopped = false;
            for (var from = snapshot?.Version ?? 1; from <= end && !stopped; from += Chunk)
            {
                var batch = reading.Session.CreateBatchQuery();
                var fetched = batch.AddItem(new EventRange(names.Events, _types, reading.RunId, from, Math.Min(end, from + Chunk - 1)));
                await batch.Execute(ct);
                var events = await fetched;
                var i = 0;
                if (snapshot is not null && from == snapshot.Version)
                {
                    // The snapshot's own event: its sequence says the stream is still the one the snapshot was taken from.
                    stale = events.Count == 0 || events[0].Version != snapshot.Version || events[0].Sequence != snapshot.Sequence;
                    if (stale) break;
                    last = events[0];
                    i = 1;
                }
                for (; i < events.Count; i++)
                {
                    var e = events[i];
                    if (recordedBy is { } by && e.RecordedAt > by)
                    {
                        stopped = true;
                        break;
                    }
                    apply(e, fold);
                    last = e;
                    if (fold.Version % Every == 0 && fold.Version > storedUpTo && fold.Run is not null) pending.Add(RunSnapshotStore.Take(fold));
                }
            }

            if (stale)
            {
                logger.LogWarning("The snapshot of run {RunId} at version {Version} is not of its stream as it is now (deleted and written again?); " +
                                  "its snapshots are dropped and it is refolded from the start", reading.RunId, snapshot!.Version);
                snapshot = null;
                storedUpTo = 0;
                purge = true;
                continue;
            }

            if (pending.Count > 0 || purge) await StoreAsync(reading.RunId, pending, purge);
            return new Folded(fold.Run, last);
        }
    }

    /// <summary>
    /// The fold of an archived run: from the archive chunk holding the first version needed (or, for
    /// time travel, the first chunk with an event recorded after the time, if earlier), then on into
    /// PostgreSQL for the events after the archive; or, when nothing before the archive's end is
    /// needed, from the state the marker carries. An archive that cannot be read is answered
    /// <c>409 run-archived</c>, naming the restore.
    /// </summary>
    private async Task<Folded> FoldArchivedAsync(Reading reading, ArchivedRunRow archive, long first, long end, DateTimeOffset? recordedBy,
        Action<StoredEvent, RunReplay.Fold> apply, CancellationToken ct)
    {
        var through = archive.ArchivedVersion;
        RunReplay.Fold fold;
        StoredEvent? last = null;
        try
        {
            var byTicks = recordedBy?.UtcTicks;
            if (first <= through || (byTicks is { } by && archive.RecordedThrough > by))
            {
                // Where to start: the chunk holding the first version needed, or an earlier one holding the first event recorded too late.
                var from = Math.Min(Math.Max(first, 1), through);
                if (byTicks is { } t)
                {
                    var index = archives.Index(archive);
                    var late = index.FirstOrDefault(c => c.Chunk.RecordedThrough > t);
                    if (late.Chunk is not null && late.Chunk.FirstVersion < from) from = late.Chunk.FirstVersion;
                }
                while (true)
                {
                    var (folded, stopped, lastSeen) = FoldArchive(archive, from, Math.Min(end, through), recordedBy, apply);
                    fold = folded;
                    last = lastSeen;
                    // Stopped at the first event of a chunk: the last event folded lies in the chunk before.
                    if (last is null && fold.Version > 0 && from > 1)
                    {
                        from = fold.Version;
                        continue;
                    }
                    if (stopped || end <= through) return new Folded(fold.Run, last);
                    break;
                }
            }
            else
            {
                var marker = await MarkerAsync(reading, archive, ct);
                fold = new RunReplay.Fold(new RunSnapshot(through, archive.LastSequence, new DateTimeOffset(archive.RecordedThrough, TimeSpan.Zero), marker.Snapshot));
            }
        }
        catch (ArchiveUnreadableException e)
        {
            logger.LogWarning("The history of run {RunId} cannot be read from its archive: {Message}", reading.RunId, e.Message);
            throw new ProblemException(Problem.Of(ProblemCodes.RunArchived, detail:
                $"The events of run {reading.RunId} through version {through} are archived, and the archive cannot be read here: {e.Detail}. " +
                $"Once it is readable again (Ledger:Retention:Directory), POST /api/runs/{reading.RunId}/restore puts them back into PostgreSQL.",
                runId: reading.RunId, runStatus: reading.Current?.Status));
        }

        // The events after the archive, from PostgreSQL.
        for (var from = fold.Version + 1; from <= end; from += Chunk)
        {
            var batch = reading.Session.CreateBatchQuery();
            var fetched = batch.AddItem(new EventRange(names.Events, _types, reading.RunId, from, Math.Min(end, from + Chunk - 1)));
            await batch.Execute(ct);
            foreach (var e in await fetched)
            {
                if (recordedBy is { } by && e.RecordedAt > by) return new Folded(fold.Run, last ?? await ArchivedLastAsync(archive));
                apply(e, fold);
                last = e;
            }
        }
        return new Folded(fold.Run, last ?? await ArchivedLastAsync(archive));
    }

    /// <summary>Folds archived events from the chunk holding <paramref name="from"/> through <paramref name="end"/>, or until one was recorded after <paramref name="recordedBy"/>.</summary>
    private (RunReplay.Fold Fold, bool Stopped, StoredEvent? Last) FoldArchive(ArchivedRunRow archive, long from, long end, DateTimeOffset? recordedBy,
        Action<StoredEvent, RunReplay.Fold> apply)
    {
        RunReplay.Fold? fold = null;
        StoredEvent? last = null;
        foreach (var chunk in archives.ChunksFrom(archive, from, end))
        {
            fold ??= chunk.Start.State is { } state
                ? new RunReplay.Fold(new RunSnapshot(chunk.Start.Version, chunk.Start.Sequence,
                    new DateTimeOffset(chunk.Start.RecordedThrough ?? 0, TimeSpan.Zero), RunSnapshotStore.Deserialize(state)))
                : new RunReplay.Fold();
            foreach (var line in chunk.Events)
            {
                if (line.Event.Version > end) return (fold, false, last);
                var e = archives.ToStored(archive.RunId, line);
                if (recordedBy is { } by && e.RecordedAt > by) return (fold, true, last);
                apply(e, fold);
                last = e;
            }
        }
        return (fold ?? new RunReplay.Fold(), false, last);
    }

    /// <summary>The archive's last event (what a state exactly at its end answers with), read from its last chunk.</summary>
    private Task<StoredEvent?> ArchivedLastAsync(ArchivedRunRow archive)
    {
        try
        {
            StoredEvent? last = null;
            foreach (var chunk in archives.ChunksFrom(archive, archive.ArchivedVersion, archive.ArchivedVersion))
            {
                if (chunk.Events.Count > 0) last = archives.ToStored(archive.RunId, chunk.Events[^1]);
            }
            return Task.FromResult(last);
        }
        catch (ArchiveUnreadableException e)
        {
            throw new ProblemException(Problem.Of(ProblemCodes.RunArchived, detail:
                $"The events of run {archive.RunId} through version {archive.ArchivedVersion} are archived, and the archive cannot be read here: {e.Detail}. " +
                $"Once it is readable again, POST /api/runs/{archive.RunId}/restore puts them back into PostgreSQL.", runId: archive.RunId));
        }
    }

    /// <summary>The state the marker keeps: the run after the archive's last event.</summary>
    private async Task<RunArchived> MarkerAsync(Reading reading, ArchivedRunRow archive, CancellationToken ct)
    {
        var batch = reading.Session.CreateBatchQuery();
        var fetched = batch.AddItem(new EventRange(names.Events, _types, reading.RunId, through: archive.ArchivedVersion, markerSequence: archive.MarkerSequence));
        await batch.Execute(ct);
        return (await fetched).Select(e => e.Data).OfType<RunArchived>().FirstOrDefault()
               ?? throw new ArchiveUnreadableException(reading.RunId, "marker", "has no marker in the event store");
    }

    private async Task StoreAsync(string runId, List<RunSnapshotStore.Pending> snapshots, bool purge)
    {
        try
        {
            // Not the request's token: what was computed is worth keeping even when the caller has gone.
            await using var session = store.LightweightSession();
            RunSnapshotStore.Store(session, _snapshots, runId, snapshots, purge);
            await session.SaveChangesAsync(CancellationToken.None);
        }
        catch (Exception e) when (DatabaseFailures.IsTransient(e) || e is Npgsql.PostgresException)
        {
            logger.LogWarning(e, "Could not store {Count} snapshots of run {RunId}; the next read computes them again", snapshots.Count, runId);
        }
    }

    /// <summary>
    /// The events of one stream from one version to another, read with the store's own serializer
    /// and event type names, as <c>FetchStreamAsync</c> reads them (archived events left out too), but
    /// without building Marten's event envelopes, which cost about three times the CPU of the read
    /// itself: the history needs only each event's version, sequence, storage time and data.
    /// </summary>
    public sealed class EventRange(string table, EventRange.Types types, string runId, long from, long to) : IQueryHandler<IReadOnlyList<StoredEvent>>
    {
        private readonly long? _markerSequence;

        /// <summary>The one row of an archived run's marker, by its sequence.</summary>
        public EventRange(string table, Types types, string runId, long through, long? markerSequence) : this(table, types, runId, 1, through) =>
            _markerSequence = markerSequence ?? -1;

        /// <summary>The stored type name of every event type of the store, and the serializer of their data.</summary>
        public sealed record Types(IReadOnlyDictionary<string, Type> ByName, Marten.ISerializer Serializer);

        public static Types TypesOf(IDocumentStore store)
        {
            var options = (StoreOptions)store.Options;
            var graph = (Marten.Events.EventGraph)options.Events;
            return new Types(graph.AllKnownEventTypes().ToDictionary(m => m.EventTypeName, m => m.EventType, StringComparer.Ordinal),
                options.Serializer());
        }

        public void ConfigureCommand(ICommandBuilder builder, IStorageSession session)
        {
            builder.Append($"select version, seq_id, timestamp, type, data from {table} where stream_id = ");
            builder.AppendParameter(runId);
            if (_markerSequence is { } marker)
            {
                builder.Append(" and seq_id = ");
                builder.AppendParameter(marker);
                return;
            }
            builder.Append(" and version >= ");
            builder.AppendParameter(from);
            builder.Append(" and version <= ");
            builder.AppendParameter(to);
            builder.Append(" and is_archived = false order by version");
        }

        public async Task<IReadOnlyList<StoredEvent>> HandleAsync(DbDataReader reader, IStorageSession session, CancellationToken token)
        {
            var events = new List<StoredEvent>((int)Math.Min(to - from + 1, Chunk));
            while (await reader.ReadAsync(token))
            {
                var name = reader.GetString(3);
                if (!types.ByName.TryGetValue(name, out var type))
                {
                    throw new InvalidOperationException($"Run {runId} holds an event of type '{name}' this ledger does not know.");
                }
                events.Add(new StoredEvent(reader.GetInt64(0), reader.GetInt64(1), await reader.GetFieldValueAsync<DateTimeOffset>(2, token),
                    types.Serializer.FromJson(type, reader, 4)));
            }
            return events;
        }

        public Task<int> StreamJson(Stream stream, DbDataReader reader, CancellationToken token) => throw new NotSupportedException();
    }
}
