using System.Data.Common;
using System.Text.Json;
using Ledger.Infrastructure;
using Marten;
using Marten.Internal;
using Marten.Linq.QueryHandlers;
using Weasel.Postgresql;
using Weasel.Postgresql.Tables;
using Weasel.Storage;

namespace Ledger.Retention;

/// <summary>
/// A run's archive as PostgreSQL knows it: which bundles hold its events and through which version
/// (<see cref="ArchivedVersion"/>; 0 once restored), where its marker is, and what the readers need
/// to go on past the archive without opening it (the last sequence and ledger time it holds).
/// </summary>
public sealed record ArchivedRunRow(
    string RunId,
    long ArchivedVersion,
    long? MarkerSequence,
    IReadOnlyList<ArchiveBundle> Bundles,
    long Events,
    long Bytes,
    long LastSequence,
    long RecordedThrough,
    DateTimeOffset? LastTimestamp,
    DateTimeOffset? TerminalAt,
    DateTimeOffset ArchivedAt,
    DateTimeOffset? RestoredAt)
{
    /// <summary>True while the run's history is in archives rather than in PostgreSQL.</summary>
    public bool Archived => ArchivedVersion > 0;
}

/// <summary>
/// The ledger's tables of retention: <c>ledger_archived_runs</c> (one row per run ever archived)
/// and <c>ledger_retention_sweeps</c> (the last sweeps and their progress).
/// </summary>
public static class ArchivedRunStore
{
    public const string TableName = "ledger_archived_runs";
    public const string SweepsTable = "ledger_retention_sweeps";
    private const string Columns =
        "run_id, archived_version, marker_sequence, bundles, events, bytes, last_sequence, recorded_through, last_timestamp, terminal_at, archived_at, restored_at";

