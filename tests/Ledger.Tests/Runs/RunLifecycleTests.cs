using System.Net;
using System.Text.Json.Nodes;
using Alba;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

public sealed class RunLifecycleTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    [Fact]
    public async Task a_run_with_all_its_results_goes_from_registered_to_succeeded()
    {
        var board = NewRunId("eeg-2025");
        await _api.Send(HttpMethod.Post, "/api/boards", LedgerHost.AdminKey, new { id = board, primaryScore = "accuracy", direction = "max" });
        var runId = await _api.Register(new
        {
            runId = NewRunId(), board, participant = "team-a", labels = new { region = "EU" },
            requiredScores = new[] { "accuracy" }, requiredOutputs = new[] { "predictions" }, expectedItems = 10,
        });
        Assert.Equal("registered", (await _api.Run(runId))["status"]!.GetValue<string>());

        var token = await _api.Claim(runId);
        var claimed = await _api.Run(runId);
        Assert.Equal("claimed", claimed["status"]!.GetValue<string>());
        Assert.Equal("worker-1", claimed["lease"]!["worker"]!.GetValue<string>());

        var response = await _api.Events(runId, token, new[]
        {
            Event("run.started"),
            Event("step.started", fields: new { stepId = "s1", name = "score" }),
            Event("log", fields: new { lines = new[] { "loading", "scoring" } }),
            Event("items.committed", fields: new { chunkId = "c1", count = 6 }),
            Event("items.committed", fields: new { chunkId = "c2", count = 4 }),
            Event("scores.reported", fields: new { scores = new { accuracy = 0.93 } }),
            Event("output.recorded", fields: new { name = "predictions", uri = "s3://bucket/predictions.csv", sha256 = new string('a', 64), bytes = 1024 }),
            Event("step.completed", fields: new { stepId = "s1", outcome = "succeeded" }),
            Event("heartbeat"),
            Event("run.completed", fields: new { itemsTotal = 10 }),
        });

        Assert.Equal(HttpStatusCode.OK, response.Status);
        Assert.Equal("succeeded", response.RunStatus);
        Assert.All(response.Json!["results"]!.AsArray(), r => Assert.Equal("applied", r!["result"]!.GetValue<string>()));

        var run = await _api.Run(runId);
        Assert.Equal("succeeded", run["status"]!.GetValue<string>());
        Assert.Equal(0.93, run["scores"]!["accuracy"]!.GetValue<double>());
        Assert.Equal("s3://bucket/predictions.csv", run["outputs"]!["predictions"]!["uri"]!.GetValue<string>());
        Assert.Equal(10, run["items"]!["committed"]!.GetValue<long>());
        Assert.Equal(2, run["logLines"]!.GetValue<long>());
        Assert.Empty(run["missing"]!.AsArray());
        Assert.Equal("EU", run["labels"]!["region"]!.GetValue<string>());
        Assert.Equal(13, run["version"]!.GetValue<long>()); // registered + claimed + ten worker events + the verdict
    }

    [Fact]
    public async Task a_completion_before_its_results_waits_and_lists_what_is_missing()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId(), requiredScores = new[] { "f1" }, requiredOutputs = new[] { "report" } });

        var completed = await _api.Events(runId, token, Event("run.completed"));
        Assert.Equal("running", completed.RunStatus);

        var run = await _api.Run(runId);
        Assert.Equal("running", run["status"]!.GetValue<string>());
        Assert.Equal("completed-before-results", run["reason"]!.GetValue<string>());
        Assert.True(run["completionReported"]!.GetValue<bool>());
        Assert.Equal(["score:f1", "output:report"], run["missing"]!.AsArray().Select(m => m!.GetValue<string>()));
        Assert.Equal(["completed-before-results"], run["anomalies"]!.AsArray().Select(a => a!["kind"]!.GetValue<string>()));

        Assert.Equal("running", (await _api.Events(runId, token, Event("scores.reported", fields: new { scores = new { f1 = 0.5 } }))).RunStatus);
        Assert.Equal("succeeded", (await _api.Events(runId, token, Event("output.recorded", fields: new { name = "report", uri = "file:///r.json" }))).RunStatus);
    }

    [Fact]
    public async Task a_worker_failure_is_terminal_and_keeps_its_error_class()
    {
        var (runId, token) = await _api.Started();
        var failed = await _api.Events(runId, token, Event("run.failed", fields: new { errorClass = "timeout", message = "provider took 300s" }));
        Assert.Equal("failed", failed.RunStatus);

        var run = await _api.Run(runId);
        Assert.Equal("timeout", run["reason"]!.GetValue<string>());
        Assert.Equal("provider took 300s", run["errorMessage"]!.GetValue<string>());
    }

    [Fact]
    public async Task the_same_event_id_sent_again_is_a_duplicate_and_not_appended()
    {
        var (runId, token) = await _api.Started();
        var heartbeat = Event("log", "evt-dup", fields: new { lines = new[] { "x" } });

        Assert.Equal("applied", (await _api.Events(runId, token, heartbeat)).Json!["results"]![0]!["result"]!.GetValue<string>());
        var again = await _api.Events(runId, token, heartbeat);
        Assert.Equal(HttpStatusCode.OK, again.Status);
        Assert.Equal("duplicate", again.Json!["results"]![0]!["result"]!.GetValue<string>());

        var run = await _api.Run(runId);
        Assert.Equal(1, run["logLines"]!.GetValue<long>());
        Assert.Equal(3, run["version"]!.GetValue<long>());
    }

    [Fact]
    public async Task the_same_score_again_is_a_duplicate()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, Event("scores.reported", fields: new { scores = new { auc = 0.7 } }));
        var again = await _api.Events(runId, token, Event("scores.reported", fields: new { scores = new { auc = 0.7 } }));
        Assert.Equal("duplicate", again.Json!["results"]![0]!["result"]!.GetValue<string>());
    }

    [Fact]
    public async Task an_event_after_a_terminal_status_is_recorded_flagged_and_answered_with_409()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, Event("run.completed"));

        var late = await _api.Events(runId, token, Event("log", fields: new { lines = new[] { "still here" } }));
        Assert.Equal(HttpStatusCode.Conflict, late.Status);
        Assert.Equal("run-terminal", late.ProblemCode);
        Assert.False(late.Retryable);
        Assert.Equal("succeeded", late.RunStatus);
        Assert.Equal("recorded-not-applied", late.Json!["results"]![0]!["result"]!.GetValue<string>());
        Assert.Equal("late-event", late.Json!["results"]![0]!["reason"]!.GetValue<string>());

        var run = await _api.Run(runId);
        Assert.Equal("succeeded", run["status"]!.GetValue<string>());
        Assert.Equal(0, run["logLines"]!.GetValue<long>());
        Assert.Equal(["late-event"], run["anomalies"]!.AsArray().Select(a => a!["kind"]!.GetValue<string>()));
    }

    [Fact]
    public async Task a_retry_of_an_already_recorded_event_after_the_verdict_is_still_just_a_duplicate()
    {
        var (runId, token) = await _api.Started();
        var completion = Event("run.completed", "final");
        Assert.Equal("succeeded", (await _api.Events(runId, token, completion)).RunStatus);

        var retry = await _api.Events(runId, token, completion);
        Assert.Equal(HttpStatusCode.OK, retry.Status);
        Assert.Equal("duplicate", retry.Json!["results"]![0]!["result"]!.GetValue<string>());
        Assert.Empty((await _api.Run(runId))["anomalies"]!.AsArray());
    }

    [Fact]
    public async Task cancelling_a_live_run_is_terminal_and_a_second_cancel_is_refused()
    {
        var (runId, _) = await _api.Started();
        var cancel = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { reason = "superseded" });
        Assert.Equal(HttpStatusCode.OK, cancel.Status);
        Assert.Equal("cancelled", (await _api.Run(runId))["status"]!.GetValue<string>());
        Assert.Equal("superseded", (await _api.Run(runId))["reason"]!.GetValue<string>());

        var again = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey);
        Assert.Equal(HttpStatusCode.Conflict, again.Status);
        Assert.Equal("run-terminal", again.ProblemCode);
        Assert.Equal("cancelled", again.RunStatus);
    }

    [Fact]
    public async Task the_history_lists_every_event_with_times_and_what_applying_it_did()
    {
        var (runId, token) = await _api.Started();
        var occurred = DateTimeOffset.Parse("2026-01-02T03:04:05Z");
        await _api.Events(runId, token, new[]
        {
            Event("step.started", "h1", occurred, new { stepId = "s1" }),
            Event("step.completed", "h2", occurred, new { stepId = "s1", outcome = "ok" }),
            Event("run.completed", "h3", occurred),
        });
        await _api.Events(runId, token, Event("heartbeat", "h4", occurred));

        var history = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.ReadKey);
        Assert.Equal(HttpStatusCode.OK, history.Status);
        var events = history.Json!["events"]!.AsArray();
        Assert.Equal(["run.registered", "run.claimed", "step.started", "step.completed", "run.completed", "verdict.reached", "heartbeat"],
            events.Select(e => e!["type"]!.GetValue<string>()));
        Assert.Equal([1L, 2, 3, 4, 5, 6, 7], events.Select(e => e!["version"]!.GetValue<long>()));
        Assert.Equal(["applied", "applied", "applied", "applied", "applied", "applied", "recorded-not-applied"],
            events.Select(e => e!["result"]!.GetValue<string>()));
        Assert.Equal("succeeded", events[5]!["data"]!["status"]!.GetValue<string>());
        Assert.Equal("late-event", events[6]!["reason"]!.GetValue<string>());
        Assert.Equal(occurred, events[2]!["occurredAt"]!.GetValue<DateTimeOffset>());
        Assert.NotEqual(occurred, events[2]!["recordedAt"]!.GetValue<DateTimeOffset>());
        Assert.Equal("succeeded", events[4]!["statusAfter"]!.GetValue<string>());
        Assert.DoesNotContain(history.Text, token); // the lease token itself is never stored
    }

    [Fact]
    public async Task health_answers_once_the_store_can_take_events()
    {
        var result = await ledger.Host.Scenario(s =>
        {
            s.Get.Url("/health");
            s.StatusCodeShouldBeOk();
        });
        var body = JsonNode.Parse(await result.ReadAsTextAsync())!;
        Assert.Equal("healthy", body["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task the_openapi_document_describes_the_run_calls()
    {
        var result = await ledger.Host.Scenario(s =>
        {
            s.Get.Url("/openapi/v1.json");
            s.StatusCodeShouldBeOk();
        });
        var paths = JsonNode.Parse(await result.ReadAsTextAsync())!["paths"]!.AsObject();
        foreach (var path in new[] { "/api/runs", "/api/runs/{id}/claim", "/api/runs/{id}/events", "/api/runs/{id}/cancel", "/api/runs/{id}" })
        {
            Assert.True(paths.ContainsKey(path), $"OpenAPI lacks {path}");
        }
    }
}
