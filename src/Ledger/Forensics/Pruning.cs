using System.Diagnostics;
using Ledger.Infrastructure;
using Ledger.Webhooks;
using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;
using Weasel.Postgresql;
using Weasel.Postgresql.Tables;

namespace Ledger.Forensics;

/// <summary>
/// Bound from <c>Ledger:Pruning</c>: whether the retention sweep's <c>prune-logs</c> step prunes, and how
/// much per statement. It runs with every sweep (<c>Ledger:Retention:SweepInterval</c>), on the node that
/// runs the async projections, whether or not runs are archived.
/// </summary>
public sealed class PruningOptions
{
    public const string Section = "Ledger:Pruning";

    public bool Enabled { get; set; } = true;
    /// <summary>Rows removed per statement (each its own short transaction); a prune goes on until nothing is left.</summary>
    public int BatchSize { get; set; } = 1_000;
}

/// <summary>
/// What may be pruned at a time: the one rule, pure. A kept refusal (and its anomaly record) older than
/// <c>Ledger:Rejections:KeepFor</c>; a delivery older than <c>Ledger:Webhooks:KeepDeliveriesFor</c>,
/// unless it may still be sent (pending, or held by a paused subscription), which is never pruned. A period of zero or less keeps everything.
/// </summary>
public sealed record PrunePolicy(TimeSpan KeepRejectionsFor, TimeSpan KeepDeliveriesFor)
{
    /// <summary>The rows older than these times may go (null: none).</summary>
    public (DateTimeOffset? RejectionsBefore, DateTimeOffset? DeliveriesBefore) At(DateTimeOffset now) =>
        (KeepRejectionsFor > TimeSpan.Zero ? now - KeepRejectionsFor : null, KeepDeliveriesFor > TimeSpan.Zero ? now - KeepDeliveriesFor : null);

    public bool Prunable(Rejection rejection, DateTimeOffset now) => At(now).RejectionsBefore is { } before && rejection.At < before;

    public bool Prunable(WebhookDelivery delivery, DateTimeOffset now) =>
        !WebhookDelivery.Unfinished.Contains(delivery.State) && At(now).DeliveriesBefore is { } before && delivery.CreatedAt < before;
}

/// <summary>What one prune removed.</summary>
public sealed record PruneResult(long Rejections, long Anomalies, long Deliveries, TimeSpan Took)
{
    public static readonly PruneResult Nothing = new(0, 0, 0, TimeSpan.Zero);
}

/// <summary>
/// The counters the pruned rows counted for (<see cref="KpiKey"/>, all-time ones at hour <c>-infinity</c>):
/// the KPIs keep counting what was pruned, and the recount (<see cref="KpiStore"/>) adds these to what is
/// still stored, so that refusals by reason and anomalies by kind still add up after a prune.
/// </summary>
public static class PrunedCounts
{
    public const string TableName = "ledger_pruned_counts";

    public static Table Table(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, TableName, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General));
        table.AddColumn("hour", "timestamptz").AsPrimaryKey();
        table.AddColumn("kpi", "text").AsPrimaryKey();
        table.AddColumn("label", "text").AsPrimaryKey();
        table.AddColumn("value", "bigint").NotNull();
        return table;
    }
}

