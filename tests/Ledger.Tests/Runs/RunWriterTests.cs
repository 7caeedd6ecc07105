using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Alba;
using Ledger.Contract;
using Ledger.Tests.Fixtures;
using Ledger.Tests.Infrastructure;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>
/// The one writer per process (RunWriter): commands on many runs decided and committed in one
/// transaction, each caller answered after the commit. On a real PostgreSQL and over HTTP: a
/// group is formed deterministically by holding a row lock on one run's row (<see cref="RowLock"/>),
/// so that the writer waits on that run while the next commands queue behind it; what the tests
/// wait for is read from PostgreSQL (who waits for the lock) and from the writer (how many are
/// queued), never from a clock.
/// </summary>
public sealed class RunWriterTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly LedgerSql _sql = new(ledger.ConnectionString);

    // ---------------------------------------------------------------------------------------
    // 1. Group isolation
    // ---------------------------------------------------------------------------------------

    /// <summary>A request whose answer in a group must be the answer it gets alone, on a run prepared the same way.</summary>
    private sealed record Twin(string Name, Func<Scenarios, Task<(string RunId, string? Token)>> Prepare,
        Func<Scenarios, string, string?, Task<Response>> Send, int Status, string? Code);

    private static readonly Twin[] Twins =
    [
        new("score conflict",
            async api =>
            {
                var run = await api.Started(new { runId = NewRunId("score"), requiredScores = new[] { "accuracy" } });
                Assert.Equal(HttpStatusCode.OK, (await api.Events(run.RunId, run.Token, Event("scores.reported", "s-1", fields: new { scores = new { accuracy = 0.5 } }))).Status);
                return run;
            },
            (api, run, token) => api.Events(run, token, Event("scores.reported", "s-2", fields: new { scores = new { accuracy = 0.6 } })),
            409, "score-conflict"),
        new("duplicate eventId",
            async api =>
            {
                var run = await api.Started(new { runId = NewRunId("dup") });
                Assert.Equal(HttpStatusCode.OK, (await api.Events(run.RunId, run.Token, Event("run.started", "d-1"))).Status);
                return run;
            },
            (api, run, token) => api.Events(run, token, Event("run.started", "d-1")),
            200, null),
        new("claim of an unknown run",
            _ => Task.FromResult<(string, string?)>((NewRunId("ghost"), null)),
            (api, run, _) => api.Send(HttpMethod.Post, $"/api/runs/{run}/claim", LedgerHost.WorkerKey, new { worker = "w-ghost" }),
            404, "run-not-found"),
        new("cancel of an unknown run",
            _ => Task.FromResult<(string, string?)>((NewRunId("ghost"), null)),
            (api, run, _) => api.Send(HttpMethod.Post, $"/api/runs/{run}/cancel", LedgerHost.AdminKey, new { reason = "gone" }),
            404, "run-not-found"),
        new("chunk conflict",
            async api =>
            {
                var run = await api.Started(new { runId = NewRunId("chunk") });
                Assert.Equal(HttpStatusCode.OK, (await api.Events(run.RunId, run.Token, Event("items.committed", "c-1", fields: new { chunkId = "chunk-a", count = 1 }))).Status);
                return run;
            },
            (api, run, token) => api.Events(run, token, Event("items.committed", "c-2", fields: new { chunkId = "chunk-a", count = 2 })),
            409, "chunk-conflict"),
    ];

    [Fact]
    public async Task in_one_group_each_refusal_is_the_one_it_gets_alone_and_every_other_command_is_applied()
    {
        var watch = new CommitWatch();
        await using var node = await ledger.SecondInstance(s => s.ConfigureMarten(o => o.Listeners.Add(watch)));
        var api = new Scenarios(ledger, node);

        var grouped = new List<(string RunId, string? Token)>();
        foreach (var twin in Twins) grouped.Add(await twin.Prepare(api));

        // Commands that must be applied whatever their neighbours do: events on runs of their own,
        // an event on the run whose other command is refused, a claim, a cancel, an observation.
        var started = new List<(string RunId, string Token)>();
        for (var i = 0; i < 10; i++) started.Add(await api.Started());
        var unclaimed = await api.Register();
        var toCancel = await api.Started();
        var observed = await api.Started();
        // Two commands on one run that contradict each other (one chunk, two counts) and two with one eventId.
        var chunkTwice = await api.Started();
        var idTwice = await api.Started();

        var blocker = await api.Started();
        var before = watch.Transactions.Count;
        await using var hold = await RowLock.Stream(ledger.ConnectionString, blocker.RunId);
        var blocked = api.Events(blocker.RunId, blocker.Token, Event("heartbeat", "blocker-1"));
        await hold.WaitForWaiter();

        // Everything below queues behind the blocked commit and is taken as one group.
        var refusals = Twins.Select((twin, i) => twin.Send(api, grouped[i].RunId, grouped[i].Token)).ToList();
        var applied = started.Select((r, i) => api.Events(r.RunId, r.Token, Event("run.started", $"ok-{i}"))).ToList();
        var sameRun = api.Events(grouped[0].RunId, grouped[0].Token, Event("heartbeat", "s-hb"));
        var claim = api.Send(HttpMethod.Post, $"/api/runs/{unclaimed}/claim", LedgerHost.WorkerKey, new { worker = "w-group" });
        var cancel = api.Send(HttpMethod.Post, $"/api/runs/{toCancel.RunId}/cancel", LedgerHost.AdminKey, new { reason = "grouped" });
        var observation = api.Observe(observed.RunId, new { source = "portal", status = "running", observedAt = api.Now });
        var chunks = new[] { 1, 2 }.Select(count => api.Events(chunkTwice.RunId, chunkTwice.Token,
            Event("items.committed", $"p-{count}", fields: new { chunkId = "chunk-p", count }))).ToList();
        var ids = Enumerable.Range(0, 2).Select(_ => api.Events(idTwice.RunId, idTwice.Token, Event("log", "q-1", fields: new { lines = new[] { "x" } }))).ToList();
        var inGroup = refusals.Count + applied.Count + 4 + chunks.Count + ids.Count;
        await Wait.ForQueued(node, inGroup);

        await hold.Release();
        Assert.Equal(HttpStatusCode.OK, (await blocked.WaitAsync(Patience)).Status);
        var refused = await Task.WhenAll(refusals).WaitAsync(Patience);
        var appliedAnswers = await Task.WhenAll(applied).WaitAsync(Patience);
        var others = await Task.WhenAll(sameRun, claim, cancel, observation).WaitAsync(Patience);
        var chunkAnswers = await Task.WhenAll(chunks).WaitAsync(Patience);
        var idAnswers = await Task.WhenAll(ids).WaitAsync(Patience);

        // Every command that could be applied was, and was answered 200.
        foreach (var answer in appliedAnswers.Concat(others))
        {
            Assert.True(answer.Status == HttpStatusCode.OK, $"{answer.Code}: {answer.Text}");
        }
        Assert.All(appliedAnswers, a => Assert.Equal("applied", a.Json!["results"]![0]!["result"]!.GetValue<string>()));
        for (var i = 0; i < started.Count; i++) Assert.Equal(1, await _sql.Count(started[i].RunId, $"ok-{i}"));
        Assert.Equal(1, await _sql.Count(grouped[0].RunId, "s-hb"));
        Assert.Equal("cancelled", others[2].RunStatus);
        Assert.Equal("claimed", (await api.Run(unclaimed))["status"]!.GetValue<string>());
        Assert.Single((await api.Run(observed.RunId))["observations"]!.AsArray());

        // Contradictions on one run inside the group are decided in order: the first is taken, the second refused.
        Assert.Single(chunkAnswers, a => a.Status == HttpStatusCode.OK);
        Assert.Single(chunkAnswers, a => a.ProblemCode == "chunk-conflict");
        Assert.Single(await _sql.EventIds(chunkTwice.RunId));
        Assert.All(idAnswers, a => Assert.Equal(HttpStatusCode.OK, a.Status));
        Assert.Equal(["applied", "duplicate"], idAnswers.Select(a => a.Json!["results"]![0]!["result"]!.GetValue<string>()).Order());
        Assert.Equal(1, await _sql.Count(idTwice.RunId, "q-1"));

        // The group really was one transaction: every run written by it was committed together.
        var writtenByGroup = started.Select(r => r.RunId)
            .Concat([grouped[0].RunId, unclaimed, toCancel.RunId, observed.RunId, chunkTwice.RunId, idTwice.RunId]).ToHashSet();
        var transaction = Assert.Single(watch.Transactions.Skip(before), t => t.Contains(started[0].RunId));
        Assert.True(writtenByGroup.SetEquals(transaction),
            $"one transaction for the group, holding exactly its runs; it held {string.Join(", ", transaction)}");

        // The refused and the duplicate appended nothing.
        Assert.Equal(0, await _sql.Count(grouped[0].RunId, "s-2"));
        Assert.Equal(["d-1"], await _sql.EventIds(grouped[1].RunId));
        Assert.Equal(0, await _sql.Version(grouped[2].RunId));
        Assert.Equal(0, await _sql.Version(grouped[3].RunId));
        Assert.Equal(["c-1"], await _sql.EventIds(grouped[4].RunId));

        // Each answer is exactly the one the same request gets alone, on a run prepared the same way.
        for (var i = 0; i < Twins.Length; i++)
        {
            var twin = Twins[i];
            var inTheGroup = refused[i];
            var (aloneRun, aloneToken) = await twin.Prepare(api);
            var alone = await twin.Send(api, aloneRun, aloneToken);
            Assert.True((int)inTheGroup.Status == twin.Status && inTheGroup.ProblemCode == twin.Code,
                $"{twin.Name}: expected {twin.Status} {twin.Code}, got {inTheGroup.Code}: {inTheGroup.Text}");
            Assert.Equal(alone.Status, inTheGroup.Status);
            Assert.Equal(alone.Text.Replace(aloneRun, "{run}"), inTheGroup.Text.Replace(grouped[i].RunId, "{run}"));
        }
    }

    // ---------------------------------------------------------------------------------------
    // 2. The database fails while a group is committing
    // ---------------------------------------------------------------------------------------

    [Fact]
    public async Task a_connection_lost_during_a_groups_commit_answers_every_caller_503_and_each_resend_is_recorded_once()
    {
        var logs = new CapturedLogs();
        await using var node = await ledger.SecondInstance(s => s.AddSingleton<ILoggerProvider>(logs));
        var api = new Scenarios(ledger, node);

        var blocker = await api.Started();
        var runs = new List<(string RunId, string Token)>();
        for (var i = 0; i < 6; i++) runs.Add(await api.Started());
        // Runs are written in run-id order: the stalled one last, after the others' events are written in the transaction.
        var stalled = await api.Started(new { runId = "zz-" + NewRunId("stalled") });
        var unclaimed = await api.Register(new { runId = NewRunId("claim") });

        await using var first = await RowLock.Stream(ledger.ConnectionString, blocker.RunId);
        // Only the commit writes the run's document: a lock on it stalls the group after its events are written.
        await using var second = await RowLock.RunDocument(ledger.ConnectionString, stalled.RunId);
        var acknowledged = api.Events(blocker.RunId, blocker.Token, Event("heartbeat", "ack-1"));
        await first.WaitForWaiter();

        // The group: an event on each run, the stalled run's event and a claim (with a claimId, so it can be resent).
        Task<Response> SendEvent(int i) => api.Events(runs[i].RunId, runs[i].Token, Event("items.committed", $"e-{i}", fields: new { chunkId = $"k-{i}", count = i + 1 }));
        Task<Response> SendStalled() => api.Events(stalled.RunId, stalled.Token, Event("run.started", "e-stalled"));
        Task<Response> SendClaim() => api.Send(HttpMethod.Post, $"/api/runs/{unclaimed}/claim", LedgerHost.WorkerKey, new { worker = "w-resend", claimId = "claim-1" });
        var group = Enumerable.Range(0, runs.Count).Select(SendEvent).Append(SendStalled()).Append(SendClaim()).ToList();
        await Wait.ForQueued(node, group.Count);

        await first.Release();
        Assert.Equal(HttpStatusCode.OK, (await acknowledged.WaitAsync(Patience)).Status);
        // The group's commit now waits for the stalled run's document: its connection is cut.
        var committing = await second.WaitForWaiter();
        Assert.True(await _sql.Scalar<bool>("select pg_terminate_backend(@pid)", ("pid", committing)));
        var answers = await Task.WhenAll(group).WaitAsync(Patience);
        await second.Release();

        foreach (var answer in answers)
        {
            Assert.True(answer.Code == 503 && answer.ProblemCode == "database-unavailable",
                $"every caller of the failed group is told the database failed; got {answer.Code}: {answer.Text}");
            Assert.True(answer.Retryable);
            Assert.NotNull(answer.RetryAfter);
            Assert.Contains("may or may not have been recorded", answer.Json!["detail"]!.GetValue<string>());
        }
        Assert.Contains(logs.Lines, l => l.Category == "Ledger.Runs.RunWriter" && l.Text.Contains("committing a group of 8 commands"));

        // What was acknowledged is in; what was not is resent with the same ids and recorded exactly once.
        Assert.Equal(1, await _sql.Count(blocker.RunId, "ack-1"));
        var resent = await Task.WhenAll(Enumerable.Range(0, runs.Count).Select(SendEvent).Append(SendStalled()));
        Assert.All(resent, r => Assert.True(r.Status == HttpStatusCode.OK, r.Text));
        Assert.All(resent, r => Assert.Contains(r.Json!["results"]![0]!["result"]!.GetValue<string>(), new[] { "applied", "duplicate" }));
        for (var i = 0; i < runs.Count; i++)
        {
            Assert.Equal([$"e-{i}"], await _sql.EventIds(runs[i].RunId));
            Assert.Equal(i + 1, (await api.Run(runs[i].RunId))["items"]!["committed"]!.GetValue<long>());
        }
        Assert.Equal(["e-stalled"], await _sql.EventIds(stalled.RunId));
        var claimed = await SendClaim();
        Assert.Equal(HttpStatusCode.OK, claimed.Status);
        Assert.Equal(1, await _sql.Scalar<long>("select count(*) from {schema}.mt_events where stream_id = @run and type = 'run_claimed'", ("run", unclaimed)));
        // And the claim resent once more is the same lease.
        Assert.Equal(claimed.Json!["leaseToken"]!.GetValue<string>(), (await SendClaim()).Json!["leaseToken"]!.GetValue<string>());
    }

    // ---------------------------------------------------------------------------------------
    // 3. The queue is full
    // ---------------------------------------------------------------------------------------

    [Fact]
    public async Task a_full_queue_refuses_at_once_with_overloaded_and_records_nothing_of_the_refused()
    {
        await using var node = await ledger.SecondInstance(FullQueue.Settings);
        var api = new Scenarios(ledger, node);
        var refusedRun = await api.Started();
        var unclaimed = await api.Register();

        await using var full = await FullQueue.Make(ledger, node);

        // Answered at once: a refusal does not wait for room in the queue.
        var refused = await api.Events(refusedRun.RunId, refusedRun.Token, Event("run.started", "refused-1")).WaitAsync(Patience);
        var refusedClaim = await api.Send(HttpMethod.Post, $"/api/runs/{unclaimed}/claim", LedgerHost.WorkerKey, new { worker = "w" }).WaitAsync(Patience);
        foreach (var answer in new[] { refused, refusedClaim })
        {
            Assert.True(answer.Code == 503 && answer.ProblemCode == "overloaded", $"{answer.Code}: {answer.Text}");
            Assert.True(answer.Retryable);
            Assert.NotNull(answer.RetryAfter);
            Assert.Contains("nothing from this request was recorded", answer.Json!["detail"]!.GetValue<string>());
        }
        // Refused before the writer: still queued and blocked are exactly the two taken before.
        Assert.False(full.Blocked.IsCompleted);
        Assert.False(full.Queued.IsCompleted);

        await full.Release();
        Assert.Equal(HttpStatusCode.OK, (await full.Blocked.WaitAsync(Patience)).Status);
        Assert.Equal(HttpStatusCode.OK, (await full.Queued.WaitAsync(Patience)).Status);
        Assert.Empty(await _sql.EventIds(refusedRun.RunId));
        Assert.Equal("registered", (await api.Run(unclaimed))["status"]!.GetValue<string>());

        // Resent once the queue drained, the same request is applied (nothing of it was recorded before).
        var again = await api.Events(refusedRun.RunId, refusedRun.Token, Event("run.started", "refused-1"));
        Assert.Equal("applied", again.Json!["results"]![0]!["result"]!.GetValue<string>());
    }

    // ---------------------------------------------------------------------------------------
    // 4. SIGTERM drains the queue
    // ---------------------------------------------------------------------------------------

    /// <summary>
    /// The service as a supervisor runs it: requests queued behind a blocked writer, then SIGTERM,
    /// then the writer unblocked. Every request sent before the signal is answered 200 and recorded,
    /// and the process exits 0. (Kestrel stops first and waits for requests in flight, so here the
    /// writer is still running when they complete; the writer's own drain, for commands still queued
    /// when it is stopped, is <see cref="a_stopping_writer_refuses_new_commands_and_commits_every_queued_one"/>.)
    /// </summary>
    [Fact]
    public async Task sigterm_answers_and_records_every_request_sent_before_it()
    {
        const string admin = "writer-test-admin-key", worker = "writer-test-worker-key";
        var (server, database, name) = TestDatabase.Create();
        var cwd = Directory.CreateTempSubdirectory("ledger-writer-").FullName;
        try
        {
            var env = new Dictionary<string, string?>
            {
                ["ASPNETCORE_ENVIRONMENT"] = "Production",
                ["Ledger__AdminKey"] = admin,
                ["Ledger__WorkerKeys__0"] = worker,
                ["ConnectionStrings__Ledger"] = database,
                ["Ledger__Janitor__Enabled"] = "false",
                ["Ledger__DaemonMode"] = "Disabled",
                // Each request is logged as it arrives: the test knows when all are in the service.
                ["Logging__LogLevel__Microsoft.AspNetCore.Hosting.Diagnostics"] = "Information",
            };
            using var service = LedgerProcess.Start(env, ["--urls", "http://127.0.0.1:0"], cwd);
            using var http = new HttpClient { BaseAddress = new Uri(await service.WaitForAddress(TimeSpan.FromSeconds(90))), Timeout = Patience };

            async Task<HttpResponseMessage> Post(string url, string key, object body)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, url)
                {
                    Content = new StringContent(JsonSerializer.Serialize(body, Scenarios.Json), Encoding.UTF8, "application/json"),
                };
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
                return await http.SendAsync(request);
            }
            async Task<(string RunId, string Token)> Started()
            {
                var runId = NewRunId("drain");
                Assert.Equal(HttpStatusCode.Created, (await Post("/api/runs", admin, new { runId })).StatusCode);
                var claim = await Post($"/api/runs/{runId}/claim", worker, new { worker = "w" });
                var token = JsonDocument.Parse(await claim.Content.ReadAsStringAsync()).RootElement.GetProperty("leaseToken").GetString()!;
                return (runId, token);
            }

            var blocker = await Started();
            var runs = new List<(string RunId, string Token)>();
            for (var i = 0; i < 5; i++) runs.Add(await Started());

            await using var hold = await RowLock.Stream(database, blocker.RunId);
            var sent = new List<(string RunId, string EventId, Task<HttpResponseMessage> Answer)>
            {
                (blocker.RunId, "blocked", Post($"/api/runs/{blocker.RunId}/events", blocker.Token, Event("heartbeat", "blocked"))),
            };
            await hold.WaitForWaiter();
            for (var i = 0; i < 12; i++)
            {
                var (runId, token) = runs[i % runs.Count];
                var eventId = $"queued-{i}";
                sent.Add((runId, eventId, Post($"/api/runs/{runId}/events", token, Event("log", eventId, fields: new { lines = new[] { $"line {i}" } }))));
            }
            var arrived = new Regex(@"Request starting \S+ POST \S+/events");
            await Wait.Until(() => arrived.Matches(service.Stdout).Count == sent.Count, Patience, $"{sent.Count} event requests in the service");

            service.Signal();
            await Wait.Until(() => service.Stdout.Contains("Application is shutting down"), Patience, "the service to begin stopping");
            Assert.All(sent, s => Assert.False(s.Answer.IsCompleted, "nothing is answered while the writer is blocked"));
            await hold.Release();

            var answers = await Task.WhenAll(sent.Select(s => s.Answer)).WaitAsync(Patience);
            var stopped = service.WaitForExit(Patience);
            for (var i = 0; i < sent.Count; i++)
            {
                Assert.True(answers[i].StatusCode == HttpStatusCode.OK,
                    $"{sent[i].EventId}: {answers[i].StatusCode} {await answers[i].Content.ReadAsStringAsync()}\n{stopped.All}");
            }
            Assert.True(stopped.ExitCode == 0, $"a clean stop exits 0:\n{stopped.All}");

            var sql = new LedgerSql(database);
            foreach (var (runId, eventId, _) in sent) Assert.Equal(1, await sql.Count(runId, eventId));
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            TestDatabase.Drop(server, name);
            Directory.Delete(cwd, recursive: true);
        }
    }

    /// <summary>
    /// The writer's own part of a clean stop, in process: the writer is stopped (as the host stops
    /// its hosted services) while it is blocked with commands queued. New commands are refused from
    /// then on (its queue is closed), and the queued ones are still decided, committed and answered
    /// before its stop completes.
    /// </summary>
    [Fact]
    public async Task a_stopping_writer_refuses_new_commands_and_commits_every_queued_one()
    {
        var node = await ledger.SecondInstance();
        try
        {
            var api = new Scenarios(ledger, node);
            var writer = node.Services.GetRequiredService<Ledger.Runs.RunWriter>();
            var blocker = await api.Started();
            var runs = new List<(string RunId, string Token)>();
            for (var i = 0; i < 4; i++) runs.Add(await api.Started());

            await using var hold = await RowLock.Stream(ledger.ConnectionString, blocker.RunId);
            var sent = new List<(string RunId, string EventId, Task<Response> Answer)>
            {
                (blocker.RunId, "blocked", api.Events(blocker.RunId, blocker.Token, Event("heartbeat", "blocked"))),
            };
            await hold.WaitForWaiter();
            for (var i = 0; i < 8; i++)
            {
                var (runId, token) = runs[i % runs.Count];
                sent.Add((runId, $"queued-{i}", api.Events(runId, token, Event("log", $"queued-{i}", fields: new { lines = new[] { "x" } }))));
            }
            await Wait.ForQueued(node, sent.Count - 1);

            // What the host does to the writer once the web server has stopped.
            var stopping = writer.StopAsync(CancellationToken.None);
            // A command the writer decides as nothing (no such run), to see when its queue closes.
            bool Closed()
            {
                try
                {
                    _ = writer.Submit(new Ledger.Runs.ExpireLeaseCommand(NewRunId("probe"), TimeSpan.Zero));
                    return false;
                }
                catch (Ledger.Infrastructure.ProblemException e) when (e.Problem.Code == "overloaded")
                {
                    return true;
                }
            }
            await Wait.Until(Closed, Patience, "the writer to close its queue");
            Assert.All(sent, s => Assert.False(s.Answer.IsCompleted, "nothing is answered while the writer is blocked"));
            await hold.Release();

            var answers = await Task.WhenAll(sent.Select(s => s.Answer)).WaitAsync(Patience);
            Assert.All(answers, a => Assert.True(a.Status == HttpStatusCode.OK, $"{a.Code}: {a.Text}"));
            await stopping.WaitAsync(Patience);
            foreach (var (runId, eventId, _) in sent) Assert.Equal(1, await _sql.Count(runId, eventId));
        }
        finally
        {
            await node.DisposeAsync();
        }
    }

    // ---------------------------------------------------------------------------------------
    // 5. Streams written before the recorded-keys table
    // ---------------------------------------------------------------------------------------

    [Fact]
    public async Task keys_of_runs_written_before_the_keys_table_are_derived_at_start_and_still_guard()
    {
        var api = new Scenarios(ledger);
        var (runId, token) = await api.Started();
        Assert.Equal(HttpStatusCode.OK, (await api.Events(runId, token, new[]
        {
            Event("run.started", "old-1"),
            Event("items.committed", "old-2", fields: new { chunkId = "old-chunk", count = 5 }),
        })).Status);
        var version = await _sql.Version(runId);

        // As a database written before the table: this run's keys and the marker of the migration are gone.
        Assert.Equal(3, await _sql.Execute("delete from {schema}.ledger_recorded_keys where run_id = @run", ("run", runId)));
        Assert.Equal(1, await _sql.Execute("delete from {schema}.ledger_recorded_keys where run_id = '' and key = 'migrated:v1'"));

        await using var fresh = await ledger.SecondInstance();
        var after = new Scenarios(ledger, fresh);
        Assert.Equal(3, await _sql.Scalar<long>("select count(*) from {schema}.ledger_recorded_keys where run_id = @run", ("run", runId)));
        Assert.Equal(5, await _sql.Scalar<long>("select count from {schema}.ledger_recorded_keys where run_id = @run and key = 'c:old-chunk'", ("run", runId)));
        Assert.Equal(1, await _sql.Scalar<long>("select count(*) from {schema}.ledger_recorded_keys where run_id = '' and key = 'migrated:v1'"));

        var resent = await after.Events(runId, token, Event("run.started", "old-1"));
        Assert.Equal(HttpStatusCode.OK, resent.Status);
        Assert.Equal("duplicate", resent.Json!["results"]![0]!["result"]!.GetValue<string>());
        var conflict = await after.Events(runId, token, Event("items.committed", "new-1", fields: new { chunkId = "old-chunk", count = 6 }));
        Assert.True(conflict.Code == 409 && conflict.ProblemCode == "chunk-conflict", conflict.Text);
        var sameChunk = await after.Events(runId, token, Event("items.committed", "new-2", fields: new { chunkId = "old-chunk", count = 5 }));
        Assert.Equal("duplicate", sameChunk.Json!["results"]![0]!["result"]!.GetValue<string>());
        Assert.Equal(version, await _sql.Version(runId));
        Assert.Equal(["old-1", "old-2"], await _sql.EventIds(runId));
    }

    // ---------------------------------------------------------------------------------------
    // 6. Two nodes on one hot run
    // ---------------------------------------------------------------------------------------

    [Fact]
    public async Task two_nodes_writing_one_hot_run_lose_nothing_duplicate_nothing_and_never_deadlock()
    {
        var (logsA, logsB) = (new CapturedLogs(), new CapturedLogs());
        // Connections named per test, so the test can tell when they are gone (and their statistics flushed).
        var application = $"hot-{Guid.NewGuid():N}"[..20];
        var settings = new Dictionary<string, string>
        {
            ["ConnectionStrings:Ledger"] = new NpgsqlConnectionStringBuilder(ledger.ConnectionString) { ApplicationName = application }.ConnectionString,
            ["Logging:LogLevel:Ledger"] = "Debug",
        };
        var deadlocksBefore = await Deadlocks();
        var a = await ledger.SecondInstance(settings, s => s.AddSingleton<ILoggerProvider>(logsA));
        var b = await ledger.SecondInstance(settings, s => s.AddSingleton<ILoggerProvider>(logsB));
        var nodes = new[] { new Scenarios(ledger, a), new Scenarios(ledger, b) };

        // A few hot runs one after the other: each begins uncontended on both nodes, as a run does.
        for (var round = 0; round < 5; round++)
        {
            var (runId, token) = await nodes[round % 2].Started(new { runId = NewRunId("hot"), leaseSeconds = 3600 });
            var answers = new System.Collections.Concurrent.ConcurrentBag<(string EventId, int Status, string? Code, string? Result)>();
            var until = DateTime.UtcNow.AddSeconds(1);
            var workers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
            {
                var turn = w;
                // At least one event each, however late the worker starts on a busy machine.
                for (var i = 0; i == 0 || DateTime.UtcNow < until; i++)
                {
                    var eventId = $"w{w}-{i}";
                    // Until answered 200: a retryable 503 is resent with the same eventId (through the other node).
                    for (var attempt = 0; ; attempt++)
                    {
                        var node = nodes[turn++ % 2];
                        var answer = await node.Events(runId, token, Event("log", eventId, fields: new { lines = new[] { eventId } }));
                        answers.Add((eventId, answer.Code, answer.ProblemCode,
                            answer.Code == 200 ? answer.Json!["results"]![0]!["result"]!.GetValue<string>() : null));
                        if (answer.Code != 503 || answer.Retryable != true || attempt > 20) break;
                    }
                }
            })).ToList();
            await Task.WhenAll(workers).WaitAsync(TimeSpan.FromMinutes(2));

            var all = answers.ToList();
            Assert.All(all, x => Assert.True(x.Status is 200 or 503, $"{x.EventId}: {x.Status} {x.Code}"));
            var sent = all.Select(x => x.EventId).ToHashSet();
            var acknowledged = all.Where(x => x.Status == 200).Select(x => x.EventId).ToHashSet();
            Assert.True(sent.SetEquals(acknowledged), $"unanswered after retries: {string.Join(", ", sent.Except(acknowledged))}");

            var stream = (await _sql.EventIds(runId)).Where(id => id.StartsWith('w')).ToList();
            Assert.Equal(stream.Count, stream.Distinct().Count());
            Assert.True(acknowledged.SetEquals(stream), "every acknowledged event is in the stream, and nothing else");
            // "applied" is said once per event; a resend after an ambiguous 503 may be answered "duplicate" instead.
            var applied = all.Where(x => x.Result == "applied").GroupBy(x => x.EventId).ToList();
            Assert.All(applied, g => Assert.Single(g));
            var ambiguous = all.Where(x => x.Code == "database-unavailable").Select(x => x.EventId).ToHashSet();
            Assert.All(stream.Where(id => !ambiguous.Contains(id)), id => Assert.Contains(applied, g => g.Key == id));
            Assert.True(stream.Count >= 8, $"only {stream.Count} events in a second: the round exercised too little");
        }

        await a.DisposeAsync();
        await b.DisposeAsync();
        var lines = logsA.Lines.Concat(logsB.Lines).ToList();
        var deadlocks = lines.Where(l => l.Text.Contains("40P01") || l.Text.Contains("deadlock", StringComparison.OrdinalIgnoreCase)).ToList();
        Assert.True(deadlocks.Count == 0, $"{deadlocks.Count} log lines of deadlocks, the first:\n{deadlocks.FirstOrDefault()}");
        // PostgreSQL counts the deadlocks it broke; a backend reports its count when it ends.
        await Wait.Until(async () => await _sql.Scalar<long>("select count(*) from pg_stat_activity where application_name = @app", ("app", application)) == 0,
            Patience, "the nodes' connections to close");
        Assert.Equal(deadlocksBefore, await Deadlocks());
    }

    /// <summary>
    /// The interleaving behind the deadlocks the hot run can meet, played step by step: node B
    /// reads a group under row locks (it met a conflict on the run before) and waits on another
    /// run of its group, while node A commits an event on the same run. A's commit must queue
    /// behind B's lock, never hold something B then needs.
    /// </summary>
    [Fact]
    public async Task a_group_read_under_row_locks_and_a_commit_on_another_node_queue_rather_than_deadlock()
    {
        var (logsA, logsB) = (new CapturedLogs(), new CapturedLogs());
        await using var a = await ledger.SecondInstance(s => s.AddSingleton<ILoggerProvider>(logsA));
        await using var b = await ledger.SecondInstance(s => s.AddSingleton<ILoggerProvider>(logsB));
        var (nodeA, nodeB) = (new Scenarios(ledger, a), new Scenarios(ledger, b));
        // Run ids in the order the writer locks them: the hot run before the other run of B's group.
        var hot = await nodeA.Started(new { runId = "m-" + NewRunId("hot") });
        var other = await nodeB.Started(new { runId = "z-" + NewRunId("other") });
        var gate = await nodeB.Started(new { runId = "a-" + NewRunId("gate") });
        Task<Response> Send(Scenarios node, (string RunId, string Token) run, string eventId) =>
            node.Events(run.RunId, run.Token, Event("log", eventId, fields: new { lines = new[] { eventId } }));

        // B meets a conflict on the hot run: A and B append to it at once, A first.
        Response first, second;
        await using (var hold = await RowLock.Stream(ledger.ConnectionString, hot.RunId))
        {
            var viaA = Send(nodeA, hot, "e-1");
            var waiterA = await hold.WaitForWaiter();
            var viaB = Send(nodeB, hot, "e-2");
            await Wait.Until(async () => (await hold.Waiters()).Length == 2 || await BlockedBy(waiterA), Patience, "B's append to wait for A's");
            await hold.Release();
            (first, second) = (await viaA.WaitAsync(Patience), await viaB.WaitAsync(Patience));
        }
        Assert.Equal(HttpStatusCode.OK, first.Status);
        Assert.Equal(HttpStatusCode.OK, second.Status);

        // B takes the hot run and the other run in one group, and waits on the other run while holding the hot one.
        await using var gateLock = await RowLock.Stream(ledger.ConnectionString, gate.RunId);
        var gated = Send(nodeB, gate, "g-1");
        await gateLock.WaitForWaiter();
        var groupHot = Send(nodeB, hot, "e-3");
        var groupOther = Send(nodeB, other, "o-1");
        await Wait.ForQueued(b, 2);
        await using var otherLock = await RowLock.Stream(ledger.ConnectionString, other.RunId);
        await gateLock.Release();
        var groupB = await otherLock.WaitForWaiter();

        // A's event on the hot run now meets B's hold on it.
        var viaA2 = Send(nodeA, hot, "e-4");
        await Wait.Until(() => BlockedBy(groupB), Patience, "A's event to wait for B's group");
        await otherLock.Release();

        var answers = await Task.WhenAll(gated, groupHot, groupOther, viaA2).WaitAsync(Patience);
        Assert.All(answers, r => Assert.True(r.Status == HttpStatusCode.OK, r.Text));
        Assert.Equal(["e-1", "e-2", "e-3", "e-4"], (await _sql.EventIds(hot.RunId)).Order());
        Assert.Equal(["o-1"], await _sql.EventIds(other.RunId));
        var deadlocks = logsA.Lines.Concat(logsB.Lines).Where(l => l.Text.Contains("40P01")).ToList();
        Assert.True(deadlocks.Count == 0, $"PostgreSQL broke a deadlock between the nodes:\n{deadlocks.FirstOrDefault()}");
    }

    /// <summary>Whether some backend waits for <paramref name="pid"/>.</summary>
    private async Task<bool> BlockedBy(int pid) =>
        await _sql.Scalar<long>("select count(*) from pg_stat_activity where @pid = any(pg_blocking_pids(pid))", ("pid", pid)) > 0;

    private Task<long> Deadlocks() => _sql.Scalar<long>(
        "select deadlocks from (select pg_stat_clear_snapshot()) s, pg_stat_database where datname = current_database()");
}
