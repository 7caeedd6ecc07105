using System.Globalization;
using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Marten;
using Npgsql;
using NpgsqlTypes;
using Weasel.Postgresql;
using Weasel.Postgresql.Tables;

namespace Ledger.Forensics;

/// <summary>One kept counter: a KPI, its label, and the UTC hour it counts (null: all time).</summary>
public readonly record struct KpiKey(string Kpi, string Label, DateTimeOffset? Hour = null)
{
    public override string ToString() => Hour is { } h
        ? $"{Kpi}/{Label}@{h.UtcDateTime.ToString("yyyy-MM-ddTHH", CultureInfo.InvariantCulture)}Z"
        : $"{Kpi}/{Label}";
}

/// <summary>The kept KPIs, by name. The first four count all time, the last three per UTC hour.</summary>
public static class Kpi
{
    /// <summary>Runs by their current status (label: the status).</summary>
    public const string Runs = "runs";
    /// <summary>Anomaly records by kind, those of refused requests included (label: the kind).</summary>
    public const string Anomalies = "anomalies";
    /// <summary>Refusals by problem code: kept rejections and counted unauthenticated ones (label: the code).</summary>
    public const string Rejections = "rejections";
    /// <summary>Terminal runs by time from registration to their current verdict (label: the <see cref="KpiHistogram"/> bucket).</summary>
    public const string TimeToTerminal = "time-to-terminal";
    /// <summary>Runs registered in the hour (label empty).</summary>
    public const string Registered = "registered";
    /// <summary>Runs whose current verdict was reached in the hour (label: the status).</summary>
    public const string Verdicts = "verdicts";
    /// <summary>Anomalies flagged in the hour, refused requests' <c>rejected</c> records excepted (label empty).</summary>
    public const string Flagged = "flagged";
}

/// <summary>
/// What each stored thing counts for: the one definition of the KPIs. A run counts by its status,
/// the hour it was registered and, once terminal, its verdict's hour and time to terminal; an
/// anomaly record by its kind and hour; a refusal by its problem code. The writer keeps the
/// counters with the difference between a run's state before and after a decision; the
/// recount (<see cref="KpiStore"/>) sums the same functions over the stored rows.
/// </summary>
public static class KpiRules
{
    public static IEnumerable<KpiKey> Of(Run run) => OfRun(run.Status, run.RegisteredAt, run.TerminalAt);

    public static IEnumerable<KpiKey> OfRun(RunStatus status, DateTimeOffset registeredAt, DateTimeOffset? terminalAt)
    {
        yield return new KpiKey(Kpi.Runs, status.Wire());
        yield return new KpiKey(Kpi.Registered, "", HourOf(registeredAt));
        if (terminalAt is not { } at) yield break;
        yield return new KpiKey(Kpi.Verdicts, status.Wire(), HourOf(at));
        yield return new KpiKey(Kpi.TimeToTerminal, KpiHistogram.BucketOf((at - registeredAt).TotalSeconds).ToString(CultureInfo.InvariantCulture));
    }

    public static IEnumerable<KpiKey> OfAnomaly(string kind, DateTimeOffset at)
    {
        yield return new KpiKey(Kpi.Anomalies, kind);
        if (kind != AnomalyKinds.Rejected) yield return new KpiKey(Kpi.Flagged, "", HourOf(at));
    }

    public static KpiKey OfRefusal(string reason) => new(Kpi.Rejections, reason);

    public static DateTimeOffset HourOf(DateTimeOffset at)
    {
        var u = at.UtcDateTime;
        return new DateTimeOffset(u.Year, u.Month, u.Day, u.Hour, 0, 0, TimeSpan.Zero);
    }
}

/// <summary>
/// Changes to the counters, summed per key (a pure value: nothing is written until
/// <see cref="Queue"/>). <c>Run(before, after)</c> subtracts what the run counted for before a
/// decision and adds what it counts for after, so a status change, a first verdict and a
/// reclassification that moves the verdict's hour or time are all the same rule.
/// </summary>
public sealed class KpiDelta
{
    private readonly Dictionary<KpiKey, long> _changes = new();

