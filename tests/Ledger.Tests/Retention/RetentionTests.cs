using Microsoft.Extensions.Configuration;
using System.Net;
using System.Text.Json.Nodes;
using Ledger.Retention;
using Ledger.Tests.Fixtures;
using Ledger.Tests.Operations;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Retention;

/// <summary>
/// Retention with proof (issue 25): finished runs leave PostgreSQL as archives that are read back
/// and checked first, and the run stays everywhere it was; its history is read from the archive.
/// </summary>
public sealed class RetentionTests(RetentionHost host) : IClassFixture<RetentionHost>
{
    private readonly LedgerHost _ledger = host.Ledger;
    private readonly Scenarios _api = new(host.Ledger);

    private async Task<string> Board()
    {
        var board = NewRunId("board");
        var created = await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "s", direction = "max" });
        Assert.Equal(HttpStatusCode.Created, created.Status);
        return board;
    }

    private async Task<JsonNode> Get(string url, string key = LedgerHost.ReadKey)
    {
        var answer = await _api.Send(HttpMethod.Get, url, key);
        Assert.True(answer.Status == HttpStatusCode.OK, $"{url} answered {answer.Code}: {answer.Text}");
        return answer.Json!;
    }

    [Fact]
    public async Task an_archived_run_is_answered_everywhere_as_before_and_its_history_comes_from_the_archive()
    {
        var board = await Board();
        var batch = NewRunId("batch");
        var first = await _api.Finished(board, "ada", 3, batch: batch);
        _ledger.Clock.Advance(TimeSpan.FromMinutes(1));
        var between = _api.Now;
        _ledger.Clock.Advance(TimeSpan.FromMinutes(1));
        var second = await _api.Finished(board, "ada", 7, batch: batch, logs: 25);
        var third = await _api.Finished(board, "bob", 5);
        await _ledger.Settled();

        // Everything a reader sees, before.
        var runs = new[] { first.RunId, second.RunId, third.RunId };
        var before = new Dictionary<string, string>();
        async Task Snapshot(Dictionary<string, string> into)
        {
            foreach (var id in runs)
            {
                into[$"run {id}"] = (await Get($"/api/runs/{id}")).ToJsonString();
                into[$"history {id}"] = (await _api.History(id)).Events.ToJsonString();
                var version = (await Get($"/api/runs/{id}"))["version"]!.GetValue<long>();
                for (var v = 1; v <= version; v++) into[$"state {id}@{v}"] = (await Get($"/api/runs/{id}/state?version={v}"))["state"]!.ToJsonString();
                var then = await _api.Send(HttpMethod.Get, $"/api/runs/{id}/state?at={Uri.EscapeDataString(between.ToString("O"))}", LedgerHost.ReadKey);
                into[$"state {id}@between"] = $"{then.Code} {then.Json?["state"]?.ToJsonString() ?? then.ProblemCode}";
                into[$"export {id}"] = await _ledger.Export(id);
            }
            into["list"] = (await Get($"/api/runs?board={board}&pageSize=100")).ToJsonString();
            into["kpis"] = (await Get("/api/kpis")).ToJsonString();
            var view = (await Get($"/api/batches/{batch}")).AsObject();
            view.Remove("asOf");
            into["batch"] = view.ToJsonString();
            into["board now"] = (await Get($"/api/boards/{board}/leaderboard")).ToJsonString();
            into["board then"] = (await Get($"/api/boards/{board}/leaderboard?at={Uri.EscapeDataString(between.ToString("O"))}")).ToJsonString();
        }
        await _api.DefineBatch(new { id = batch, runIds = new[] { first.RunId, second.RunId } });
        await Snapshot(before);
        var rows = await _ledger.Rows(second.RunId);

        // Within the window nothing moves.
        var early = await _ledger.RetentionSweep();
        Assert.Equal(0, early.Archiving().Count("runs"));

        _ledger.Clock.Advance(RetentionHost.Window + TimeSpan.FromMinutes(5));
        var sweep = await _ledger.RetentionSweep();
        Assert.Equal("completed", sweep.Status);
        Assert.True(sweep.Archiving().Count("runs") >= 3, string.Join(", ", sweep.Archiving().Counts.Select(c => $"{c.Key} {c.Value}")));

        // PostgreSQL keeps one event of each (its marker, in place of its verdict) and none of its keys.
        foreach (var id in runs)
        {
            Assert.Equal(1, await _ledger.Scalar("select count(*) from ledger.mt_events where stream_id = @id", ("id", id)));
            Assert.Equal(0, await _ledger.Scalar("select count(*) from ledger.ledger_recorded_keys where run_id = @id", ("id", id)));
            Assert.Equal(0, await _ledger.Scalar("select count(*) from ledger.ledger_run_snapshots where run_id = @id", ("id", id)));
        }
        var verdictSequence = long.Parse(rows.Single(r => r.Split('|')[3] == "verdict_reached").Split('|')[0]);
        Assert.Equal(verdictSequence, await _ledger.Scalar("select seq_id from ledger.mt_events where stream_id = @id", ("id", second.RunId)));
        Assert.NotEmpty(RetentionKit.Files(host.Directory));

        var after = new Dictionary<string, string>();
        await Snapshot(after);
        foreach (var (key, value) in before) Assert.True(value == after[key], $"{key} changed:\nbefore {value}\nafter  {after[key]}");
        Assert.True((await _api.History(second.RunId)).Archived);
        Assert.True((await Get($"/api/runs/{second.RunId}/state?version=3"))["archived"]!.GetValue<bool>());

        var report = await _ledger.Verify();
        Assert.True(report.Passed, string.Join("\n", report.Differences));

        // Marten's own fold starts from the marker, a compacted snapshot.
        await using (var session = _ledger.Host.Services.GetRequiredService<IDocumentStore>().QuerySession())
        {
            var folded = await session.Events.AggregateStreamAsync<Ledger.Runs.Run>(second.RunId);
            var stored = await session.LoadAsync<Ledger.Runs.Run>(second.RunId);
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(stored), System.Text.Json.JsonSerializer.Serialize(folded));
        }

        // The API says what retention holds.
        var retention = await Get("/api/retention", LedgerHost.AdminKey);
        Assert.True(retention["archive"]!["runs"]!.GetValue<long>() >= 3);
        Assert.Equal("completed", retention["sweeps"]![0]!["status"]!.GetValue<string>());
        Assert.Equal(403, (await _api.Send(HttpMethod.Get, "/api/retention", LedgerHost.ReadKey)).Code);
        var scrape = await Scrape.Of(_ledger.Host);
        Assert.True(scrape.Value("ledger_retention_archived_runs_total") >= 3);

        // The console marks archived runs, and says where a run's timeline comes from.
        var console = new Ledger.Tests.Console.ConsoleClient(_ledger.Host);
        Assert.Equal(HttpStatusCode.Redirect, await console.SignIn(LedgerHost.ReadKey));
        var (listed, page, _) = await console.Send(HttpMethod.Get, $"/runs?board={board}");
        Assert.Equal(HttpStatusCode.OK, listed);
        Assert.Equal(3, System.Text.RegularExpressions.Regex.Matches(page, "class=\"status archived\"").Count);
        var (shown, detail, _) = await console.Send(HttpMethod.Get, $"/runs/{second.RunId}?after=20");
        Assert.Equal(HttpStatusCode.OK, shown);
        Assert.Contains("are read from the run&#x27;s archive", detail);
        Assert.Contains("line 24", detail);
    }

    [Fact]
    public async Task a_late_event_goes_into_a_further_bundle_and_a_restore_puts_every_event_back_as_it_was_sending_no_webhook_twice()
    {
        await using var receiver = await Ledger.Tests.Webhooks.WebhookReceiver.Start();
        var subscribed = await _api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey,
            new { url = receiver.Url, kinds = new[] { "run.succeeded", "run.failed", "run.reclassified", "anomaly.flagged" }, secret = receiver.Secret });
        Assert.Equal(HttpStatusCode.Created, subscribed.Status);
        var subscription = subscribed.Json!["subscriptionId"]!.GetValue<string>();
        try
        {
            var board = await Board();
            var (runId, token) = await _api.Finished(board, "cleo", 9, logs: 30);
            await _ledger.Settled();
            var original = await _ledger.Rows(runId);
            var boardBefore = (await Get($"/api/boards/{board}/leaderboard")).ToJsonString();

            _ledger.Clock.Advance(RetentionHost.Window + TimeSpan.FromMinutes(1));
            await _ledger.RetentionSweep();
            Assert.Equal(1, await _ledger.Scalar("select count(*) from ledger.mt_events where stream_id = @id", ("id", runId)));

            // The window is longer than the lease token's grace: a late event for an archived run is refused, nothing recorded.
            var dead = await _api.Events(runId, token, Event("log", fields: new { lines = new[] { "after the grace" } }));
            Assert.Equal("run-terminal", dead.ProblemCode);
            Assert.Null(dead.Json!["results"]);
            Assert.Equal(1, await _ledger.Scalar("select count(*) from ledger.mt_events where stream_id = @id", ("id", runId)));
            Assert.Equal(original.Count, (await _api.History(runId)).Events.Count);

            // A reclassification is recorded after the marker, and its verdict opens the token's grace again:
            // a late event within it is recorded after the marker too, as any late event is, and flagged once.
            var reclassified = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/reclassify", LedgerHost.AdminKey,
                new { status = "failed", reason = "judged wrong", evidence = new[] { "audit" } });
            Assert.Equal(HttpStatusCode.OK, reclassified.Status);
            var late = await _api.Events(runId, token, Event("log", fields: new { lines = new[] { "too late" } }));
            Assert.Equal("run-terminal", late.ProblemCode);
            Assert.Equal("recorded-not-applied", late.Json!["results"]![0]!["result"]!.GetValue<string>());
            await _ledger.Settled();
            var history = await _api.History(runId);
            Assert.Equal(original.Count + 3, history.Events.Count);
            Assert.Equal("late-event", history.Events[^1]!["reason"]!.GetValue<string>());
            Assert.True(history.Archived);
            await receiver.WaitFor(r => r.Count(x => x.Body.Contains(runId) && x.Body.Contains("late-event")) == 1, TimeSpan.FromSeconds(60), "the late event's anomaly");

            // Not before its new verdict is a window old; then the next sweep archives what came after the marker into a further bundle.
            _ledger.Clock.Advance(TimeSpan.FromMinutes(1));
            var early = (await _ledger.RetentionSweep()).Archiving();
            Assert.True(4 == await _ledger.Scalar("select count(*) from ledger.mt_events where stream_id = @id", ("id", runId)),
                $"{string.Join(", ", early.Counts.Concat(early.Failures).Select(c => $"{c.Key} {c.Value}"))} {early.LastError}");
            _ledger.Clock.Advance(RetentionHost.Window + TimeSpan.FromMinutes(1));
            await _ledger.RetentionSweep();
            Assert.Equal(2, await _ledger.Scalar("select count(*) from ledger.mt_events where stream_id = @id", ("id", runId)));
            var bundles = await _ledger.Scalar("select json_array_length(bundles) from ledger.ledger_archived_runs where run_id = @id", ("id", runId));
            Assert.Equal(2, bundles);
            var everything = await _api.History(runId);
            Assert.Equal(original.Count + 3, everything.Events.Count);
            Assert.Equal(Enumerable.Range(1, original.Count + 3).Select(v => (long)v), everything.Events.Select(e => e!["version"]!.GetValue<long>()));
            var verified = await _ledger.Verify();
            Assert.True(verified.Passed, string.Join("\n", verified.Differences));
            await _ledger.Settled();
            var boardArchived = (await Get($"/api/boards/{board}/leaderboard")).ToJsonString();
            // Its success, the late event's anomaly, its reclassification and its new verdict: one delivery each.
            await receiver.WaitFor(r => r.Count(x => x.Body.Contains(runId)) >= 4, TimeSpan.FromSeconds(60), "four deliveries");
            var deliveries = receiver.All.Count(r => r.Body.Contains(runId));
            Assert.Equal(4, deliveries);

            // Restore: every event back with its sequence, version, id, type, timestamp and data; its keys too.
            var restored = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/restore", LedgerHost.AdminKey);
            Assert.True(restored.Status == HttpStatusCode.OK, restored.Text);
            Assert.Equal(original.Count + 3, restored.Json!["events"]!.GetValue<long>());
            var back = await _ledger.Rows(runId);
            Assert.Equal(original, back.Take(original.Count));
            Assert.Equal(original.Count + 3, back.Count);
            Assert.True(await _ledger.Scalar("select count(*) from ledger.ledger_recorded_keys where run_id = @id", ("id", runId)) >= 30);
            Assert.Null((await _api.History(runId)).Archived);
            Assert.Equal(everything.Events.ToJsonString(), (await _api.History(runId)).Events.ToJsonString());
            // Its keys are back, its first log's among them (the token's grace is over, so a resend is refused before any key is looked up).
            var firstLog = everything.Events.First(e => e!["type"]!.GetValue<string>() == "log")!["eventId"]!.GetValue<string>();
            Assert.Equal(1, await _ledger.Scalar("select count(*) from ledger.ledger_recorded_keys where run_id = @id and key = @key",
                ("id", runId), ("key", Ledger.Runs.RecordedKeyStore.EventKey(firstLog))));

            await Task.Delay(TimeSpan.FromSeconds(3));
            await _ledger.Settled();
            Assert.Equal(deliveries, receiver.All.Count(r => r.Body.Contains(runId)));
            Assert.Equal(boardArchived, (await Get($"/api/boards/{board}/leaderboard")).ToJsonString());
            Assert.NotEqual(boardBefore, boardArchived);
            var afterRestore = await _ledger.Verify();
            Assert.True(afterRestore.Passed, string.Join("\n", afterRestore.Differences));

            // A restored run stays in PostgreSQL for a whole window.
            Assert.Equal(409, (await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/restore", LedgerHost.AdminKey)).Code);
            _ledger.Clock.Advance(RetentionHost.Window - TimeSpan.FromMinutes(5));
            await _ledger.RetentionSweep();
            Assert.True(await _ledger.Scalar("select count(*) from ledger.mt_events where stream_id = @id", ("id", runId)) > 30);
            _ledger.Clock.Advance(TimeSpan.FromMinutes(10));
            await _ledger.Settled();
            await _ledger.RetentionSweep();
            Assert.Equal(2, await _ledger.Scalar("select count(*) from ledger.mt_events where stream_id = @id", ("id", runId)));
        }
        finally
        {
            await _api.Send(HttpMethod.Delete, $"/api/subscriptions/{subscription}", LedgerHost.AdminKey);
        }
    }

    [Fact]
    public async Task rebuilding_the_standings_from_the_event_store_after_archiving_gives_the_same_boards_now_and_as_of_any_time()
    {
        var board = await Board();
        var times = new List<DateTimeOffset>();
        var scores = new (string Participant, double Score)[] { ("p1", 5), ("p2", 6), ("p1", 8), ("p1", 3), ("p2", 9), ("p3", 1) };
        var finished = new List<string>();
        foreach (var (participant, score) in scores)
        {
            finished.Add((await _api.Finished(board, participant, score, logs: 1)).RunId);
            _ledger.Clock.Advance(TimeSpan.FromSeconds(30));
            times.Add(_api.Now);
        }
        // One best reclassified away: its participant falls back to the next, a change the boards as of a time show.
        Assert.Equal(HttpStatusCode.OK, (await _api.Send(HttpMethod.Post, $"/api/runs/{finished[2]}/reclassify", LedgerHost.AdminKey,
            new { status = "failed", reason = "recount", evidence = new[] { "e" } })).Status);
        _ledger.Clock.Advance(TimeSpan.FromSeconds(30));
        times.Add(_api.Now);
        await _ledger.Settled();

        _ledger.Clock.Advance(RetentionHost.Window + TimeSpan.FromMinutes(1));
        await _ledger.RetentionSweep();
        foreach (var id in finished) Assert.True(await _ledger.Scalar("select count(*) from ledger.ledger_archived_runs where run_id = @id and archived_version > 0", ("id", id)) == 1);
        var fresh = (await _api.Finished(board, "p1", 10, logs: 1)).RunId;
        times.Add(_api.Now);
        await _ledger.Settled();

        async Task<List<string>> Boards(Scenarios api)
        {
            var answers = new List<string> { (await api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard", LedgerHost.ReadKey)).Text };
            foreach (var t in times)
            {
                answers.Add((await api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard?at={Uri.EscapeDataString(t.ToString("O"))}", LedgerHost.ReadKey)).Text);
            }
            return answers;
        }
        var before = await Boards(_api);
        Assert.Contains(fresh, before[0]);

        // Everything the standings projection wrote, gone; then the daemon refolds it from the event store.
        await using (var connection = new Npgsql.NpgsqlConnection(_ledger.ConnectionString))
        {
            await connection.OpenAsync();
            await using var clear = new Npgsql.NpgsqlCommand(
                "delete from ledger.ledger_standings; delete from ledger.ledger_standing_changes; delete from ledger.mt_doc_standing", connection);
            await clear.ExecuteNonQueryAsync();
        }
        var daemon = _ledger.Host.Services.GetRequiredService<JasperFx.Events.Daemon.IProjectionCoordinator>().DaemonForMainDatabase();
        await daemon.RebuildProjectionAsync(Ledger.Leaderboards.StandingsProjection.Name, CancellationToken.None);
        // A rebuild leaves the shard stopped: it goes on following new events once started again.
        await daemon.StartAgentAsync(Ledger.Leaderboards.StandingsProjection.Name + ":All", CancellationToken.None);
        await _ledger.Settled();

        await using var reader = await _ledger.SecondInstance();
        var after = await Boards(new Scenarios(_ledger, reader));
        for (var i = 0; i < before.Count; i++) Assert.True(before[i] == after[i], $"board {(i == 0 ? "now" : $"at {times[i - 1]:O}")}:\nbefore {before[i]}\nafter  {after[i]}");
        var report = await _ledger.Verify();
        Assert.True(report.Passed, string.Join("\n", report.Differences));
    }

    [Fact]
    public async Task a_run_waits_for_its_batch_and_for_the_projections_to_pass_it()
    {
        var board = await Board();
        // A defined batch that still expects a run: its finished run waits, until the batch is older than the window.
        var batch = NewRunId("batch");
        var waiting = await _api.Finished(board, "hal", 1, batch: batch);
        var pending = await _api.Register(new { runId = NewRunId("pending"), batch });
        // A batch never defined: its run waits while another run registered with it is not finished.
        var loose = NewRunId("loose");
        var looseRun = await _api.Finished(board, "ivy", 2, batch: loose);
        var (open, _) = await _api.Started(new { runId = NewRunId("open"), batch = loose, leaseSeconds = 86_400 });
        await _ledger.Settled();
        _ledger.Clock.Advance(TimeSpan.FromMinutes(30));
        await _api.DefineBatch(new { id = batch, runIds = new[] { waiting.RunId, pending } });

        _ledger.Clock.Advance(RetentionHost.Window - TimeSpan.FromMinutes(29));
        var first = (await _ledger.RetentionSweep()).Archiving();
        Assert.True(first.Count("waiting-for-batch") >= 2);
        Assert.True((await _api.History(waiting.RunId)).Archived is null);
        Assert.True((await _api.History(looseRun.RunId)).Archived is null);

        Assert.Equal(HttpStatusCode.OK, (await _api.Send(HttpMethod.Post, $"/api/runs/{open}/cancel", LedgerHost.AdminKey, new { })).Status);
        await _ledger.Settled();
        await _ledger.RetentionSweep();
        Assert.True((await _api.History(looseRun.RunId)).Archived);
        Assert.True((await _api.History(waiting.RunId)).Archived is null);

        _ledger.Clock.Advance(TimeSpan.FromMinutes(30));
        await _ledger.RetentionSweep();
        Assert.True((await _api.History(waiting.RunId)).Archived);

        // The projections have not passed a run's last event: it waits for them.
        var coordinator = _ledger.Host.Services.GetRequiredService<JasperFx.Events.Daemon.IProjectionCoordinator>();
        await coordinator.PauseAsync();
        string unseen;
        try
        {
            unseen = (await _api.Finished(board, "jay", 3)).RunId;
            _ledger.Clock.Advance(RetentionHost.Window + TimeSpan.FromMinutes(1));
            var paused = (await _ledger.RetentionSweep()).Archiving();
            Assert.True(paused.Count("waiting-for-projections") >= 1);
            Assert.True((await _api.History(unseen)).Archived is null);
        }
        finally
        {
            await coordinator.ResumeAsync();
        }
        await _ledger.Settled();
        await _ledger.RetentionSweep();
        Assert.True((await _api.History(unseen)).Archived);
    }

    [Fact]
    public void the_window_must_be_longer_than_the_lease_tokens_grace_and_needs_a_directory()
    {
        static IReadOnlyList<string> Problems(params (string Key, string Value)[] settings)
        {
            var configuration = new Microsoft.Extensions.Configuration.ConfigurationBuilder()
                .AddInMemoryCollection(settings.Select(s => new KeyValuePair<string, string?>(s.Key, s.Value))).Build();
            try
            {
                RetentionOptions.Check(configuration);
                return [];
            }
            catch (Ledger.Infrastructure.StartupFailureException e)
            {
                Assert.Equal(Ledger.Infrastructure.StartupFailure.Configuration, e.ExitCode);
                return [e.Message];
            }
        }

        Assert.Empty(Problems());
        Assert.Empty(Problems(("Ledger:Retention:ArchiveAfter", "30.00:00:00"), ("Ledger:Retention:Directory", "/var/lib/archive")));
        var tooShort = Assert.Single(Problems(("Ledger:Retention:ArchiveAfter", "00:30:00"), ("Ledger:Retention:Directory", "/var/lib/archive")));
        Assert.Contains("Ledger:LateEvents:Grace", tooShort);
        Assert.Empty(Problems(("Ledger:Retention:ArchiveAfter", "00:30:00"), ("Ledger:Retention:Directory", "/a"), ("Ledger:LateEvents:Grace", "00:10:00")));
        Assert.Single(Problems(("Ledger:Retention:ArchiveAfter", "00:10:00"), ("Ledger:Retention:Directory", "/a"), ("Ledger:LateEvents:Grace", "00:10:00")));
        Assert.Contains("Ledger:Retention:Directory", Assert.Single(Problems(("Ledger:Retention:ArchiveAfter", "30.00:00:00"))));
        Assert.Contains("BatchSize", Assert.Single(Problems(("Ledger:Retention:BatchSize", "0"))));
        Assert.Contains("ArchiveAfter", Assert.Single(Problems(("Ledger:Retention:ArchiveAfter", "soon"))));
    }
}
