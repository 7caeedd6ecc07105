using System.Net;
using System.Net.Sockets;
using System.Text;
using Alba;
using JasperFx.CommandLine;
using Ledger.Contract;
using Ledger.Tests.Contract;
using Ledger.Tests.Fixtures;
using Marten;
using Marten.Services;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Npgsql;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Infrastructure;

/// <summary>
/// The refusal catalogue is the one list of what the ledger answers: the docs render it, and
/// every type in it is answered by the API for a request a test can make (the fault-only ones
/// by injecting the fault into a real host).
/// </summary>
public sealed class ProblemCatalogueTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    [Fact]
    public void the_docs_hold_the_catalogue_as_it_is_in_code()
    {
        var path = Path.Combine(ContractTools.RepoRoot, "docs", "problems.md");
        var expected = ProblemCatalogue.RenderMarkdown();
        if (Environment.GetEnvironmentVariable("LEDGER_WRITE_DOCS") == "1")
        {
            var text = File.ReadAllText(path);
            var start = text.IndexOf("| type |", StringComparison.Ordinal);
            var end = text.IndexOf("\n\n", start, StringComparison.Ordinal);
            File.WriteAllText(path, text[..start] + expected.TrimEnd('\n') + (end < 0 ? "\n" : text[end..]));
        }
        Assert.True(File.ReadAllText(path).Contains(expected, StringComparison.Ordinal),
            "docs/problems.md does not hold the catalogue; regenerate it with LEDGER_WRITE_DOCS=1 dotnet test --filter the_docs_hold_the_catalogue");
    }

    [Fact]
    public void codes_are_unique_and_types_are_urns()
    {
        Assert.Equal(ProblemCatalogue.All.Count, ProblemCatalogue.All.Select(p => p.Code).Distinct().Count());
        Assert.All(ProblemCatalogue.All, p => Assert.Equal("urn:run-ledger:problem:" + p.Code, p.Type));
        Assert.All(ProblemCatalogue.All, p => Assert.Equal(p.Status is 429 or >= 500, p.Retryable));
    }

    [Fact]
    public async Task every_type_in_the_catalogue_is_answered_by_the_api()
    {
        var seen = new HashSet<string>();
        void Expect(Response response, string code)
        {
            var type = ProblemCatalogue.Get(code);
            Assert.True(response.ProblemCode == code, $"expected {code}, got {response.Code}: {response.Text}");
            Assert.Equal(type.Status, response.Code);
            Assert.Equal("application/problem+json", response.ContentType);
            Assert.Equal(type.Type, response.Json!["type"]!.GetValue<string>());
            Assert.Equal(type.Title, response.Json!["title"]!.GetValue<string>());
            Assert.Equal(type.Retryable, response.Retryable);
            seen.Add(code);
        }

        var admin = LedgerHost.AdminKey;
        Expect(await _api.Send(HttpMethod.Post, "/api/runs", admin, rawBody: "{"), ProblemCodes.MalformedJson);
        Expect(await _api.Send(HttpMethod.Post, "/api/runs", admin, rawBody: "{\"runId\": 42}"), ProblemCodes.InvalidPayload);
        Expect(await _api.Send(HttpMethod.Post, "/api/runs", admin, rawBody: $"{{\"runId\": \"{new string('a', 300 * 1024)}\"}}"), ProblemCodes.PayloadTooLarge);
        Expect(await SendText("/api/runs", admin, "runId=x"), ProblemCodes.UnsupportedMediaType);
        Expect(await _api.Send(HttpMethod.Post, "/api/runs", null, new { }), ProblemCodes.MissingCredentials);
        Expect(await _api.Send(HttpMethod.Post, "/api/runs", "not-a-key", new { }), ProblemCodes.InvalidCredentials);
        Expect(await _api.Send(HttpMethod.Post, "/api/runs", LedgerHost.ReadKey, new { }), ProblemCodes.Forbidden);
        Expect(await _api.Send(HttpMethod.Get, "/api/.env", admin), ProblemCodes.NotFound);
        Expect(await _api.Send(HttpMethod.Delete, "/api/runs", admin), ProblemCodes.MethodNotAllowed);
        Expect(await _api.GetRun(NewRunId()), ProblemCodes.RunNotFound);
        Expect(await _api.Send(HttpMethod.Get, "/api/boards/no-such-board/leaderboard", admin), ProblemCodes.BoardNotFound);
        Expect(await _api.Send(HttpMethod.Get, "/api/batches/no-such-batch", admin), ProblemCodes.BatchNotFound);
        Expect(await _api.Send(HttpMethod.Delete, "/api/subscriptions/no-such-subscription", admin), ProblemCodes.SubscriptionNotFound);

        var (runA, tokenA) = await _api.Started(new { runId = NewRunId(), requiredScores = new[] { "accuracy" }, leaseSeconds = 60 });
        var (runB, tokenB) = await _api.Started();
        Expect(await _api.Send(HttpMethod.Get, $"/api/runs/{runA}/state?version=99", admin), ProblemCodes.StateNotFound);
        Expect(await _api.Send(HttpMethod.Post, "/api/runs", admin, new { runId = runA, participant = "another" }), ProblemCodes.RunExists);
        Expect(await _api.Events(runA, tokenB, Event("heartbeat")), ProblemCodes.ForeignLease);
        Expect(await _api.Send(HttpMethod.Post, $"/api/runs/{runA}/claim", LedgerHost.WorkerKey, new { worker = "w2" }), ProblemCodes.LeaseHeld);
        Expect(await _api.Events(runA, tokenA, Event("step.completed", fields: new { stepId = "never", outcome = "ok" })), ProblemCodes.UnknownStep);
        Expect(await _api.Events(runA, tokenA, Event("scores.reported", fields: new { scores = new { other = 1.0 } })), ProblemCodes.UnknownScore);
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runA, tokenA, Event("scores.reported", fields: new { scores = new { accuracy = 0.5 } }))).Status);
        Expect(await _api.Events(runA, tokenA, Event("scores.reported", fields: new { scores = new { accuracy = 0.6 } })), ProblemCodes.ScoreConflict);
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runA, tokenA, Event("output.recorded", fields: new { name = "o", uri = "s3://b/1" }))).Status);
        Expect(await _api.Events(runA, tokenA, Event("output.recorded", fields: new { name = "o", uri = "s3://b/2" })), ProblemCodes.OutputConflict);
        Assert.Equal(HttpStatusCode.OK, (await _api.Events(runA, tokenA, Event("items.committed", fields: new { chunkId = "c", count = 1 }))).Status);
        Expect(await _api.Events(runA, tokenA, Event("items.committed", fields: new { chunkId = "c", count = 2 })), ProblemCodes.ChunkConflict);
        Expect(await _api.Send(HttpMethod.Post, $"/api/runs/{runA}/reclassify", admin,
            new { status = "failed", reason = "r", evidence = new[] { "e" } }), ProblemCodes.RunNotTerminal);

        // Leases that ran out, and one taken over after it ran out.
        ledger.Clock.Advance(TimeSpan.FromSeconds(61));
        Expect(await _api.Events(runA, tokenA, Event("heartbeat")), ProblemCodes.LeaseExpired);
        await _api.Claim(runA, "w3");
        Expect(await _api.Events(runA, tokenA, Event("heartbeat")), ProblemCodes.LeaseLost);

        // Verdicts: a cancelled run is terminal; reclassifying it needs a change and, for success, the results.
        Assert.Equal(HttpStatusCode.OK, (await _api.Send(HttpMethod.Post, $"/api/runs/{runA}/cancel", admin, new { })).Status);
        Expect(await _api.Send(HttpMethod.Post, $"/api/runs/{runA}/cancel", admin, new { }), ProblemCodes.RunTerminal);
        Expect(await _api.Send(HttpMethod.Post, $"/api/runs/{runA}/reclassify", admin,
            new { status = "cancelled", reason = "r", evidence = new[] { "e" } }), ProblemCodes.ReclassifyNoChange);
        var (runC, _) = await _api.Started(new { runId = NewRunId(), requiredScores = new[] { "accuracy" } });
        Assert.Equal(HttpStatusCode.OK, (await _api.Send(HttpMethod.Post, $"/api/runs/{runC}/cancel", admin, new { })).Status);
        Expect(await _api.Send(HttpMethod.Post, $"/api/runs/{runC}/reclassify", admin,
            new { status = "succeeded", reason = "r", evidence = new[] { "e" } }), ProblemCodes.IncompleteResults);

        var board = NewRunId("board");
        Assert.Equal(HttpStatusCode.Created, (await _api.Send(HttpMethod.Post, "/api/boards", admin, new { id = board, primaryScore = "a", direction = "max" })).Status);
        Expect(await _api.Send(HttpMethod.Post, "/api/boards", admin, new { id = board, primaryScore = "b", direction = "max" }), ProblemCodes.BoardExists);
        var batch = NewRunId("batch");
        await _api.DefineBatch(new { id = batch, runIds = new[] { "r1" } });
        Expect(await _api.Send(HttpMethod.Post, "/api/batches", admin, new { id = batch, runIds = new[] { "r2" } }), ProblemCodes.BatchExists);

        // A ledger that holds as many subscriptions as it may refuses one more.
        await using (var capped = await ledger.SecondInstance(new Dictionary<string, string>
                     {
                         ["Ledger:Webhooks:MaxSubscriptions"] = "1",
                         ["Ledger:Webhooks:AllowPrivateTargets"] = "true",
                     }))
        {
            var api = new Scenarios(ledger, capped);
            var subscription = new { url = "http://127.0.0.1:9/hook", kinds = new[] { "run.lost" }, secret = "a-secret-of-sixteen-or-more" };
            var first = await api.Send(HttpMethod.Post, "/api/subscriptions", admin, subscription);
            Assert.Equal(HttpStatusCode.Created, first.Status);
            Expect(await api.Send(HttpMethod.Post, "/api/subscriptions", admin, subscription), ProblemCodes.SubscriptionLimit);
            Assert.Equal(HttpStatusCode.NoContent,
                (await api.Send(HttpMethod.Delete, $"/api/subscriptions/{first.Json!["subscriptionId"]!.GetValue<string>()}", admin)).Status);
        }

        // The faults no request can cause, injected into a real host on the same database.
        await using (var faulty = await FaultyHost())
        {
            var api = new Scenarios(ledger, faulty.Host);
            var runD = await _api.Register();
            faulty.Fault = () => new PostgresException("injected conflict", "ERROR", "ERROR", "MT003");
            Expect(await api.Send(HttpMethod.Post, $"/api/runs/{runD}/claim", LedgerHost.WorkerKey, new { }), ProblemCodes.Contention);
            faulty.Fault = () => new NpgsqlException("injected outage", new SocketException((int)SocketError.ConnectionReset));
            var outage = await api.Send(HttpMethod.Post, $"/api/runs/{runD}/claim", LedgerHost.WorkerKey, new { });
            Expect(outage, ProblemCodes.DatabaseUnavailable);
            Assert.NotNull(outage.RetryAfter);
            Assert.Contains("Nothing from this request was recorded", outage.Json!["detail"]!.GetValue<string>());
            faulty.Fault = () => new InvalidOperationException("injected defect");
            Expect(await api.Send(HttpMethod.Post, $"/api/runs/{runD}/claim", LedgerHost.WorkerKey, new { }), ProblemCodes.Internal);
            faulty.Fault = null;

            // A connection lost during the commit: the answer must not claim that nothing was recorded.
            faulty.CommitFault = () => new NpgsqlException("injected drop during commit", new IOException("connection reset"));
            var ambiguous = await api.Send(HttpMethod.Post, $"/api/runs/{runD}/claim", LedgerHost.WorkerKey, new { });
            Expect(ambiguous, ProblemCodes.DatabaseUnavailable);
            Assert.Contains("may or may not have been recorded", ambiguous.Json!["detail"]!.GetValue<string>());
            Assert.DoesNotContain("Nothing from this request was recorded", ambiguous.Text);
        }

        // A writer whose queue is full (its commit blocked by a row lock, its one place taken) refuses at once.
        await using (var small = await ledger.SecondInstance(FullQueue.Settings))
        {
            var api = new Scenarios(ledger, small);
            var (runE, tokenE) = await api.Started();
            await using var full = await FullQueue.Make(ledger, small);
            var overloaded = await api.Events(runE, tokenE, Event("heartbeat")).WaitAsync(TimeSpan.FromSeconds(60));
            Expect(overloaded, ProblemCodes.Overloaded);
            Assert.NotNull(overloaded.RetryAfter);
            await full.Release();
            Assert.Equal(HttpStatusCode.OK, (await full.Blocked.WaitAsync(TimeSpan.FromSeconds(60))).Status);
            Assert.Equal(HttpStatusCode.OK, (await full.Queued.WaitAsync(TimeSpan.FromSeconds(60))).Status);
        }

        // Wrong keys from one address beyond Ledger:WrongKeys:Limit (off in the class's host).
        await using (var throttling = await ledger.SecondInstance(new Dictionary<string, string> { ["Ledger:WrongKeys:Limit"] = "1", ["Ledger:DaemonMode"] = "Disabled" }))
        {
            var api = new Scenarios(ledger, throttling);
            Expect(await api.Send(HttpMethod.Get, "/api/runs", "not-a-key-either"), ProblemCodes.InvalidCredentials);
            var throttled = await api.Send(HttpMethod.Get, "/api/runs", admin);
            Expect(throttled, ProblemCodes.TooManyWrongKeys);
            Assert.NotNull(throttled.RetryAfter);
        }

        // Retention's refusals, through a node that archives into a folder of its own (the same database and clock).
        var folder = Directory.CreateTempSubdirectory("ledger-catalogue-").FullName;
        try
        {
            await using var keeping = await ledger.SecondInstance(Ledger.Tests.Retention.RetentionHost.Settings(folder));
            var api = new Scenarios(ledger, keeping);
            var (runF, tokenF) = await api.Started();
            Assert.Equal(HttpStatusCode.OK, (await api.Events(runF, tokenF, Event("run.completed"))).Status);
            Expect(await api.Send(HttpMethod.Post, $"/api/runs/{runF}/restore", admin), ProblemCodes.RunNotArchived);
            await ledger.Settled();
            ledger.Clock.Advance(Ledger.Tests.Retention.RetentionHost.Window + TimeSpan.FromMinutes(1));
            await Ledger.Tests.Retention.RetentionKit.RetentionSweep(ledger, keeping);
            foreach (var file in Directory.EnumerateFiles(folder, "*.rla", SearchOption.AllDirectories)) File.Delete(file);
            Expect(await api.Send(HttpMethod.Get, $"/api/runs/{runF}/events", admin), ProblemCodes.RunArchived);
            Expect(await api.Send(HttpMethod.Post, $"/api/runs/{runF}/restore", admin), ProblemCodes.ArchiveCorrupt);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }

        Assert.Equal(ProblemCatalogue.All.Select(p => p.Code).Order(), seen.Order());
    }

    private async Task<Response> SendText(string url, string key, string body)
    {
        using var http = ledger.Host.Server.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = new StringContent(body, Encoding.UTF8, "application/x-www-form-urlencoded") };
        request.Headers.Authorization = new("Bearer", key);
        using var response = await http.SendAsync(request);
        return new Response(response.StatusCode, await response.Content.ReadAsStringAsync(),
            response.Content.Headers.ContentType?.MediaType, response.Headers.RetryAfter?.Delta);
    }

    /// <summary>A second instance whose clock throws when armed (inside a decision) and whose commits fail when armed.</summary>
    private async Task<FaultyInstance> FaultyHost()
    {
        var instance = new FaultyInstance();
        instance.Host = await ledger.SecondInstance(services =>
        {
            services.RemoveAll<TimeProvider>();
            services.AddSingleton<TimeProvider>(new FaultyClock(ledger.Clock, instance));
            services.ConfigureMarten(o => o.Listeners.Add(new FailingCommit(instance)));
        });
        return instance;
    }

    private sealed class FaultyInstance : IAsyncDisposable
    {
        public IAlbaHost Host { get; set; } = null!;
        public Func<Exception>? Fault { get; set; }
        public Func<Exception>? CommitFault { get; set; }
        public ValueTask DisposeAsync() => Host.DisposeAsync();
    }

    private sealed class FaultyClock(TimeProvider inner, FaultyInstance instance) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => instance.Fault is { } fault ? throw fault() : inner.GetUtcNow();
    }

    private sealed class FailingCommit(FaultyInstance instance) : DocumentSessionListenerBase
    {
        public override Task BeforeSaveChangesAsync(IDocumentSession session, CancellationToken token) =>
            instance.CommitFault is { } fault ? throw fault() : Task.CompletedTask;
    }
}
