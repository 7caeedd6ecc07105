using System.Net;
using Ledger.Contract;
using Ledger.Leaderboards;
using Ledger.Tests.Fixtures;
using Marten;
using Marten.Events;
using JasperFx.Events;
using Ledger.Runs;
using Microsoft.Extensions.DependencyInjection;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Leaderboards;

/// <summary>
/// The board as of a time comes from the standings projection's history of changes, in the
/// database. Held here against a brute force over the raw population: which runs were succeeded
/// at that time (completed by then, not yet reclassified away), best per participant, ranked by the rule.
/// </summary>
public sealed class BoardHistoryTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private sealed record Entry(string Participant, string RunId, double Score, double? Speed, DateTimeOffset SucceededAt)
    {
        public DateTimeOffset? ReclassifiedAt { get; set; }
    }

    [Theory]
    [InlineData("max", 3)]
    [InlineData("min", 5)]
    public async Task the_board_as_of_any_time_equals_a_brute_force_over_what_had_succeeded_by_then(string direction, int seed)
    {
        var random = new Random(seed);
        var board = NewRunId("history");
        await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey,
            new { id = board, primaryScore = "score", direction, tieBreakScore = "speed", tieBreakDirection = "min" });
        // The rule written out here rather than taken from RankingRule (a test that ranks with the code under test
        // cannot see it rank wrongly): the score in the board's direction, then the lower speed (the tie-break's
        // direction), then the earlier completion, then the run id, ordinally.
        var sign = direction == "max" ? -1 : 1;
        IEnumerable<Entry> Ranked(IEnumerable<Entry> results) =>
            results.OrderBy(e => sign * e.Score).ThenBy(e => e.Speed).ThenBy(e => e.SucceededAt).ThenBy(e => e.RunId, StringComparer.Ordinal);
        var participants = Enumerable.Range(0, 5).Select(i => $"p{i}").ToArray();
        var entries = new List<Entry>();
        var checkpoints = new List<DateTimeOffset> { _api.Now.AddMinutes(-1) };

        for (var i = 0; i < 30; i++)
        {
            ledger.Clock.Advance(TimeSpan.FromSeconds(1 + random.Next(3)));
            if (entries.Count(e => e.ReclassifiedAt is null) > 2 && random.Next(5) == 0)
            {
                // An operator reclassifies a succeeded run (often a leader) away: it leaves the board from then on.
                var victim = entries.Where(e => e.ReclassifiedAt is null).OrderBy(_ => random.Next()).First();
                var answer = await _api.Send(HttpMethod.Post, $"/api/runs/{victim.RunId}/reclassify", LedgerHost.AdminKey,
                    new { status = "failed", reason = "audit", evidence = new[] { "case-1" } });
                Assert.Equal(HttpStatusCode.OK, answer.Status);
                victim.ReclassifiedAt = _api.Now;
            }
            else
            {
                var participant = participants[random.Next(participants.Length)];
                var (runId, token) = await _api.Started(new { runId = NewRunId("h"), board, participant });
                var score = random.Next(0, 4) / 2.0; // ties are common
                // A board with a tie-break requires it of every run (RankingRuleTests covers a missing one).
                double speed = random.Next(0, 2);
                object scores = new { score, speed };
                var response = await _api.Events(runId, token, new[] { Event("scores.reported", fields: new { scores }), Event("run.completed") });
                Assert.Equal("succeeded", response.RunStatus);
                var at = (await _api.Run(runId))["terminalAt"]!.GetValue<DateTimeOffset>();
                entries.Add(new Entry(participant, runId, score, speed, at));
            }
            if (random.Next(4) == 0) checkpoints.Add(_api.Now);
        }
        checkpoints.Add(_api.Now);
        await ledger.Settled();

        foreach (var time in checkpoints)
        {
            var expected = Ranked(entries
                    .Where(e => e.SucceededAt <= time && !(e.ReclassifiedAt <= time))
                    .GroupBy(e => e.Participant)
                    .Select(g => Ranked(g).First()))
                .Select(e => $"{e.Participant}:{e.RunId}")
                .ToList();

            var answer = await _api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard?at={Uri.EscapeDataString(time.ToString("O"))}&pageSize=100",
                LedgerHost.ReadKey);
            Assert.Equal(HttpStatusCode.OK, answer.Status);
            var rows = answer.Json!["rows"]!.AsArray();
            Assert.Equal(expected, rows.Select(r => $"{r!["participant"]!.GetValue<string>()}:{r["runId"]!.GetValue<string>()}").ToList());
            Assert.Equal(expected.Count, answer.Json!["participants"]!.GetValue<long>());
            Assert.Equal(time, answer.Json!["asOf"]!.GetValue<DateTimeOffset>());
        }

        // The latest checkpoint is the board now.
        var now = await _api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard?pageSize=100", LedgerHost.ReadKey);
        var then = await _api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard?pageSize=100&at={Uri.EscapeDataString(checkpoints[^1].ToString("O"))}", LedgerHost.ReadKey);
        Assert.Equal(now.Json!["rows"]!.ToJsonString(), then.Json!["rows"]!.ToJsonString());
        Assert.True((await ledger.Verify()).Passed);
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    public async Task verdicts_out_of_time_order_folded_in_random_pages_some_twice_answer_every_time_as_the_latest_change_by_then(int seed)
    {
        // Verdicts decided on nodes whose clocks differ: their times do not follow the event order.
        // The projection is driven directly, in random pages, some applied twice (as the daemon may),
        // and the board as of each time must be each participant's latest change (by sequence) at or before it.
        var random = new Random(seed);
        var board = NewRunId("skew");
        var ranking = new Ranking("s", Direction.Max, null, Direction.Min);
        var start = new DateTimeOffset(2026, 11, 30, 12, 0, 0, TimeSpan.Zero);
        var verdicts = new List<(VerdictReached Verdict, long Sequence)>();
        var succeeded = new List<string>();
        for (var i = 1; i <= 120; i++)
        {
            var at = start.AddSeconds(i).AddMilliseconds(random.Next(-4_000, 4_000));
            VerdictReached verdict;
            if (succeeded.Count > 3 && random.Next(6) == 0)
            {
                // A reclassification: a run that had succeeded leaves the board.
                var runId = succeeded[random.Next(succeeded.Count)];
                succeeded.Remove(runId);
                var participant = verdicts.First(v => v.Verdict.RunId == runId).Verdict.Participant!;
                verdict = new VerdictReached(runId, RunStatus.Failed, "audit", board, participant, ranking, new Dictionary<string, double>(), at, "admin");
            }
            else
            {
                var runId = $"{board}-r{i}";
                succeeded.Add(runId);
                verdict = new VerdictReached(runId, RunStatus.Succeeded, null, board, $"p{random.Next(6)}", ranking,
                    new Dictionary<string, double> { ["s"] = random.Next(0, 8) }, at, "worker");
            }
            verdicts.Add((verdict, 1_000_000L * seed + i));
        }

        // A database of its own: standings written past the event store are not for the class's verify.
        var (server, connection, name) = TestDatabase.Create();
        try
        {
            await using var instance = await ledger.InstanceOn(connection);
            await FoldAndAsk(instance.Services.GetRequiredService<IDocumentStore>(), connection, random, board, start, verdicts);
            // Changes written before superseded_at existed get it filled at start, to the same values.
            var names = new Ledger.Infrastructure.StorageNames(instance.Services.GetRequiredService<IDocumentStore>());
            await using var data = Npgsql.NpgsqlDataSource.Create(connection);
            await using var before = data.CreateCommand(
                $"select string_agg(sequence || '=' || superseded_at, ',' order by sequence) from {names.Own(StandingsProjection.ChangesTable)} where board = $1");
            before.Parameters.AddWithValue(board);
            var filled = (string?)await before.ExecuteScalarAsync();
            await using (var wipe = data.CreateCommand($"update {names.Own(StandingsProjection.ChangesTable)} set superseded_at = null where board = $1"))
            {
                wipe.Parameters.AddWithValue(board);
                Assert.True(await wipe.ExecuteNonQueryAsync() > 3);
            }
            await using (var restarted = await ledger.InstanceOn(connection)) { }
            Assert.Equal(filled, (string?)await before.ExecuteScalarAsync());
        }
        finally
        {
            TestDatabase.Drop(server, name);
        }
    }

    private static async Task FoldAndAsk(IDocumentStore store, string connection, Random random, string board, DateTimeOffset start,
        List<(VerdictReached Verdict, long Sequence)> verdicts)
    {
        var projection = new StandingsProjection();
        var position = 0;
        while (position < verdicts.Count)
        {
            var size = 1 + random.Next(12);
            var page = verdicts.Skip(position).Take(size).Select(v => (IEvent)new Event<VerdictReached>(v.Verdict) { Sequence = v.Sequence }).ToList();
            var again = random.Next(3) == 0;
            for (var applied = again ? 2 : 1; applied > 0; applied--)
            {
                await using var session = store.LightweightSession();
                await projection.ApplyAsync(session, page, CancellationToken.None);
                await session.SaveChangesAsync();
            }
            position += size;
        }

        // The fold's changes, and for each time the latest of each participant's at or before it.
        var standings = new Dictionary<string, Standing>(StringComparer.Ordinal);
        var changes = verdicts.Select(v => Standing.Fold(standings, v.Verdict, v.Sequence)).OfType<StandingChange>().ToList();
        var times = changes.SelectMany(c => new[] { c.At, c.At.AddTicks(-10) })
            .Concat(Enumerable.Range(0, 40).Select(_ => start.AddMilliseconds(random.Next(-5_000, 130_000))));
        var names = new Ledger.Infrastructure.StorageNames(store);
        var query = BoardQuery.For(names, asOf: true);
        await using var data = Npgsql.NpgsqlDataSource.Create(connection);
        foreach (var time in times)
        {
            var expected = changes.Where(c => c.At <= time).GroupBy(c => c.Participant).Select(g => g.MaxBy(c => c.Sequence)!)
                .Where(c => c.RankKey is not null).OrderBy(c => c.RankKey!, RankingRule.Order).Select(c => $"{c.Participant}:{c.RunId}").ToList();
            await using var command = data.CreateCommand(query.Page);
            foreach (var parameter in BoardQuery.Parameters(board, time, 1, 500, paging: true)) command.Parameters.Add(parameter);
            var actual = new List<string>();
            await using (var reader = await command.ExecuteReaderAsync())
            {
                while (await reader.ReadAsync()) actual.Add($"{reader.GetString(0)}:{reader.GetString(1)}");
            }
            Assert.True(expected.SequenceEqual(actual), $"as of {time:O}: expected [{string.Join(", ", expected)}], the database answered [{string.Join(", ", actual)}]");
        }
    }

    [Fact]
    public async Task pages_of_the_board_as_of_a_time_are_consecutive_slices_of_one_ranking()
    {
        var board = NewRunId("pages");
        await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "s", direction = "max" });
        for (var i = 0; i < 7; i++)
        {
            var (runId, token) = await _api.Started(new { runId = NewRunId("pg"), board, participant = $"team-{i}" });
            await _api.Events(runId, token, new[] { Event("scores.reported", fields: new { scores = new { s = (double)(i % 3) } }), Event("run.completed") });
        }
        await ledger.Settled();
        var at = Uri.EscapeDataString(_api.Now.ToString("O"));
        var all = (await _api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard?at={at}&pageSize=100", LedgerHost.ReadKey)).Json!["rows"]!.AsArray()
            .Select(r => r!["runId"]!.GetValue<string>()).ToList();
        var paged = new List<string>();
        for (var page = 1; page <= 4; page++)
        {
            var answer = (await _api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard?at={at}&page={page}&pageSize=2", LedgerHost.ReadKey)).Json!;
            Assert.Equal(7, answer["participants"]!.GetValue<long>());
            var rows = answer["rows"]!.AsArray();
            Assert.Equal(Enumerable.Range((page - 1) * 2 + 1, rows.Count), rows.Select(r => r!["rank"]!.GetValue<int>()));
            paged.AddRange(rows.Select(r => r!["runId"]!.GetValue<string>()));
        }
        Assert.Equal(7, all.Count);
        Assert.Equal(all, paged);
    }

    [Fact]
    public async Task a_database_from_before_the_board_tables_gets_them_filled_from_the_events_at_start()
    {
        var (server, connection, name) = TestDatabase.Create();
        try
        {
            var board = NewRunId("upgrade");
            await using (var old = await ledger.InstanceOn(connection))
            {
                var api = new Scenarios(ledger, old);
                await api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "s", direction = "max" });
                foreach (var (participant, score) in new[] { ("a", 1.0), ("b", 3.0), ("c", 2.0) })
                {
                    var (runId, token) = await api.Started(new { runId = NewRunId("up"), board, participant });
                    await api.Events(runId, token, new[] { Event("scores.reported", fields: new { scores = new { s = score } }), Event("run.completed") });
                }
                await old.Services.GetRequiredService<Marten.IDocumentStore>().WaitForNonStaleProjectionDataAsync(TimeSpan.FromSeconds(30));
            }

            // The previous version stored standings as a projected aggregate, with a numeric mt_version: the same table must do now,
            // else its start fails ("column mt_version cannot be cast automatically to type uuid").
            await using (var data = Npgsql.NpgsqlDataSource.Create(connection))
            await using (var type = data.CreateCommand(
                             "select data_type from information_schema.columns where table_schema = 'ledger' and table_name = 'mt_doc_standing' and column_name = 'mt_version'"))
            {
                Assert.Equal("bigint", (string?)await type.ExecuteScalarAsync());
            }

            // What a database written by the previous version looks like: standings and their position, no board tables' rows.
            await using (var data = Npgsql.NpgsqlDataSource.Create(connection))
            {
                await using var wipe = data.CreateCommand(
                    $"delete from ledger.{StandingsProjection.CurrentTable}; delete from ledger.{StandingsProjection.ChangesTable}");
                await wipe.ExecuteNonQueryAsync();
            }

            await using var upgraded = await ledger.InstanceOn(connection);
            await upgraded.Services.GetRequiredService<Marten.IDocumentStore>().WaitForNonStaleProjectionDataAsync(TimeSpan.FromSeconds(30));
            var answer = await new Scenarios(ledger, upgraded).Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard", LedgerHost.ReadKey);
            Assert.Equal(["b", "c", "a"], answer.Json!["rows"]!.AsArray().Select(r => r!["participant"]!.GetValue<string>()));
            Assert.True((await upgraded.Services.GetRequiredService<Ledger.Forensics.ProjectionVerifier>().VerifyAsync(CancellationToken.None)).Passed);
        }
        finally
        {
            TestDatabase.Drop(server, name);
        }
    }
}
