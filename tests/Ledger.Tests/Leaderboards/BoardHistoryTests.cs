using System.Net;
using Ledger.Leaderboards;
using Ledger.Tests.Fixtures;
using Marten;
using Marten.Events;
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
        var ranking = new Ranking("score", direction == "max" ? Direction.Max : Direction.Min, "speed", Direction.Min);
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
            byte[] Key(Entry e) => RankingRule.Key(ranking, e.Score, e.Speed, e.SucceededAt, e.RunId)!;
            var expected = entries
                .Where(e => e.SucceededAt <= time && !(e.ReclassifiedAt <= time))
                .GroupBy(e => e.Participant)
                .Select(g => g.OrderBy(Key, RankingRule.Order).First())
                .OrderBy(Key, RankingRule.Order)
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
