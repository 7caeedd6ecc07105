using System.Net;
using System.Text.Json.Nodes;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>Other systems' views of a run: recorded, compared with the ledger's verdict, never adopted.</summary>
public sealed class ObservationTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private static IEnumerable<JsonNode> Mismatches(JsonNode run) =>
        run["anomalies"]!.AsArray().Where(a => a!["kind"]!.GetValue<string>() == "status-mismatch")!;

    [Fact]
    public async Task an_observation_that_disagrees_with_the_verdict_is_flagged_and_the_status_stands()
    {
        var batch = NewRunId("batch");
        var (runId, token) = await _api.Started(new { runId = NewRunId(), batch });
        await _api.Events(runId, token, Event("run.completed"));
        var observedAt = _api.Now.AddSeconds(-5);

        var response = await _api.Observe(runId, new { source = "portal", status = "failed", observedAt, detail = "Provider returned empty response" });

        Assert.Equal(HttpStatusCode.OK, response.Status);
        Assert.Equal("succeeded", response.Json!["status"]!.GetValue<string>());
        Assert.Equal("applied", response.Json!["result"]!.GetValue<string>());
        Assert.True(response.Json!["mismatch"]!.GetValue<bool>());

        var run = await _api.Run(runId);
        Assert.Equal("succeeded", run["status"]!.GetValue<string>());
        var mismatch = Assert.Single(Mismatches(run))["mismatch"]!;
        Assert.Equal("succeeded", mismatch["ledger"]!.GetValue<string>());
        Assert.Equal("failed", mismatch["observed"]!.GetValue<string>());
        Assert.Equal("portal", mismatch["source"]!.GetValue<string>());
        Assert.Equal(observedAt, mismatch["observedAt"]!.GetValue<DateTimeOffset>());
        var observation = Assert.Single(run["observations"]!.AsArray())!;
        Assert.Equal("Provider returned empty response", observation["detail"]!.GetValue<string>());

        var listed = await _api.Send(HttpMethod.Get, $"/api/runs?anomaly=status-mismatch&batch={batch}", LedgerHost.ReadKey);
        Assert.Equal(runId, Assert.Single(listed.Json!["items"]!.AsArray())!["runId"]!.GetValue<string>());
    }

    [Fact]
    public async Task an_observation_made_before_the_verdict_is_flagged_when_the_ledger_decides()
    {
        var (runId, token) = await _api.Started();
        var early = await _api.Observe(runId, new { source = "modal", status = "succeeded", observedAt = _api.Now });
        Assert.False(early.Json!["mismatch"]!.GetValue<bool>());
        Assert.Empty(Mismatches(await _api.Run(runId)));

        await _api.Events(runId, token, Event("run.failed", fields: new { errorClass = "provider", message = "empty response" }));

        var run = await _api.Run(runId);
        Assert.Equal("failed", run["status"]!.GetValue<string>());
        var mismatch = Assert.Single(Mismatches(run))["mismatch"]!;
        Assert.Equal(("failed", "succeeded", "modal"),
            (mismatch["ledger"]!.GetValue<string>(), mismatch["observed"]!.GetValue<string>(), mismatch["source"]!.GetValue<string>()));
    }

    [Fact]
    public async Task an_agreeing_observation_is_recorded_without_an_anomaly_and_a_repeat_is_a_duplicate()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, Event("run.completed"));
        var body = new { source = "modal", status = "succeeded", observedAt = _api.Now };

        var first = await _api.Observe(runId, body, LedgerHost.AdminKey);
        var version = (await _api.Run(runId))["version"]!.GetValue<long>();
        var again = await _api.Observe(runId, body);

        Assert.Equal("applied", first.Json!["result"]!.GetValue<string>());
        Assert.False(first.Json!["mismatch"]!.GetValue<bool>());
        Assert.Equal(HttpStatusCode.OK, again.Status);
        Assert.Equal("duplicate", again.Json!["result"]!.GetValue<string>());
        var run = await _api.Run(runId);
        Assert.Equal(version, run["version"]!.GetValue<long>());
        Assert.Empty(Mismatches(run));
        Assert.Single(run["observations"]!.AsArray());

        var history = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.ReadKey);
        Assert.Single(history.Json!["events"]!.AsArray(), e => e!["type"]!.GetValue<string>() == "status.observed");
    }

    [Fact]
    public async Task mismatches_are_anomaly_records_and_a_rebuild_from_the_events_reproduces_them()
    {
        var (after, afterToken) = await _api.Started();
        await _api.Events(after, afterToken, Event("run.completed"));
        await _api.Observe(after, new { source = "portal", status = "failed", observedAt = _api.Now });
        var (before, beforeToken) = await _api.Started();
        await _api.Observe(before, new { source = "modal", status = "succeeded", observedAt = _api.Now });
        await _api.Events(before, beforeToken, Event("run.failed", fields: new { errorClass = "timeout" }));

        foreach (var runId in new[] { after, before })
        {
            var records = await _api.Send(HttpMethod.Get, $"/api/anomalies?kind=status-mismatch&runId={runId}", LedgerHost.ReadKey);
            Assert.Equal(1, records.Json!["total"]!.GetValue<long>());
        }
        var report = await ledger.Verify();
        Assert.True(report.Passed, string.Join("\n", report.Differences));
    }

    [Fact]
    public async Task observations_need_an_admin_or_worker_key()
    {
        var runId = await _api.Register();
        var body = new { source = "portal", status = "failed", observedAt = _api.Now };
        var token = await _api.Claim(runId);

        Assert.Equal("missing-credentials", (await _api.Observe(runId, body, key: null)).ProblemCode);
        Assert.Equal("invalid-credentials", (await _api.Observe(runId, body, key: token)).ProblemCode);
        var reader = await _api.Observe(runId, body, LedgerHost.ReadKey);
        Assert.Equal(HttpStatusCode.Forbidden, reader.Status);
        Assert.Equal("forbidden", reader.ProblemCode);
        Assert.Empty((await _api.Run(runId))["observations"]!.AsArray());
    }

    [Fact]
    public async Task an_observation_of_an_unknown_run_is_a_404()
    {
        var response = await _api.Observe(NewRunId(), new { source = "portal", status = "failed", observedAt = _api.Now });
        Assert.Equal(HttpStatusCode.NotFound, response.Status);
        Assert.Equal("run-not-found", response.ProblemCode);
    }

    [Fact]
    public async Task an_observed_status_the_ledger_does_not_know_is_a_422_with_the_allowed_statuses()
    {
        var runId = await _api.Register();

        var response = await _api.Observe(runId, new { source = "modal", status = "Succeeded", observedAt = _api.Now });

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.Status);
        Assert.Equal("invalid-payload", response.ProblemCode);
        Assert.Equal(["status"], response.ErrorFields);
        Assert.Equal(["registered", "claimed", "running", "succeeded", "failed", "lost", "cancelled"],
            response.Json!["allowed"]!.AsArray().Select(a => a!.GetValue<string>()));
    }

    [Theory]
    [InlineData("{\"status\":\"failed\",\"observedAt\":\"2026-01-01T00:00:00Z\"}", "source")]
    [InlineData("{\"source\":\"portal\",\"status\":\"failed\"}", "observedAt")]
    [InlineData("{\"source\":\"portal\",\"status\":\"failed\",\"observedAt\":\"last tuesday\"}", "observedAt")]
    [InlineData("{\"source\":\"portal\",\"observedAt\":\"2026-01-01T00:00:00Z\"}", "status")]
    [InlineData("{\"source\":\"portal\",\"status\":\"failed\",\"observedAt\":\"2026-01-01T00:00:00Z\",\"detail\":{\"a\":1}}", "detail")]
    public async Task a_malformed_observation_is_a_422_naming_the_field_and_nothing_is_recorded(string body, string field)
    {
        var runId = await _api.Register();

        var response = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/observations", LedgerHost.WorkerKey, rawBody: body);

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.Status);
        Assert.Equal("invalid-payload", response.ProblemCode);
        Assert.Equal([field], response.ErrorFields);
        Assert.Equal(1, (await _api.Run(runId))["version"]!.GetValue<long>());
    }
}
