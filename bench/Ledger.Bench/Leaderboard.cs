using System.Diagnostics;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Marten;
using Ledger.Infrastructure;
using Ledger.Leaderboards;
using Npgsql;

namespace Ledger.Bench;

/// <summary>How the service's async daemon caught up with the seeded verdicts, and where its database time went.</summary>
public sealed record CatchUpResult(
    TimeSpan Waited,
    bool CaughtUp,
    long Target,
    long ShardAtStart,
    long HighWaterMarkAtStart,
    long ShardAtEnd,
    long HighWaterMarkAtEnd,
    long ParticipantsSeen,
    int ParticipantsExpected,
    long EventsToFold,
    long VerdictsToFold,
    int Samples,
    IReadOnlyList<(string What, int Count)> Activity)
{
    public long LagAtStart => Target - ShardAtStart;
    public long LagAtEnd => Math.Max(0, Target - ShardAtEnd);
}

/// <summary>
/// Waits (bounded) for the service's async daemon to fold the seeded verdicts into standings: until
/// every async shard has reached the last seeded event and GET leaderboard counts every expected
/// participant. Meanwhile samples pg_stat_activity to see what the service's sessions are doing.
/// </summary>
public static class StandingsCatchUp
{
    private const string Monitor = "ledger-bench-monitor";

    public static async Task<CatchUpResult> WaitAsync(string connectionString, StorageNames names, LedgerClient client, string board,
        int expectedParticipants, TimeSpan timeout, Action<string> log, CancellationToken ct)
    {
        await using var db = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(connectionString)
        {
            ApplicationName = Monitor,
            MaxPoolSize = 4,
        }.ConnectionString);

        var started = Stopwatch.GetTimestamp();
        var target = await Sql.ScalarAsync<long>(db, $"select coalesce(max(seq_id), 0) from {names.Events}");
        var (hwmStart, shardStart) = await PositionsAsync(db, names);
        log($"standings catch-up: last event {target:N0}; daemon high water mark {hwmStart:N0}, standings shard at {shardStart:N0} " +
            $"({target - shardStart:N0} events behind); waiting up to {timeout.TotalSeconds:0} s for {expectedParticipants:N0} participants");

        using var stopSampling = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var activity = new Dictionary<string, int>();
        var samples = 0;
        var sampler = Task.Run(async () =>
        {
            while (!stopSampling.IsCancellationRequested)
            {
                try
                {
                    foreach (var what in await ActivityAsync(db)) activity[what] = activity.GetValueOrDefault(what) + 1;
                    samples++;
                    await Task.Delay(100, stopSampling.Token);
                }
                catch (OperationCanceledException) { return; }
                catch (NpgsqlException) { await Task.Delay(100); }
            }
        });

