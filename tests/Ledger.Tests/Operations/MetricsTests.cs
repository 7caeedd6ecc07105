using System.Net;
using System.Text.Json.Nodes;
using Ledger.Contract;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Operations;

/// <summary>
/// OpenTelemetry listens to every meter of a name in the process, whichever host created it, and a
/// disposed host's meter ends the streams other hosts share with it: these classes run alone, after the
/// parallel ones, one after the other, so that the counts each scrapes are its own host's.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MetricsCollection
{
    public const string Name = "metrics";
}

/// <summary>GET /metrics: the ledger's own instruments beside the standard ones, for a read or admin key only.</summary>
[Collection(MetricsCollection.Name)]
public sealed class MetricsTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private static (string, string) L(string key, string value) => (key, value);

    [Fact]
    public async Task a_scrape_after_a_workload_counts_events_refusals_and_anomalies_by_their_wire_names()
    {
        var before = await Scrape.Of(ledger.Host);

        var (runId, token) = await _api.Started(new { runId = NewRunId("metrics") });
        var started = Event("run.started");
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, started)).Status);
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, new[] { Event("heartbeat"), Event("heartbeat") })).Status);
        // The same event again: a duplicate.
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, started)).Status);
        // A step never started: refused by the writer (409 unknown-step).
        var refused = await _api.Events(runId, token, Event("step.completed", fields: new { stepId = "nope" }));
        Assert.Equal("unknown-step", refused.ProblemCode);
        // No credentials, and a key nobody issued: 401s, counted by their problem type.
        Assert.Equal(401, (await _api.Events(runId, null, Event("heartbeat"))).Code);
        Assert.Equal("invalid-credentials", (await _api.Events(runId, "lt_unknown", Event("heartbeat"))).ProblemCode);
        // Completed, then a late event: recorded, not applied, and a late-event anomaly.
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("run.completed"))).Status);
        var late = await _api.Events(runId, token, Event("log", fields: new { lines = new[] { "late" } }));
        Assert.Equal("run-terminal", late.ProblemCode);

        var after = await Scrape.Of(ledger.Host);
        double Delta(string name, params (string, string)[] labels) => after.Value(name, labels) - before.Value(name, labels);

        Assert.Equal(1, Delta("ledger_events_total", L("type", "run.started"), L("result", "applied")));
        Assert.Equal(2, Delta("ledger_events_total", L("type", "heartbeat"), L("result", "applied")));
        Assert.Equal(1, Delta("ledger_events_total", L("type", "run.started"), L("result", "duplicate")));
        Assert.Equal(1, Delta("ledger_events_total", L("type", "step.completed"), L("result", "refused")));
        Assert.Equal(1, Delta("ledger_events_total", L("type", "run.completed"), L("result", "applied")));
        Assert.Equal(1, Delta("ledger_events_total", L("type", "log"), L("result", "recorded-not-applied")));

        Assert.Equal(1, Delta("ledger_refusals_total", L("problem", "unknown-step")));
        Assert.Equal(1, Delta("ledger_refusals_total", L("problem", "missing-credentials")));
        Assert.Equal(1, Delta("ledger_refusals_total", L("problem", "invalid-credentials")));
        Assert.Equal(1, Delta("ledger_refusals_total", L("problem", "run-terminal")));

        Assert.Equal(1, Delta("ledger_anomalies_total", L("kind", "late-event")));
        // Every kept refusal is also an anomaly of its own kind.
        Assert.Equal(1, Delta("ledger_anomalies_total", L("kind", "rejected")));

        // The writer's instruments: every command above was one group at least.
        Assert.True(Delta("ledger_writer_group_size_count") >= 6, after.Text);
        Assert.True(Delta("ledger_writer_commit_duration_seconds_count") >= 5, after.Text);
        Assert.True(after.Has("ledger_writer_queue_depth"), "no queue depth gauge");
        // Beside the standard meters.
        Assert.True(after.Has("http_server_request_duration_seconds_count"), "no ASP.NET Core request metrics");
        Assert.Contains(after.Samples, s => s.Name.StartsWith("dotnet_", StringComparison.Ordinal) || s.Name.StartsWith("process_runtime_dotnet", StringComparison.Ordinal));
        Assert.Contains(after.Samples, s => s.Name.StartsWith("db_client_", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(null, 401, "missing-credentials")]
    [InlineData("not-a-key", 401, "invalid-credentials")]
    [InlineData(LedgerHost.WorkerKey, 403, "forbidden")]
    public async Task without_a_read_or_admin_key_metrics_are_refused_as_problem_details_that_disclose_nothing(string? key, int status, string code)
    {
        using var http = ledger.Host.Server.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
        if (key is not null) request.Headers.Authorization = new("Bearer", key);
        using var response = await http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonNode.Parse(text)!;
        Assert.Equal(code, problem["code"]!.GetValue<string>());
        Assert.Equal($"urn:run-ledger:problem:{code}", problem["type"]!.GetValue<string>());
        Assert.DoesNotContain("ledger_", text);
        Assert.DoesNotContain("# TYPE", text);
        Assert.Null(problem["runStatus"]);
    }

    [Fact]
    public async Task metrics_take_only_get()
    {
        using var http = ledger.Host.Server.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/metrics");
        request.Headers.Authorization = new("Bearer", LedgerHost.ReadKey);
        using var response = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }
}

/// <summary>Runs by status come from the stored run documents: right after a restart, and the same on every node.</summary>
[Collection(MetricsCollection.Name)]
public sealed class RunsGaugeTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    [Fact]
    public async Task runs_by_status_equal_the_apis_counts_and_a_second_instance_sees_the_same()
    {
        var succeeded = await _api.Started(new { runId = NewRunId("metrics-ok") });
        await _api.Events(succeeded.RunId, succeeded.Token, new[] { Event("run.started"), Event("run.completed") });
        var failed = await _api.Started(new { runId = NewRunId("metrics-failed") });
        await _api.Events(failed.RunId, failed.Token, Event("run.failed", fields: new { errorClass = "timeout" }));
        await _api.Register(new { runId = NewRunId("metrics-registered") });
        var cancelled = await _api.Register(new { runId = NewRunId("metrics-cancelled") });
        Assert.Equal(HttpStatusCode.OK, (await _api.Send(HttpMethod.Post, $"/api/runs/{cancelled}/cancel", LedgerHost.AdminKey, new { reason = "not needed" })).Status);

        var scrape = await Scrape.Of(ledger.Host);
        await using var second = await ledger.SecondInstance();
        var restarted = await Scrape.Of(second, LedgerHost.AdminKey);
        foreach (var status in RunStatusRules.WireNames)
        {
            var api = await _api.Send(HttpMethod.Get, $"/api/runs?status={status}&pageSize=1", LedgerHost.ReadKey);
            var total = api.Json!["total"]!.GetValue<long>();
            Assert.True(total == scrape.Value("ledger_runs", ("status", status)), $"{status}: the API counts {total}\n{scrape.Text}");
            Assert.True(total == restarted.Value("ledger_runs", ("status", status)), $"{status}: the second instance counts differently\n{restarted.Text}");
        }
        Assert.True(scrape.Value("ledger_runs", ("status", "succeeded")) >= 1);
        Assert.True(scrape.Value("ledger_runs", ("status", "cancelled")) >= 1);
        Assert.True(scrape.Has("ledger_projection_lag"), "no projection lag gauge");
    }
}
