using System.Collections.Concurrent;
using Ledger.Contract;
using Ledger.Infrastructure;
using Marten;
using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;
using Weasel.Postgresql;
using Weasel.Postgresql.Tables;

namespace Ledger.Forensics;

/// <summary>
/// How many refusals were counted rather than kept, for one reason in one hour: those without valid
/// credentials (<see cref="Caller"/> empty) and those beyond a caller's budget (<see cref="Caller"/>:
/// the caller's id, <see cref="CountedRefusals.CallerOf"/>).
/// </summary>
public sealed record RefusalCount(DateTimeOffset Hour, string Reason, long Count, string? Caller = null);

/// <summary>What becomes of a refusal of an authenticated caller: kept whole, kept as a sample without its payload, or only counted.</summary>
public enum Keeping { Whole, Sample, Counted }

/// <summary>
/// Refusals that are counted, not kept, so that nobody can fill the database:
/// <list type="bullet">
/// <item>those of requests without valid credentials (missing, malformed or unknown key or token):
/// anybody can send them;</item>
/// <item>those of an authenticated caller beyond its budget (<see cref="RejectionOptions.BudgetPerKeyHour"/>
/// refusals kept whole per caller and hour, per instance): a valid key must not grow the database
/// without bound either.</item>
/// </list>
/// Counts are summed in memory and added to one row per (hour, reason, caller) every second; at most
/// <see cref="RejectionOptions.SamplesPerHour"/> of them per (reason, caller) and hour (per instance)
/// are kept as sample rows in the rejection log, without their payload. A caller is never stored in
/// clear: it is the start of its key's or token's SHA-256 digest.
/// </summary>
public sealed class CountedRefusals(ReadDatabase database, IDocumentStore store, TimeProvider clock,
    IOptions<LedgerOptions> options, ILogger<CountedRefusals> logger) : BackgroundService
{
    public const string TableName = "ledger_counted_refusals";
    /// <summary>The table of an earlier version, which counted only refusals without credentials; moved into <see cref="TableName"/> at start.</summary>
    public const string EarlierTableName = "ledger_unauthenticated_refusals";
    /// <summary>The caller of a refusal without valid credentials.</summary>
    public const string Unauthenticated = "";
    /// <summary>The caller of a console action refused (the console's session holds no bearer key).</summary>
    public const string Console = "console";

    private readonly ConcurrentDictionary<(DateTimeOffset Hour, string Reason, string Caller), long> _pending = new();
    private readonly ConcurrentDictionary<(DateTimeOffset Hour, string Reason, string Caller), int> _sampled = new();
    private readonly ConcurrentDictionary<(DateTimeOffset Hour, string Caller), int> _kept = new();
    private readonly SemaphoreSlim _flushing = new(1, 1);

    /// <summary>The table the counts live in, managed with the rest of Marten's schema.</summary>
    public static Table Table(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, TableName, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General));
        table.AddColumn("hour", "timestamptz").AsPrimaryKey();
        table.AddColumn("reason", "text").AsPrimaryKey();
        table.AddColumn("caller", "text").AsPrimaryKey();
        table.AddColumn("count", "bigint").NotNull();
        return table;
    }

    private string QualifiedTable => StorageNames.Qualified(options.Value.SchemaName, TableName);

    /// <summary>
    /// Who made a request, as the rejection log names it: the first 16 hex digits of the SHA-256 digest
    /// of its bearer key or lease token (never the key), <see cref="Console"/> for a console session.
    /// </summary>
    public static string CallerOf(HttpContext context) =>
        Access.BearerToken(context) is { Length: > 0 } token ? Access.DigestHex(token)[..16] : Console;

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
            Detail = Redaction.Text(problem.Detail, Access.BearerToken(context) is { } token ? [token] : null).Text,
            Method = context.Request.Method,
            Path = context.Request.Path,
            Unauthenticated = true,
            Redaction = Redaction.Version,
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

    /// <summary>Counts one refusal without credentials; true when it should also be kept as a sample.</summary>
    public bool Count(string reason) => CountBeyond(reason, Unauthenticated);

    /// <summary>
    /// What to do with a refusal of an authenticated caller: kept whole while the caller's budget for
    /// the hour lasts; beyond it counted, and kept as a sample while the (reason, caller) has room.
    /// </summary>
    public Keeping Admit(string caller, string reason)
    {
        var hour = HourOf(clock.GetUtcNow());
        var kept = _kept.AddOrUpdate((hour, caller), 1, (_, n) => n + 1);
        if (kept <= options.Value.Rejections.BudgetPerKeyHour) return Keeping.Whole;
        return CountBeyond(reason, caller) ? Keeping.Sample : Keeping.Counted;
    }

    private bool CountBeyond(string reason, string caller)
    {
        var hour = HourOf(clock.GetUtcNow());
        _pending.AddOrUpdate((hour, reason, caller), 1, (_, n) => n + 1);
        var samples = _sampled.AddOrUpdate((hour, reason, caller), 1, (_, n) => n + 1);
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
            var batch = new List<(DateTimeOffset Hour, string Reason, string Caller, long Count)>();
            foreach (var key in _pending.Keys)
            {
                if (_pending.TryRemove(key, out var n) && n > 0) batch.Add((key.Hour, key.Reason, key.Caller, n));
            }
            foreach (var key in _sampled.Keys.Where(k => k.Hour < current)) _sampled.TryRemove(key, out _);
            foreach (var key in _kept.Keys.Where(k => k.Hour < current)) _kept.TryRemove(key, out _);
            if (batch.Count == 0) return;

            try
            {
                await using var connection = await database.Source.OpenConnectionAsync(ct);
                await using var transaction = await connection.BeginTransactionAsync(ct);
                await using var command = new NpgsqlCommand(
                    $"insert into {QualifiedTable} (hour, reason, caller, count) select * from unnest(@hours, @reasons, @callers, @counts) " +
                    "on conflict (hour, reason, caller) do update set count = " + $"{QualifiedTable}.count + excluded.count", connection, transaction);
                command.Parameters.Add(new NpgsqlParameter("hours", NpgsqlDbType.Array | NpgsqlDbType.TimestampTz) { Value = batch.Select(b => b.Hour).ToArray() });
                command.Parameters.Add(new NpgsqlParameter("reasons", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = batch.Select(b => b.Reason).ToArray() });
                command.Parameters.Add(new NpgsqlParameter("callers", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = batch.Select(b => b.Caller).ToArray() });
                command.Parameters.Add(new NpgsqlParameter("counts", NpgsqlDbType.Array | NpgsqlDbType.Bigint) { Value = batch.Select(b => b.Count).ToArray() });
                await command.ExecuteNonQueryAsync(ct);
                // The KPI's rejections by reason move in the same transaction.
                var kpis = new KpiDelta();
                foreach (var (_, reason, _, n) in batch) kpis.Add(KpiRules.OfRefusal(reason), n);
                await using var counters = KpiCounters.Command(connection, transaction, options.Value.SchemaName, kpis.Changes, KpiCounters.PickShard());
                await counters.ExecuteNonQueryAsync(ct);
                await transaction.CommitAsync(ct);
            }
            catch (Exception e) when (DatabaseFailures.IsTransient(e) || e is OperationCanceledException)
            {
                // Put the counts back: the next flush carries them.
                foreach (var (hour, reason, caller, n) in batch) _pending.AddOrUpdate((hour, reason, caller), n, (_, m) => m + n);
                if (e is not OperationCanceledException) logger.LogWarning(e, "Could not store the counts of refusals not kept; will retry");
                else throw;
            }
        }
        finally
        {
            _flushing.Release();
        }
    }

    /// <summary>The stored counts since a time, newest hour first: those without credentials, or (<paramref name="authenticated"/>) those beyond a budget.</summary>
    public async Task<IReadOnlyList<RefusalCount>> ReadAsync(DateTimeOffset since, string? reason, bool authenticated, CancellationToken ct)
    {
        await FlushAsync(ct);
        await using var command = database.Source.CreateCommand(
            $"select hour, reason, count, caller from {QualifiedTable} where hour >= @since and (@reason::text is null or reason = @reason) " +
            $"and (caller = '') = @unauthenticated order by hour desc, reason, caller limit 1000");
        command.Parameters.AddWithValue("since", HourOf(since));
        command.Parameters.Add(new NpgsqlParameter("reason", NpgsqlDbType.Text) { Value = (object?)reason ?? DBNull.Value });
        command.Parameters.AddWithValue("unauthenticated", !authenticated);
        await using var reader = await command.ExecuteReaderAsync(ct);
        var counts = new List<RefusalCount>();
        while (await reader.ReadAsync(ct))
        {
            counts.Add(new RefusalCount(reader.GetFieldValue<DateTimeOffset>(0), reader.GetString(1), reader.GetInt64(2),
                authenticated ? reader.GetString(3) : null));
        }
        return counts;
    }

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        await MoveEarlierCountsAsync(cancellationToken);
        await base.StartAsync(cancellationToken);
    }

    /// <summary>
    /// A database written by a version that counted only refusals without credentials: its counts move
    /// into the table of every counted refusal, in one transaction (several nodes starting together:
    /// the first moves them, the others find the earlier table gone).
    /// </summary>
    private async Task MoveEarlierCountsAsync(CancellationToken ct)
    {
        var earlier = StorageNames.Qualified(options.Value.SchemaName, EarlierTableName);
        await using var connection = await database.Source.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        await using (var exists = new NpgsqlCommand("select to_regclass(@name) is not null", connection, transaction))
        {
            exists.Parameters.AddWithValue("name", earlier);
            if (!(bool)(await exists.ExecuteScalarAsync(ct))!) return;
        }
        await using (var take = new NpgsqlCommand($"lock table {earlier} in access exclusive mode", connection, transaction)) await take.ExecuteNonQueryAsync(ct);
        await using (var exists = new NpgsqlCommand("select to_regclass(@name) is not null", connection, transaction))
        {
            exists.Parameters.AddWithValue("name", earlier);
            if (!(bool)(await exists.ExecuteScalarAsync(ct))!) return;
        }
        int moved;
        await using (var move = new NpgsqlCommand(
            $"insert into {QualifiedTable} (hour, reason, caller, count) select hour, reason, '', count from {earlier} " +
            $"on conflict (hour, reason, caller) do update set count = {QualifiedTable}.count + excluded.count", connection, transaction))
        {
            moved = await move.ExecuteNonQueryAsync(ct);
        }
        await using (var drop = new NpgsqlCommand($"drop table {earlier}", connection, transaction)) await drop.ExecuteNonQueryAsync(ct);
        await transaction.CommitAsync(ct);
        logger.LogInformation("Moved {Rows} hourly counts of refusals without credentials from {Earlier} into {Table}", moved, earlier, QualifiedTable);
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
                    logger.LogError(e, "Storing the counts of refusals not kept failed; the next flush tries again");
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
            logger.LogWarning(e, "Could not store the last counts of refusals not kept at shutdown");
        }
    }
}

/// <summary>Bound from <c>Ledger:Rejections</c>: what the rejection log keeps, counts and prunes.</summary>
public sealed class RejectionOptions
{
    /// <summary>Sample rows kept per reason, caller and hour (per instance) of refusals that are counted, not kept.</summary>
    public int SamplesPerHour { get; set; } = 20;
    /// <summary>How often the counts of those refusals are added to the database.</summary>
    public int FlushSeconds { get; set; } = 1;
    /// <summary>Refusals of one authenticated caller (key, lease token, the console) kept whole per hour (per instance); beyond it they are counted and sampled.</summary>
    public int BudgetPerKeyHour { get; set; } = 200;
    /// <summary>How long a kept refusal (and its anomaly record) stays in the rejection log; its counts stay in the KPIs.</summary>
    public TimeSpan KeepFor { get; set; } = TimeSpan.FromDays(30);
}