    public static Table Table(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, TableName, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General));
        table.AddColumn("run_id", "varchar").AsPrimaryKey();
        table.AddColumn("archived_version", "bigint").NotNull();
        table.AddColumn("marker_sequence", "bigint");
        table.AddColumn("bundles", "json").NotNull();
        table.AddColumn("events", "bigint").NotNull();
        table.AddColumn("bytes", "bigint").NotNull();
        table.AddColumn("last_sequence", "bigint").NotNull();
        // UTC ticks, as the snapshots keep them: time travel compares to the tick.
        table.AddColumn("recorded_through", "bigint").NotNull();
        table.AddColumn("last_timestamp", "timestamp with time zone");
        table.AddColumn("terminal_at", "timestamp with time zone");
        table.AddColumn("archived_at", "timestamp with time zone").NotNull();
        table.AddColumn("restored_at", "timestamp with time zone");
        // Restored runs come back to the sweep a window after their restore; archived ones to export --since.
        table.Indexes.Add(new IndexDefinition($"{TableName}_restored") { Columns = ["restored_at"], Predicate = "restored_at is not null" });
        table.Indexes.Add(new IndexDefinition($"{TableName}_last_timestamp") { Columns = ["last_timestamp"], Predicate = "archived_version > 0" });
        return table;
    }

    public static Table Sweeps(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, SweepsTable, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General));
        table.AddColumn("id", "varchar").AsPrimaryKey();
        table.AddColumn("node", "varchar").NotNull();
        table.AddColumn("started_at", "timestamp with time zone").NotNull();
        table.AddColumn("finished_at", "timestamp with time zone");
        table.AddColumn("status", "varchar").NotNull();
        table.AddColumn("report", "json").NotNull();
        table.Indexes.Add(new IndexDefinition($"{SweepsTable}_started") { Columns = ["started_at"] });
        return table;
    }

    public static string SerializeBundles(IReadOnlyList<ArchiveBundle> bundles) => JsonSerializer.Serialize(bundles, ArchiveFormat.ManifestJson);

    private static IReadOnlyList<ArchiveBundle> ParseBundles(string json) =>
        JsonSerializer.Deserialize<List<ArchiveBundle>>(json, ArchiveFormat.ManifestJson) ?? [];

    private static async Task<ArchivedRunRow> ReadRow(DbDataReader reader, CancellationToken ct) => new(
        reader.GetString(0),
        reader.GetInt64(1),
        await reader.IsDBNullAsync(2, ct) ? null : reader.GetInt64(2),
        ParseBundles(reader.GetString(3)),
        reader.GetInt64(4),
        reader.GetInt64(5),
        reader.GetInt64(6),
        reader.GetInt64(7),
        await reader.IsDBNullAsync(8, ct) ? null : await reader.GetFieldValueAsync<DateTimeOffset>(8, ct),
        await reader.IsDBNullAsync(9, ct) ? null : await reader.GetFieldValueAsync<DateTimeOffset>(9, ct),
        await reader.GetFieldValueAsync<DateTimeOffset>(10, ct),
        await reader.IsDBNullAsync(11, ct) ? null : await reader.GetFieldValueAsync<DateTimeOffset>(11, ct));

    /// <summary>The row of one run (null when it was never archived); rides in a batch query, or runs alone.</summary>
    public sealed class Lookup(string schema, string runId, bool forUpdate = false) : IQueryHandler<ArchivedRunRow?>
    {
        public void ConfigureCommand(ICommandBuilder builder, IStorageSession session)
        {
            builder.Append($"select {Columns} from {StorageNames.Qualified(schema, TableName)} where run_id = ");
            builder.AppendParameter(runId);
            if (forUpdate) builder.Append(" for update");
        }

        public async Task<ArchivedRunRow?> HandleAsync(DbDataReader reader, IStorageSession session, CancellationToken token) =>
            await reader.ReadAsync(token) ? await ReadRow(reader, token) : null;

        public Task<int> StreamJson(Stream stream, DbDataReader reader, CancellationToken token) => throw new NotSupportedException();
    }

    /// <summary>The rows of these runs (those that have one), locked for the transaction's end.</summary>
    public sealed class Many(string schema, string[] runIds) : IQueryHandler<IReadOnlyDictionary<string, ArchivedRunRow>>
    {
        public void ConfigureCommand(ICommandBuilder builder, IStorageSession session)
        {
            builder.Append($"select {Columns} from {StorageNames.Qualified(schema, TableName)} where run_id = any(");
            builder.AppendParameter(runIds);
            builder.Append(") order by run_id for update");
        }

        public async Task<IReadOnlyDictionary<string, ArchivedRunRow>> HandleAsync(DbDataReader reader, IStorageSession session, CancellationToken token)
        {
            var rows = new Dictionary<string, ArchivedRunRow>(StringComparer.Ordinal);
            while (await reader.ReadAsync(token))
            {
                var row = await ReadRow(reader, token);
                rows[row.RunId] = row;
            }
            return rows;
        }

        public Task<int> StreamJson(Stream stream, DbDataReader reader, CancellationToken token) => throw new NotSupportedException();
    }

    /// <summary>Which of these runs are archived now: what the run list marks.</summary>
    public sealed class Archived(string schema, string[] runIds) : IQueryHandler<IReadOnlySet<string>>
    {
        public void ConfigureCommand(ICommandBuilder builder, IStorageSession session)
        {
            builder.Append($"select run_id from {StorageNames.Qualified(schema, TableName)} where archived_version > 0 and run_id = any(");
            builder.AppendParameter(runIds);
            builder.Append(")");
        }

        public async Task<IReadOnlySet<string>> HandleAsync(DbDataReader reader, IStorageSession session, CancellationToken token)
        {
            var found = new HashSet<string>(StringComparer.Ordinal);
            while (await reader.ReadAsync(token)) found.Add(reader.GetString(0));
            return found;
        }

        public Task<int> StreamJson(Stream stream, DbDataReader reader, CancellationToken token) => throw new NotSupportedException();
    }

    /// <summary>Every archived run whose archives hold an event stored at or after <paramref name="since"/>, by first sequence (export).</summary>
    public sealed class StoredSince(string schema, DateTimeOffset since) : IQueryHandler<IReadOnlyList<ArchivedRunRow>>
    {
        public void ConfigureCommand(ICommandBuilder builder, IStorageSession session)
        {
            builder.Append($"select {Columns} from {StorageNames.Qualified(schema, TableName)} where archived_version > 0 and last_timestamp >= ");
            builder.AppendParameter(since);
        }

        public async Task<IReadOnlyList<ArchivedRunRow>> HandleAsync(DbDataReader reader, IStorageSession session, CancellationToken token)
        {
            var rows = new List<ArchivedRunRow>();
            while (await reader.ReadAsync(token)) rows.Add(await ReadRow(reader, token));
            return rows;
        }

        public Task<int> StreamJson(Stream stream, DbDataReader reader, CancellationToken token) => throw new NotSupportedException();
    }

    /// <summary>Which of these runs are archived now (the console's run list marks them).</summary>
    public static async Task<IReadOnlySet<string>> ArchivedAmongAsync(IQuerySession session, string schema, string[] runIds, CancellationToken ct)
    {
        if (runIds.Length == 0) return new HashSet<string>();
        var batch = session.CreateBatchQuery();
        var found = batch.AddItem(new Archived(schema, runIds));
        await batch.Execute(ct);
        return await found;
    }

    /// <summary>Every run archived now (verify reads them all).</summary>
    public static async Task<IReadOnlyDictionary<string, ArchivedRunRow>> AllArchivedAsync(IQuerySession session, string schema, CancellationToken ct)
    {
        var batch = session.CreateBatchQuery();
        var rows = batch.AddItem(new All(schema));
        await batch.Execute(ct);
        return (await rows).ToDictionary(r => r.RunId, StringComparer.Ordinal);
    }

    private sealed class All(string schema) : IQueryHandler<IReadOnlyList<ArchivedRunRow>>
    {
        public void ConfigureCommand(ICommandBuilder builder, IStorageSession session) =>
            builder.Append($"select {Columns} from {StorageNames.Qualified(schema, TableName)} where archived_version > 0");

        public async Task<IReadOnlyList<ArchivedRunRow>> HandleAsync(DbDataReader reader, IStorageSession session, CancellationToken token)
        {
            var rows = new List<ArchivedRunRow>();
            while (await reader.ReadAsync(token)) rows.Add(await ReadRow(reader, token));
            return rows;
        }

        public Task<int> StreamJson(Stream stream, DbDataReader reader, CancellationToken token) => throw new NotSupportedException();
    }

    public static async Task<ArchivedRunRow?> LoadAsync(IQuerySession session, string schema, string runId, CancellationToken ct, bool forUpdate = false)
    {
        var batch = session.CreateBatchQuery();
        var row = batch.AddItem(new Lookup(schema, runId, forUpdate));
        await batch.Execute(ct);
        return await row;
    }

    /// <summary>Queues the row of a run archived through <paramref name="row"/>'s version into the session's transaction.</summary>
    public static void Save(IDocumentSession session, string schema, ArchivedRunRow row) => session.QueueSqlCommand(
        $"insert into {StorageNames.Qualified(schema, TableName)} ({Columns}) values (?, ?, ?, ?::json, ?, ?, ?, ?, ?, ?, ?, ?) " +
        "on conflict (run_id) do update set archived_version = excluded.archived_version, marker_sequence = excluded.marker_sequence, " +
        "bundles = excluded.bundles, events = excluded.events, bytes = excluded.bytes, last_sequence = excluded.last_sequence, " +
        "recorded_through = excluded.recorded_through, last_timestamp = excluded.last_timestamp, terminal_at = excluded.terminal_at, " +
        "archived_at = excluded.archived_at, restored_at = excluded.restored_at",
        row.RunId, row.ArchivedVersion, (object?)row.MarkerSequence ?? DBNull.Value, SerializeBundles(row.Bundles), row.Events, row.Bytes,
        row.LastSequence, row.RecordedThrough, (object?)row.LastTimestamp ?? DBNull.Value, (object?)row.TerminalAt ?? DBNull.Value,
        row.ArchivedAt, (object?)row.RestoredAt ?? DBNull.Value);
}