    /// <summary>The keys that change, with how much (never 0).</summary>
    public IReadOnlyDictionary<KpiKey, long> Changes => _changes;

    public bool IsEmpty => _changes.Count == 0;

    public KpiDelta Add(KpiKey key, long n = 1)
    {
        if (n == 0) return this;
        var sum = _changes.GetValueOrDefault(key) + n;
        if (sum == 0) _changes.Remove(key);
        else _changes[key] = sum;
        return this;
    }

    public KpiDelta Add(IEnumerable<KpiKey> keys, long n = 1)
    {
        foreach (var key in keys) Add(key, n);
        return this;
    }

    /// <summary>A run moved from <paramref name="before"/> (null: it did not exist) to <paramref name="after"/>.</summary>
    public KpiDelta Run(Run? before, Run? after)
    {
        if (before is not null) Add(KpiRules.Of(before), -1);
        if (after is not null) Add(KpiRules.Of(after));
        return this;
    }

    public KpiDelta Anomaly(AnomalyRecord anomaly) => Add(KpiRules.OfAnomaly(anomaly.Kind, anomaly.At));

    /// <summary>A kept rejection; a sample of the refusals that are counted (without credentials, beyond a budget) is counted where they are counted, not here.</summary>
    public KpiDelta Rejection(Rejection rejection) => rejection.Unauthenticated || rejection.OverBudget ? this : Add(KpiRules.OfRefusal(rejection.Reason));

    /// <summary>Queues the one upsert of these changes into the session's transaction (nothing when there are none).</summary>
    public void Queue(IDocumentSession session, string schema)
    {
        if (IsEmpty) return;
        var (hours, kpis, labels, values) = KpiCounters.Arrays(_changes);
        session.QueueSqlCommand(KpiCounters.UpsertSql(schema, "?", "?::timestamptz[]", "?::text[]", "?::text[]", "?::bigint[]"),
            KpiCounters.PickShard(), hours, kpis, labels, values);
    }
}

/// <summary>
/// The table of kept KPI counters: (hour, kpi, label, shard) → value, all-time counters at hour
/// <c>-infinity</c>. Every transaction that changes what a KPI counts adds its changes to the rows
/// of one shard, picked at random, in the same transaction; a read sums the shards. Writers of
/// different shards never wait for each other's commit, so the counters add no global
/// serialization point between nodes or writers.
/// </summary>
public static class KpiCounters
{
    public const string TableName = "ledger_kpi_counters";
    /// <summary>Rows per counter that concurrent writers spread over.</summary>
    public const int Shards = 8;
    /// <summary>The row that says the counters were established from the stored data once for this database.</summary>
    public const string EstablishedMarker = "#established";

    public static Table Table(string schema)
    {
        var table = new Table(new PostgresqlObjectName(schema, TableName, Weasel.Postgresql.SchemaUtils.IdentifierUsage.General));
        // Hour first: the totals (-infinity) and an hour range are each one range of the primary key.
        table.AddColumn("hour", "timestamptz").AsPrimaryKey();
        table.AddColumn("kpi", "text").AsPrimaryKey();
        table.AddColumn("label", "text").AsPrimaryKey();
        table.AddColumn("shard", "integer").AsPrimaryKey();
        table.AddColumn("value", "bigint").NotNull();
        return table;
    }

    public static int PickShard() => Random.Shared.Next(Shards);

    /// <summary>
    /// Adds values to counters (one statement). The parameters are the shard and four arrays of
    /// equal length; a null hour is the all-time counter. The rows are sorted, so two transactions
    /// on the same shard lock its rows in the same order.
    /// </summary>
    public static string UpsertSql(string schema, string shard, string hours, string kpis, string labels, string values) => $"""
        insert into {StorageNames.Qualified(schema, TableName)} as c (hour, kpi, label, shard, value)
        select coalesce(h, '-infinity'::timestamptz), k, l, {shard}, v from unnest({hours}, {kpis}, {labels}, {values}) as t(h, k, l, v)
        on conflict (hour, kpi, label, shard) do update set value = c.value + excluded.value
        """;

