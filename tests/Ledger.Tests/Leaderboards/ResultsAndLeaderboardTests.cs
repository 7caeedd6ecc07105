using System.Net;
using System.Text.Json.Nodes;
using Ledger.Leaderboards;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Leaderboards;

/// <summary>Seeds 000 and 003 made impossible; leaderboards only from runs that provably finished.</summary>
public sealed class ResultsAndLeaderboardTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private async Task<string> Board(string direction = "max", string primary = "score", string? tieBreak = null, string? tieBreakDirection = null)
    {
        var id = NewRunId("board");
        var response = await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey,
            new { id, primaryScore = primary, direction, tieBreakScore = tieBreak, tieBreakDirection });
        Assert.True(response.Status == HttpStatusCode.Created, response.Text);
        return id;
    }

    private async Task<JsonNode> Leaderboard(string board)
    {
        await ledger.Settled();
        var response = await _api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard?pageSize=500", LedgerHost.ReadKey);
        Assert.True(response.Status == HttpStatusCode.OK, response.Text);
        return response.Json!;
    }

    [Fact]
    public async Task seed_000_a_completion_whose_score_upload_failed_is_never_succeeded_nor_ranked_until_the_score_arrives()
    {
        var board = await Board();
        var (rival, rivalToken) = await _api.Started(new { runId = NewRunId(), board, participant = "rival" });
        await _api.Events(rival, rivalToken, new[] { Event("scores.reported", fields: new { scores = new { score = 0.70 } }), Event("run.completed") });

        var (runId, token) = await _api.Started(new { runId = NewRunId("eeg"), board, participant = "team-eeg", requiredOutputs = new[] { "predictions" } });
        // The worker said FINISHED; the score and output uploads never made it.
        var finished = await _api.Events(runId, token, Event("run.completed"));
        Assert.Equal("running", finished.RunStatus);

        var run = await _api.Run(runId);
        Assert.Equal("completed-before-results", run["reason"]!.GetValue<string>());
        Assert.Equal(["score:score", "output:predictions"], run["missing"]!.AsArray().Select(m => m!.GetValue<string>()));
        var before = await Leaderboard(board);
        Assert.Equal(["rival"], before["rows"]!.AsArray().Select(r => r!["participant"]!.GetValue<string>()));

        // The retry of the uploads arrives: the run succeeds and is ranked where its score puts it.
        await _api.Events(runId, token, Event("scores.reported", fields: new { scores = new { score = 0.91 } }));
        Assert.Equal("running", (await _api.Run(runId))["status"]!.GetValue<string>());
        var done = await _api.Events(runId, token, Event("output.recorded", fields: new { name = "predictions", uri = "s3://eeg/predictions.csv" }));
        Assert.Equal("succeeded", done.RunStatus);

        var after = (await Leaderboard(board))["rows"]!.AsArray();
        Assert.Equal(["team-eeg", "rival"], after.Select(r => r!["participant"]!.GetValue<string>()));
        Assert.Equal(1, after[0]!["rank"]!.GetValue<int>());
        Assert.Equal(runId, after[0]!["runId"]!.GetValue<string>());
        Assert.Equal(0.91, after[0]!["score"]!.GetValue<double>());
    }

    [Fact]
    public async Task a_run_on_a_board_requires_the_boards_score_even_if_not_declared()
    {
        var board = await Board(primary: "auc");
        var (runId, token) = await _api.Started(new { runId = NewRunId(), board, participant = "p" });
        Assert.Equal("running", (await _api.Events(runId, token, Event("run.completed"))).RunStatus);
        Assert.Equal(["score:auc"], (await _api.Run(runId))["missing"]!.AsArray().Select(m => m!.GetValue<string>()));
    }

    [Fact]
    public async Task seed_003_a_checkpoint_claiming_more_than_was_committed_never_succeeds_and_shows_the_gap()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId("extract"), expectedItems = 100 });
        var chunk1 = Event("items.committed", "chunk-1-delivery", fields: new { chunkId = "chunk-1", count = 25 });
        await _api.Events(runId, token, chunk1);
        await _api.Events(runId, token, chunk1); // the same delivery retried
        await _api.Events(runId, token, Event("items.committed", "chunk-1-redelivered", fields: new { chunkId = "chunk-1", count = 25 }));
        await _api.Events(runId, token, Event("items.committed", fields: new { chunkId = "chunk-2", count = 25 }));

        var completed = await _api.Events(runId, token, Event("run.completed", fields: new { itemsTotal = 100 }));
        Assert.Equal("running", completed.RunStatus);

        var run = await _api.Run(runId);
        Assert.Equal(50, run["items"]!["committed"]!.GetValue<long>());
        Assert.Equal(100, run["items"]!["expected"]!.GetValue<long>());
        Assert.Equal(["items:50"], run["missing"]!.AsArray().Select(m => m!.GetValue<string>()));

        ledger.Clock.Advance(TimeSpan.FromMinutes(10));
        await ledger.Sweep();
        var failed = await _api.Run(runId);
        Assert.Equal("failed", failed["status"]!.GetValue<string>());
        Assert.Equal("incomplete-results", failed["reason"]!.GetValue<string>());
    }

    [Fact]
    public async Task an_over_count_fails_the_run_at_once_showing_expected_and_committed()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId(), expectedItems = 100 });
        await _api.Events(runId, token, Event("items.committed", fields: new { chunkId = "a", count = 60 }));
        var over = await _api.Events(runId, token, Event("items.committed", fields: new { chunkId = "b", count = 60 }));
        Assert.Equal("failed", over.RunStatus);
        var run = await _api.Run(runId);
        Assert.Equal("accounting-mismatch", run["reason"]!.GetValue<string>());
        Assert.Equal(["accounting-mismatch"], run["anomalies"]!.AsArray().Select(a => a!["kind"]!.GetValue<string>()));
        var anomaly = run["anomalies"]![0]!;
        Assert.Contains("120", anomaly["detail"]!.GetValue<string>());
        Assert.Contains("100", anomaly["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task an_output_recorded_twice_with_another_digest_is_a_conflict()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, Event("output.recorded", fields: new { name = "model", uri = "s3://m", sha256 = new string('a', 64) }));
        var same = await _api.Events(runId, token, Event("output.recorded", fields: new { name = "model", uri = "s3://m", sha256 = new string('a', 64) }));
        Assert.Equal("duplicate", same.Json!["results"]![0]!["result"]!.GetValue<string>());
        var other = await _api.Events(runId, token, Event("output.recorded", fields: new { name = "model", uri = "s3://m", sha256 = new string('b', 64) }));
        Assert.Equal(HttpStatusCode.Conflict, other.Status);
        Assert.Equal("output-conflict", other.ProblemCode);
    }

    [Fact]
    public async Task boards_are_validated_immutable_and_runs_must_name_a_known_board_and_participant()
    {
        Assert.Equal(HttpStatusCode.UnprocessableEntity,
            (await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = "b", primaryScore = "s", direction = "sideways" })).Status);
        Assert.Equal(HttpStatusCode.UnprocessableEntity,
            (await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = "b", direction = "max" })).Status);
        Assert.Equal(HttpStatusCode.Forbidden,
            (await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.WorkerKey, new { id = "b", primaryScore = "s", direction = "max" })).Status);

        var board = await Board();
        var same = await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "score", direction = "max" });
        Assert.Equal(HttpStatusCode.OK, same.Status);
        var redefined = await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "score", direction = "min" });
        Assert.Equal("board-exists", redefined.ProblemCode);

        var unknown = await _api.Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey, new { board = "no-such-board", participant = "p" });
        Assert.Equal(HttpStatusCode.UnprocessableEntity, unknown.Status);
        Assert.Equal("invalid-payload", unknown.ProblemCode);
        Assert.Equal(["board"], unknown.Json!["errors"]!.AsObject().Select(e => e.Key));
        var anonymous = await _api.Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey, new { board });
        Assert.Equal(HttpStatusCode.UnprocessableEntity, anonymous.Status);
        Assert.Equal("invalid-payload", anonymous.ProblemCode);
        Assert.Equal(["participant"], anonymous.Json!["errors"]!.AsObject().Select(e => e.Key));
        Assert.Equal(HttpStatusCode.NotFound, (await _api.Send(HttpMethod.Get, "/api/boards/no-such-board/leaderboard", LedgerHost.ReadKey)).Status);
    }

    [Fact]
    public async Task runs_can_be_listed_by_board_participant_and_status_with_paging()
    {
        var board = await Board();
        var ids = new List<string>();
        for (var i = 0; i < 5; i++)
        {
            var (runId, token) = await _api.Started(new { runId = NewRunId(), board, participant = i % 2 == 0 ? "even" : "odd" });
            ids.Add(runId);
            if (i < 3) await _api.Events(runId, token, new[] { Event("scores.reported", fields: new { scores = new { score = i } }), Event("run.completed") });
        }

        var page = await _api.Send(HttpMethod.Get, $"/api/runs?board={board}&status=succeeded&pageSize=2", LedgerHost.ReadKey);
        Assert.Equal(3, page.Json!["total"]!.GetValue<long>());
        Assert.Equal(2, page.Json!["items"]!.AsArray().Count);
        var even = await _api.Send(HttpMethod.Get, $"/api/runs?board={board}&participant=even", LedgerHost.ReadKey);
        Assert.Equal(3, even.Json!["total"]!.GetValue<long>());
        var claimed = await _api.Send(HttpMethod.Get, $"/api/runs?board={board}&status=claimed", LedgerHost.ReadKey);
        Assert.Equal(ids.Skip(3).Order(), claimed.Json!["items"]!.AsArray().Select(r => r!["runId"]!.GetValue<string>()).Order());
        Assert.Equal(HttpStatusCode.UnprocessableEntity, (await _api.Send(HttpMethod.Get, "/api/runs?status=finished", LedgerHost.ReadKey)).Status);
    }

    [Theory]
    [InlineData("max", 11)]
    [InlineData("min", 23)]
    [InlineData("max", 37)]
    public async Task the_leaderboard_equals_a_brute_force_ranking_of_a_randomized_population(string direction, int seed)
    {
        var random = new Random(seed);
        var board = await Board(direction, "score", "speed", "min");
        var participants = Enumerable.Range(0, 7).Select(i => $"p{i}").ToArray();
        var succeeded = new List<(string Participant, string RunId, double Score, double Speed, DateTimeOffset At)>();

        for (var i = 0; i < 40; i++)
        {
            var participant = participants[random.Next(participants.Length)];
            var (runId, token) = await _api.Started(new { runId = NewRunId($"pop{seed}"), board, participant });
            var score = Math.Round(random.Next(0, 6) / 5.0, 1); // few distinct values: ties are common
            var speed = random.Next(0, 3);
            var fate = random.Next(0, 6);
            switch (fate)
            {
                case 0: // failed after reporting a great score: never ranked
                    await _api.Events(runId, token, new[] { Event("scores.reported", fields: new { scores = new { score = 99.0, speed = 0.0 } }), Event("run.failed", fields: new { errorClass = "provider" }) });
                    break;
                case 1: // completed but its scores never came
                    await _api.Events(runId, token, Event("run.completed"));
                    break;
                case 2: // scores arrive only after cancellation: late, never ranked
                    await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey);
                    await _api.Events(runId, token, new[] { Event("scores.reported", fields: new { scores = new { score = -99.0, speed = 0.0 } }), Event("run.completed") });
                    break;
                default:
                    var response = await _api.Events(runId, token, new[] { Event("scores.reported", fields: new { scores = new { score, speed = (double)speed } }), Event("run.completed") });
                    Assert.Equal("succeeded", response.RunStatus);
                    var run = await _api.Run(runId);
                    succeeded.Add((participant, runId, score, speed, run["terminalAt"]!.GetValue<DateTimeOffset>()));
                    break;
            }
        }

        // Brute force over the raw population, the rule written out here rather than taken from RankingRule (a test
        // that ranks with the code under test cannot see it rank wrongly): the score in the board's direction, then
        // the lower speed (the tie-break's direction), then the earlier completion, then the run id, ordinally.
        var sign = direction == "max" ? -1 : 1;
        IEnumerable<(string Participant, string RunId, double Score, double Speed, DateTimeOffset At)> Ranked(
            IEnumerable<(string Participant, string RunId, double Score, double Speed, DateTimeOffset At)> results) =>
            results.OrderBy(r => sign * r.Score).ThenBy(r => r.Speed).ThenBy(r => r.At).ThenBy(r => r.RunId, StringComparer.Ordinal);
        var expected = Ranked(succeeded.GroupBy(r => r.Participant).Select(g => Ranked(g).First()))
            .Select(r => (r.Participant, r.RunId, r.Score))
            .ToList();

        var rows = (await Leaderboard(board))["rows"]!.AsArray();
        var actual = rows.Select(r => (r!["participant"]!.GetValue<string>(), r["runId"]!.GetValue<string>(), r["score"]!.GetValue<double>())).ToList();
        Assert.Equal(expected, actual);
        Assert.Equal(Enumerable.Range(1, rows.Count), rows.Select(r => r!["rank"]!.GetValue<int>()));
    }

    [Fact]
    public async Task reclassifying_a_winner_away_from_succeeded_removes_it_from_the_board()
    {
        var board = await Board();
        var (a, tokenA) = await _api.Started(new { runId = NewRunId(), board, participant = "a" });
        await _api.Events(a, tokenA, new[] { Event("scores.reported", fields: new { scores = new { score = 0.9 } }), Event("run.completed") });
        var (a2, tokenA2) = await _api.Started(new { runId = NewRunId(), board, participant = "a" });
        await _api.Events(a2, tokenA2, new[] { Event("scores.reported", fields: new { scores = new { score = 0.5 } }), Event("run.completed") });
        Assert.Equal(a, (await Leaderboard(board))["rows"]![0]!["runId"]!.GetValue<string>());

        var reclassified = await _api.Send(HttpMethod.Post, $"/api/runs/{a}/reclassify", LedgerHost.AdminKey,
            new { status = "failed", reason = "leaked test labels", evidence = new[] { "audit-42" } });
        Assert.Equal(HttpStatusCode.OK, reclassified.Status);

        var rows = (await Leaderboard(board))["rows"]!.AsArray();
        Assert.Single(rows);
        Assert.Equal(a2, rows[0]!["runId"]!.GetValue<string>());
        Assert.Equal(0.5, rows[0]!["score"]!.GetValue<double>());
    }
}
