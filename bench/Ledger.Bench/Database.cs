using System.Diagnostics;
using JasperFx.Events.Daemon;
using Ledger.Contract;
using Ledger.Leaderboards;
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

/// <summary>What the seeding writes: how many runs, on which board, by how many participants.</summary>
public sealed record SeedPlan(int Runs, int Participants, string Board, Ranking Ranking)
{
    public string Participant(int run) => $"team-{run % Participants:D4}";
}

/// <summary>What the standings projection must show once it has folded every seeded verdict.</summary>
public sealed record ExpectedBoard(int Participants, int SucceededRuns, int FailedRuns, string TopParticipant, StandingResult Top);

public sealed record SeedResult(TimeSpan Elapsed, long Events, ExpectedBoard Expected)
{
    /// <summary>When the first and the last seeded run started (their verdicts follow within minutes).</summary>
    public (DateTimeOffset From, DateTimeOffset To) Times { get; init; }
}

/// <summary>Runs written straight into the service's event store, the way the service would have.</summary>
public static class Seeder
{
    public static string RunId(int i) => $"seed-{i:D7}";
    public const string Board = "bench-board";
    public const string PrimaryScore = "accuracy";
    public const string TieBreakScore = "f1";

    /// <summary>The board the seeded runs are entered on, as POST /api/boards takes it.</summary>
    public static object BoardDefinition => new
    {
        id = Board,
        title = "Bench board",
        primaryScore = PrimaryScore,
        direction = "max",
        tieBreakScore = TieBreakScore,
        tieBreakDirection = "max",
    };

    /// <summary>One run in twenty fails (spread over participants by a hash, so no participant only fails by construction).</summary>
    public static bool Fails(int i) => (((uint)i * 2654435761u) >> 16) % 20 == 13;

    /// <summary>
    /// Seeds <paramref name="plan"/>'s runs through Marten in-process, with the service's projections
    /// inline: each is registered on the board with its ranking (as POST /api/runs does), claimed,
    /// started, and then either scored, given its output and completed (succeeded), or failed; the
    /// stream ends with the <see cref="VerdictReached"/> the service appends beside the events that
    /// end a run, derived the same way (<see cref="Run.LatestVerdict"/> of the folded run). Much
    /// faster than over HTTP: many runs per transaction.
    /// </summary>
    public static async Task<SeedResult> SeedAsync(IDocumentStore store, SeedPlan plan, int parallelism, int runsPerSession = 250)
    {
        var started = Stopwatch.GetTimestamp();
        long events = 0;
        var next = -1;
        // Every seeded run happened in the past, one run starting per second, the last ten minutes ago.
        var origin = DateTimeOffset.UtcNow.AddMinutes(-10).AddSeconds(-plan.Runs - 120);
        // The expected board by the service's own rule (RankingRule), the one every reader of a board uses.
        var best = new (StandingResult Result, byte[] Key)?[plan.Participants];
        int succeeded = 0, failed = 0;
        await Task.WhenAll(Enumerable.Range(0, parallelism).Select(_ => Task.Run(async () =>
        {
            while (true)
            {
                var first = Interlocked.Add(ref next, runsPerSession) - runsPerSession + 1;
                if (first >= plan.Runs) return;
                var last = Math.Min(plan.Runs, first + runsPerSession);
                await using var session = store.LightweightSession();
                for (var i = first; i < last; i++)
                {
                    var (stream, verdict) = SeedEvents(i, origin.AddSeconds(i), plan);
                    session.Events.StartStream<Run>(RunId(i), stream);
                    Interlocked.Add(ref events, stream.Length);
                    if (verdict.Status != RunStatus.Succeeded)
                    {
                        Interlocked.Increment(ref failed);
                        continue;
                    }
                    Interlocked.Increment(ref succeeded);
                    var result = new StandingResult(verdict.RunId, verdict.Scores[plan.Ranking.PrimaryScore],
                        plan.Ranking.TieBreakScore is { } t && verdict.Scores.TryGetValue(t, out var tb) ? tb : null, verdict.At);
                    var key = RankingRule.Key(plan.Ranking, result)!;
                    var p = i % plan.Participants;
                    lock (best)
                    {
                        if (best[p] is not { } current || RankingRule.Compare(key, current.Key) < 0) best[p] = (result, key);
                    }
                }
                await session.SaveChangesAsync();
            }
        })));
        var ranked = best.Select((r, p) => (Participant: plan.Participant(p), Entry: r)).Where(x => x.Entry is not null)
            .OrderBy(x => x.Entry!.Value.Key, RankingRule.Order).Select(x => (x.Participant, Best: x.Entry!.Value.Result)).ToList();
        var expected = new ExpectedBoard(ranked.Count, succeeded, failed,
            ranked.Count > 0 ? ranked[0].Participant : "", ranked.Count > 0 ? ranked[0].Best : new StandingResult("", 0, null, default));
        return new SeedResult(Stopwatch.GetElapsedTime(started), events, expected) { Times = (origin, origin.AddSeconds(plan.Runs)) };
    }

