using System.Data.Common;
using System.Text.Json;
using Ledger.Infrastructure;
using Marten;
using Marten.Internal;
using Marten.Linq.QueryHandlers;
using Weasel.Postgresql;
using Weasel.Postgresql.Tables;
using Weasel.Storage;

namespace Ledger.Runs;

public sealed class HistoryOptions
{
    public const string Section = "Ledger:History";

    /// <summary>
    /// A run's refolded state is kept at every multiple of this many versions of its stream, so
    /// that a history page or a state at a version refolds at most this many events before the
    /// ones it answers with. Smaller: faster reads, more rows. At 250, a page of 1,000 of a run of
    /// 150,000 events costs what the same page of a run of 1,000 does (bench: 1.1x the CPU; at
    /// 1,000, 1.5x), and the rows add a 250th of what rewriting the run's document on each write costs.
    /// </summary>
    public int SnapshotEvery { get; set; } = 250;
}

/// <summary>
/// A run's state as the history's refold left it after the event at <see cref="Version"/>:
/// <see cref="Sequence"/> is that event's global sequence (so a snapshot of a stream that was
/// deleted and written again is recognised as stale), <see cref="RecordedThrough"/> the latest
/// ledger time of the events up to it (so that time travel knows whether every one of them was
/// recorded by a given time).
/// </summary>
public sealed record RunSnapshot(long Version, long Sequence, DateTimeOffset RecordedThrough, Run State);

/// <summary>
/// Snapshots of the history's refold (<see cref="RunReplay"/>), one table row each, written by
/// the reads that compute them and never by the write path. A snapshot is only ever the refold
/// of the stream's own events by this code: it is used only for the same <see cref="FoldRevision"/>
/// and only when the event at its version still has the sequence it was taken at; otherwise the
/// reader refolds from the start. The state is stored as the exact JSON text (not jsonb, which
/// would reorder the dictionaries' keys), so that reading it back gives the same run.
/// </summary>
public static class RunSnapshotStore
{
    public const string TableName = "ledger_run_snapshots";

    /// <summary>Which fold the stored states are of: the table of event types keeps it (<see cref="WorkerEventCatalogue.FoldRevision"/>).</summary>
    public const int FoldRevision = WorkerEventCatalogue.FoldRevision;

    public static Table Table(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, TableName, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General));
        table.AddColumn("run_id", "varchar").AsPrimaryKey();
        table.AddColumn("revision", "integer").AsPrimaryKey();
        table.AddColumn("version", "bigint").AsPrimaryKey();
        table.AddColumn("sequence", "bigint").NotNull();
        // UTC ticks: timestamptz keeps microseconds, and time travel compares to the tick.
        table.AddColumn("recorded_through", "bigint").NotNull();
        table.AddColumn("state", "json").NotNull();
        return table;
    }

    public static string Serialize(Run state) => JsonSerializer.Serialize(state, LedgerJson.Options);

    public static Run Deserialize(string json) =>
        JsonSerializer.Deserialize<Run>(json, LedgerJson.Options) ?? throw new JsonException("A stored run snapshot is null.");

    /// <summary>A snapshot a read computed, its state already serialized (the refold goes on changing the run).</summary>
    public sealed record Pending(long Version, long Sequence, DateTimeOffset RecordedThrough, string State);

    public static Pending Take(RunReplay.Fold fold) =>
        new(fold.Version, fold.Sequence, fold.RecordedThrough!.Value, Serialize(fold.Run!));

    /// <summary>
    /// Queues the snapshots a read computed into <paramref name="session"/> (<paramref name="table"/>: qualified, from <see cref="StorageNames"/>); with <paramref name="purge"/>,
    /// first removes every snapshot of the run (they were found stale). A snapshot already stored stays.
    /// </summary>
    public static void Store(IDocumentSession session, string table, string runId, IReadOnlyList<Pending> snapshots, bool purge)
    {
        if (purge) session.QueueSqlCommand($"delete from {table} where run_id = ?", runId);
        if (snapshots.Count == 0) return;
        session.QueueSqlCommand(
            $"insert into {table} (run_id, revision, version, sequence, recorded_through, state) " +
            $"select ?, {FoldRevision}, v, s, t, j::json from unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::text[]) as x(v, s, t, j) on conflict do nothing",
            runId, snapshots.Select(p => p.Version).ToArray(), snapshots.Select(p => p.Sequence).ToArray(),
            snapshots.Select(p => p.RecordedThrough.UtcTicks).ToArray(), snapshots.Select(p => p.State).ToArray());
    }

    /// <summary>What a read needs to know about a run's snapshots, found in the same round trip as the run itself.</summary>
    public sealed record Found(RunSnapshot? Nearest, long? Bound, long StoredUpTo);

    /// <summary>
    /// The nearest snapshot at or below <c>version</c> whose events were all recorded at or before
    /// <c>recordedBy</c> (when given); the first snapshot after which that is no longer so (the
    /// version time travel need not fold past); and the highest version stored (0 for none).
    /// </summary>
    public sealed class Lookup(string table, string runId, long version, DateTimeOffset? recordedBy) : IQueryHandler<Found>
    {
        public void ConfigureCommand(ICommandBuilder builder, IStorageSession session)
        {
            void Mine()
            {
                builder.Append("run_id = ");
                builder.AppendParameter(runId);
                builder.Append($" and revision = {FoldRevision}");
            }

            builder.Append("select n.version, n.sequence, n.recorded_through, n.state, ");
            if (recordedBy is { } by)
            {
                builder.Append($"(select min(version) from {table} where ");
                Mine();
                builder.Append(" and recorded_through > ");
                builder.AppendParameter(by.UtcTicks);
                builder.Append("), ");
            }
            else
            {
                builder.Append("null::bigint, ");
            }
            builder.Append($"(select coalesce(max(version), 0) from {table} where ");
            Mine();
            builder.Append($") from (select 1) as one left join lateral (select version, sequence, recorded_through, state from {table} where ");
            Mine();
            builder.Append(" and version <= ");
            builder.AppendParameter(version);
            if (recordedBy is { } t)
            {
                builder.Append(" and recorded_through <= ");
                builder.AppendParameter(t.UtcTicks);
            }
            builder.Append(" order by version desc limit 1) as n on true");
        }

        public async Task<Found> HandleAsync(DbDataReader reader, IStorageSession session, CancellationToken token)
        {
            await reader.ReadAsync(token);
            RunSnapshot? nearest = null;
            if (!await reader.IsDBNullAsync(0, token))
            {
                try
                {
                    nearest = new RunSnapshot(reader.GetInt64(0), reader.GetInt64(1),
                        new DateTimeOffset(reader.GetInt64(2), TimeSpan.Zero), Deserialize(reader.GetString(3)));
                }
                catch (JsonException)
                {
                    // A state this code cannot read is no snapshot: the read refolds from the start.
                }
            }
            long? bound = await reader.IsDBNullAsync(4, token) ? null : reader.GetInt64(4);
            return new Found(nearest, bound, reader.GetInt64(5));
        }

        public Task<int> StreamJson(Stream stream, DbDataReader reader, CancellationToken token) => throw new NotSupportedException();
    }
}
