using System.Net;
using System.Text.Json.Nodes;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Batches;

/// <summary>Fan-out batches through the HTTP API: expected against registered, missing, unexpected, complete.</summary>
public sealed class BatchTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private static string[] Strings(JsonNode? array) => array!.AsArray().Select(n => n!.GetValue<string>()).ToArray();

    private static int Count(JsonNode batch, string status) => batch["counts"]![status]!.GetValue<int>();

    private static string Label(JsonNode slot, string key) => slot["expected"]!["labels"]![key]!.GetValue<string>();

    /// <summary>
    /// Seed 002: 3 models x 2 regions, executions reported with 'eu-west' as well as 'EU', one empty
    /// answer, the executor saying Succeeded where the runner said failed, the portal saying Failed
    /// where the answer was merely empty.
    /// </summary>
    [Fact]
    public async Task seed_002_replayed_the_batch_completes_the_empty_answer_succeeds_and_disagreements_are_flagged()
    {
        var batch = NewRunId("job-20");
        string[] models = ["mistral-7b", "llama3.2-1b", "qwen2.5-1.5b"];
        var defined = await _api.DefineBatch(new
        {
            id = batch,
            title = "identity_basic across models and regions",
            matrix = new { labels = new Dictionary<string, string[]> { ["model"] = models, ["region"] = ["United States", "eu-west"], ["question"] = ["identity_basic"] } },
        });
        Assert.Equal(6, defined["expected"]!.AsArray().Count);
        Assert.Equal(["US", "EU", "US", "EU", "US", "EU"], defined["expected"]!.AsArray().Select(e => e!["labels"]!["region"]!.GetValue<string>()));

        // The runner reports EU executions with both spellings, as the incident's database held them.
        var runs = new Dictionary<(string Model, string Region), (string RunId, string Token)>();
        foreach (var model in models)
        {
            foreach (var (region, spelled) in new[] { ("US", "us-east"), ("EU", model == "llama3.2-1b" ? "EU" : "eu-west") })
            {
                runs[(model, region)] = await _api.Started(new
                {
                    runId = NewRunId(model), batch, requiredOutputs = new[] { "answer" },
                    labels = new { model, region = spelled, question = "identity_basic" },
                });
            }
        }
        var started = await _api.Batch(batch);
        Assert.Equal(6, started["filled"]!.GetValue<int>());
        Assert.Empty(started["missing"]!.AsArray());
        Assert.False(started["complete"]!.GetValue<bool>());
        Assert.Equal(6, Count(started, "claimed"));

        foreach (var ((model, region), (runId, token)) in runs)
        {
            if (model == "qwen2.5-1.5b" && region == "EU")
            {
                // The runner misread a successful response as a failure.
                await _api.Events(runId, token, Event("run.failed", fields: new { errorClass = "provider", message = "hybrid error: Provider returned empty response" }));
                continue;
            }
            var bytes = model == "mistral-7b" && region == "US" ? 0 : 512;
            var answered = await _api.Events(runId, token, new[]
            {
                Event("run.started"),
                Event("output.recorded", fields: new { name = "answer", uri = $"s3://answers/{runId}.txt", bytes }),
                Event("run.completed"),
            });
            Assert.Equal("succeeded", answered.RunStatus);
        }

        // Modal saw every execution succeed; the portal turned the empty answer into a failure.
        foreach (var (_, (runId, _)) in runs)
        {
            Assert.Equal(HttpStatusCode.OK, (await _api.Observe(runId, new { source = "modal", status = "succeeded", observedAt = _api.Now })).Status);
        }
        var empty = runs[("mistral-7b", "US")].RunId;
        var portal = await _api.Observe(empty, new { source = "portal", status = "failed", observedAt = _api.Now, detail = "EMPTY_MODEL_RESPONSE" });
        Assert.True(portal.Json!["mismatch"]!.GetValue<bool>());

        var view = await _api.Batch(batch);
        Assert.True(view["complete"]!.GetValue<bool>(), view.ToJsonString());
        Assert.Empty(view["missing"]!.AsArray());
        Assert.Empty(view["unexpected"]!.AsArray());
        Assert.Equal((6, 6, 6, 6), (view["expected"]!.GetValue<int>(), view["registered"]!.GetValue<int>(), view["filled"]!.GetValue<int>(), view["terminal"]!.GetValue<int>()));
        Assert.Equal((5, 1), (Count(view, "succeeded"), Count(view, "failed")));
        Assert.All(view["slots"]!.AsArray(), slot => Assert.Equal("terminal", slot!["state"]!.GetValue<string>()));
        var euSlot = view["slots"]!.AsArray().Single(s => Label(s!, "model") == "mistral-7b" && Label(s!, "region") == "EU")!;
        Assert.Equal(runs[("mistral-7b", "EU")].RunId, euSlot["run"]!["runId"]!.GetValue<string>());

        // The empty answer is a success with a warning, and the portal's disagreement is on record.
        var emptyRun = await _api.Run(empty);
        Assert.Equal("succeeded", emptyRun["status"]!.GetValue<string>());
        Assert.Equal(["empty-output"], Strings(emptyRun["warnings"]));
        Assert.Equal("EU", (await _api.Run(runs[("mistral-7b", "EU")].RunId))["labels"]!["region"]!.GetValue<string>());

        // The executor's Succeeded against the ledger's failed: flagged, and the ledger's status stands.
        var misread = await _api.Run(runs[("qwen2.5-1.5b", "EU")].RunId);
        Assert.Equal("failed", misread["status"]!.GetValue<string>());
        Assert.Equal("provider", misread["errorClass"]!.GetValue<string>());
        Assert.Equal(["status-mismatch"], misread["anomalies"]!.AsArray().Select(a => a!["kind"]!.GetValue<string>()));
        var mismatch = misread["anomalies"]![0]!["mismatch"]!;
        Assert.Equal(("failed", "succeeded", "modal"),
            (mismatch["ledger"]!.GetValue<string>(), mismatch["observed"]!.GetValue<string>(), mismatch["source"]!.GetValue<string>()));

        var listed = await _api.Send(HttpMethod.Get, $"/api/runs?anomaly=status-mismatch&batch={batch}", LedgerHost.ReadKey);
        Assert.Equal(new[] { empty, runs[("qwen2.5-1.5b", "EU")].RunId }.Order(),
            listed.Json!["items"]!.AsArray().Select(i => i!["runId"]!.GetValue<string>()).Order());
    }

    [Fact]
    public async Task runs_that_never_report_are_missing_once_the_configured_time_has_passed()
    {
        var batch = NewRunId("batch");
        await _api.DefineBatch(new { id = batch, labelSets = new[] { new { model = "a" }, new { model = "b" }, new { model = "c" } } });
        var (finished, token) = await _api.Started(new { runId = NewRunId(), batch, labels = new { model = "a" } });
        await _api.Events(finished, token, Event("run.completed"));
        var (silent, _) = await _api.Started(new { runId = NewRunId(), batch, labels = new { model = "b" } });

        var early = await _api.Batch(batch);
        Assert.Equal(["pending"], early["slots"]!.AsArray().Where(s => Label(s!, "model") == "b").Select(s => s!["state"]!.GetValue<string>()));
        var neverRegistered = Assert.Single(early["missing"]!.AsArray())!;
        Assert.Equal("not-registered", neverRegistered["reason"]!.GetValue<string>());
        Assert.Equal("c", neverRegistered["expected"]!["labels"]!["model"]!.GetValue<string>());

        ledger.Clock.Advance(TimeSpan.FromSeconds(early["missingAfterSeconds"]!.GetValue<int>() + 1));

        var late = await _api.Batch(batch);
        Assert.False(late["complete"]!.GetValue<bool>());
        var missing = late["missing"]!.AsArray();
        Assert.Equal(["b", "c"], missing.Select(m => m!["expected"]!["labels"]!["model"]!.GetValue<string>()));
        var overdue = missing[0]!;
        Assert.Equal("overdue", overdue["reason"]!.GetValue<string>());
        Assert.Equal(silent, overdue["run"]!["runId"]!.GetValue<string>());
        Assert.Equal("claimed", overdue["run"]!["status"]!.GetValue<string>());
        Assert.Contains("still claimed", overdue["detail"]!.GetValue<string>());
        Assert.Equal(1, late["terminal"]!.GetValue<int>());

        // An hour later every lease of the collection has run out: the janitor settles them, so no test inherits them.
        await ledger.Sweep();
        var swept = await _api.Batch(batch);
        Assert.Equal(["not-registered"], swept["missing"]!.AsArray().Select(m => m!["reason"]!.GetValue<string>()));
        Assert.Equal(1, Count(swept, "lost"));
    }

    [Fact]
    public async Task a_run_that_matches_no_expected_run_is_flagged_not_dropped_and_does_not_block_completion()
    {
        var batch = NewRunId("batch");
        await _api.DefineBatch(new { id = batch, matrix = new { labels = new { model = new[] { "a", "b" }, region = new[] { "EU" } } } });
        var a = await _api.Register(new { runId = NewRunId(), batch, labels = new { model = "a", region = "europe", host = "gpu-7" } });
        var b = await _api.Register(new { runId = NewRunId(), batch, labels = new { model = "b", region = "EU" } });
        var stray = await _api.Register(new { runId = NewRunId(), batch, labels = new { model = "c", region = "EU" } });
        var unlabelled = await _api.Register(new { runId = NewRunId(), batch });
        foreach (var runId in new[] { a, b }) await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { reason = "test" });

        var view = await _api.Batch(batch);

        Assert.True(view["complete"]!.GetValue<bool>(), view.ToJsonString());
        Assert.Equal(4, view["registered"]!.GetValue<int>());
        Assert.Equal((2, 2), (Count(view, "cancelled"), Count(view, "registered")));
        var unexpected = view["unexpected"]!.AsArray();
        Assert.Equal([stray, unlabelled], unexpected.Select(u => u!["runId"]!.GetValue<string>()));
        Assert.All(unexpected, u => Assert.Equal("matches-no-expected-run", u!["reason"]!.GetValue<string>()));
        Assert.Equal("c", unexpected[0]!["labels"]!["model"]!.GetValue<string>());
    }

    [Fact]
    public async Task runs_expected_by_id_fill_their_slot_and_a_run_registered_outside_the_batch_is_named()
    {
        var batch = NewRunId("batch");
        var (inside, outside) = (NewRunId("inside"), NewRunId("outside"));
        await _api.DefineBatch(new { id = batch, runIds = new[] { inside, outside } });
        await _api.Register(new { runId = inside, batch });
        await _api.Register(new { runId = outside });

        var view = await _api.Batch(batch);

        var slots = view["slots"]!.AsArray();
        Assert.Equal(inside, slots[0]!["run"]!["runId"]!.GetValue<string>());
        Assert.Equal("pending", slots[0]!["state"]!.GetValue<string>());
        var missing = Assert.Single(view["missing"]!.AsArray())!;
        Assert.Equal(outside, missing["expected"]!["runId"]!.GetValue<string>());
        Assert.Equal("not-registered", missing["reason"]!.GetValue<string>());
        Assert.Contains("registered without a batch", missing["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task a_retry_registered_for_a_slot_supersedes_the_earlier_attempt()
    {
        var batch = NewRunId("batch");
        await _api.DefineBatch(new { id = batch, labelSets = new[] { new { model = "a" } } });
        var (first, token) = await _api.Started(new { runId = NewRunId("first"), batch, labels = new { model = "a" } });
        await _api.Events(first, token, Event("run.failed", fields: new { errorClass = "timeout" }));
        var retry = await _api.Register(new { runId = NewRunId("retry"), batch, labels = new { model = "a" } });

        var view = await _api.Batch(batch);

        var slot = Assert.Single(view["slots"]!.AsArray())!;
        Assert.Equal(retry, slot["run"]!["runId"]!.GetValue<string>());
        Assert.Equal("pending", slot["state"]!.GetValue<string>());
        var earlier = Assert.Single(slot["earlierRuns"]!.AsArray())!;
        Assert.Equal((first, "failed"), (earlier["runId"]!.GetValue<string>(), earlier["status"]!.GetValue<string>()));
        Assert.False(view["complete"]!.GetValue<bool>());
        Assert.Empty(view["unexpected"]!.AsArray());
    }

    [Fact]
    public async Task runs_registered_before_their_batch_is_defined_still_fill_it()
    {
        var batch = NewRunId("batch");
        var runId = await _api.Register(new { runId = NewRunId(), batch, labels = new { region = "ap-southeast" } });

        await _api.DefineBatch(new { id = batch, labelSets = new[] { new { region = "APAC" } } });

        var slot = Assert.Single((await _api.Batch(batch))["slots"]!.AsArray())!;
        Assert.Equal(runId, slot["run"]!["runId"]!.GetValue<string>());
    }

    [Fact]
    public async Task runs_registering_into_one_batch_at_once_never_lose_a_slot()
    {
        var batch = NewRunId("batch");
        var models = Enumerable.Range(1, 4).Select(i => $"model-{i}").ToArray();
        string[] regions = ["EU", "US", "APAC"];
        string[] questions = ["q1", "q2"];
        await _api.DefineBatch(new { id = batch, matrix = new { labels = new { model = models, region = regions, question = questions } } });
        var slots = (from m in models from r in regions from q in questions select new { model = m, region = r.ToLowerInvariant(), question = q }).ToList();
        // The first alone, so that the others race each other rather than the service's warm-up.
        var first = await _api.Register(new { runId = NewRunId(), batch, labels = slots[0] });

        var rest = await Task.WhenAll(slots.Skip(1).Select(labels => _api.Register(new { runId = NewRunId(), batch, labels })));
        string[] runIds = [first, .. rest];

        var view = await _api.Batch(batch);
        Assert.Equal((24, 24, 24), (view["expected"]!.GetValue<int>(), view["registered"]!.GetValue<int>(), view["filled"]!.GetValue<int>()));
        Assert.Empty(view["unexpected"]!.AsArray());
        Assert.Equal(runIds.Order(), view["slots"]!.AsArray().Select(s => s!["run"]!["runId"]!.GetValue<string>()).Order());
    }

    [Fact]
    public async Task defining_the_same_batch_again_is_a_harmless_retry_and_changing_it_is_a_409()
    {
        var batch = NewRunId("batch");
        var body = new { id = batch, runIds = new[] { "r1" }, labelSets = new[] { new { region = "EU" } } };
        await _api.DefineBatch(body);

        var same = await _api.Send(HttpMethod.Post, "/api/batches", LedgerHost.AdminKey,
            new { id = batch, runIds = new[] { "r1" }, labelSets = new[] { new { region = "eu-west" } } });
        var changed = await _api.Send(HttpMethod.Post, "/api/batches", LedgerHost.AdminKey, new { id = batch, runIds = new[] { "r1", "r2" } });

        Assert.Equal(HttpStatusCode.OK, same.Status);
        Assert.Equal(HttpStatusCode.Conflict, changed.Status);
        Assert.Equal("batch-exists", changed.ProblemCode);
        Assert.False(changed.Retryable);
        Assert.Equal(2, (await _api.Batch(batch))["expected"]!.GetValue<int>());
    }

    // ---- refusals ------------------------------------------------------------------------------

    [Fact]
    public async Task defining_a_batch_needs_the_admin_key_and_reading_one_a_read_or_admin_key()
    {
        var batch = NewRunId("batch");
        var body = new { id = batch, runIds = new[] { "r1" } };
        Assert.Equal("missing-credentials", (await _api.Send(HttpMethod.Post, "/api/batches", null, body)).ProblemCode);
        Assert.Equal("invalid-credentials", (await _api.Send(HttpMethod.Post, "/api/batches", "not-a-key", body)).ProblemCode);
        foreach (var key in new[] { LedgerHost.WorkerKey, LedgerHost.ReadKey })
        {
            var refused = await _api.Send(HttpMethod.Post, "/api/batches", key, body);
            Assert.Equal((HttpStatusCode.Forbidden, "forbidden"), (refused.Status, refused.ProblemCode));
        }
        Assert.Equal("batch-not-found", (await _api.Send(HttpMethod.Get, $"/api/batches/{batch}", LedgerHost.AdminKey)).ProblemCode);

        await _api.DefineBatch(body);
        Assert.Equal(HttpStatusCode.Unauthorized, (await _api.Send(HttpMethod.Get, $"/api/batches/{batch}", null)).Status);
        Assert.Equal(HttpStatusCode.Forbidden, (await _api.Send(HttpMethod.Get, $"/api/batches/{batch}", LedgerHost.WorkerKey)).Status);
        Assert.Equal(HttpStatusCode.OK, (await _api.Send(HttpMethod.Get, $"/api/batches/{batch}", LedgerHost.AdminKey)).Status);
    }

    [Fact]
    public async Task an_unknown_batch_is_a_404()
    {
        var response = await _api.Send(HttpMethod.Get, $"/api/batches/{NewRunId("nothing")}", LedgerHost.ReadKey);
        Assert.Equal(HttpStatusCode.NotFound, response.Status);
        Assert.Equal("application/problem+json", response.ContentType);
        Assert.Equal("batch-not-found", response.ProblemCode);
    }

    [Theory]
    [InlineData("{\"runIds\":[\"r1\"]}", "id")]
    [InlineData("{\"id\":\"has spaces\",\"runIds\":[\"r1\"]}", "id")]
    [InlineData("{\"id\":\"b\"}", "$")]
    [InlineData("{\"id\":\"b\",\"runIds\":[]}", "$")]
    [InlineData("{\"id\":\"b\",\"runIds\":\"r1\"}", "runIds")]
    [InlineData("{\"id\":\"b\",\"runIds\":[\"bad id\"]}", "runIds[0]")]
    [InlineData("{\"id\":\"b\",\"labelSets\":[{}]}", "labelSets[0]")]
    [InlineData("{\"id\":\"b\",\"labelSets\":[{\"model\":\"\"}]}", "labelSets[0]")]
    [InlineData("{\"id\":\"b\",\"labelSets\":[{\"model\":\"a\"},{\"model\":\"a\"}]}", "$")]
    [InlineData("{\"id\":\"b\",\"labelSets\":[{\"region\":\"EU\"},{\"region\":\"eu-west\"}]}", "$")]
    [InlineData("{\"id\":\"b\",\"matrix\":{}}", "matrix.labels")]
    [InlineData("{\"id\":\"b\",\"matrix\":{\"labels\":{}}}", "matrix.labels")]
    [InlineData("{\"id\":\"b\",\"matrix\":{\"labels\":{\"model\":[]}}}", "matrix.labels.model")]
    [InlineData("{\"id\":\"b\",\"matrix\":{\"labels\":{\"model\":[\"a\",\"\"]}}}", "matrix.labels.model[1]")]
    [InlineData("{\"id\":\"b\",\"matrix\":{\"labels\":{\"region\":[\"EU\",\"eu-west\"]}}}", "matrix.labels.region[1]")]
    [InlineData("{\"id\":\"b\",\"matrix\":{\"labels\":{\"model\":[1,2]}}}", "matrix.labels.model[0]")]
    [InlineData("{\"id\":\"b\",\"matrix\":[\"a\"]}", "matrix")]
    public async Task a_malformed_batch_is_a_422_naming_the_field(string body, string field)
    {
        var response = await _api.Send(HttpMethod.Post, "/api/batches", LedgerHost.AdminKey, rawBody: body);

        Assert.True(response.Status == HttpStatusCode.UnprocessableEntity, $"{response.Code}: {response.Text}");
        Assert.Equal("invalid-payload", response.ProblemCode);
        Assert.False(response.Retryable);
        Assert.Equal([field], response.ErrorFields);
        Assert.Equal(HttpStatusCode.NotFound, (await _api.Send(HttpMethod.Get, "/api/batches/b", LedgerHost.AdminKey)).Status);
    }

    [Fact]
    public async Task a_matrix_larger_than_the_configured_maximum_is_a_422_before_it_is_expanded()
    {
        var values = Enumerable.Range(0, 1000).Select(i => $"v{i}").ToArray();
        var response = await _api.Send(HttpMethod.Post, "/api/batches", LedgerHost.AdminKey,
            new { id = NewRunId("huge"), matrix = new { labels = new { a = values, b = values, c = values } } });

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.Status);
        Assert.Contains("at most", response.Json!["errors"]!["$"]![0]!.GetValue<string>());
    }

    [Theory]
    [InlineData("{\"id\":\"b\",\"matrix\":{\"labels\":{\"model\":[\"a\"],\"region\":[\"EU\",\"mars\"]}}}", "matrix.labels.region[1]")]
    [InlineData("{\"id\":\"b\",\"labelSets\":[{\"model\":\"a\",\"region\":\"mars\"}]}", "labelSets[0].region")]
    public async Task an_expected_label_value_outside_the_closed_vocabulary_is_a_422_with_the_allowed_values(string body, string field)
    {
        var response = await _api.Send(HttpMethod.Post, "/api/batches", LedgerHost.AdminKey, rawBody: body);

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.Status);
        Assert.Equal("invalid-payload", response.ProblemCode);
        Assert.Equal([field], response.ErrorFields);
        Assert.Equal(["EU", "US", "APAC"], Strings(response.Json!["allowed"]));
    }
}
