using JasperFx.Events;
using JasperFx.Events.Projections;
using Ledger.Infrastructure;
using Ledger.Runs;
using Marten;
using Marten.Events.Projections;
using Weasel.Postgresql;
using Weasel.Postgresql.Tables;

namespace Ledger.Leaderboards;

/// <summary>
/// The standings projection (async, one shard <c>Standing:All</c>): folds every ranked verdict, in
/// event-store order, into its participant's <see cref="Standing"/> document (the fold's state:
/// every succeeded result) and keeps two tables beside it, written in the same transaction:
/// <list type="bullet">
/// <item><c>ledger_standings</c>: each participant's best now, with its rank key: the live board is
/// one index range scan of it, in key order;</item>
/// <item><c>ledger_standing_changes</c>: every change of a participant's best, by sequence and
/// verdict time: the board as of a time is the latest change of each participant at or before it.
/// Each change also carries <c>superseded_at</c>, the earliest time of a later change of the same
/// participant ('infinity' while none), so that latest change is the one row with
/// <c>at &lt;= T &lt; superseded_at</c>: the board as of T is a range read, with no pass over the
/// participant's earlier changes. (The earliest, not the next change's time: verdicts decided on
/// nodes whose clocks differ need not come in time order.)</item>
/// </list>
/// Both are written idempotently (by key and sequence), so a page the daemon applies again changes nothing.
/// </summary>
public sealed class StandingsProjection : IProjection
{
    public const string Name = "Standing";
    public const string CurrentTable = "ledger_standings";
    public const string ChangesTable = "ledger_standing_changes";

    public async Task ApplyAsync(IDocumentOperations operations, IReadOnlyList<IEvent> events, CancellationToken cancellation)
    {
        var ranked = events.Select(e => (e.Sequence, Verdict: VerdictOf(e.Data))).Where(e => e.Verdict is not null && Standing.Ranks(e.Verdict)).ToList();
        if (ranked.Count == 0) return;

        var ids = ranked.Select(e => Key(e.Verdict!)).Distinct(StringComparer.Ordinal).ToArray();
        var standings = (await operations.LoadManyAsync<Standing>(cancellation, ids)).ToDictionary(s => s.Id, StringComparer.Ordinal);
        var changes = new List<StandingChange>();
        foreach (var (sequence, verdict) in ranked)
        {
            if (Standing.Fold(standings, verdict!, sequence) is { } change) changes.Add(change);
        }

        // Every id of the page now has its standing (Fold creates the missing ones).
        var touched = ids.Select(id => standings[id]).ToList();
        foreach (var standing in touched) operations.Store(standing);
        var names = new StorageNames(operations.DocumentStore.Options);
        RecordChanges(operations, names.Own(ChangesTable), changes);
        RecordCurrent(operations, names.Own(CurrentTable), touched);
    }

    /// <summary>
    /// The verdict an event carries: a verdict, or the marker of an archived run, which stands in the
    /// place (the sequence) of the verdict it replaced, so a rebuild folds it exactly there.
    /// </summary>
    public static VerdictReached? VerdictOf(object data) => data switch
    {
        VerdictReached v => v,
        Ledger.Retention.RunArchived { Verdict: { } v } => v,
        _ => null,
    };

    private static string Key(VerdictReached verdict) => Standing.Key(verdict.Board!, verdict.Participant!);

    private static void RecordChanges(IDocumentOperations operations, string table, List<StandingChange> changes)
    {
        if (changes.Count == 0) return;
        operations.QueueSqlCommand($"""
            insert into {table} (board, participant, sequence, at, run_id, score, tie_break, completed_at, rank_key, superseded_at)
            select board, participant, sequence, at, run_id, score, tie_break, completed_at, decode(rank_key_hex, 'hex'), 'infinity'
            from unnest(?::text[], ?::text[], ?::bigint[], ?::timestamptz[], ?::text[], ?::float8[], ?::float8[], ?::timestamptz[], ?::text[])
                as c(board, participant, sequence, at, run_id, score, tie_break, completed_at, rank_key_hex)
            on conflict do nothing
            """,
            changes.Select(c => c.Board).ToArray(), changes.Select(c => c.Participant).ToArray(), changes.Select(c => c.Sequence).ToArray(),
            changes.Select(c => c.At).ToArray(), changes.Select(c => c.RunId).ToArray(), changes.Select(c => c.Score).ToArray(),
            changes.Select(c => c.TieBreak).ToArray(), changes.Select(c => c.CompletedAt).ToArray(), changes.Select(c => Hex(c.RankKey)).ToArray());
        // The earlier changes of the same participants (this page's included) end at the earliest new change after them.
        // Only ever lowers superseded_at, so applying the page again changes nothing.
        operations.QueueSqlCommand($"""
            update {table} c set superseded_at = later.at
            from (select e.board, e.participant, e.sequence, min(n.at) as at
                  from {table} e
                  join unnest(?::text[], ?::text[], ?::bigint[], ?::timestamptz[]) as n(board, participant, sequence, at)
                    on e.board = n.board and e.participant = n.participant and e.sequence < n.sequence
                  group by e.board, e.participant, e.sequence) later
            where c.board = later.board and c.participant = later.participant and c.sequence = later.sequence and c.superseded_at > later.at
            """,
            changes.Select(c => c.Board).ToArray(), changes.Select(c => c.Participant).ToArray(), changes.Select(c => c.Sequence).ToArray(),
            changes.Select(c => c.At).ToArray());
    }