    /// <summary>Scores with plenty of ties on the primary score (10,000 values), so that the tie-break matters.</summary>
    private static Dictionary<string, double> Scores(int i, Ranking ranking)
    {
        var scores = new Dictionary<string, double> { [ranking.PrimaryScore] = 0.5 + ((long)i * 7919 % 10_000) / 20_000.0 };
        if (ranking.TieBreakScore is { } t) scores[t] = 0.4 + ((long)i * 104_729 % 10_007) / 20_014.0;
        return scores;
    }

    private static (object[] Events, VerdictReached Verdict) SeedEvents(int i, DateTimeOffset at, SeedPlan plan)
    {
        var runId = RunId(i);
        var ranking = plan.Ranking;
        // As POST /api/runs registers a run entered on a board: the board's scores are required, its ranking copied.
        string[] requiredScores = ranking.TieBreakScore is { } tie ? [ranking.PrimaryScore, tie] : [ranking.PrimaryScore];
        var registered = new RunRegistered(runId, plan.Board, plan.Participant(i), null, new Dictionary<string, string>(),
            requiredScores, [Workload.RequiredOutput], null, 3600, at, ranking);
        var claimed = new RunClaimed("seed-worker", Ledger.Infrastructure.Access.DigestHex($"lt_{runId}"), at, at.AddHours(1));
        WorkerEvent[] worker = Fails(i)
            ?
            [
                new RunStarted { EventId = $"{runId}-1", OccurredAt = at.AddSeconds(1), RecordedAt = at.AddSeconds(1) },
                new RunFailed
                {
                    EventId = $"{runId}-2", OccurredAt = at.AddSeconds(40), RecordedAt = at.AddSeconds(40),
                    ErrorClass = "out-of-memory", Message = "CUDA out of memory while allocating the optimizer state",
                },
            ]
            :
            [
                new RunStarted { EventId = $"{runId}-1", OccurredAt = at.AddSeconds(1), RecordedAt = at.AddSeconds(1) },
                new ScoresReported
                {
                    EventId = $"{runId}-2", OccurredAt = at.AddSeconds(60), RecordedAt = at.AddSeconds(60),
                    Scores = Scores(i, ranking),
                },
                new OutputRecorded
                {
                    EventId = $"{runId}-3", OccurredAt = at.AddSeconds(61), RecordedAt = at.AddSeconds(61),
                    Name = Workload.RequiredOutput, Uri = $"s3://bench-artifacts/{runId}/model.safetensors",
                },
                new RunCompleted { EventId = $"{runId}-4", OccurredAt = at.AddSeconds(62), RecordedAt = at.AddSeconds(62) },
            ];

        // The verdict exactly as the service appends it (RunDecisions.Derive): fold the run, publish its latest verdict.
        var run = Run.Create(registered);
        run.Fold(claimed);
        foreach (var e in worker) run.Fold(e);
        var verdict = run.LatestVerdict()
                      ?? throw new InvalidOperationException($"seeded run {runId} did not reach a verdict (status {run.Status}, missing {string.Join(", ", run.MissingForSuccess())})");
        return ([registered, claimed, .. worker, verdict], verdict);
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
}
