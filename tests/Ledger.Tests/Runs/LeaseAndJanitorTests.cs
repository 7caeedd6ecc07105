using System.Net;
using Ledger.Runs;
using Marten;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Ledger.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>Seed 001 made impossible: lost stays lost, and the worker is told to stop.</summary>
public sealed class LeaseAndJanitorTests(LedgerHost ledger, ITestOutputHelper output) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    /// <summary>
    /// Decides every run that other tests of this class left with a lease (the clock moves past
    /// the longest lease), so that a sweep afterwards sees exactly the runs of the test at hand.
    /// </summary>
    private async Task DecideLeftovers()
    {
        ledger.Clock.Advance(TimeSpan.FromDays(2));
        await ledger.Sweep();
        Assert.Equal(new Janitor.SweepResult(0, 0, 0), await ledger.Sweep());
    }

    /// <summary>A janitor without grace, so that its decision and the lease check meet at the same instant.</summary>
    private Janitor JanitorWithoutGrace(IServiceProvider services) =>
        new(services.GetRequiredService<IDocumentStore>(), services.GetRequiredService<RunWriter>(),
            ledger.Clock, Options.Create(new JanitorOptions { GraceSeconds = 0 }), NullLogger<Janitor>.Instance);

    /// <summary>
    /// One run raced by a completion and a janitor: exactly one terminal verdict, never
    /// lost -> succeeded, and the side that lost is told so. <paramref name="markedLost"/> is how
    /// many runs the janitor reported lost, when this run was the only one it could see.
    /// Returns the run's status.
    /// </summary>
    private async Task<string> AssertOneVerdict(Scenarios api, string runId, Response completion, int? markedLost)
    {
        var run = await api.Run(runId);
        var status = run["status"]!.GetValue<string>();
        Assert.True(status is "succeeded" or "lost", $"{runId}: {status}");
        var verdicts = run["verdicts"]!.AsArray();
        Assert.Equal([status], verdicts.Select(v => v!["status"]!.GetValue<string>()));
        var history = (await api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.AdminKey)).Json!["events"]!.AsArray();
        var expiries = history.Count(e => e!["type"]!.GetValue<string>() == "lease.expired");
        if (status == "succeeded")
        {
            // The completion won: the janitor marked nothing and appended nothing.
            Assert.True(completion.Status == HttpStatusCode.OK, $"{runId} succeeded but the completion was answered {completion.Code}: {completion.Text}");
            Assert.Equal("succeeded", completion.RunStatus);
            if (markedLost is not null) Assert.Equal(0, markedLost);
            Assert.Equal(0, expiries);
        }
        else
        {
            // The janitor won: marked once, and the completion refused, not retryable.
            if (markedLost is not null) Assert.Equal(1, markedLost);
            Assert.Equal(1, expiries);
            Assert.True(completion.Status == HttpStatusCode.Conflict, $"{runId} lost but the completion was answered {completion.Code}: {completion.Text}");
            Assert.Equal(false, completion.Retryable);
            switch (completion.ProblemCode)
            {
                case "lease-expired": // checked before the janitor's verdict: nothing recorded
                    Assert.Equal("claimed", completion.RunStatus);
                    Assert.DoesNotContain(history, e => e!["type"]!.GetValue<string>() == "run.completed");
                    break;
                case "run-terminal": // after it: recorded as a late completion, never applied
                    Assert.Equal("lost", completion.RunStatus);
                    Assert.Equal("late-completion", completion.Json!["results"]![0]!["reason"]!.GetValue<string>());
                    var late = history.Single(e => e!["type"]!.GetValue<string>() == "run.completed")!;
                    Assert.Equal("recorded-not-applied", late["result"]!.GetValue<string>());
                    Assert.Equal("lost", late["statusAfter"]!.GetValue<string>());
                    break;
                default:
                    Assert.Fail($"{runId} lost, and the completion got {completion.ProblemCode}: {completion.Text}");
                    break;
            }
        }
        Assert.DoesNotContain(history, e => e!["statusAfter"]!.GetValue<string>() == (status == "lost" ? "succeeded" : "lost"));
        return status;
    }

    [Fact]
    public async Task seed_001_a_backdated_completion_45_minutes_after_loss_is_refused_and_the_run_stays_lost()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId("lightning"), leaseSeconds = 60 });
        var workflowFinished = _api.Now;
        await _api.Events(runId, token, Event("step.started", fields: new { stepId = "step-1" }));

        // 03:00: step:complete without its step id. Refused, not retryable: the worker must stop retrying.
        var blank = await _api.Events(runId, token, Event("step.completed", fields: new { outcome = "success" }));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, blank.Status);
        Assert.False(blank.Retryable);

        // 04:05: the lease has long expired without a heartbeat; the janitor marks the run lost.
        ledger.Clock.Advance(TimeSpan.FromMinutes(65));
        await ledger.Sweep();
        var lost = await _api.Run(runId);
        Assert.Equal("lost", lost["status"]!.GetValue<string>());
        Assert.Equal("lease-expired", lost["reason"]!.GetValue<string>());

        // 04:45: the ghost worker sends run:complete, backdated to when the workflow finished.
        ledger.Clock.Advance(TimeSpan.FromMinutes(45));
        var ghost = await _api.Events(runId, token, Event("run.completed", "ghost-completion", workflowFinished));
        Assert.Equal(HttpStatusCode.Conflict, ghost.Status);
        Assert.Equal("run-terminal", ghost.ProblemCode);
        Assert.False(ghost.Retryable);
        Assert.Equal("lost", ghost.RunStatus);
        Assert.Equal("late-completion", ghost.Json!["results"]![0]!["reason"]!.GetValue<string>());

        var run = await _api.Run(runId);
        Assert.Equal("lost", run["status"]!.GetValue<string>());
        var anomaly = run["anomalies"]!.AsArray().Single(a => a!["kind"]!.GetValue<string>() == "late-completion")!;
        Assert.Equal("ghost-completion", anomaly["eventId"]!.GetValue<string>());
        Assert.Contains(workflowFinished.ToString("yyyy-MM-ddTHH:mm"), anomaly["detail"]!.GetValue<string>());

        var history = (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.AdminKey)).Json!["events"]!.AsArray();
        var late = history.Single(e => e!["eventId"]?.GetValue<string>() == "ghost-completion")!;
        Assert.Equal("recorded-not-applied", late["result"]!.GetValue<string>());
        Assert.Equal("late-completion", late["reason"]!.GetValue<string>());
        Assert.Equal(workflowFinished, late["occurredAt"]!.GetValue<DateTimeOffset>());
        Assert.Equal("lost", late["statusAfter"]!.GetValue<string>());
        Assert.DoesNotContain(history, e => e!["statusAfter"]!.GetValue<string>() == "succeeded");
    }

    [Fact]
    public async Task the_janitor_leaves_a_heartbeating_run_alone_and_respects_the_grace()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId(), leaseSeconds = 30 });
        ledger.Clock.Advance(TimeSpan.FromSeconds(25));
        await _api.Events(runId, token, Event("heartbeat"));
        ledger.Clock.Advance(TimeSpan.FromSeconds(25));
        await ledger.Sweep();
        Assert.Equal("claimed", (await _api.Run(runId))["status"]!.GetValue<string>());

        ledger.Clock.Advance(TimeSpan.FromSeconds(10)); // expired 5 s ago: within the 10 s grace
        await ledger.Sweep();
        Assert.Equal("claimed", (await _api.Run(runId))["status"]!.GetValue<string>());

        ledger.Clock.Advance(TimeSpan.FromSeconds(10));
        await ledger.Sweep();
        Assert.Equal("lost", (await _api.Run(runId))["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task a_completion_whose_results_never_arrive_fails_with_incomplete_results_at_lease_expiry()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId(), leaseSeconds = 30, requiredScores = new[] { "accuracy" }, expectedItems = 100 });
        await _api.Events(runId, token, new[]
        {
            Event("items.committed", fields: new { chunkId = "c1", count = 50 }),
            Event("run.completed"),
        });
        ledger.Clock.Advance(TimeSpan.FromSeconds(45));
        await ledger.Sweep();

        var run = await _api.Run(runId);
        Assert.Equal("failed", run["status"]!.GetValue<string>());
        Assert.Equal("incomplete-results", run["reason"]!.GetValue<string>());
        Assert.Equal(["score:accuracy", "items:50"], run["missing"]!.AsArray().Select(m => m!.GetValue<string>()));
    }

    [Fact]
    public async Task a_completion_racing_the_janitor_yields_exactly_one_terminal_status()
    {
        await DecideLeftovers();
        var janitor = JanitorWithoutGrace(ledger.Host.Services);
        var outcomes = new Dictionary<string, int>();
        for (var round = 0; round < 20; round++)
        {
            var (runId, token) = await _api.Started(new { runId = NewRunId("race"), leaseSeconds = 5 });
            // Put the clock at the edge of expiry: every clock read moves it on by 1 ms.
            ledger.Clock.Advance(TimeSpan.FromSeconds(5) - TimeSpan.FromMilliseconds(Random.Shared.Next(0, 4)));

            var completion = _api.Events(runId, token, Event("run.completed", $"done-{round}"));
            var sweep = janitor.SweepAsync(CancellationToken.None);
            var response = await completion;
            var first = await sweep;
            var second = await janitor.SweepAsync(CancellationToken.None); // whatever was left undecided is decided now
            Assert.Equal(0, first.Failed + second.Failed);

            var status = await AssertOneVerdict(_api, runId, response, first.Lost + second.Lost);
            outcomes[status] = outcomes.GetValueOrDefault(status) + 1;
        }
        Assert.Equal(20, outcomes.Values.Sum());
        output.WriteLine("outcomes: " + string.Join(", ", outcomes.OrderBy(o => o.Key).Select(o => $"{o.Key} {o.Value}")));
    }

    [Fact]
    public async Task a_completion_through_one_instance_racing_the_janitor_of_another_yields_exactly_one_terminal_status()
    {
        // Two replicas on one database and one clock: A sweeps, the worker talks to B.
        await DecideLeftovers();
        await using var instanceB = await ledger.SecondInstance();
        var worker = new Scenarios(ledger, instanceB);
        var janitorA = JanitorWithoutGrace(ledger.Host.Services);
        const int rounds = 15, runsPerRound = 4;
        var outcomes = new Dictionary<string, int>();
        for (var round = 0; round < rounds; round++)
        {
            var started = new List<(string RunId, string Token)>();
            for (var i = 0; i < runsPerRound; i++) started.Add(await worker.Started(new { runId = NewRunId($"twin-race-{round}"), leaseSeconds = 5 }));
            ledger.Clock.Advance(TimeSpan.FromSeconds(5) - TimeSpan.FromMilliseconds(Random.Shared.Next(0, 4 * runsPerRound)));

            var completions = started.Select((r, i) => worker.Events(r.RunId, r.Token, Event("run.completed", $"done-{round}-{i}"))).ToList();
            var sweep = janitorA.SweepAsync(CancellationToken.None);
            var responses = await Task.WhenAll(completions);
            var first = await sweep;
            var second = await janitorA.SweepAsync(CancellationToken.None);
            Assert.Equal(0, first.Failed + second.Failed);

            var lost = 0;
            for (var i = 0; i < runsPerRound; i++)
            {
                // Read through A: the verdict is in the shared database, whichever instance wrote it.
                var status = await AssertOneVerdict(_api, started[i].RunId, responses[i], markedLost: null);
                outcomes[status] = outcomes.GetValueOrDefault(status) + 1;
                if (status == "lost") lost++;
            }
            // A's janitor reported exactly the runs that ended lost (each has one lease.expired).
            Assert.Equal(lost, first.Lost + second.Lost);
        }
        Assert.Equal(rounds * runsPerRound, outcomes.Values.Sum());
        output.WriteLine("outcomes: " + string.Join(", ", outcomes.OrderBy(o => o.Key).Select(o => $"{o.Key} {o.Value}")));
        var report = await ledger.Verify();
        Assert.True(report.Passed, string.Join("\n", report.Differences));
    }

    [Fact]
    public async Task two_janitors_on_two_hosts_mark_each_expired_run_exactly_once()
    {
        await DecideLeftovers();
        var runs = new List<string>();
        for (var i = 0; i < 30; i++) runs.Add((await _api.Started(new { runId = NewRunId("twin"), leaseSeconds = 5 })).RunId);
        ledger.Clock.Advance(TimeSpan.FromSeconds(30));

        await using var second = await ledger.SecondInstance();
        var janitors = new[] { ledger.Host.Services.GetRequiredService<Janitor>(), second.Services.GetRequiredService<Janitor>() };

        var results = await Task.WhenAll(janitors.Select(j => j.SweepAsync(CancellationToken.None)));
        Assert.True(results.Sum(r => r.Lost) == runs.Count, $"marked {results.Sum(r => r.Lost)} of {runs.Count}");
        Assert.Equal(0, results.Sum(r => r.Failed));

        foreach (var runId in runs)
        {
            var run = await _api.Run(runId);
            Assert.Equal("lost", run["status"]!.GetValue<string>());
            var history = (await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.AdminKey)).Json!["events"]!.AsArray();
            Assert.Equal(1, history.Count(e => e!["type"]!.GetValue<string>() == "lease.expired"));
        }
    }

    [Theory]
    [InlineData("heartbeat")]
    [InlineData("log")]
    [InlineData("run.completed")]
    [InlineData("run.failed")]
    [InlineData("step.started")]
    public async Task every_worker_event_is_checked_against_the_lease(string type)
    {
        object fields = type switch
        {
            "log" => new { lines = new[] { "x" } },
            "run.failed" => new { errorClass = "timeout" },
            "step.started" => new { stepId = "s" },
            _ => new { },
        };
        var (runId, token) = await _api.Started(new { runId = NewRunId(), leaseSeconds = 30 });
        var (_, foreign) = await _api.Started();

        Assert.Equal(HttpStatusCode.Unauthorized, (await _api.Events(runId, null, Event(type, fields: fields))).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await _api.Events(runId, "lt_forged", Event(type, fields: fields))).Status);
        Assert.Equal(HttpStatusCode.Forbidden, (await _api.Events(runId, foreign, Event(type, fields: fields))).Status);
        ledger.Clock.Advance(TimeSpan.FromSeconds(31));
        var expired = await _api.Events(runId, token, Event(type, fields: fields));
        Assert.Equal(HttpStatusCode.Conflict, expired.Status);
        Assert.Equal("lease-expired", expired.ProblemCode);
        Assert.Equal(2, (await _api.Run(runId))["version"]!.GetValue<long>());
    }

    [Fact]
    public async Task an_operator_reclassification_is_audited_and_keeps_the_earlier_verdict()
    {
        var (runId, token) = await _api.Started(new { runId = NewRunId(), leaseSeconds = 5 });
        ledger.Clock.Advance(TimeSpan.FromSeconds(30));
        await ledger.Sweep();
        await _api.Events(runId, token, Event("run.completed", "late-done"));

        var byWorker = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/reclassify", token,
            new { status = "succeeded", reason = "worker says so", evidence = new[] { "late-done" } });
        Assert.Equal(HttpStatusCode.Unauthorized, byWorker.Status);

        var missingEvidence = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/reclassify", LedgerHost.AdminKey,
            new { status = "failed", reason = "no evidence" });
        Assert.Equal(HttpStatusCode.UnprocessableEntity, missingEvidence.Status);

        var reclassified = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/reclassify", LedgerHost.AdminKey,
            new { status = "failed", reason = "worker crashed, see late completion", evidence = new[] { "late-done" }, @operator = "alice" });
        Assert.Equal(HttpStatusCode.OK, reclassified.Status);

        var run = await _api.Run(runId);
        Assert.Equal("failed", run["status"]!.GetValue<string>());
        var verdicts = run["verdicts"]!.AsArray();
        Assert.Equal(["lost", "failed"], verdicts.Select(v => v!["status"]!.GetValue<string>()));
        Assert.Equal("ledger", verdicts[0]!["decidedBy"]!.GetValue<string>());
        Assert.Equal("operator:alice", verdicts[1]!["decidedBy"]!.GetValue<string>());
        Assert.Equal(["late-done"], verdicts[1]!["evidence"]!.AsArray().Select(e => e!.GetValue<string>()));

        // Succeeded means complete, even by an operator: the late completion was never applied.
        var toSuccess = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/reclassify", LedgerHost.AdminKey,
            new { status = "succeeded", reason = "trust me", evidence = new[] { "late-done" } });
        Assert.Equal(HttpStatusCode.Conflict, toSuccess.Status);
        Assert.Equal("incomplete-results", toSuccess.ProblemCode);

        var live = await _api.Register();
        var notTerminal = await _api.Send(HttpMethod.Post, $"/api/runs/{live}/reclassify", LedgerHost.AdminKey,
            new { status = "failed", reason = "r", evidence = new[] { "e" } });
        Assert.Equal("run-not-terminal", notTerminal.ProblemCode);

        // Worker events still cannot move it.
        var late = await _api.Events(runId, token, Event("run.failed", fields: new { errorClass = "unknown" }));
        Assert.Equal("run-terminal", late.ProblemCode);
        Assert.Equal("failed", (await _api.Run(runId))["status"]!.GetValue<string>());
    }
}