/// <summary>
/// The pruning step: <see cref="PruneAsync"/> removes what <see cref="PrunePolicy"/> says may go at a
/// time, in batches, each batch one transaction that also adds what the removed rows counted for to
/// <see cref="PrunedCounts"/>. Safe to run on several nodes at once (a row is counted by the statement
/// that deleted it), but the retention sweep (<c>Ledger.Retention.PruneLogsStep</c>) runs it only on the node that leads the async daemon.
/// </summary>
public sealed class Pruner(ReadDatabase database, StorageNames names, IOptions<LedgerOptions> ledger,
    IOptions<WebhookOptions> webhooks, IOptions<PruningOptions> options, ILogger<Pruner> logger)
{
    public PrunePolicy Policy => new(ledger.Value.Rejections.KeepFor, webhooks.Value.KeepDeliveriesFor);

    public async Task<PruneResult> PruneAsync(DateTimeOffset now, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        var (rejectionsBefore, deliveriesBefore) = Policy.At(now);
        long rejections = 0, anomalies = 0, deliveries = 0;
        var batch = Math.Max(1, options.Value.BatchSize);
        if (rejectionsBefore is { } r)
        {
            while (true)
            {
                var (gone, flagged) = await PruneRejectionsAsync(r, batch, ct);
                rejections += gone;
                anomalies += flagged;
                if (gone < batch) break;
            }
        }
        if (deliveriesBefore is { } d)
        {
            while (true)
            {
                var gone = await PruneDeliveriesAsync(d, batch, ct);
                deliveries += gone;
                if (gone < batch) break;
            }
        }
        var result = new PruneResult(rejections, anomalies, deliveries, Stopwatch.GetElapsedTime(started));
        if (rejections + deliveries > 0)
        {
            logger.LogInformation("Pruned {Rejections} refusals (with {Anomalies} anomaly records) kept before {RejectionsBefore:O} and {Deliveries} finished deliveries made before {DeliveriesBefore:O} in {Seconds:0.0} s",
                rejections, anomalies, rejectionsBefore, deliveries, deliveriesBefore, result.Took.TotalSeconds);
        }
        return result;
    }

    /// <summary>What <see cref="PruneAsync"/> would remove now (refusals and deliveries; a refusal's anomaly record goes with it).</summary>
    public async Task<PruneResult> CountAsync(DateTimeOffset now, CancellationToken ct)
    {
        var (rejectionsBefore, deliveriesBefore) = Policy.At(now);
        await using var command = database.Source.CreateCommand(
            $"select (select count(*) from {names.Table<Rejection>()} where @rejections is not null and {RejectionAt} < @rejections), " +
            $"(select count(*) from {names.Table<WebhookDelivery>()} where @deliveries is not null and {DeliveryCreatedAt} < @deliveries and {DeliveryFinished})");
        command.Parameters.Add(new NpgsqlParameter("rejections", NpgsqlDbType.TimestampTz) { Value = (object?)rejectionsBefore ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("deliveries", NpgsqlDbType.TimestampTz) { Value = (object?)deliveriesBefore ?? DBNull.Value });
        command.Parameters.AddWithValue("unfinished", WebhookDelivery.Unfinished.ToArray());
        await using var reader = await command.ExecuteReaderAsync(ct);
        await reader.ReadAsync(ct);
        return new PruneResult(reader.GetInt64(0), 0, reader.GetInt64(1), TimeSpan.Zero);
    }

    // The columns the policy's times are compared with, shared by the prune and its count.
    private string RejectionAt => $"{names.Function("mt_immutable_timestamptz")}({names.Json<Rejection>(x => x.At)})";
    private string DeliveryCreatedAt => $"{names.Function("mt_immutable_timestamptz")}({names.Json<WebhookDelivery>(x => x.CreatedAt)})";
    private string DeliveryFinished => $"{names.Json<WebhookDelivery>(x => x.State)} <> all(@unfinished)";

    /// <summary>One batch of the oldest refusals and their anomaly records; what they counted for moves to <see cref="PrunedCounts"/>.</summary>
    private async Task<(long Rejections, long Anomalies)> PruneRejectionsAsync(DateTimeOffset before, int batch, CancellationToken ct)
    {
        var rejectionsTable = names.Table<Rejection>();
        var anomaliesTable = names.Table<AnomalyRecord>();
        var at = RejectionAt;
        // Samples of refusals that are counted (without credentials, beyond a budget) are not counted as kept rejections.
        var counted = $"coalesce(({names.Json<Rejection>(x => x.Unauthenticated, "r")})::boolean, false) or coalesce(({names.Json<Rejection>(x => x.OverBudget, "r")})::boolean, false)";
        var sql = $"""
            with doomed as (select id from {rejectionsTable} where {at} < @before order by {at} limit @batch),
            gone as (delete from {rejectionsTable} r using doomed where r.id = doomed.id
                     returning r.id, {names.Json<Rejection>(x => x.Reason, "r")} as reason, {counted} as counted),
            flagged as (delete from {anomaliesTable} a using gone where a.id = 'rejection:' || gone.id::text
                        returning {names.Json<AnomalyRecord>(x => x.Kind, "a")} as kind, {names.Function("mt_immutable_timestamptz")}({names.Json<AnomalyRecord>(x => x.At, "a")}) as at)
            select 'rejection', reason, null::timestamptz, count(*) filter (where not counted), count(*) from gone group by reason
            union all
            select 'anomaly', kind, at, 1, 1 from flagged
            """;
        await using var connection = await database.Source.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        var pruned = new KpiDelta();
        long rejections = 0, anomalies = 0;
        await using (var command = new NpgsqlCommand(sql, connection, transaction))
        {
            command.Parameters.AddWithValue("before", before);
            command.Parameters.AddWithValue("batch", batch);
            await using var reader = await command.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                if (reader.GetString(0) == "rejection")
                {
                    pruned.Add(KpiRules.OfRefusal(reader.GetString(1)), reader.GetInt64(3));
                    rejections += reader.GetInt64(4);
                }
                else
                {
                    pruned.Add(KpiRules.OfAnomaly(reader.GetString(1), reader.GetFieldValue<DateTimeOffset>(2)));
                    anomalies++;
                }
            }
        }
        if (!pruned.IsEmpty)
        {
            var (hours, kpis, labels, values) = KpiCounters.Arrays(pruned.Changes);
            await using var add = new NpgsqlCommand($"""
                insert into {names.Own(PrunedCounts.TableName)} as p (hour, kpi, label, value)
                select coalesce(h, '-infinity'::timestamptz), k, l, v from unnest(@hours, @kpis, @labels, @values) as t(h, k, l, v)
                on conflict (hour, kpi, label) do update set value = p.value + excluded.value
                """, connection, transaction);
            add.Parameters.Add(new NpgsqlParameter("hours", NpgsqlDbType.Array | NpgsqlDbType.TimestampTz) { Value = hours });
            add.Parameters.Add(new NpgsqlParameter("kpis", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = kpis });
            add.Parameters.Add(new NpgsqlParameter("labels", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = labels });
            add.Parameters.Add(new NpgsqlParameter("values", NpgsqlDbType.Array | NpgsqlDbType.Bigint) { Value = values });
            await add.ExecuteNonQueryAsync(ct);
        }
        await transaction.CommitAsync(ct);
        return (rejections, anomalies);
    }

    /// <summary>One batch of the oldest finished deliveries (never a pending or held one).</summary>
    private async Task<long> PruneDeliveriesAsync(DateTimeOffset before, int batch, CancellationToken ct)
    {
        var table = names.Table<WebhookDelivery>();
        var createdAt = DeliveryCreatedAt;
        await using var command = database.Source.CreateCommand($"""
            with doomed as (select id from {table} where {createdAt} < @before and {DeliveryFinished}
                            order by {createdAt} limit @batch)
            delete from {table} d using doomed where d.id = doomed.id
            """);
        command.Parameters.AddWithValue("before", before);
        command.Parameters.AddWithValue("unfinished", WebhookDelivery.Unfinished.ToArray());
        command.Parameters.AddWithValue("batch", batch);
        return await command.ExecuteNonQueryAsync(ct);
    }
}
