using System.Data;
using System.Globalization;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Npgsql;

namespace Ledger.Forensics;

/// <summary>What re-establishing the counters did.</summary>
public sealed record KpiRebuild(bool Rebuilt, long Runs, int Counters, TimeSpan Took);

/// <summary>
/// Reads the kept KPI counters (summed over their shards: a cost that depends on how many
/// distinct counters there are, never on how many runs), recounts them from the stored rows
/// with the same rules (<see cref="KpiRules"/>), compares the two, and re-establishes the
/// counters from the recount.
/// </summary>
public sealed class KpiStore(ReadDatabase database, StorageNames names, ILogger<KpiStore> logger)
{
    private string Table => names.Own(KpiCounters.TableName);

    /// <summary>The all-time counters.</summary>
    public Task<Dictionary<KpiKey, long>> ReadTotalsAsync(CancellationToken ct) => ConnectionSettings.RetryStale(() => ReadTotalsOnceAsync(ct));

    private async Task<Dictionary<KpiKey, long>> ReadTotalsOnceAsync(CancellationToken ct)
    {
        await using var command = database.Source.CreateCommand(
            $"select kpi, label, sum(value)::bigint from {Table} where hour = '-infinity'::timestamptz and kpi <> '{KpiCounters.EstablishedMarker}' group by 1, 2");
        await using var reader = await command.ExecuteReaderAsync(ct);
        var totals = new Dictionary<KpiKey, long>();
        while (await reader.ReadAsync(ct)) totals[new KpiKey(reader.GetString(0), reader.GetString(1))] = reader.GetInt64(2);
        return totals;
    }

    /// <summary>The hourly counters of the hours in [from, to).</summary>
    public Task<Dictionary<KpiKey, long>> ReadHoursAsync(DateTimeOffset from, DateTimeOffset to, CancellationToken ct) =>
        ConnectionSettings.RetryStale(() => ReadHoursOnceAsync(from, to, ct));

    private async Task<Dictionary<KpiKey, long>> ReadHoursOnceAsync(DateTimeOffset from, DateTimeOffset to, CancellationToken ct)
    {
        await using var command = database.Source.CreateCommand(
            $"select hour, kpi, label, sum(value)::bigint from {Table} where hour >= $1 and hour < $2 group by 1, 2, 3");
        command.Parameters.Add(new NpgsqlParameter { Value = from.ToUniversalTime() });
        command.Parameters.Add(new NpgsqlParameter { Value = to.ToUniversalTime() });
        await using var reader = await command.ExecuteReaderAsync(ct);
        var hours = new Dictionary<KpiKey, long>();
        while (await reader.ReadAsync(ct))
        {
            hours[new KpiKey(reader.GetString(1), reader.GetString(2), reader.GetFieldValue<DateTimeOffset>(0))] = reader.GetInt64(3);
        }
        return hours;
    }

    /// <summary>
    /// Every counter as the stored rows give it: the run summaries (status, registration and
    /// terminal times), the anomaly records, the kept rejections, the counted refusals (without
    /// credentials, beyond a budget) and what pruning took out of the stored rows (<see cref="PrunedCounts"/>). It reads every run summary: the cost the kept counters spare each KPI read.
    /// With <paramref name="rebuilt"/> (verify's fold of the events), the runs and their anomalies
    /// are taken from those instead of the stored summaries and records; refusals are not events,
    /// so they always come from the stored rows.
    /// </summary>
    public async Task<(Dictionary<KpiKey, long> Counters, long Runs)> RecountAsync(NpgsqlConnection connection, NpgsqlTransaction transaction,
        IEnumerable<Run>? rebuilt, CancellationToken ct)
    {
        var recount = new KpiDelta();
        long runs = 0;
        if (rebuilt is not null)
        {
            foreach (var run in rebuilt)
            {
                recount.Run(null, run);
                foreach (var anomaly in run.Anomalies) recount.Add(KpiRules.OfAnomaly(anomaly.Kind, anomaly.At));
                runs++;
            }
        }
        else
        {
            var status = names.Json<Run>(r => r.Status);
            var registeredAt = names.Json<Run>(r => r.RegisteredAt);
            var terminalAt = names.Json<Run>(r => r.TerminalAt);
            await using var command = new NpgsqlCommand($"select {status}, {registeredAt}, {terminalAt} from {names.Table<Run>()}", connection, transaction);
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                recount.Add(KpiRules.OfRun(Enum.Parse<RunStatus>(reader.GetString(0), ignoreCase: true), Time(reader.GetString(1)),
                    reader.IsDBNull(2) ? null : Time(reader.GetString(2))));
                runs++;
            }
        }

