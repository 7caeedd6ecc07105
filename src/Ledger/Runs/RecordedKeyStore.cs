using System.Data.Common;
using Ledger.Infrastructure;
using Marten;
using Marten.Internal;
using Weasel.Storage;
using Marten.Linq.QueryHandlers;
using Npgsql;
using Weasel.Postgresql;
using Weasel.Postgresql.Tables;

namespace Ledger.Runs;

/// <summary>
/// The at-most-once guard: every eventId a run recorded, and every chunk id it committed with its
/// count, as rows of one indexed table written in the same transaction as the events. The writer
/// looks up only the keys a command carries, so the cost of an event does not depend on how many
/// the run already holds. The rows are derived from the stream (<see cref="KeysOf"/>) and can be
/// rebuilt from it: <see cref="MigrateAsync"/> does so for databases written before the table.
/// </summary>
public static class RecordedKeyStore
{
    public const string TableName = "ledger_recorded_keys";
    private const string EventPrefix = "e:";
    private const string ChunkPrefix = "c:";
    /// <summary>The row that says the keys of streams written before this table were derived (once per database).</summary>
    private const string MigratedMarker = "migrated:v1";

    public static Table Table(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, TableName, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General));
        table.AddColumn("run_id", "varchar").AsPrimaryKey();
        table.AddColumn("key", "varchar").AsPrimaryKey();
        // The chunk's item count; null for an eventId.
        table.AddColumn("count", "bigint");
        return table;
    }

    public static string EventKey(string eventId) => EventPrefix + eventId;
    public static string ChunkKey(string chunkId) => ChunkPrefix + chunkId;

    /// <summary>The keys an appended event records: its eventId, and a committed chunk's id with its count.</summary>
    public static IEnumerable<(string Key, long? Count)> KeysOf(object @event)
    {
        if (@event is not WorkerEvent e) yield break;
        yield return (EventKey(e.EventId), null);
        if (e is ItemsCommitted i) yield return (ChunkKey(i.ChunkId), i.Count);
    }

    /// <summary>The keys a command would look up: its events' ids and chunk ids.</summary>
    public static IEnumerable<string> KeysToLookUp(RecordEventsCommand command)
    {
        foreach (var e in command.Events)
        {
            yield return EventKey(e.EventId);
            if (e is ItemsCommitted i) yield return ChunkKey(i.ChunkId);
        }
    }

    /// <summary>Builds what a command's run recorded from the rows found for it.</summary>
    public static RecordedKeys ToRecorded(IEnumerable<(string Key, long? Count)> rows)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var chunks = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var (key, count) in rows)
        {
            if (key.StartsWith(EventPrefix, StringComparison.Ordinal)) ids.Add(key[EventPrefix.Length..]);
            else if (key.StartsWith(ChunkPrefix, StringComparison.Ordinal)) chunks[key[ChunkPrefix.Length..]] = count ?? 0;
        }
        return ids.Count == 0 && chunks.Count == 0 ? RecordedKeys.None : new RecordedKeys(ids, chunks);
    }

    /// <summary>A lookup that rides in a Marten batch query, after the streams are fetched, in the same round trip.</summary>
    public sealed class Lookup(string schema, string[] runIds, string[] keys) : IQueryHandler<IReadOnlyDictionary<string, List<(string Key, long? Count)>>>
    {
        public void ConfigureCommand(ICommandBuilder builder, IStorageSession session)
        {
            builder.Append($"select k.run_id, k.key, k.count from unnest(");
            builder.AppendParameter(runIds);
            builder.Append("::varchar[], ");
            builder.AppendParameter(keys);
            // One primary-key probe per key: a plain join of the unnest was planned as a scan of the whole table.
            builder.Append($"::varchar[]) as q(run_id, key) cross join lateral (select t.run_id, t.key, t.count from {StorageNames.Qualified(schema, TableName)} t " +
                           "where t.run_id = q.run_id and t.key = q.key) k");
        }

        public async Task<IReadOnlyDictionary<string, List<(string Key, long? Count)>>> HandleAsync(DbDataReader reader,
            IStorageSession session, CancellationToken token)
        {
            var found = new Dictionary<string, List<(string, long?)>>(StringComparer.Ordinal);
            while (await reader.ReadAsync(token))
            {
                var runId = reader.GetString(0);
                if (!found.TryGetValue(runId, out var rows)) found[runId] = rows = [];
                rows.Add((reader.GetString(1), await reader.IsDBNullAsync(2, token) ? null : reader.GetInt64(2)));
            }
            return found;
        }

        public Task<int> StreamJson(Stream stream, DbDataReader reader, CancellationToken token) => throw new NotSupportedException();
    }

    /// <summary>
    /// Queues the rows of the appended events into the session's transaction, ahead of the appends
    /// (after <see cref="RunLocks"/>, so under the runs' row locks, in a fixed order: two nodes never
    /// wait on each other's keys in a cycle). A plain insert: a key already recorded fails the
    /// transaction before any event is appended (<see cref="IsKnownKey"/>), which is how the writer
    /// learns that a command decided without looking its keys up was a resend after all.
    /// </summary>
    public static void Record(IDocumentSession session, string schema, IReadOnlyList<(string RunId, string Key, long? Count)> rows)
    {
        if (rows.Count == 0) return;
        var sorted = rows.OrderBy(r => r.RunId, StringComparer.Ordinal).ThenBy(r => r.Key, StringComparer.Ordinal).ToList();
        session.QueueOperation(new EventOrderedCommand(
            $"insert into {StorageNames.Qualified(schema, TableName)} (run_id, key, count) select r, k, nullif(c, -1) from unnest(?::varchar[], ?::varchar[], ?::bigint[]) as t(r, k, c)",
            sorted.Select(r => r.RunId).ToArray(), sorted.Select(r => r.Key).ToArray(), sorted.Select(r => r.Count ?? -1).ToArray()));
    }

    /// <summary>The transaction failed on a key that was already recorded.</summary>
    public static bool IsKnownKey(Exception e) => e switch
    {
        PostgresException { SqlState: PostgresErrorCodes.UniqueViolation, TableName: TableName } => true,
        _ when e.InnerException is not null => IsKnownKey(e.InnerException),
        _ => false,
    };

    /// <summary>
    /// Queues the deletion of every key the runs recorded into the session's transaction: their events
    /// have left PostgreSQL for an archive (retention, in the same transaction; a resend that late is
    /// refused as run-terminal anyway). The one place a run's keys are deleted; a restore records them
    /// again with <see cref="Record"/>.
    /// </summary>
    public static void DeleteKeysOf(IDocumentOperations session, string schema, params string[] runIds)
    {
        if (runIds.Length == 0) return;
        session.QueueSqlCommand($"delete from {StorageNames.Qualified(schema, TableName)} where run_id = any(?::varchar[])", new object[] { runIds });
    }

    /// <summary>
    /// Derives the keys of every worker event already in the store, once per database: runs written
    /// before this table kept their eventIds and chunk ids in the run's own document, and must keep
    /// refusing to record them twice. Idempotent and safe on several nodes at once.
    /// </summary>
    public static async Task MigrateAsync(IDocumentStore store, string schema, ILogger logger, CancellationToken ct)
    {
        var table = StorageNames.Qualified(schema, TableName);
        await using var session = store.LightweightSession();
        var done = await session.QueryAsync<int>($"select count(*)::int from {table} where run_id = '' and key = ?", ct, MigratedMarker);
        if (done[0] > 0) return;

        var names = new StorageNames(store);
        var events = names.Events;
        var eventId = names.JsonKey<WorkerEvent>(e => e.EventId);
        var chunkId = names.JsonKey<ItemsCommitted>(e => e.ChunkId);
        var count = names.JsonKey<ItemsCommitted>(e => e.Count);
        session.QueueSqlCommand(
            $"insert into {table} (run_id, key, count) select stream_id, '{EventPrefix}' || (data ->> '{eventId}'), null from {events} " +
            $"where data ->> '{eventId}' is not null on conflict do nothing");
        session.QueueSqlCommand(
            $"insert into {table} (run_id, key, count) select distinct on (stream_id, data ->> '{chunkId}') stream_id, '{ChunkPrefix}' || (data ->> '{chunkId}'), (data ->> '{count}')::bigint " +
            $"from {events} where type = '{names.EventType<ItemsCommitted>()}' and data ->> '{chunkId}' is not null order by stream_id, data ->> '{chunkId}', seq_id on conflict do nothing");
        session.QueueSqlCommand($"insert into {table} (run_id, key, count) values ('', ?, null) on conflict do nothing", MigratedMarker);
        await session.SaveChangesAsync(ct);
        logger.LogInformation("Recorded keys derived from the existing event streams ({Table}); this runs once per database", table);
    }
}