        long participants = 0, hwm = hwmStart, shard = shardStart;
        var caughtUp = false;
        var lastLog = Stopwatch.GetTimestamp();
        var lastCount = 0L;
        try
        {
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                (hwm, shard) = await PositionsAsync(db, names);
                // The HTTP count only once the shard is there (or every second), so the poll adds little load.
                if (shard >= target || Stopwatch.GetElapsedTime(lastCount) >= TimeSpan.FromSeconds(1))
                {
                    participants = await ParticipantsAsync(client, board);
                    lastCount = Stopwatch.GetTimestamp();
                }
                if (shard >= target && participants >= expectedParticipants)
                {
                    caughtUp = true;
                    break;
                }
                if (Stopwatch.GetElapsedTime(started) >= timeout) break;
                if (Stopwatch.GetElapsedTime(lastLog) >= TimeSpan.FromSeconds(5))
                {
                    log($"standings catch-up: {Stopwatch.GetElapsedTime(started).TotalSeconds:0} s, shard at {shard:N0} of {target:N0} " +
                        $"(high water mark {hwm:N0}), {participants:N0} participants");
                    lastLog = Stopwatch.GetTimestamp();
                }
                await Task.Delay(250, ct);
            }
        }
        finally
        {
            await stopSampling.CancelAsync();
            await sampler;
        }
        var elapsed = Stopwatch.GetElapsedTime(started);

        long events = 0, verdicts = 0;
        await using (var cmd = db.CreateCommand(
                         $"select count(*), count(*) filter (where type = '{names.EventType<Ledger.Runs.VerdictReached>()}') from {names.Events} where seq_id > $1 and seq_id <= $2"))
        {
            cmd.Parameters.AddWithValue(shardStart);
            cmd.Parameters.AddWithValue(target);
            await using var reader = await cmd.ExecuteReaderAsync(ct);
            await reader.ReadAsync(ct);
            events = reader.GetInt64(0);
            verdicts = reader.GetInt64(1);
        }

        var top = activity.OrderByDescending(kv => kv.Value).Take(8).Select(kv => (kv.Key, kv.Value)).ToList();
        return new CatchUpResult(elapsed, caughtUp, target, shardStart, hwmStart, shard, hwm, participants, expectedParticipants,
            events, verdicts, samples, top);
    }

    /// <summary>
    /// The daemon's high water mark and its slowest async shard (0 when there is none yet). Shards are
    /// the rows named "Projection:ShardKey" (here Standing:All); the daemon's own bookkeeping rows are
    /// HighWaterMark, HighWaterAllocationFence and HighWaterStuckGap (the last stays at the last gap
    /// it skipped, so it must not be read as a shard's position).
    /// </summary>
    private static async Task<(long HighWaterMark, long Shard)> PositionsAsync(NpgsqlDataSource db, StorageNames names)
    {
        await using var cmd = db.CreateCommand(
            "select coalesce(max(last_seq_id) filter (where name = 'HighWaterMark'), 0), " +
            "coalesce(min(last_seq_id) filter (where name not like 'HighWater%' and name like '%:%'), 0) " +
            $"from {names.Progression}");
        await using var reader = await cmd.ExecuteReaderAsync();
        await reader.ReadAsync();
        return (reader.GetInt64(0), reader.GetInt64(1));
    }

    public static async Task<long> ParticipantsAsync(LedgerClient client, string board)
    {
        var (status, body) = await client.GetLeaderboardAsync(board, 1, 1);
        if (status != HttpStatusCode.OK) throw new InvalidOperationException($"GET leaderboard of {board}: {(int)status} {body}");
        using var json = JsonDocument.Parse(body);
        return json.RootElement.GetProperty("participants").GetInt64();
    }

    private static readonly Regex Spaces = new(@"\s+", RegexOptions.Compiled);
    private static readonly Regex Numbers = new(@"\b\d+\b", RegexOptions.Compiled);

    /// <summary>What each of the service's sessions is doing now (active or in an open transaction).</summary>
    private static async Task<List<string>> ActivityAsync(NpgsqlDataSource db)
    {
        await using var cmd = db.CreateCommand(
            "select state, coalesce(wait_event_type || ':' || wait_event, ''), coalesce(query, '') from pg_stat_activity " +
            "where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend' " +
            $"and coalesce(application_name, '') <> '{Monitor}' and state in ('active', 'idle in transaction')");
        await using var reader = await cmd.ExecuteReaderAsync();
        var seen = new List<string>();
        while (await reader.ReadAsync())
        {
            var state = reader.GetString(0);
            var wait = reader.GetString(1);
            var query = Numbers.Replace(Spaces.Replace(reader.GetString(2), " ").Trim(), "N");
            if (query.Length > 110) query = query[..110] + "…";
            var what = state == "active" ? query : $"(in transaction, waiting for the client) after: {query}";
            if (state == "active" && wait.Length > 0 && !wait.StartsWith("Client", StringComparison.Ordinal)) what += $" [wait {wait}]";
            seen.Add(what);
        }
        return seen;
    }
}

/// <summary>Where one leaderboard read's time goes, measured in-process on the service's store configuration.</summary>
public sealed record LeaderboardProfile(
    int Reads,
    double BoardLoadP50Ms,
    double PageQueryP50Ms,
    double PageQueryP99Ms,
    double HttpBodyBytes,
    double StandingBytesAvg,
    long StandingBytesMax,
    double ResultsPerStandingAvg,
    IReadOnlyList<string> RoundTrips,
    IReadOnlyList<string> Plan);

