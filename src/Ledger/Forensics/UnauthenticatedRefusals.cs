using System.Collections.Concurrent;
using Ledger.Infrastructure;
using Marten;
using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;
using Weasel.Postgresql;
using Weasel.Postgresql.Tables;

namespace Ledger.Forensics;

/// <summary>How many requests without valid credentials were refused, for one reason in one hour.</summary>
public sealed record RefusalCount(DateTimeOffset Hour, string Reason, long Count);

/// <summary>
/// Refusals of requests that carry no valid credentials (missing, malformed or unknown key or
/// token) are counted, not kept: anybody can send them, so keeping each would let anybody fill
/// the database. Counts are summed in memory and added to one row per (hour, reason) every
/// second; at most <see cref="RejectionOptions.SamplesPerHour"/> of them per reason and hour (per
/// instance) are kept as sample rows in the rejection log, without their payload.
/// </summary>
public sealed class UnauthenticatedRefusals(ReadDatabase database, IDocumentStore store, TimeProvider clock,
    IOptions<LedgerOptions> options, ILogger<UnauthenticatedRefusals> logger) : BackgroundService
{
    public const string TableName = "ledger_unauthenticated_refusals";

    private readonly ConcurrentDictionary<(DateTimeOffset Hour, string Reason), long> _pending = new();
    private readonly ConcurrentDictionary<(DateTimeOffset Hour, string Reason), int> _sampled = new();
    private readonly SemaphoreSlim _flushing = new(1, 1);

    /// <summary>The table the counts live in, managed with the rest of Marten's schema.</summary>
    public static Table Table(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, TableName, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General));
        table.AddColumn("hour", "timestamptz").AsPrimaryKey();
        table.AddColumn("reason", "text").AsPrimaryKey();
        table.AddColumn("count", "bigint").NotNull();
        return table;
    }

    private string QualifiedTable => $"{options.Value.SchemaName}.{TableName}";

    /// <summary>Counts a refusal for want of credentials as it is answered, and keeps it as a sample while the hour has room.</summary>
    public async Task Observe(HttpContext context, Problem problem)
    {
        if (!Count(problem.Code)) return;
        var sample = new Rejection
        {
            Id = Guid.CreateVersion7(),
            At = clock.GetUtcNow(),
            Reason = problem.Code,
            HttpStatus = problem.Status,
            Detail = problem.Detail,
            Method = context.Request.Method,
            Path = context.Request.Path,
            Unauthenticated = true,
        };
        logger.LogInformation("Refused {Method} {Path}: {Reason} ({HttpStatus}) without valid credentials (sampled)",
            sample.Method, sample.Path, sample.Reason, sample.HttpStatus);
        try
        {
            await using var session = store.LightweightSession();
            session.Store(sample);
            await session.SaveChangesAsync(CancellationToken.None);
        }
        catch (Exception e) when (DatabaseFailures.IsTransient(e))
        {
            logger.LogWarning(e, "Could not keep the sample of an unauthenticated refusal");
        }
    }

    /// <summary>Counts one refusal; true when it should also be kept as a sample.</summary>
    public bool Count(string reason)
    {
        var hour = HourOf(clock.GetUtcNow());
        _pending.AddOrUpdate((hour, reason), 1, (_, n) => n + 1);
        var samples = _sampled.AddOrUpdate((hour, reason), 1, (_, n) => n + 1);
        return samples <= options.Value.Rejections.SamplesPerHour;
    }

    public static DateTimeOffset HourOf(DateTimeOffset at) => KpiRules.HourOf(at);

    /// <summary>Adds what was counted since the last flush to the stored counts.</summary>
    public async Task FlushAsync(CancellationToken ct)
    {
        await _flushing.WaitAsync(ct);
        try
        {
            // The clock first: nothing is taken out of the pending counts until the flush can go ahead.
            var current = HourOf(clock.GetUtcNow());
            var batch = new List<(DateTimeOffset Hour, string Reason, long Count)>();
            foreach (var key in _pending.Keys)
            {
                if (_pending.TryRemove(key, out var n) && n > 0) batch.Add((key.Hour, key.Reason, n));
            }
            foreach (var key in _sampled.Keys.Where(k => k.Hour < current)) _sampled.TryRemove(key, out _);
            if (batch.Count == 0) return;

            try
            {
                await using var connection = await database.Source.OpenConnectionAsync(ct);
                await using var transaction = await connection.BeginTransactionAsync(ct);
                await using var command = new NpgsqlCommand(
                    $"insert into {QualifiedTable} (hour, reason, count) select * from unnest(@hours, @reasons, @counts) " +
                    "on conflict (hour, reason) do update set count = " + $"{QualifiedTable}.count + excluded.count", connection, transaction);
                command.Parameters.Add(new NpgsqlParameter("hours", NpgsqlDbType.Array | NpgsqlDbType.TimestampTz) { Value = batch.Select(b => b.Hour).ToArray() });
                command.Parameters.Add(new NpgsqlParameter("reasons", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = batch.Select(b => b.Reason).ToArray() });
                command.Parameters.Add(new NpgsqlParameter("counts", NpgsqlDbType.Array | NpgsqlDbType.Bigint) { Value = batch.Select(b => b.Count).ToArray() });
                await command.ExecuteNonQueryAsync(ct);
                // The KPI's rejections by reason move in the same transaction.
                var kpis = new KpiDelta();
                foreach (var (_, reason, n) in batch) kpis.Add(KpiRules.OfRefusal(reason), n);
                await using var counters = KpiCounters.Command(connection, transaction, options.Value.SchemaName, kpis.Changes, KpiCounters.PickShard());
                await counters.ExecuteNonQueryAsync(ct);
                await transaction.CommitAsync(ct);
            }
            catch (Exception e) when (DatabaseFailures.IsTransient(e) || e is OperationCanceledException)
            {
                // Put the counts back: the next flush carries them.
                foreach (var (hour, reason, n) in batch) _pending.AddOrUpdate((hour, reason), n, (_, m) => m + n);
                if (e is not OperationCanceledException) logger.LogWarning(e, "Could not store the unauthenticated refusal counts; will retry");
                else throw;
            }
        }
        finally
        {
            _flushing.Release();
        }
    }

    /// <summary>The stored counts since a time, newest hour first.</summary>
    public async Task<IReadOnlyList<RefusalCount>> ReadAsync(DateTimeOffset since, string? reason, CancellationToken ct)
    {
        await FlushAsync(ct);
        await using var command = database.Source.CreateCommand(
            $"select hour, reason, count from {QualifiedTable} where hour >= @since and (@reason::text is null or reason = @reason) " +
            "order by hour desc, reason limit 1000");
        command.Parameters.AddWithValue("since", HourOf(since));
        command.Parameters.Add(new NpgsqlParameter("reason", NpgsqlDbType.Text) { Value = (object?)reason ?? DBNull.Value });
        await using var reader = await command.ExecuteReaderAsync(ct);
        var counts = new List<RefusalCount>();
        while (await reader.ReadAsync(ct))
        {
            counts.Add(new RefusalCount(reader.GetFieldValue<DateTimeOffset>(0), reader.GetString(1), reader.GetInt64(2)));
        }
        return counts;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(Math.Max(1, options.Value.Rejections.FlushSeconds)));
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                try
                {
                    await FlushAsync(stoppingToken);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // An exception out of a background service stops the whole host: a failed flush is logged, and the next tick tries again.
                    logger.LogError(e, "Storing the unauthenticated refusal counts failed; the next flush tries again");
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        try
        {
            await FlushAsync(CancellationToken.None);
        }
        catch (Exception e)
        {
            logger.LogWarning(e, "Could not store the last unauthenticated refusal counts at shutdown");
        }
    }
}

public sealed class RejectionOptions
{
    /// <summary>Sample rows kept per reason and hour (per instance) of refusals without valid credentials.</summary>
    public int SamplesPerHour { get; set; } = 20;
    /// <summary>How often the counts of those refusals are added to the database.</summary>
    public int FlushSeconds { get; set; } = 1;
}
