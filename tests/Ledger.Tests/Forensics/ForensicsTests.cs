using System.Net;
using System.Text.Json.Nodes;
using Ledger.Forensics;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Forensics;

/// <summary>Any state can be audited and recomputed (invariant 9), and anyone can check it.</summary>
public sealed class ForensicsTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private Task<VerifyReport> Verify() => ledger.Verify();

    [Fact]
    public async Task time_travel_returns_for_every_version_the_state_recorded_after_that_step()
    {
        var runId = await _api.Register(new { runId = NewRunId("travel"), requiredScores = new[] { "f1" }, expectedItems = 2 });
        var recorded = new Dictionary<long, JsonNode> { [1] = await _api.Run(runId) };
        var token = await _api.Claim(runId);
        recorded[2] = await _api.Run(runId);

        var script = new[]
        {
            Event("run.started"),
            Event("step.started", fields: new { stepId = "s" }),
            Event("items.committed", fields: new { chunkId = "a", count = 1 }),
            Event("run.completed"),
            Event("step.completed", fields: new { stepId = "s" }),
            Event("items.committed", fields: new { chunkId = "b", count = 1 }),
            Event("scores.reported", fields: new { scores = new { f1 = 0.42 } }),
        };
        foreach (var e in script)
        {
            await _api.Events(runId, token, e);
            var now = await _api.Run(runId);
            recorded[now["version"]!.GetValue<long>()] = now;
        }
        Assert.Equal("succeeded", recorded[recorded.Keys.Max()]["status"]!.GetValue<string>());

        foreach (var (version, expected) in recorded)
        {
            var state = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/state?version={version}", LedgerHost.ReadKey);
            Assert.Equal(HttpStatusCode.OK, state.Status);
            Assert.True(JsonNode.DeepEquals(expected, state.Json!["state"]), $"version {version}:\nexpected {expected.ToJsonString()}\nactual   {state.Json!["state"]!.ToJsonString()}");
        }

        // By time: the ledger's recordedAt of each event in the history.
        var history = (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.ReadKey)).Json!["events"]!.AsArray();
        foreach (var entry in history.Where(e => recorded.ContainsKey(e!["version"]!.GetValue<long>())))
        {
            var at = Uri.EscapeDataString(entry!["recordedAt"]!.GetValue<DateTimeOffset>().ToString("O"));
            var state = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/state?at={at}", LedgerHost.ReadKey);
            Assert.Equal(entry["version"]!.GetValue<long>(), state.Json!["version"]!.GetValue<long>());
        }

        Assert.Equal(HttpStatusCode.NotFound, (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/state?version=999", LedgerHost.ReadKey)).Status);
        Assert.Equal(HttpStatusCode.NotFound, (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/state?at=2000-01-01T00:00:00Z", LedgerHost.ReadKey)).Status);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/state?at=yesterday", LedgerHost.ReadKey)).Status);
    }

    [Fact]
    public async Task verify_passes_after_a_randomized_workload_and_names_the_document_when_one_row_is_altered()
    {
        var random = new Random(7);
        var board = NewRunId("verify-board");
        await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "s", direction = "max" });
        var runs = new List<(string Id, string Token)>();
        for (var i = 0; i < 30; i++)
        {
            runs.Add(await _api.Started(new { runId = NewRunId("verify"), board, participant = $"p{i % 5}", expectedItems = 200, leaseSeconds = 600 }));
        }

        var sent = 0;
        while (sent < 3000)
        {
            var (runId, token) = runs[random.Next(runs.Count)];
            var batch = Enumerable.Range(0, 25).Select(_ =>
            {
                var pick = random.Next(100);
                var id = random.Next(4) == 0 ? $"repeat-{random.Next(20)}" : Guid.NewGuid().ToString("N"); // duplicates
                return pick switch
                {
                    < 40 => Event("log", id, fields: new { lines = new[] { "line" } }),
                    < 60 => Event("items.committed", id, fields: new { chunkId = $"c{random.Next(30)}", count = 10 }),
                    < 70 => Event("heartbeat", id),
                    < 80 => Event("scores.reported", id, fields: new { scores = new { s = (double)random.Next(3) } }), // conflicts get refused
                    < 88 => Event("step.started", id, fields: new { stepId = $"st{random.Next(5)}" }),
                    < 95 => Event("step.completed", id, fields: new { stepId = $"st{random.Next(7)}" }), // unknown steps get refused
                    < 98 => Event("run.completed", id),
                    _ => Event("run.failed", id, fields: new { errorClass = "unknown" }),
                };
            }).ToArray();
            var response = await _api.Events(runId, token, batch);
            Assert.True(response.Code is 200 or 409, response.Text);
            sent += batch.Length;
        }
        ledger.Clock.Advance(TimeSpan.FromHours(1));
        await ledger.Sweep();
        await ledger.Settled();

        var report = await Verify();
        Assert.True(report.Passed, string.Join("\n", report.Differences));
        // Every event of the store was folded by the verification, not merely "a lot of them".
        await using (var connection = new NpgsqlConnection(ledger.ConnectionString))
        {
            await connection.OpenAsync();
            await using var count = new NpgsqlCommand("select count(*) from ledger.mt_events", connection);
            var stored = (long)(await count.ExecuteScalarAsync())!;
            Assert.True(stored > 1000, $"the workload stored only {stored} events");
            Assert.Equal(stored, (long)report.Events);
        }

        var victim = runs[0].Id;
        await using (var connection = new NpgsqlConnection(ledger.ConnectionString))
        {
            await connection.OpenAsync();
            await using var tamper = new NpgsqlCommand(
                "update ledger.mt_doc_run set data = jsonb_set(data, '{status}', '\"succeeded\"') where id = @id", connection);
            tamper.Parameters.AddWithValue("id", victim);
            Assert.Equal(1, await tamper.ExecuteNonQueryAsync());
        }
        try
        {
            var tampered = await Verify();
            Assert.False(tampered.Passed);
            var difference = Assert.Single(tampered.Differences);
            Assert.StartsWith($"run/{victim}:", difference);
            Assert.Contains("status", difference);
        }
        finally
        {
            // Put the projection back the ledger's way: refold the run from its events.
            await using var session = ledger.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession();
            var rebuilt = await session.Events.AggregateStreamAsync<Ledger.Runs.Run>(victim);
            session.Store(rebuilt!);
            await session.SaveChangesAsync();
        }
        Assert.True((await Verify()).Passed);
    }

    [Fact]
    public async Task anomalies_of_every_kind_are_listed_by_kind_run_and_time()
    {
        var since = _api.Now;
        var (late, lateToken) = await _api.Started(new { runId = NewRunId(), leaseSeconds = 5 });
        ledger.Clock.Advance(TimeSpan.FromSeconds(30));
        await ledger.Sweep();
        await _api.Events(late, lateToken, Event("run.completed"));

        var (pending, pendingToken) = await _api.Started(new { runId = NewRunId(), requiredScores = new[] { "x", "y" } });
        await _api.Events(pending, pendingToken, Event("run.completed"));
        await _api.Events(pending, pendingToken, Event("scores.reported", fields: new { scores = new { x = 1.0 } }));
        await _api.Events(pending, pendingToken, Event("scores.reported", fields: new { scores = new { x = 2.0 } }));
        await _api.Events(pending, pendingToken, Event("step.completed", fields: new { outcome = "no step id" }));

        async Task<JsonArray> Anomalies(string query)
        {
            var page = await _api.Send(HttpMethod.Get, $"/api/anomalies?{query}&since={Uri.EscapeDataString(since.ToString("O"))}&pageSize=500", LedgerHost.ReadKey);
            Assert.Equal(HttpStatusCode.OK, page.Status);
            return page.Json!["items"]!.AsArray();
        }

        // This class's own database: since the test began, exactly this one late completion.
        Assert.Equal([late], (await Anomalies("kind=late-completion")).Select(a => a!["runId"]!.GetValue<string>()));
        var forPending = await Anomalies($"runId={pending}");
        Assert.Equal(["completed-before-results", "rejected", "score-conflict"],
            forPending.Select(a => a!["kind"]!.GetValue<string>()).Order());
        Assert.Empty(await Anomalies("kind=late-completion&runId=" + pending));
        var future = Uri.EscapeDataString(_api.Now.AddDays(1).ToString("O"));
        var none = await _api.Send(HttpMethod.Get, $"/api/anomalies?since={future}", LedgerHost.ReadKey);
        Assert.Equal(0, none.Json!["total"]!.GetValue<long>());
    }

    [Fact]
    public async Task kpis_count_what_happened()
    {
        async Task<JsonNode> Kpis() => (await _api.Send(HttpMethod.Get, "/api/kpis", LedgerHost.ReadKey)).Json!;
        // KPIs span the whole database: let every lease other tests left behind expire and be
        // swept first, so that the sweep below marks only this test's run.
        ledger.Clock.Advance(TimeSpan.FromDays(2));
        await ledger.Sweep();
        var before = await Kpis();

        var (lost, lostToken) = await _api.Started(new { runId = NewRunId(), leaseSeconds = 5 });
        ledger.Clock.Advance(TimeSpan.FromSeconds(30));
        await ledger.Sweep();
        await _api.Events(lost, lostToken, Event("run.completed")); // a ghost, prevented
        var (early, earlyToken) = await _api.Started(new { runId = NewRunId(), requiredScores = new[] { "x" } });
        await _api.Events(early, earlyToken, Event("run.completed"));
        var (ok, okToken) = await _api.Started();
        await _api.Events(ok, okToken, Event("run.completed"));
        await _api.Events(ok, "lt_forged", Event("heartbeat"));

        var after = await Kpis();
        long Delta(Func<JsonNode, JsonNode?> pick) => pick(after)!.GetValue<long>() - (pick(before)?.GetValue<long>() ?? 0);
        Assert.True(Delta(k => k["runs"]) == 3, $"before {before.ToJsonString()}\nafter {after.ToJsonString()}\n{(await _api.Run(lost)).ToJsonString()}");
        Assert.True(Delta(k => k["runsByStatus"]!["lost"]) == 1, $"before {before.ToJsonString()}\nafter {after.ToJsonString()}\n{(await _api.Run(lost)).ToJsonString()}");
        Assert.Equal(1, Delta(k => k["runsByStatus"]!["lost"]));
        Assert.Equal(1, Delta(k => k["runsByStatus"]!["succeeded"]));
        Assert.Equal(1, Delta(k => k["runsByStatus"]!["running"]));
        Assert.Equal(1, Delta(k => k["ghostTransitionsPrevented"]));
        Assert.Equal(1, Delta(k => k["completionsBeforeResults"]));
        Assert.Equal(1, Delta(k => k["rejectionsByReason"]!["invalid-credentials"]));
        Assert.Equal(0, Delta(k => k["runsByStatus"]!["failed"]));
        Assert.Equal(0, Delta(k => k["runsByStatus"]!["cancelled"]));
        Assert.Equal(0, Delta(k => k["runsByStatus"]!["claimed"]));
        Assert.Equal(0, Delta(k => k["runsByStatus"]!["registered"]));
        Assert.Equal(2, Delta(k => k["timeToTerminal"]!["runs"]));
        var p50 = after["timeToTerminal"]!["p50Seconds"]!.GetValue<double>();
        var p95 = after["timeToTerminal"]!["p95Seconds"]!.GetValue<double>();
        var p99 = after["timeToTerminal"]!["p99Seconds"]!.GetValue<double>();
        Assert.True(0 <= p50 && p50 <= p95 && p95 <= p99, $"p50 {p50}, p95 {p95}, p99 {p99}");
        // The lost rate is lost over terminal runs, of the very same snapshot.
        var byStatus = after["runsByStatus"]!;
        var terminal = new[] { "succeeded", "failed", "lost", "cancelled" }.Sum(s => byStatus[s]!.GetValue<long>());
        Assert.Equal(terminal, after["timeToTerminal"]!["runs"]!.GetValue<long>());
        Assert.Equal((double)byStatus["lost"]!.GetValue<long>() / terminal, after["lostRate"]!.GetValue<double>(), 12);
    }

    [Fact]
    public async Task export_writes_a_runs_stream_as_ndjson()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, new[] { Event("run.started"), Event("run.completed") });

        using var output = new MemoryStream();
        var count = await EventExport.WriteRunAsync(ledger.Host.Services.GetRequiredService<IDocumentStore>(), runId, output, CancellationToken.None);
        var lines = System.Text.Encoding.UTF8.GetString(output.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(5, count);
        Assert.Equal(["run.registered", "run.claimed", "run.started", "run.completed", "verdict.reached"],
            lines.Select(l => JsonNode.Parse(l)!["type"]!.GetValue<string>()));
        Assert.All(lines, l => Assert.Equal(runId, JsonNode.Parse(l)!["runId"]!.GetValue<string>()));
    }

    [Fact]
    public async Task the_leaderboard_as_of_a_time_shows_the_board_as_it_stood_then()
    {
        var board = NewRunId("asof");
        await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "s", direction = "max" });
        var (first, t1) = await _api.Started(new { runId = NewRunId(), board, participant = "a" });
        await _api.Events(first, t1, new[] { Event("scores.reported", fields: new { scores = new { s = 1.0 } }), Event("run.completed") });
        ledger.Clock.Advance(TimeSpan.FromMinutes(5));
        var between = _api.Now;
        ledger.Clock.Advance(TimeSpan.FromMinutes(5));
        var (second, t2) = await _api.Started(new { runId = NewRunId(), board, participant = "b" });
        await _api.Events(second, t2, new[] { Event("scores.reported", fields: new { scores = new { s = 2.0 } }), Event("run.completed") });

        // Both the board now and the board then are read from the standings projection: wait for it.
        await ledger.Settled();
        var then = await _api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard?at={Uri.EscapeDataString(between.ToString("O"))}", LedgerHost.ReadKey);
        var rows = then.Json!["rows"]!.AsArray();
        Assert.Equal([first], rows.Select(r => r!["runId"]!.GetValue<string>()));
        Assert.Equal($"/api/runs/{first}/events", rows[0]!["history"]!.GetValue<string>());

        await ledger.Settled();
        var now = await _api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard", LedgerHost.ReadKey);
        Assert.Equal([second, first], now.Json!["rows"]!.AsArray().Select(r => r!["runId"]!.GetValue<string>()));
    }

    [Fact]
    public async Task an_archived_run_keeps_its_leaderboard_row_and_still_verifies()
    {
        var board = NewRunId("archive");
        await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "s", direction = "max" });
        var (runId, token) = await _api.Started(new { runId = NewRunId("old"), board, participant = "veteran" });
        await _api.Events(runId, token, new[] { Event("scores.reported", fields: new { scores = new { s = 3.0 } }), Event("run.completed") });
        await ledger.Settled();

        await using (var session = ledger.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession())
        {
            session.Events.ArchiveStream(runId);
            await session.SaveChangesAsync();
        }
        await ledger.Settled();

        var rows = (await _api.Send(HttpMethod.Get, $"/api/boards/{board}/leaderboard", LedgerHost.ReadKey)).Json!["rows"]!.AsArray();
        Assert.Equal([runId], rows.Select(r => r!["runId"]!.GetValue<string>()));
        Assert.Equal("succeeded", (await _api.Run(runId))["status"]!.GetValue<string>());
        var report = await Verify();
        Assert.True(report.Passed, string.Join("\n", report.Differences));
    }
}
