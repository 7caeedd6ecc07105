using System.Net;
using System.Text.Json.Nodes;
using JasperFx.Events;
using Ledger.Contract;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Ledger.Webhooks;
using Marten;
using Xunit.Abstractions;
using Microsoft.Extensions.DependencyInjection;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>
/// A lease token does not live for ever (invariant 1 as amended): after the verdict it records late
/// events only within a grace and up to a cap per run, counts the rest in one anomaly, and after the
/// grace is answered run-terminal, the refusal kept and a late completion still flagged.
/// </summary>
public sealed class LateEventTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Cap = 3;
    private static readonly TimeSpan Grace = TimeSpan.FromMinutes(10);
    private readonly LedgerHost _ledger = LedgerHost.With(new Dictionary<string, string>
    {
        ["Ledger:LateEvents:MaxPerRun"] = Cap.ToString(),
        ["Ledger:LateEvents:Grace"] = "00:10:00",
    });
    private Scenarios _api = null!;

    public async Task InitializeAsync()
    {
        await _ledger.InitializeAsync();
        _api = new Scenarios(_ledger);
    }

    public Task DisposeAsync() => _ledger.DisposeAsync();

    private async Task<JsonArray> Anomalies(string runId) =>
        (await _api.Send(HttpMethod.Get, $"/api/anomalies?runId={runId}&pageSize=500", LedgerHost.ReadKey)).Json!["items"]!.AsArray();

    private async Task<JsonArray> Rejections(string runId) =>
        (await _api.Send(HttpMethod.Get, $"/api/rejections?runId={runId}&pageSize=500", LedgerHost.ReadKey)).Json!["items"]!.AsArray();

    [Fact]
    public async Task a_thousand_late_events_record_the_cap_and_one_anomaly_counts_the_rest()
    {
        var (runId, token) = await _api.Started();
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("run.failed", fields: new { errorClass = "timeout" }))).Status);
        var version = (await _api.Run(runId))["version"]!.GetValue<long>();

        // The request: one request of 1,000 events after the verdict.
        var flood = Enumerable.Range(0, 1000).Select(i => Event("log", $"late-{i}", fields: new { lines = new[] { "x" } })).ToArray();
        var answer = await _api.Events(runId, token, flood);

        Assert.Equal(HttpStatusCode.Conflict, answer.Status);
        Assert.Equal("run-terminal", answer.ProblemCode);
        var results = answer.Json!["results"]!.AsArray();
        Assert.Equal(Cap, results.Count(r => r!["result"]!.GetValue<string>() == "recorded-not-applied"));
        Assert.Equal(1000 - Cap, results.Count(r => r!["reason"]?.GetValue<string>() == RunDecider.LateEventsCappedReason));
        // The cap's events and the one event that marks it: nothing more in the stream.
        Assert.Equal(version + Cap + 1, (await _api.Run(runId))["version"]!.GetValue<long>());
        var anomalies = await Anomalies(runId);
        Assert.Equal(Cap + 1, anomalies.Count);
        var counting = anomalies.Single(a => a!["count"] is not null)!;
        Assert.Equal(("late-event", 1000L - Cap), (counting["kind"]!.GetValue<string>(), counting["count"]!.GetValue<long>()));

        // More of them: counted in the same anomaly, not one more row.
        var more = await _api.Events(runId, token, new[] { Event("heartbeat"), Event("heartbeat") });
        Assert.Equal("run-terminal", more.ProblemCode);
        anomalies = await Anomalies(runId);
        Assert.Equal(Cap + 1, anomalies.Count);
        Assert.Equal(1000L - Cap + 2, anomalies.Single(a => a!["count"] is not null)!["count"]!.GetValue<long>());
        Assert.Equal(version + Cap + 1, (await _api.Run(runId))["version"]!.GetValue<long>());
        // Not refusals: nothing was wrong with the requests; the worker is told to stop.
        Assert.Empty(await Rejections(runId));

        // The count is kept as it comes, not derived from the events: verify still passes.
        var report = await _ledger.Verify();
        Assert.True(report.Passed, string.Join("\n", report.Differences));
    }

    [Fact]
    public async Task after_the_grace_the_token_is_answered_run_terminal_the_refusal_kept_and_a_ghost_completion_flagged()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId("ghost"), leaseSeconds = 30 });
        await _api.Events(runId, token, Event("run.started"));
        _ledger.Clock.Advance(TimeSpan.FromSeconds(45));
        await _ledger.Sweep();
        Assert.Equal("lost", (await _api.Run(runId))["status"]!.GetValue<string>());
        var kpis = await _api.Send(HttpMethod.Get, "/api/kpis", LedgerHost.ReadKey);
        var ghostsBefore = kpis.Json!["ghostTransitionsPrevented"]!.GetValue<long>();

        // Within the grace: recorded and flagged, as ever.
        var within = await _api.Events(runId, token, Event("log", fields: new { lines = new[] { "still here" } }));
        Assert.Equal("recorded-not-applied", within.Json!["results"]![0]!["result"]!.GetValue<string>());
        var version = (await _api.Run(runId))["version"]!.GetValue<long>();

        _ledger.Clock.Advance(Grace);
        var late = await _api.Events(runId, token, Event("heartbeat"));
        var ghost = await _api.Events(runId, token, Event("run.completed"));

        foreach (var refused in new[] { late, ghost })
        {
            Assert.Equal(HttpStatusCode.Conflict, refused.Status);
            Assert.Equal("run-terminal", refused.ProblemCode);
            Assert.Equal("lost", refused.RunStatus);
            Assert.Null(refused.Json!["results"]);
        }
        Assert.Equal(version, (await _api.Run(runId))["version"]!.GetValue<long>());
        Assert.Equal("lost", (await _api.Run(runId))["status"]!.GetValue<string>());
        // Both refusals kept; the completion as the ghost it is.
        Assert.Equal(2, (await Rejections(runId)).Count(r => r!["reason"]!.GetValue<string>() == "run-terminal"));
        var flagged = (await Anomalies(runId)).Where(a => a!["kind"]!.GetValue<string>() == "late-completion").ToList();
        Assert.Single(flagged);
        Assert.StartsWith("rejection:", flagged[0]!["id"]!.GetValue<string>());
        kpis = await _api.Send(HttpMethod.Get, "/api/kpis", LedgerHost.ReadKey);
        Assert.Equal(ghostsBefore + 1, kpis.Json!["ghostTransitionsPrevented"]!.GetValue<long>());
    }

    [Fact]
    public async Task the_webhook_relay_reads_a_bounded_part_of_a_long_run_per_page()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId("long"), leaseSeconds = 3600 });
        for (var i = 0; i < 2; i++)
        {
            var batch = Enumerable.Range(0, 1000).Select(_ => Event("log", fields: new { lines = new[] { "x" } })).ToArray();
            Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, batch)).Status);
        }
        await _api.Events(runId, token, Event("run.failed", fields: new { errorClass = "timeout" }));
        await _api.Events(runId, token, Event("log", fields: new { lines = new[] { "late" } }));

        var store = _ledger.Host.Services.GetRequiredService<IDocumentStore>();
        var relay = new WebhookRelay();
        relay.ReadRunsWith(() => _ledger.Host.Services.GetRequiredService<RunHistoryReader>());
        await using var session = store.QuerySession();
        var stream = await session.Events.FetchStreamAsync(runId);
        var lastPage = stream.TakeLast(3).ToList(); // the failure, its verdict and the late event

        var cold = await relay.AroundAsync(runId, lastPage, CancellationToken.None);
        var warm = await relay.AroundAsync(runId, lastPage, CancellationToken.None);

        // The same states whole-stream aggregation gives (the relay's way before), from a bounded read.
        var before = await session.Events.AggregateStreamAsync<Run>(runId, version: lastPage[0].Version - 1);
        var after = await session.Events.AggregateStreamAsync<Run>(runId, version: lastPage[^1].Version);
        Assert.Equal(DeciderKit.Json(before), DeciderKit.Json(cold.Before));
        Assert.Equal(DeciderKit.Json(after), DeciderKit.Json(cold.After));
        Assert.Equal(DeciderKit.Json(after), DeciderKit.Json(warm.After));
        Assert.Equal(cold.After!.Anomalies.Count - 1, cold.Before!.Anomalies.Count);
        // The first read of the run refolds it once (storing its snapshots); later pages read at most a snapshot interval.
        var every = _ledger.Host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<HistoryOptions>>().Value.SnapshotEvery;
        var whole = lastPage[0].Version - 1 + lastPage[^1].Version;
        output.WriteLine($"a page of 3 events at version {lastPage[^1].Version}: the first read of the run refolded {cold.Read} events, " +
                         $"a later one {warm.Read}; aggregating the stream up to the page's first and last events reads {whole}");
        Assert.True(warm.Read <= every, $"a page read {warm.Read} events; the whole-stream reads would have read {whole}");
        Assert.True(whole > 8 * every, $"the run is too short to show the difference: {whole}");
    }
}