    /// <summary>The changes as the upsert's arrays, in key order.</summary>
    public static (DateTimeOffset?[] Hours, string[] Kpis, string[] Labels, long[] Values) Arrays(IReadOnlyDictionary<KpiKey, long> changes)
    {
        var sorted = changes.Where(c => c.Value != 0)
            .OrderBy(c => c.Key.Hour ?? DateTimeOffset.MinValue)
            .ThenBy(c => c.Key.Kpi, StringComparer.Ordinal)
            .ThenBy(c => c.Key.Label, StringComparer.Ordinal)
            .ToList();
        return (sorted.Select(c => c.Key.Hour).ToArray(), sorted.Select(c => c.Key.Kpi).ToArray(),
            sorted.Select(c => c.Key.Label).ToArray(), sorted.Select(c => c.Value).ToArray());
    }

    /// <summary>The upsert as a command on a connection (and transaction) of the caller's.</summary>
    public static NpgsqlCommand Command(NpgsqlConnection connection, NpgsqlTransaction? transaction, string schema,
        IReadOnlyDictionary<KpiKey, long> changes, int shard)
    {
        var (hours, kpis, labels, values) = Arrays(changes);
        var command = new NpgsqlCommand(UpsertSql(schema, "$1", "$2", "$3", "$4", "$5"), connection, transaction);
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Integer, Value = shard });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.TimestampTz, Value = hours });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text, Value = kpis });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text, Value = labels });
        command.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint, Value = values });
        return command;
    }
}

/// <summary>
/// Time to terminal as a bounded histogram: bucket 0 holds everything under 1 ms, bucket i ≥ 1
/// holds [1 ms · 2^((i-1)/8), 1 ms · 2^(i/8)), so each bucket is 2^(1/8) ≈ 1.0905 times as wide
/// as the one before, and the last one (about 35 years up) also holds anything longer. A
/// percentile is the nearest-rank one (the smallest time such that at least that share of runs
/// took no longer), placed inside its bucket by its rank there: it is within one bucket of the
/// exact value, i.e. at most 9.05% off, however many runs there are.
/// </summary>
public static class KpiHistogram
{
    public const int PerDoubling = 8;
    public const double FirstBoundSeconds = 0.001;
    public const int LastBucket = 1 + 40 * PerDoubling;

    public static int BucketOf(double seconds)
    {
        if (!(seconds >= FirstBoundSeconds)) return 0; // under 1 ms, negative, NaN
        var i = 1 + (int)Math.Floor(Math.Log2(seconds / FirstBoundSeconds) * PerDoubling);
        return Math.Clamp(i, 1, LastBucket);
    }

    public static (double Lower, double Upper) Bounds(int bucket) => bucket <= 0
        ? (0, FirstBoundSeconds)
        : (FirstBoundSeconds * Math.Pow(2, (bucket - 1.0) / PerDoubling), FirstBoundSeconds * Math.Pow(2, (double)bucket / PerDoubling));

    /// <summary>The nearest-rank <paramref name="p"/>-percentile of the counted times; null when nothing was counted.</summary>
    public static double? Percentile(IReadOnlyDictionary<int, long> counts, double p)
    {
        var total = counts.Values.Where(n => n > 0).Sum();
        if (total == 0) return null;
        // The rank (1-based) of the nearest-rank percentile.
        var rank = Math.Clamp((long)Math.Ceiling(p * total), 1, total);
        long below = 0;
        foreach (var (bucket, n) in counts.Where(c => c.Value > 0).OrderBy(c => c.Key))
        {
            if (below + n < rank)
            {
                below += n;
                continue;
            }
            // The n times of the bucket spread evenly over it (in log scale above 1 ms); the rank's share.
            var share = (rank - below - 0.5) / n;
            var (lower, upper) = Bounds(bucket);
            return bucket == 0 ? lower + share * (upper - lower) : lower * Math.Pow(upper / lower, share);
        }
        return null;
    }
}
