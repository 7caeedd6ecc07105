using System.Net;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>Every refusal of the error contract: status, stable type, retryable, run status, nothing recorded.</summary>
public sealed class ErrorContractTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private static void AssertProblem(Response response, HttpStatusCode status, string code, bool retryable)
    {
        Assert.True(response.Status == status, $"expected {(int)status} {code}, got {response.Code}: {response.Text}");
        Assert.Equal("application/problem+json", response.ContentType);
        Assert.Equal(code, response.ProblemCode);
        Assert.Equal($"urn:run-ledger:problem:{code}", response.Json!["type"]!.GetValue<string>());
        Assert.Equal((int)status, response.Json!["status"]!.GetValue<int>());
        Assert.Equal(retryable, response.Retryable);
        Assert.False(string.IsNullOrWhiteSpace(response.Json!["title"]?.GetValue<string>()));
    }

    private async Task AssertUnchanged(string runId, long version)
    {
        var run = await _api.Run(runId);
        Assert.Equal(version, run["version"]!.GetValue<long>());
    }

    /// <summary>This run's refusals, exactly: the one just made, with its reason, and no other.</summary>
    private async Task AssertRejectionKept(string runId, string reason)
    {
        var page = await _api.Send(HttpMethod.Get, $"/api/rejections?runId={runId}", LedgerHost.ReadKey);
        Assert.Equal(HttpStatusCode.OK, page.Status);
        Assert.True(page.Json!["total"]!.GetValue<long>() == 1, $"expected exactly one rejection ({reason}) kept for {runId}: {page.Text}");
        Assert.Equal([reason], page.Json!["items"]!.AsArray().Select(r => r!["reason"]!.GetValue<string>()));
    }

    /// <summary>The refusal names exactly the offending field, and no other.</summary>
    private static void AssertErrorsName(Response response, string field) =>
        Assert.True(response.Json!["errors"]!.AsObject().Select(e => e.Key).SequenceEqual([field]), $"expected errors for {field} only: {response.Text}");

    [Fact]
    public async Task registration_needs_the_admin_key()
    {
        var body = new { runId = NewRunId() };
        AssertProblem(await _api.Send(HttpMethod.Post, "/api/runs", null, body), HttpStatusCode.Unauthorized, "missing-credentials", false);
        AssertProblem(await _api.Send(HttpMethod.Post, "/api/runs", "not-a-key", body), HttpStatusCode.Unauthorized, "invalid-credentials", false);
        AssertProblem(await _api.Send(HttpMethod.Post, "/api/runs", LedgerHost.WorkerKey, body), HttpStatusCode.Forbidden, "forbidden", false);
        AssertProblem(await _api.Send(HttpMethod.Post, "/api/runs", LedgerHost.ReadKey, body), HttpStatusCode.Forbidden, "forbidden", false);
        AssertProblem(await _api.GetRun(body.runId), HttpStatusCode.NotFound, "run-not-found", false);
    }

    [Fact]
    public async Task reads_need_a_read_or_admin_key()
    {
        var runId = await _api.Register();
        AssertProblem(await _api.GetRun(runId, key: null!), HttpStatusCode.Unauthorized, "missing-credentials", false);
        AssertProblem(await _api.GetRun(runId, LedgerHost.WorkerKey), HttpStatusCode.Forbidden, "forbidden", false);
        Assert.Equal(HttpStatusCode.OK, (await _api.GetRun(runId, LedgerHost.ReadKey)).Status);
    }

    [Theory]
    [InlineData("{\"runId\": ")]
    [InlineData("not json at all")]
    [InlineData("{\"runId\": \"a\",}")]
    public async Task malformed_json_is_a_400(string body)
    {
        AssertProblem(await _api.Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey, rawBody: body),
            HttpStatusCode.BadRequest, "malformed-json", false);
    }

    [Theory]
    [InlineData("{\"runId\": 42}", "runId")]
    [InlineData("{\"expectedItems\": \"many\"}", "expectedItems")]
    [InlineData("{\"expectedItems\": -1}", "expectedItems")]
    [InlineData("{\"runId\": \"has spaces in it\"}", "runId")]
    [InlineData("{\"runId\": \"mt_tombstone\"}", "runId")]
    [InlineData("{\"leaseSeconds\": 0}", "leaseSeconds")]
    [InlineData("{\"requiredScores\": [\"a\", \"a\"]}", "requiredScores")]
    [InlineData("[1, 2, 3]", "$")]
    public async Task a_registration_of_the_wrong_shape_is_a_422_naming_the_field(string body, string field)
    {
        var response = await _api.Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey, rawBody: body);
        AssertProblem(response, HttpStatusCode.UnprocessableEntity, "invalid-payload", false);
        AssertErrorsName(response, field);
    }

    [Fact]
    public async Task registering_an_existing_run_id_is_a_409_and_keeps_the_first()
    {
        var runId = await _api.Register(new { runId = NewRunId(), participant = "first" });
        var again = await _api.Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey, new { runId, participant = "second" });
        AssertProblem(again, HttpStatusCode.Conflict, "run-exists", false);
        Assert.Equal("first", (await _api.Run(runId))["participant"]!.GetValue<string>());
    }

    [Fact]
    public async Task events_without_a_token_are_401()
    {
        var (runId, _) = await _api.Started();
        var response = await _api.Events(runId, null, Event("heartbeat"));
        AssertProblem(response, HttpStatusCode.Unauthorized, "missing-credentials", false);
        Assert.Null(response.RunStatus);
        await AssertUnchanged(runId, 2);
    }

    [Fact]
    public async Task events_with_an_unknown_token_are_401()
    {
        var (runId, _) = await _api.Started();
        AssertProblem(await _api.Events(runId, "lt_forged", Event("heartbeat")), HttpStatusCode.Unauthorized, "invalid-credentials", false);
        AssertProblem(await _api.Events(runId, LedgerHost.AdminKey, Event("heartbeat")), HttpStatusCode.Unauthorized, "invalid-credentials", false);
        await AssertUnchanged(runId, 2);
    }

    [Fact]
    public async Task events_with_another_runs_token_are_403_and_never_appended()
    {
        var (runA, _) = await _api.Started();
        var (_, tokenB) = await _api.Started();
        var response = await _api.Events(runA, tokenB, Event("run.completed"));
        AssertProblem(response, HttpStatusCode.Forbidden, "foreign-lease", false);
        Assert.Null(response.RunStatus); // a 403 says nothing about the run
        await AssertUnchanged(runA, 2);
        await AssertRejectionKept(runA, "foreign-lease");
    }

    [Fact]
    public async Task an_unknown_token_gets_the_same_401_whether_or_not_the_run_exists()
    {
        var (existing, _) = await _api.Started();
        var onExisting = await _api.Events(existing, "lt_whatever", Event("heartbeat", "e1", DateTimeOffset.UnixEpoch));
        var onMissing = await _api.Events(NewRunId(), "lt_whatever", Event("heartbeat", "e1", DateTimeOffset.UnixEpoch));
        AssertProblem(onExisting, HttpStatusCode.Unauthorized, "invalid-credentials", false);
        AssertProblem(onMissing, HttpStatusCode.Unauthorized, "invalid-credentials", false);
        // Byte for byte the same but for the path it echoes: nothing tells which run exists.
        Assert.Equal(onExisting.Text.Replace(existing, "RUN"), onMissing.Text.Replace(onMissing.Json!["instance"]!.GetValue<string>().Split('/')[3], "RUN"));
    }

    [Fact]
    public async Task a_step_event_without_a_step_id_is_422_not_retryable_and_not_appended()
    {
        var (runId, token) = await _api.Started();
        var response = await _api.Events(runId, token, Event("step.completed", fields: new { outcome = "ok" }));
        AssertProblem(response, HttpStatusCode.UnprocessableEntity, "invalid-payload", false);
        AssertErrorsName(response, "stepId");
        await AssertUnchanged(runId, 2);
        await AssertRejectionKept(runId, "invalid-payload");
    }

    [Theory]
    [InlineData("{\"type\":\"teleport\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\"}", "type")]
    [InlineData("{\"type\":\"heartbeat\",\"occurredAt\":\"2026-01-01T00:00:00Z\"}", "eventId")]
    [InlineData("{\"type\":\"heartbeat\",\"eventId\":\"e\"}", "occurredAt")]
    [InlineData("{\"type\":\"heartbeat\",\"eventId\":\"e\",\"occurredAt\":\"yesterday\"}", "occurredAt")]
    [InlineData("{\"type\":\"scores.reported\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"scores\":{\"f1\":\"NaN\"}}", "scores.f1")]
    [InlineData("{\"type\":\"scores.reported\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"scores\":{}}", "scores")]
    [InlineData("{\"type\":\"scores.reported\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"scores\":{\"f1\":1e999}}", "scores.f1")]
    [InlineData("{\"type\":\"items.committed\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"chunkId\":\"c\",\"count\":-5}", "count")]
    [InlineData("{\"type\":\"items.committed\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"count\":5}", "chunkId")]
    [InlineData("{\"type\":\"output.recorded\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"name\":\"o\",\"uri\":\"not a uri\"}", "uri")]
    [InlineData("{\"type\":\"output.recorded\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"name\":\"o\",\"uri\":\"s3://b/o\",\"sha256\":\"xyz\"}", "sha256")]
    [InlineData("{\"type\":\"run.failed\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\"}", "errorClass")]
    [InlineData("{\"type\":\"log\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"lines\":\"one line\"}", "lines")]
    [InlineData("[{\"type\":\"heartbeat\",\"eventId\":\"ok\",\"occurredAt\":\"2026-01-01T00:00:00Z\"},{\"type\":\"step.started\",\"eventId\":\"bad\",\"occurredAt\":\"2026-01-01T00:00:00Z\"}]", "[1].stepId")]
    [InlineData("[]", "$")]
    [InlineData("\"heartbeat\"", "$")]
    public async Task a_malformed_event_is_422_naming_the_field_and_nothing_of_the_request_is_appended(string body, string field)
    {
        var (runId, token) = await _api.Started();
        var response = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/events", token, rawBody: body);
        AssertProblem(response, HttpStatusCode.UnprocessableEntity, "invalid-payload", false);
        AssertErrorsName(response, field);
        await AssertUnchanged(runId, 2);
    }

    [Fact]
    public async Task an_oversized_body_is_413_and_bounded()
    {
        var (runId, token) = await _api.Started();
        var huge = new string('x', 300 * 1024); // the test host allows 256 KiB
        var response = await _api.Events(runId, token, Event("log", fields: new { lines = new[] { huge } }));
        AssertProblem(response, HttpStatusCode.RequestEntityTooLarge, "payload-too-large", false);
        await AssertUnchanged(runId, 2);
    }

    [Fact]
    public async Task too_many_or_too_long_log_lines_are_422()
    {
        var (runId, token) = await _api.Started();
        var many = Enumerable.Repeat("l", 1001).ToArray();
        AssertProblem(await _api.Events(runId, token, Event("log", fields: new { lines = many })), HttpStatusCode.UnprocessableEntity, "invalid-payload", false);
        var long_ = new string('y', 17 * 1024);
        AssertProblem(await _api.Events(runId, token, Event("log", fields: new { lines = new[] { long_ } })), HttpStatusCode.UnprocessableEntity, "invalid-payload", false);
        await AssertUnchanged(runId, 2);
    }

    [Fact]
    public async Task completing_a_step_never_started_is_409_unknown_step()
    {
        var (runId, token) = await _api.Started();
        var response = await _api.Events(runId, token, Event("step.completed", "evt-x", fields: new { stepId = "ghost" }));
        AssertProblem(response, HttpStatusCode.Conflict, "unknown-step", false);
        Assert.Equal("evt-x", response.Json!["eventId"]!.GetValue<string>());
        Assert.Equal("claimed", response.RunStatus);
        await AssertUnchanged(runId, 2);
        await AssertRejectionKept(runId, "unknown-step");
    }

    [Fact]
    public async Task a_refused_event_in_a_batch_refuses_the_whole_batch()
    {
        var (runId, token) = await _api.Started();
        var response = await _api.Events(runId, token, new[]
        {
            Event("step.started", fields: new { stepId = "s1" }),
            Event("step.completed", fields: new { stepId = "s2" }),
        });
        AssertProblem(response, HttpStatusCode.Conflict, "unknown-step", false);
        await AssertUnchanged(runId, 2);
    }

    [Fact]
    public async Task a_different_value_for_a_recorded_score_is_409_and_the_first_stays()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, Event("scores.reported", fields: new { scores = new { auc = 0.81 } }));
        var conflict = await _api.Events(runId, token, Event("scores.reported", fields: new { scores = new { auc = 0.99 } }));
        AssertProblem(conflict, HttpStatusCode.Conflict, "score-conflict", false);
        Assert.Equal(0.81, (await _api.Run(runId))["scores"]!["auc"]!.GetValue<double>());
        await AssertRejectionKept(runId, "score-conflict");
    }

    [Fact]
    public async Task a_score_outside_the_declared_set_is_422()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId(), requiredScores = new[] { "f1" } });
        AssertProblem(await _api.Events(runId, token, Event("scores.reported", fields: new { scores = new { recall = 0.3 } })),
            HttpStatusCode.UnprocessableEntity, "unknown-score", false);
        await AssertUnchanged(runId, 2);
        await AssertRejectionKept(runId, "unknown-score");
    }

    [Fact]
    public async Task a_chunk_resent_with_another_count_is_409()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, Event("items.committed", fields: new { chunkId = "c1", count = 10 }));
        AssertProblem(await _api.Events(runId, token, Event("items.committed", fields: new { chunkId = "c1", count = 11 })),
            HttpStatusCode.Conflict, "chunk-conflict", false);
        Assert.Equal(10, (await _api.Run(runId))["items"]!["committed"]!.GetValue<long>());
        await AssertUnchanged(runId, 3);
        await AssertRejectionKept(runId, "chunk-conflict");
    }

    [Fact]
    public async Task an_expired_lease_is_409_not_retryable_and_nothing_is_appended()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId(), leaseSeconds = 30 });
        ledger.Clock.Advance(TimeSpan.FromSeconds(31));
        var response = await _api.Events(runId, token, Event("run.completed"));
        AssertProblem(response, HttpStatusCode.Conflict, "lease-expired", false);
        Assert.Equal("claimed", response.RunStatus);
        await AssertUnchanged(runId, 2);
        await AssertRejectionKept(runId, "lease-expired");
    }

    [Fact]
    public async Task heartbeats_extend_the_lease()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId(), leaseSeconds = 30 });
        for (var i = 0; i < 3; i++)
        {
            ledger.Clock.Advance(TimeSpan.FromSeconds(20));
            Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("heartbeat"))).Status);
        }
        ledger.Clock.Advance(TimeSpan.FromSeconds(20));
        Assert.Equal("succeeded", (await _api.Events(runId, token, Event("run.completed"))).RunStatus);
    }

    [Fact]
    public async Task a_held_lease_cannot_be_claimed_again_but_an_expired_one_can_and_the_old_token_is_then_lost()
    {
        var (runId, oldToken) = await _api.Started(new { runId = NewRunId(), leaseSeconds = 30 });
        var held = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerHost.WorkerKey, new { worker = "w2" });
        AssertProblem(held, HttpStatusCode.Conflict, "lease-held", false);
        Assert.Contains("worker-1", held.Json!["detail"]!.GetValue<string>());

        ledger.Clock.Advance(TimeSpan.FromSeconds(31));
        var newToken = await _api.Claim(runId, "w2");
        Assert.NotEqual(oldToken, newToken);
        AssertProblem(await _api.Events(runId, oldToken, Event("heartbeat")), HttpStatusCode.Conflict, "lease-lost", false);
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, newToken, Event("heartbeat"))).Status);
    }

    [Fact]
    public async Task claiming_needs_a_worker_or_admin_key_and_a_known_live_run()
    {
        var runId = await _api.Register();
        AssertProblem(await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerHost.ReadKey), HttpStatusCode.Forbidden, "forbidden", false);
        AssertProblem(await _api.Send(HttpMethod.Post, $"/api/runs/{NewRunId()}/claim", LedgerHost.WorkerKey), HttpStatusCode.NotFound, "run-not-found", false);
        await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey);
        var terminal = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerHost.AdminKey);
        AssertProblem(terminal, HttpStatusCode.Conflict, "run-terminal", false);
        Assert.Equal("cancelled", terminal.RunStatus);
    }

    [Fact]
    public async Task cancelling_needs_the_admin_key()
    {
        var (runId, token) = await _api.Started();
        AssertProblem(await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.WorkerKey), HttpStatusCode.Forbidden, "forbidden", false);
        AssertProblem(await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", token), HttpStatusCode.Unauthorized, "invalid-credentials", false);
        await AssertUnchanged(runId, 2);
    }

    [Fact]
    public async Task the_rejection_log_keeps_the_payload_and_reason()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, Event("step.completed", "evt-no-step", fields: new { outcome = "ok" }));
        var page = await _api.Send(HttpMethod.Get, $"/api/rejections?runId={runId}", LedgerHost.AdminKey);
        Assert.Equal(1, page.Json!["total"]!.GetValue<long>());
        var rejection = page.Json!["items"]!.AsArray().Single()!;
        Assert.Equal("invalid-payload", rejection["reason"]!.GetValue<string>());
        Assert.Equal(422, rejection["httpStatus"]!.GetValue<int>());
        Assert.Contains("evt-no-step", rejection["payload"]!.GetValue<string>());
        // Refused by its shape, before the lease was looked at: no worker is known yet.
        Assert.Null(rejection["worker"]);

        // Refused by the run's state, once the lease was checked: the lease holder is named.
        await _api.Events(runId, token, Event("scores.reported", fields: new { scores = new { auc = 0.5 } }));
        await _api.Events(runId, token, Event("scores.reported", "evt-conflict", fields: new { scores = new { auc = 0.6 } }));
        var conflicts = await _api.Send(HttpMethod.Get, $"/api/rejections?runId={runId}&reason=score-conflict", LedgerHost.AdminKey);
        var conflict = conflicts.Json!["items"]!.AsArray().Single()!;
        Assert.Equal(409, conflict["httpStatus"]!.GetValue<int>());
        Assert.Equal("worker-1", conflict["worker"]?.GetValue<string>());
    }
}
