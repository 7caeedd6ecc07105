using Ledger.Infrastructure;
using Ledger.Runs;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Ledger.Retention;

/// <summary>
/// The sweep's step after archiving: the rows it removed (events, recorded keys, history
/// snapshots) leave dead space that PostgreSQL reuses only once the table is vacuumed, and
/// autovacuum (by default, a pass per database a minute at most, throttled) falls behind a steady
/// stream of deletions, so the tables would grow although what they hold does not. This step
/// vacuums each of those tables whose dead rows exceed a twentieth of its live ones (and 10,000), so
/// that new rows reuse the space at once. A plain VACUUM: no exclusive lock, reads and writes go on;
/// a table another vacuum holds is skipped. Off with <c>Ledger:Retention:Vacuum=false</c>, for a
/// database whose vacuuming is tuned otherwise.
/// </summary>
public sealed class ReclaimSpaceStep(LedgerDatabase database, StorageNames names, IOptions<RetentionOptions> options, ILogger<ReclaimSpaceStep> logger)
    : IRetentionStep
{
    public const string StepName = "reclaim-space";
    private const long MinimumDead = 10_000;

    public string Name => StepName;

    private string[] Tables => [names.Events, names.Own(RecordedKeyStore.TableName), names.Own(RunSnapshotStore.TableName)];

    public async Task RunAsync(RetentionSweepContext context, RetentionStepReport report, CancellationToken ct)
    {
        if (!options.Value.Enabled || !options.Value.Vacuum)
        {
            report.Add("disabled");
            return;
        }
        await using var connection = new NpgsqlConnection(database.ConnectionString);
        await connection.OpenAsync(ct);
        foreach (var (table, live, dead) in await DeadRowsAsync(connection, ct))
        {
            if (dead < Math.Max(MinimumDead, live / 20)) continue;
            // VACUUM cannot run in a transaction: a command of its own on a connection of its own.
            await using var vacuum = new NpgsqlCommand($"vacuum (skip_locked) {table}", connection) { CommandTimeout = 0 };
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            await vacuum.ExecuteNonQueryAsync(ct);
            report.Add("tables");
            report.Add("deadRows", dead);
            logger.LogInformation("Retention: vacuumed {Table} ({Dead} dead rows beside {Live} live) in {Seconds:0.0} s",
                table, dead, live, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds);
            await context.ReportProgressAsync();
        }
    }

    public async Task<RetentionStepReport> PreviewAsync(DateTimeOffset now, RetentionStepReport? previous, CancellationToken ct)
    {
        var preview = new RetentionStepReport { Step = StepName, Status = "preview" };
        if (!options.Value.Enabled || !options.Value.Vacuum)
        {
            preview.Add("disabled");
            return preview;
        }
        await using var connection = new NpgsqlConnection(database.ConnectionString);
        await connection.OpenAsync(ct);
        foreach (var (_, live, dead) in await DeadRowsAsync(connection, ct))
        {
            preview.Add("deadRows", dead);
            if (dead >= Math.Max(MinimumDead, live / 20)) preview.Add("tables");
        }
        return preview;
    }

    /// <summary>Live and dead rows of each table, from PostgreSQL's statistics (kept as transactions end).</summary>
    private async Task<List<(string Table, long Live, long Dead)>> DeadRowsAsync(NpgsqlConnection connection, CancellationToken ct)
    {
        var rows = new List<(string, long, long)>();
        foreach (var table in Tables)
        {
            await using var command = new NpgsqlCommand(
                "select coalesce(n_live_tup, 0), coalesce(n_dead_tup, 0) from pg_stat_user_tables where relid = @table::regclass", connection);
            command.Parameters.AddWithValue("table", table);
            await using var reader = await command.ExecuteReaderAsync(ct);
            if (await reader.ReadAsync(ct)) rows.Add((table, reader.GetInt64(0), reader.GetInt64(1)));
        }
        return rows;
    }
}
