using System.Diagnostics;
using System.Net;
using Ledger.Client;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.WorkerClient;

/// <summary>
/// The .NET worker client against the real ledger (in process, on PostgreSQL): the contract of
/// issue 15 item 2, seen from the worker's side.
/// </summary>
public sealed class LedgerClientTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    /// <summary>How late Stopped may fire after the ledger decided, beyond one heartbeat: the request itself on a busy 2-core machine.</summary>
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task a_run_is_driven_to_succeeded_through_the_client()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMilliseconds(200));
        var client = harness.Client;
        var runId = await client.RegisterAsync(new RunRegistration
        {
            RequiredScores = ["accuracy"], RequiredOutputs = ["predictions"], ExpectedItems = 100, LeaseSeconds = 60,
        });

        await using (var run = await client.ClaimAsync(runId, "host-17"))
        {
            await run.StepAsync("score", async ct =>
            {
                await run.CommitItemsAsync("chunk-1", 60, ct);
                await run.CommitItemsAsync("chunk-2", 40, ct);
            });
            await using (var upload = await run.StepAsync("upload"))
            {
                await run.RecordOutputAsync("predictions", "s3://bucket/run/predictions.csv", bytes: 1234);
            }
            await run.ReportScoresAsync(new Dictionary<string, double> { ["accuracy"] = 0.93 });
            await run.LogAsync("all done");
            Assert.Empty(run.MissingRequirements);
            var done = await run.CompleteAsync(itemsTotal: 100);

            Assert.Equal("succeeded", done.Status);
            Assert.Equal([EventResults.Applied], done.Results.Select(r => r.Result));
            // The run is over: the session says so, and the next call throws instead of writing a late event.
            Assert.True(run.Stopped.IsCancellationRequested);
            var after = await Assert.ThrowsAsync<RunTerminatedException>(() => run.LogAsync("one more"));
            Assert.Equal("succeeded", after.RunStatus);
        }

        var state = await client.GetRunAsync(runId);
        Assert.Equal("succeeded", state.Status);
        Assert.Equal(0.93, state.Scores["accuracy"]);
        Assert.Empty(state.Missing);
        var steps = state.Json.GetProperty("steps").EnumerateArray()
            .Select(s => (Name: s.GetProperty("name").GetString(), Completed: s.GetProperty("completed").GetBoolean(),
                Outcome: s.GetProperty("outcome").GetString()))
            .ToList();
        Assert.Equal([("score", true, "ok"), ("upload", true, "ok")], steps);

        // Every step event carried the step id the client generated, and started/completed agree.
        var started = harness.Tap.Events("step.started").Select(s => s.Field("stepId")).ToList();
        var completed = harness.Tap.Events("step.completed").Select(s => s.Field("stepId")).ToList();
        Assert.Equal(2, started.Count);
        Assert.All(started, id => Assert.False(string.IsNullOrEmpty(id)));
        Assert.Equal(started, completed);
        // Nothing late was written after the verdict.
        Assert.DoesNotContain(harness.Tap.Requests, r => r.Body.Contains("one more"));
    }

    [Fact]
    public async Task a_step_that_throws_is_completed_as_failed_and_the_exception_reaches_the_worker()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromSeconds(5));
        var runId = await harness.Client.RegisterAsync();
        await using var run = await harness.Client.ClaimAsync(runId);

        var thrown = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            run.StepAsync("explode", _ => throw new InvalidOperationException("the model crashed")));
        Assert.Equal("the model crashed", thrown.Message);

        var step = (await harness.Client.GetRunAsync(runId)).Json.GetProperty("steps").EnumerateArray().Single();
        Assert.Equal("explode", step.GetProperty("name").GetString());
        Assert.True(step.GetProperty("completed").GetBoolean());
        Assert.Equal("failed", step.GetProperty("outcome").GetString());
    }

    [Fact]
    public async Task cancel_stops_the_session_within_one_heartbeat_and_every_later_call_throws()
    {
        var beat = TimeSpan.FromMilliseconds(500);
        await using var harness = new ClientHarness(ledger.Host, heartbeat: beat);
        var runId = await harness.Client.RegisterAsync();
        await using var run = await harness.Client.ClaimAsync(runId);
        await run.StartedAsync();
        var stopped = StoppedSignal(run);

        var before = harness.Tap.Events("heartbeat").Count;
        await harness.Client.CancelAsync(runId, "operator changed their mind");
        Assert.True(await Task.WhenAny(stopped, Task.Delay(Patience)) == stopped, "Stopped did not fire after the cancel");
        // Counted in heartbeats, not milliseconds (a loaded machine delays both alike): the first
        // heartbeat after the cancel stopped it; one more may have been on its way when the cancel was recorded.
        Assert.InRange(harness.Tap.Events("heartbeat").Count - before, 1, 2);
        Assert.Equal("cancelled", run.Termination!.RunStatus);
        Assert.Equal(ProblemCodes.RunTerminal, run.Termination.Code);

        var late = await Assert.ThrowsAsync<RunTerminatedException>(() => run.CommitItemsAsync("chunk-late", 1));
        Assert.Equal("cancelled", late.RunStatus);
        await Assert.ThrowsAsync<RunTerminatedException>(() => run.StepAsync("too-late"));
        await Assert.ThrowsAsync<RunTerminatedException>(() => run.CompleteAsync(force: true));
        Assert.Empty(harness.Tap.Events("items.committed"));
        Assert.Empty(harness.Tap.Events("run.completed"));

        // The heartbeat loop ended with the stop.
        await run.HeartbeatLoop.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task janitor_lost_stops_the_session_within_one_heartbeat()
    {
        var beat = TimeSpan.FromMilliseconds(500);
        await using var harness = new ClientHarness(ledger.Host, heartbeat: beat);
        var runId = await harness.Client.RegisterAsync(new RunRegistration { LeaseSeconds = 30 });

        // Heartbeats are paused: the worker is alive but its beats do not reach the ledger.
        var resume = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        harness.Tap.Intercept = async (sent, forward, ct) =>
        {
            if (sent.EventType == "heartbeat") await resume.Task.WaitAsync(ct);
            return await forward();
        };
        await using var run = await harness.Client.ClaimAsync(runId);
        await run.StartedAsync();
        var stopped = StoppedSignal(run);

        ledger.Clock.Advance(TimeSpan.FromSeconds(30 + 10 + 1)); // lease and grace
        await ledger.Sweep();
        Assert.Equal("lost", (await harness.Client.GetRunAsync(runId)).Status);
        Assert.False(run.Stopped.IsCancellationRequested);

        var held = harness.Tap.Events("heartbeat").Count;
        resume.SetResult();
        Assert.True(await Task.WhenAny(stopped, Task.Delay(Patience)) == stopped, "Stopped did not fire after heartbeats resumed");
        // The first heartbeat to reach the ledger after the loss (the one held back, if one was due yet) stopped it: no later one was sent.
        Assert.Equal(Math.Max(held, 1), harness.Tap.Events("heartbeat").Count);
        Assert.Equal("lost", run.Termination!.RunStatus);
        await Assert.ThrowsAsync<RunTerminatedException>(() => run.CompleteAsync(force: true));
        Assert.Empty(harness.Tap.Events("run.completed"));
        await run.HeartbeatLoop.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task a_refused_payload_throws_at_once_with_no_retry()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMinutes(5));
        var runId = await harness.Client.RegisterAsync();
        await using var run = await harness.Client.ClaimAsync(runId);

        var refused = await Assert.ThrowsAsync<LedgerRefusedException>(() => run.FailAsync("out-of-memory", "the worker died"));

        Assert.Equal("urn:run-ledger:problem:invalid-payload", refused.Type);
        Assert.Equal(ProblemCodes.InvalidPayload, refused.Code);
        Assert.Equal(422, refused.Status);
        Assert.Equal("claimed", refused.RunStatus);
        Assert.Equal(["errorClass"], refused.Errors.Keys);
        Assert.Contains("timeout", refused.Allowed);
        Assert.False(refused.Problem.Retryable);
        Assert.Single(harness.Tap.Events("run.failed"));
        // A refusal of a request is not the end of the run: the worker may fix the request.
        Assert.False(run.Stopped.IsCancellationRequested);
        var failed = await run.FailAsync(ErrorClasses.Infrastructure, "the worker died");
        Assert.Equal("failed", failed.Status);
    }

    [Fact]
    public async Task a_refusal_of_a_registration_is_not_retried_either()
    {
        await using var harness = new ClientHarness(ledger.Host);
        var refused = await Assert.ThrowsAsync<LedgerRefusedException>(() =>
            harness.Client.RegisterAsync(new RunRegistration { Board = "no-such-board", Participant = "team-a" }));
        Assert.Equal(422, refused.Status);
        Assert.Equal(["board"], refused.Errors.Keys);
        Assert.Single(harness.Tap.Requests, r => r.Path == "/api/runs");
    }

    [Fact]
    public async Task a_503_is_retried_honouring_retry_after_and_the_event_is_recorded_exactly_once()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMinutes(5));
        var runId = await harness.Client.RegisterAsync();
        await using var run = await harness.Client.ClaimAsync(runId);

        var attempts = 0;
        harness.Tap.Intercept = async (sent, forward, ct) =>
        {
            if (sent.EventType != "items.committed") return await forward();
            switch (Interlocked.Increment(ref attempts))
            {
                case 1: // refused before the commit: nothing recorded
                    return WireTap.Unavailable(retryAfterSeconds: 1);
                case 2: // the database failed during the commit: it was recorded, the answer is a 503
                    (await forward()).Dispose();
                    return WireTap.Unavailable(retryAfterSeconds: 0);
                default:
                    return await forward();
            }
        };

        var answer = await run.CommitItemsAsync("chunk-1", 25);

        var sent = harness.Tap.Events("items.committed");
        Assert.Equal(3, sent.Count);
        Assert.Single(sent.Select(s => s.EventId).Distinct());
        Assert.Single(sent.Select(s => s.Body).Distinct()); // the same request every time, occurredAt included
        Assert.True(sent[1].At - sent[0].At >= TimeSpan.FromMilliseconds(950), "Retry-After: 1 was not honoured");
        Assert.Equal(EventResults.Duplicate, answer.Results.Single().Result);

        var history = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.AdminKey);
        var committed = history.Json!["events"]!.AsArray().Where(e => e!["type"]!.GetValue<string>() == "items.committed").ToList();
        Assert.Single(committed);
        Assert.Equal(25, (await harness.Client.GetRunAsync(runId)).Json.GetProperty("items").GetProperty("committed").GetInt64());
    }

    [Fact]
    public async Task an_attempt_that_times_out_is_retried_and_the_event_recorded_once()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMinutes(5),
            // Long enough for the real attempt on a loaded machine (a second timeout would make a third attempt).
            resilience: r => r.AttemptTimeout = TimeSpan.FromSeconds(5));
        var runId = await harness.Client.RegisterAsync(new RunRegistration { RequiredScores = ["accuracy"] });
        await using var run = await harness.Client.ClaimAsync(runId);

        var attempts = 0;
        harness.Tap.Intercept = async (sent, forward, ct) =>
        {
            if (sent.EventType == "scores.reported" && Interlocked.Increment(ref attempts) == 1)
            {
                await Task.Delay(TimeSpan.FromSeconds(30), ct); // a hung connection: the attempt timeout cuts it
            }
            return await forward();
        };

        var answer = await run.ReportScoresAsync(new Dictionary<string, double> { ["accuracy"] = 0.5 });

        Assert.Equal(EventResults.Applied, answer.Results.Single().Result);
        Assert.Equal(2, harness.Tap.Events("scores.reported").Select(s => s.EventId).Count());
        Assert.Single(harness.Tap.Events("scores.reported").Select(s => s.EventId).Distinct());
        Assert.Equal(0.5, (await harness.Client.GetRunAsync(runId)).Scores["accuracy"]);
    }

    [Fact]
    public async Task an_open_circuit_is_waited_out_and_retried()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMinutes(5), resilience: r =>
        {
            r.BreakerMinimumThroughput = 2;
            r.BreakerFailureRatio = 0.5;
            r.BreakerBreakDuration = TimeSpan.FromMilliseconds(700);
            r.MaxRetryAttempts = 40; // backoff of at most 200 ms: enough attempts to outlast the break
        });
        var runId = await harness.Client.RegisterAsync();
        await using var run = await harness.Client.ClaimAsync(runId);

        var attempts = 0;
        harness.Tap.Intercept = async (sent, forward, ct) =>
            sent.EventType == "log" && Interlocked.Increment(ref attempts) <= 2 ? WireTap.Unavailable() : await forward();

        var clock = Stopwatch.StartNew();
        var answer = await run.LogAsync("through the breaker");

        Assert.Equal(EventResults.Applied, answer.Results.Single().Result);
        // The breaker opened after the failures and rejected attempts without sending them until it half-opened.
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(650), $"answered after {clock.Elapsed}, before the break ended");
        // Two 503s opened it; the rejections in between never reached the ledger; the half-open attempt went through.
        Assert.Equal(3, harness.Tap.Events("log").Count);
        Assert.Single(harness.Tap.Events("log").Select(s => s.EventId).Distinct());
    }

    [Fact]
    public async Task the_heartbeat_loop_ends_with_the_session()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMilliseconds(100));
        var runId = await harness.Client.RegisterAsync(new RunRegistration { LeaseSeconds = 30 });
        var run = await harness.Client.ClaimAsync(runId);

        await WaitUntil(() => harness.Tap.Events("heartbeat").Count >= 3, TimeSpan.FromSeconds(10));
        Assert.All(harness.Tap.Events("heartbeat").GroupBy(h => h.EventId), g => Assert.Single(g));
        await run.DisposeAsync();

        Assert.True(run.HeartbeatLoop.IsCompleted);
        var beats = harness.Tap.Events("heartbeat").Count;
        await Task.Delay(TimeSpan.FromMilliseconds(500));
        Assert.Equal(beats, harness.Tap.Events("heartbeat").Count);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => run.LogAsync("after dispose"));
        // The ledger saw the beats: the lease was extended by them.
        Assert.Equal("claimed", (await harness.Client.GetRunAsync(runId)).Status);
    }

    [Fact]
    public async Task a_lease_taken_over_by_another_claim_stops_the_first_session()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMinutes(5));
        var runId = await harness.Client.RegisterAsync(new RunRegistration { LeaseSeconds = 10 });
        await using var first = await harness.Client.ClaimAsync(runId, "worker-a");
        ledger.Clock.Advance(TimeSpan.FromSeconds(11));
        await using var second = await harness.Client.ClaimAsync(runId, "worker-b");

        var ended = await Assert.ThrowsAsync<RunTerminatedException>(() => first.CommitItemsAsync("chunk-1", 1));
        Assert.Equal(ProblemCodes.LeaseLost, ended.Code);
        Assert.True(first.Stopped.IsCancellationRequested);
        Assert.False(second.Stopped.IsCancellationRequested);
        await second.CommitItemsAsync("chunk-1", 1);
    }

    [Fact]
    public async Task an_expired_lease_stops_the_session_at_the_next_call()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMinutes(5)); // no beat in time
        var runId = await harness.Client.RegisterAsync(new RunRegistration { LeaseSeconds = 10 });
        await using var run = await harness.Client.ClaimAsync(runId);
        ledger.Clock.Advance(TimeSpan.FromSeconds(11));

        var ended = await Assert.ThrowsAsync<RunTerminatedException>(() => run.ReportScoresAsync(new Dictionary<string, double> { ["x"] = 1 }));

        Assert.Equal(ProblemCodes.LeaseExpired, ended.Code);
        Assert.True(run.Stopped.IsCancellationRequested);
        Assert.Single(harness.Tap.Events("scores.reported")); // refused, not retried
        await Assert.ThrowsAsync<RunTerminatedException>(() => run.CompleteAsync(force: true));
        Assert.Empty(harness.Tap.Events("run.completed"));
        await run.HeartbeatLoop.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task complete_throws_locally_while_the_requirements_the_claim_names_are_unacknowledged()
    {
        // The claim answer is given the requirements as the server side of item 3 will send them, so that the
        // client's own check is proven today (the test below proves it against the ledger's real answer).
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMinutes(5));
        var runId = await harness.Client.RegisterAsync(new RunRegistration { RequiredScores = ["accuracy", "f1"], RequiredOutputs = ["predictions"] });
        harness.Tap.Intercept = async (sent, forward, ct) =>
        {
            var response = await forward();
            if (!sent.Path.EndsWith("/claim") || response.StatusCode != HttpStatusCode.OK) return response;
            var lease = System.Text.Json.Nodes.JsonNode.Parse(await response.Content.ReadAsStringAsync(ct))!.AsObject();
            lease["requiredScores"] = new System.Text.Json.Nodes.JsonArray("accuracy", "f1");
            lease["requiredOutputs"] = new System.Text.Json.Nodes.JsonArray("predictions");
            response.Content = new StringContent(lease.ToJsonString(), System.Text.Encoding.UTF8, "application/json");
            return response;
        };
        await using var run = await harness.Client.ClaimAsync(runId);
        Assert.True(run.Requirements.Known);

        var early = await Assert.ThrowsAsync<RequirementsNotMetException>(() => run.CompleteAsync());
        Assert.Equal(["score:accuracy", "score:f1", "output:predictions"], early.Missing);
        // A score the ledger refused is not acknowledged.
        await Assert.ThrowsAsync<LedgerRefusedException>(() => run.ReportScoresAsync(new Dictionary<string, double> { ["accuracy"] = 0.8, ["bleu"] = 1 }));
        Assert.Equal(["score:accuracy", "score:f1", "output:predictions"], run.MissingRequirements);
        await run.ReportScoresAsync(new Dictionary<string, double> { ["accuracy"] = 0.8, ["f1"] = 0.7 });
        await run.RecordOutputAsync("predictions", "s3://bucket/p.csv", bytes: 0);
        Assert.Empty(harness.Tap.Events("run.completed")); // nothing was sent while they were missing

        var done = await run.CompleteAsync();
        Assert.Equal("succeeded", done.Status);
        Assert.Equal(["empty-output"], (await harness.Client.GetRunAsync(runId)).Warnings);
    }

    // ---- Needs the server side of issue 15 item 3 (claim answers requirements; claimId; same registration again). ----

    [Fact]
    public async Task complete_throws_locally_while_a_required_score_is_unacknowledged()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMinutes(5));
        var runId = await harness.Client.RegisterAsync(new RunRegistration
        {
            RequiredScores = ["accuracy"], RequiredOutputs = ["predictions"], ExpectedItems = 10,
        });
        await using var run = await harness.Client.ClaimAsync(runId);

        // Until the ledger's claim answer carries requiredScores/requiredOutputs/expectedItems, this fails here.
        Assert.True(run.Requirements.Known, "the claim answer did not carry the run's requirements (server side of issue 15 item 3)");
        Assert.Equal(["accuracy"], run.Requirements.Scores);
        Assert.Equal(["predictions"], run.Requirements.Outputs);
        Assert.Equal(10, run.Requirements.ExpectedItems);

        await run.CommitItemsAsync("chunk-1", 10);
        var early = await Assert.ThrowsAsync<RequirementsNotMetException>(() => run.CompleteAsync(itemsTotal: 10));
        Assert.Equal(["score:accuracy", "output:predictions"], early.Missing);
        Assert.Empty(harness.Tap.Events("run.completed")); // nothing was sent

        await run.ReportScoresAsync(new Dictionary<string, double> { ["accuracy"] = 0.7 });
        Assert.Equal(["output:predictions"], (await Assert.ThrowsAsync<RequirementsNotMetException>(() => run.CompleteAsync(10))).Missing);
        await run.RecordOutputAsync("predictions", "s3://bucket/p.csv");
        Assert.Equal("succeeded", (await run.CompleteAsync(10)).Status);
    }

    [Fact]
    public async Task complete_with_force_sends_the_completion_before_the_results()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMinutes(5));
        var runId = await harness.Client.RegisterAsync(new RunRegistration { RequiredScores = ["accuracy"] });
        await using var run = await harness.Client.ClaimAsync(runId);

        var answer = await run.CompleteAsync(force: true);

        Assert.Equal("running", answer.Status); // the ledger keeps it running until the score arrives
        Assert.Equal(["score:accuracy"], (await harness.Client.GetRunAsync(runId)).Missing);
        Assert.False(run.Stopped.IsCancellationRequested);
    }

    [Fact]
    public async Task a_dropped_connection_during_register_is_retried_without_a_second_run()
    {
        await using var harness = new ClientHarness(ledger.Host);
        var drops = 0;
        harness.Tap.Intercept = async (sent, forward, ct) =>
        {
            var response = await forward(); // the ledger processed it ...
            if (sent.Path != "/api/runs" || Interlocked.Increment(ref drops) > 1) return response;
            response.Dispose();
            throw new HttpRequestException("The connection was reset (injected after the ledger answered)"); // ... the answer never arrived
        };

        var runId = await harness.Client.RegisterAsync(new RunRegistration { RequiredScores = ["accuracy"], LeaseSeconds = 60 });

        var registrations = harness.Tap.Requests.Where(r => r.Path == "/api/runs").ToList();
        Assert.Equal(2, registrations.Count);
        Assert.Equal(runId, registrations[0].Field("runId"));
        Assert.Equal(registrations[0].Body, registrations[1].Body);
        var state = await harness.Client.GetRunAsync(runId);
        Assert.Equal("registered", state.Status);
        var history = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.AdminKey);
        Assert.Single(history.Json!["events"]!.AsArray()); // one registration, not two
    }

    [Fact]
    public async Task a_dropped_connection_during_claim_is_retried_without_a_409()
    {
        await using var harness = new ClientHarness(ledger.Host, heartbeat: TimeSpan.FromMinutes(5));
        var runId = await harness.Client.RegisterAsync();
        var drops = 0;
        harness.Tap.Intercept = async (sent, forward, ct) =>
        {
            var response = await forward();
            if (!sent.Path.EndsWith("/claim") || Interlocked.Increment(ref drops) > 1) return response;
            response.Dispose();
            throw new HttpRequestException("The connection was reset (injected after the ledger answered)");
        };

        await using var run = await harness.Client.ClaimAsync(runId, "host-17");

        var claims = harness.Tap.Requests.Where(r => r.Path.EndsWith("/claim")).ToList();
        Assert.Equal(2, claims.Count);
        Assert.Equal(run.ClaimId, claims[0].Field("claimId"));
        Assert.Equal(claims[0].Body, claims[1].Body);
        // The lease the retry answered works: events go through with it.
        Assert.Equal(EventResults.Applied, (await run.CommitItemsAsync("chunk-1", 1)).Results.Single().Result);
        var state = await harness.Client.GetRunAsync(runId);
        Assert.Equal("host-17", state.Json.GetProperty("lease").GetProperty("worker").GetString());
        // Not asserted: whether the retry re-issued the token (lease.claims 1 or 2); PRODUCT.md only pins "the same lease".
    }

    private static Task StoppedSignal(RunSession run)
    {
        var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        run.Stopped.Register(() => signal.TrySetResult());
        return signal.Task;
    }

    private static async Task WaitUntil(Func<bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout) throw new TimeoutException("condition not reached");
            await Task.Delay(20);
        }
    }
}