        var kind = names.Json<AnomalyRecord>(a => a.Kind);
        var at = names.Json<AnomalyRecord>(a => a.At);
        var reason = names.Json<Rejection>(r => r.Reason);
        // A run's anomaly records are runId#n; a refused request's are not (run ids cannot hold '#').
        var anomalies = rebuilt is null ? "" : "where id not like '%#%'";
        await using var batch = new NpgsqlBatch(connection, transaction)
        {
            BatchCommands =
            {
                // The hour is cut from the time in UTC, as KpiRules.HourOf does.
                new NpgsqlBatchCommand($"select {kind}, date_trunc('hour', ({at})::timestamptz, 'UTC'), count(*) from {names.Table<AnomalyRecord>()} {anomalies} group by 1, 2"),
                new NpgsqlBatchCommand($"""
                    select {reason}, count(*) from {names.Table<Rejection>()}
                    where coalesce(({names.Json<Rejection>(r => r.Unauthenticated)})::boolean, false) = false
                      and coalesce(({names.Json<Rejection>(r => r.OverBudget)})::boolean, false) = false group by 1
                    union all
                    select reason, sum(count)::bigint from {names.Own(CountedRefusals.TableName)} group by 1
                    """),
                // What pruning took out of the stored rows, as the counters it counted for.
                new NpgsqlBatchCommand($"select case when hour = '-infinity'::timestamptz then null else hour end, kpi, label, value from {names.Own(PrunedCounts.TableName)}"),
            },
        };
        await using (var reader = await batch.ExecuteReaderAsync(ct))
        {
            while (await reader.ReadAsync(ct))
            {
                recount.Add(KpiRules.OfAnomaly(reader.GetString(0), reader.GetFieldValue<DateTimeOffset>(1)), reader.GetInt64(2));
            }
            await reader.NextResultAsync(ct);
            while (await reader.ReadAsync(ct)) recount.Add(KpiRules.OfRefusal(reader.GetString(0)), reader.GetInt64(1));
            await reader.NextResultAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                recount.Add(new KpiKey(reader.GetString(1), reader.GetString(2), reader.IsDBNull(0) ? null : reader.GetFieldValue<DateTimeOffset>(0)), reader.GetInt64(3));
            }
        }
        return (new Dictionary<KpiKey, long>(recount.Changes), runs);
    }

    /// <summary>The recount of the stored rows, in one snapshot.</summary>
    public async Task<Dictionary<KpiKey, long>> RecountAsync(CancellationToken ct)
    {
        await using var connection = await database.Source.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(IsolationLevel.RepeatableRead, ct);
        var (counters, _) = await RecountAsync(connection, transaction, null, ct);
        await transaction.CommitAsync(ct);
        return counters;
    }

    private static DateTimeOffset Time(string json) => DateTimeOffset.Parse(json, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind);

    /// <summary>The kept counters, every hour included (shards summed, zeros left out).</summary>
    private async Task<Dictionary<KpiKey, long>> ReadAllAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CancellationToken ct)
    {
        await using var command = new NpgsqlCommand($"""
            select case when hour = '-infinity'::timestamptz then null else hour end, kpi, label, sum(value)::bigint
            from {Table} where kpi <> '{KpiCounters.EstablishedMarker}' group by 1, 2, 3 having sum(value) <> 0
            """, connection, transaction);
        await using var reader = await command.ExecuteReaderAsync(ct);
        var kept = new Dictionary<KpiKey, long>();
        while (await reader.ReadAsync(ct))
        {
            kept[new KpiKey(reader.GetString(1), reader.GetString(2), reader.IsDBNull(0) ? null : reader.GetFieldValue<DateTimeOffset>(0))] = reader.GetInt64(3);
        }
        return kept;
    }

    /// <summary>
    /// Every counter whose kept value differs from the recount (<see cref="RecountAsync"/>), read in
    /// one snapshot: "kpi runs/running: kept 5, recounted 4".
    /// </summary>
    public async Task<IReadOnlyList<string>> CompareAsync(IEnumerable<Run>? rebuilt, CancellationToken ct)
    {
        await using var connection = await database.Source.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(IsolationLevel.RepeatableRead, ct);
        var kept = await ReadAllAsync(connection, transaction, ct);
        var (recounted, _) = await RecountAsync(connection, transaction, rebuilt, ct);
        await transaction.CommitAsync(ct);
        return Differences(kept, recounted);
    }

    public static IReadOnlyList<string> Differences(IReadOnlyDictionary<KpiKey, long> kept, IReadOnlyDictionary<KpiKey, long> recounted) =>
        kept.Keys.Union(recounted.Keys)
            .Select(key => (Key: key, Kept: kept.GetValueOrDefault(key), Recounted: recounted.GetValueOrDefault(key)))
            .Where(d => d.Kept != d.Recounted)
            .OrderBy(d => d.Key.ToString(), StringComparer.Ordinal)
            .Select(d => $"kpi {d.Key}: kept {d.Kept}, recounted {d.Recounted}")
            .ToList();

    /// <summary>
    /// Replaces the counters with the recount, in one transaction that first takes the table in
    /// SHARE ROW EXCLUSIVE mode: readers go on reading the old counters, writers that add to them
    /// wait. A writer that added before the lock has committed (the lock waited for it) and is in
    /// the recount; one that adds after commits after the rebuild, on top of a recount that did
    /// not see it. So the counters are right whatever runs beside. With <paramref name="once"/>,
    /// nothing happens when the counters were established before (several nodes starting at once
    /// queue on the lock, and only the first recounts).
    /// </summary>
    public async Task<KpiRebuild> RebuildAsync(bool once, CancellationToken ct)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        await using var connection = await database.Source.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(IsolationLevel.ReadCommitted, ct);
        await using (var lockTable = new NpgsqlCommand($"lock table {Table} in share row exclusive mode", connection, transaction))
        {
            await lockTable.ExecuteNonQueryAsync(ct);
        }
        if (once)
        {
            await using var marked = new NpgsqlCommand($"select exists (select 1 from {Table} where kpi = '{KpiCounters.EstablishedMarker}')", connection, transaction);
            if ((bool)(await marked.ExecuteScalarAsync(ct))!)
            {
                await transaction.CommitAsync(ct);
                return new KpiRebuild(false, 0, 0, System.Diagnostics.Stopwatch.GetElapsedTime(started));
            }
        }

        var (counters, runs) = await RecountAsync(connection, transaction, null, ct);
        await using (var clear = new NpgsqlCommand($"delete from {Table}", connection, transaction)) await clear.ExecuteNonQueryAsync(ct);
        var rows = new Dictionary<KpiKey, long>(counters) { [new KpiKey(KpiCounters.EstablishedMarker, "v1")] = 1 };
        await using (var insert = KpiCounters.Command(connection, transaction, names.Schema, rows, shard: 0)) await insert.ExecuteNonQueryAsync(ct);
        await transaction.CommitAsync(ct);
        var took = System.Diagnostics.Stopwatch.GetElapsedTime(started);
        logger.LogInformation("KPI counters established from {Runs} stored runs: {Counters} counters in {Seconds:0.0} s", runs, counters.Count, took.TotalSeconds);
        return new KpiRebuild(true, runs, counters.Count, took);
    }
}

/// <summary>
/// At start, once per database: a database written before the counters existed gets them from
/// its stored rows (the marker row says it was done; safe when several nodes start together).
/// </summary>
public sealed class KpiBackfill(KpiStore kpis) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken) => kpis.RebuildAsync(once: true, cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