    /// <summary>
    /// Fills <c>superseded_at</c> for the participants that have a change without it (written by a
    /// version before the column existed): each change ends at the earliest later change's time.
    /// Idempotent; a no-op once every change has it.
    /// </summary>
    public static string BackfillSupersededSql(StorageNames names) => BackfillSupersededSql(names.Own(ChangesTable));

    private static string BackfillSupersededSql(string table) => $"""
        update {table} c set superseded_at = coalesce(
            (select min(d.at) from {table} d where d.board = c.board and d.participant = c.participant and d.sequence > c.sequence),
            'infinity')
        where (c.board, c.participant) in (select board, participant from {table} where superseded_at is null)
        """;

    private static void RecordCurrent(IDocumentOperations operations, string table, List<Standing> standings)
    {
        // Sorted, so two batches never lock the same rows in opposite orders.
        standings.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        operations.QueueSqlCommand($"""
            insert into {table} (board, participant, run_id, score, tie_break, completed_at, rank_key, last_sequence)
            select board, participant, run_id, score, tie_break, completed_at, decode(rank_key_hex, 'hex'), last_sequence
            from unnest(?::text[], ?::text[], ?::text[], ?::float8[], ?::float8[], ?::timestamptz[], ?::text[], ?::bigint[])
                as s(board, participant, run_id, score, tie_break, completed_at, rank_key_hex, last_sequence)
            on conflict (board, participant) do update set run_id = excluded.run_id, score = excluded.score, tie_break = excluded.tie_break,
                completed_at = excluded.completed_at, rank_key = excluded.rank_key, last_sequence = excluded.last_sequence
            where {CurrentTable}.last_sequence <= excluded.last_sequence
            """,
            standings.Select(s => s.Board).ToArray(), standings.Select(s => s.Participant).ToArray(), standings.Select(s => s.BestRunId).ToArray(),
            standings.Select(s => s.BestScore).ToArray(), standings.Select(s => s.BestTieBreak).ToArray(),
            standings.Select(s => s.BestCompletedAt).ToArray(), standings.Select(s => Hex(s.BestRankKey)).ToArray(),
            standings.Select(s => s.LastSequence).ToArray());
    }

    private static string? Hex(byte[]? key) => key is null ? null : Convert.ToHexString(key);

    /// <summary>Registers the projection under the shard name the daemon, metrics and operators know (Standing:All).</summary>
    public static void Register(StoreOptions options)
    {
        var projection = new ProjectionWrapper<IDocumentOperations, IQuerySession>(new StandingsProjection(), ProjectionLifecycle.Async)
        {
            Name = Name,
        };
        projection.IncludeType<VerdictReached>();
        projection.IncludeType<Ledger.Retention.RunArchived>();
        // Catching up (after a rebuild, or after verdicts appended past the service) holds at most
        // 1,000 verdicts in memory, in pages of 250, rather than the library's 5,000 in pages of 500:
        // each page also loads the standing documents of its participants (about 7 KB each at 50
        // results), and that catch-up is where the service's RSS peaked in the bench.
        projection.Options.BatchSize = 250;
        projection.Options.MaximumHopperSize = 1_000;
        options.Projections.Add(projection, ProjectionLifecycle.Async);
        options.Storage.ExtendedSchemaObjects.Add(Current(options.DatabaseSchemaName));
        options.Storage.ExtendedSchemaObjects.Add(Changes(options.DatabaseSchemaName));
    }

    private static Table Current(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, CurrentTable, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General));
        table.AddColumn("board", "text").AsPrimaryKey();
        table.AddColumn("participant", "text").AsPrimaryKey();
        table.AddColumn("run_id", "text");
        table.AddColumn("score", "double precision");
        table.AddColumn("tie_break", "double precision");
        table.AddColumn("completed_at", "timestamp with time zone");
        table.AddColumn("rank_key", "bytea");
        table.AddColumn("last_sequence", "bigint").NotNull();
        // The live board: one range of this index, already in rank order; counting it is an index-only scan.
        table.Indexes.Add(new IndexDefinition($"{CurrentTable}_rank") { Columns = ["board", "rank_key"], Predicate = "rank_key is not null" });
        return table;
    }

    private static Table Changes(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, ChangesTable, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General));
        table.AddColumn("board", "text").AsPrimaryKey();
        table.AddColumn("participant", "text").AsPrimaryKey();
        table.AddColumn("sequence", "bigint").AsPrimaryKey();
        table.AddColumn("at", "timestamp with time zone").NotNull();
        table.AddColumn("run_id", "text");
        table.AddColumn("score", "double precision");
        table.AddColumn("tie_break", "double precision");
        table.AddColumn("completed_at", "timestamp with time zone");
        table.AddColumn("rank_key", "bytea");
        // Null only on changes written before the column existed, until StandingsUpgrade fills them.
        table.AddColumn("superseded_at", "timestamp with time zone");
        // The board as of a time: the changes still in force then.
        table.Indexes.Add(new IndexDefinition($"{ChangesTable}_in_force") { Columns = ["board", "superseded_at"] });
        return table;
    }
}