public static class LeaderboardProfiler
{
    /// <summary>
    /// The endpoint's own steps, without HTTP: load the board, then the endpoint's own read
    /// (GetLeaderboardEndpoint.Read: the page and the count in one round trip); one reader, random
    /// pages. Plus the sizes that drive it: stored standings and the page's body, and the plan.
    /// </summary>
    public static async Task<LeaderboardProfile> RunAsync(IDocumentStore store, NpgsqlDataSource db, LedgerClient client,
        string connectionString, string board, int pages, int pageSize, TimeSpan duration)
    {
        var loads = new List<double>();
        var queries = new List<double>();
        var random = new Random(17);
        var names = new StorageNames(store);
        await using var database = new ReadDatabase(new LedgerDatabase(connectionString));
        var deadline = DateTime.UtcNow + duration;
        Ledger.Leaderboards.Board? definition = null;
        for (var n = 0; n < 20 || DateTime.UtcNow < deadline; n++)
        {
            var page = 1 + random.Next(pages);
            await using var session = store.QuerySession();
            var t0 = Stopwatch.GetTimestamp();
            definition = await session.LoadAsync<Ledger.Leaderboards.Board>(board)
                         ?? throw new InvalidOperationException($"board {board} is missing");
            var t1 = Stopwatch.GetTimestamp();
            var (rows, total) = await GetLeaderboardEndpoint.Read(database, names, definition, null, page, pageSize, CancellationToken.None);
            var t2 = Stopwatch.GetTimestamp();
            if (n == 0) continue; // the first one prepares the connection
            loads.Add(Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds);
            queries.Add(Stopwatch.GetElapsedTime(t1, t2).TotalMilliseconds);
            _ = (rows, total);
        }

        var bodies = new List<double>();
        for (var p = 1; p <= Math.Min(pages, 5); p++) bodies.Add((await client.GetLeaderboardAsync(board, p, pageSize)).Body.Length);

        double avg = 0, results = 0;
        long max = 0;
        await using (var cmd = db.CreateCommand(
                         $"select coalesce(avg(octet_length(data::text)), 0)::float8, coalesce(max(octet_length(data::text)), 0)::bigint, " +
                         $"coalesce(avg(jsonb_array_length(data -> '{names.JsonKey<Standing>(s => s.Results)}')), 0)::float8 " +
                         $"from {names.Table<Standing>()} where {names.Json<Standing>(s => s.Board)} = $1"))
        {
            cmd.Parameters.AddWithValue(board);
            await using var reader = await cmd.ExecuteReaderAsync();
            await reader.ReadAsync();
            avg = reader.GetDouble(0);
            max = reader.GetInt64(1);
            results = reader.GetDouble(2);
        }

        // The page query's plan, with the parameters of one real read (a middle page).
        var plan = new List<string>();
        await using (var explain = db.CreateCommand("explain (analyze, buffers) " + BoardQuery.For(names, asOf: false).Page))
        {
            foreach (var parameter in BoardQuery.Parameters(board, null, Math.Max(1, pages / 2), pageSize, paging: true)) explain.Parameters.Add(parameter);
            await using var reader = await explain.ExecuteReaderAsync();
            while (await reader.ReadAsync()) plan.Add(reader.GetString(0));
        }
        plan.Add($"(work_mem {await Sql.ScalarAsync<string>(db, "show work_mem")})");

        queries.Sort();
        return new LeaderboardProfile(queries.Count, Measurement.Median(loads), Measurement.Median(queries),
            queries.Count == 0 ? double.NaN : queries[Math.Clamp((int)Math.Ceiling(0.99 * queries.Count) - 1, 0, queries.Count - 1)],
            bodies.Count == 0 ? double.NaN : bodies.Average(), avg, max, results,
            [$"batch of 2: {BoardQuery.For(names, asOf: false).Page}; {BoardQuery.For(names, asOf: false).Count}"], plan);
    }
}

/// <summary>Keeps each command a Marten session sends, with copies of its parameters, to EXPLAIN it afterwards.</summary>
public sealed class CommandCapture : IMartenSessionLogger
{
    public List<(string Text, List<NpgsqlParameter> Parameters)> Commands { get; } = [];

    public void OnBeforeExecute(NpgsqlCommand command) =>
        Commands.Add((command.CommandText, command.Parameters.Select(p => p.Clone()).ToList()));

    public void OnBeforeExecute(NpgsqlBatch batch)
    {
        foreach (NpgsqlBatchCommand c in batch.BatchCommands) Commands.Add((c.CommandText, c.Parameters.Select(p => p.Clone()).ToList()));
    }

    public void LogSuccess(NpgsqlCommand command) { }
    public void LogFailure(NpgsqlCommand command, Exception ex) { }
    public void LogSuccess(NpgsqlBatch batch) { }
    public void LogFailure(NpgsqlBatch batch, Exception ex) { }
    public void LogFailure(Exception ex, string message) { }
    public void RecordSavedChanges(IDocumentSession session, Marten.Services.IChangeSet commit) { }
}
