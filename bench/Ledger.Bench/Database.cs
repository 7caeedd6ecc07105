using System.Diagnostics;
using JasperFx.Events.Daemon;
using Ledger.Runs;
using Marten;
using Npgsql;

namespace Ledger.Bench;

/// <summary>Exact write counters of the cluster: WAL bytes written and transaction ids assigned.</summary>
public readonly record struct WriteCounters(long WalBytes, long WriteTransactions)
{
    public static async Task<WriteCounters> ReadAsync(NpgsqlDataSource db)
    {
        await using var cmd = db.CreateCommand(
            "select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, pg_snapshot_xmax(pg_current_snapshot())::text::bigint");
        await using var reader = await cmd.ExecuteReaderAsync();
        await reader.ReadAsync();
        return new WriteCounters(reader.GetInt64(0), reader.GetInt64(1));
    }

    public static WriteCounters operator -(WriteCounters a, WriteCounters b) => new(a.WalBytes - b.WalBytes, a.WriteTransactions - b.WriteTransactions);
    public static WriteCounters operator +(WriteCounters a, WriteCounters b) => new(a.WalBytes + b.WalBytes, a.WriteTransactions + b.WriteTransactions);
}

/// <summary>Runs written straight into the service's event store, the way the service would have.</summary>
public static class Seeder
{
    public static string RunId(int i) => $"seed-{i:D7}";
    public const string Board = "bench-board";

    /// <summary>
    /// Seeds <paramref name="runs"/> finished runs (registered, claimed, started, scores, output,
    /// completed: succeeded) through Marten in-process, with the service's projections inline.
    /// Much faster than over HTTP: many runs per transaction.
    /// </summary>
    public static async Task<(TimeSpan Elapsed, long Events)> SeedAsync(IDocumentStore store, int runs, int parallelism, int runsPerSession = 250)
    {
        var started = Stopwatch.GetTimestamp();
        long events = 0;
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, parallelism).Select(_ => Task.Run(async () =>
        {
            while (true)
            {
                var first = Interlocked.Add(ref next, runsPerSession) - runsPerSession + 1;
                if (first >= runs) return;
                var last = Math.Min(runs, first + runsPerSession);
                await using var session = store.LightweightSession();
                var now = DateTimeOffset.UtcNow;
                for (var i = first; i < last; i++)
                {
                    var stream = SeedEvents(i, now);
                    session.Events.StartStream<Run>(RunId(i), stream);
                    Interlocked.Add(ref events, stream.Length);
                }
                await session.SaveChangesAsync();
            }
        })));
        return (Stopwatch.GetElapsedTime(started), events);
    }

    private static object[] SeedEvents(int i, DateTimeOffset now)
    {
        var runId = RunId(i);
        var at = now.AddMinutes(-10);
        WorkerEvent[] worker =
        [
            new RunStarted { EventId = $"{runId}-1", OccurredAt = at.AddSeconds(1), RecordedAt = at.AddSeconds(1) },
            new ScoresReported
            {
                EventId = $"{runId}-2", OccurredAt = at.AddSeconds(60), RecordedAt = at.AddSeconds(60),
                Scores = new Dictionary<string, double> { ["accuracy"] = 0.5 + (i * 7919 % 10_000) / 20_000.0 },
            },
            new OutputRecorded
            {
                EventId = $"{runId}-3", OccurredAt = at.AddSeconds(61), RecordedAt = at.AddSeconds(61),
                Name = Workload.RequiredOutput, Uri = $"s3://bench-artifacts/{runId}/model.safetensors",
            },
            new RunCompleted { EventId = $"{runId}-4", OccurredAt = at.AddSeconds(62), RecordedAt = at.AddSeconds(62) },
        ];
        // Participants and a board, so that the same data serves the leaderboard read once it exists.
        var registered = new RunRegistered(runId, null, $"team-{i % 500:D3}", null, new Dictionary<string, string>(),
            ["accuracy"], [Workload.RequiredOutput], null, 3600, at);
        var claimed = new RunClaimed("seed-worker", Ledger.Infrastructure.Access.DigestHex($"lt_{runId}"), at, at.AddHours(1));
        // LEADERBOARD (issue 7): when boards exist, register the seeded runs on Seeder.Board (define the
        // board first) and make sure the seeding produces what the leaderboard projection consumes (e.g.
        // decide the final events through RunDecisions so that its verdict events are appended too).
        return [registered, claimed, .. worker];
    }
}

public static class Rebuild
{
    /// <summary>Full rebuild of the Run projection from every event, through Marten's projection daemon.</summary>
    public static async Task<TimeSpan> RunAsync(DocumentStore store, CancellationToken ct, Microsoft.Extensions.Logging.ILogger? logger = null)
    {
        using var daemon = await store.BuildProjectionDaemonAsync(logger: logger);
        var started = Stopwatch.GetTimestamp();
        await daemon.RebuildProjectionAsync<Run>(TimeSpan.FromMinutes(5), ct);
        return Stopwatch.GetElapsedTime(started);
    }
}

public static class Sql
{
    public static async Task<T> ScalarAsync<T>(NpgsqlDataSource db, string sql)
    {
        await using var cmd = db.CreateCommand(sql);
        var value = await cmd.ExecuteScalarAsync();
        return (T)Convert.ChangeType(value!, typeof(T));
    }

    /// <summary>
    /// Waits until every async projection shard of <paramref name="schema"/> has reached the last
    /// event; returns the wait, or null when there is nothing to wait for or the time ran out.
    /// </summary>
    public static async Task<(TimeSpan Waited, bool CaughtUp, long Lag)?> WaitForAsyncProjectionsAsync(NpgsqlDataSource db, string schema, TimeSpan timeout)
    {
        var exists = await ScalarAsync<bool>(db, $"select to_regclass('{schema}.mt_event_progression') is not null");
        if (!exists) return null;
        // The service has appended events for a while by now: an async projection has a shard row.
        if (await ScalarAsync<long>(db, $"select count(*) from {schema}.mt_event_progression where name <> 'HighWaterMark'") == 0) return null;
        var started = Stopwatch.GetTimestamp();
        var target = await ScalarAsync<long>(db, $"select coalesce(max(seq_id), 0) from {schema}.mt_events");
        while (true)
        {
            // Shards only (the high water mark row is the daemon's own bookkeeping).
            var shards = await ScalarAsync<long>(db, $"select count(*) from {schema}.mt_event_progression where name <> 'HighWaterMark'");
            var slowest = await ScalarAsync<long>(db, $"select coalesce(min(last_seq_id), 0) from {schema}.mt_event_progression where name <> 'HighWaterMark'");
            if (shards > 0 && slowest >= target) return (Stopwatch.GetElapsedTime(started), true, 0);
            if (Stopwatch.GetElapsedTime(started) > timeout)
            {
                return shards == 0 ? null : (Stopwatch.GetElapsedTime(started), false, target - slowest);
            }
            await Task.Delay(250);
        }
    }
}
