using System.Net;
using System.Text.Json.Nodes;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Webhooks;

/// <summary>Signed deliveries of verdicts and anomalies to a real HTTP subscriber, on a real PostgreSQL.</summary>
public sealed class WebhookTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly Scenarios _api = new(ledger);

    private async Task<string> Subscribe(WebhookReceiver receiver, string[] kinds, string[]? anomalyKinds = null)
    {
        var created = await _api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey,
            new { url = receiver.Url, kinds, secret = receiver.Secret, anomalyKinds });
        Assert.True(created.Status == HttpStatusCode.Created, $"subscribing answered {created.Code}: {created.Text}");
        return created.Json!["subscriptionId"]!.GetValue<string>();
    }

    private Task Unsubscribe(string subscriptionId) =>
        _api.Send(HttpMethod.Delete, $"/api/subscriptions/{subscriptionId}", LedgerHost.AdminKey);

    private async Task<JsonArray> Deliveries(string subscriptionId)
    {
        var page = await _api.Send(HttpMethod.Get, $"/api/subscriptions/{subscriptionId}/deliveries", LedgerHost.AdminKey);
        Assert.True(page.Status == HttpStatusCode.OK, $"deliveries answered {page.Code}: {page.Text}");
        return page.Json!["items"]!.AsArray();
    }

    /// <summary>Waits until the delivery log of the subscription satisfies the condition.</summary>
    private async Task<JsonArray> WaitForLog(string subscriptionId, Func<JsonArray, bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (true)
        {
            var items = await Deliveries(subscriptionId);
            if (condition(items)) return items;
            Assert.True(DateTime.UtcNow < deadline, $"within {Patience.TotalSeconds:0}s: {what}; the log: {items.ToJsonString()}");
            await Task.Delay(200); // polling the ledger's log: each round trip is a real query
        }
    }

    [Fact]
    public async Task a_lost_run_is_delivered_once_signed_and_logged()
    {
        await using var receiver = await WebhookReceiver.Start();
        var subscriptionId = await Subscribe(receiver, ["run.lost"]);
        try
        {
            var (runId, _) = await _api.Started(new { runId = NewRunId("hook-lost"), leaseSeconds = 60 });
            ledger.Clock.Advance(TimeSpan.FromMinutes(5));
            await ledger.Sweep();
            Assert.Equal("lost", (await _api.Run(runId))["status"]!.GetValue<string>());

            var received = await receiver.WaitFor(r => r.Any(x => x.Body.Contains(runId)), Patience, $"the run.lost of {runId}");
            var delivery = Assert.Single(received, r => r.Body.Contains(runId));
            Assert.True(delivery.SignatureValid, $"signature {delivery.Signature} does not match the body {delivery.Body}");
            var json = delivery.Json;
            Assert.Equal(delivery.DeliveryId, json["deliveryId"]!.GetValue<string>());
            Assert.Equal("run.lost", json["kind"]!.GetValue<string>());
            Assert.Equal(runId, json["runId"]!.GetValue<string>());
            Assert.Equal("lost", json["status"]!.GetValue<string>());
            Assert.Equal("lease-expired", json["reason"]!.GetValue<string>());
            Assert.True(json.AsObject().ContainsKey("anomalyKind"));
            Assert.NotNull(json["occurredAt"]);

            var log = await WaitForLog(subscriptionId, items => items.Any(i => i!["state"]!.GetValue<string>() == "delivered"), "the delivery logged as delivered");
            var entry = Assert.Single(log);
            Assert.Equal(delivery.DeliveryId, entry!["deliveryId"]!.GetValue<string>());
            var attempt = Assert.Single(entry["attempts"]!.AsArray());
            Assert.Equal(200, attempt!["statusCode"]!.GetValue<int>());
            Assert.NotNull(attempt["at"]);
        }
        finally
        {
            await Unsubscribe(subscriptionId);
        }
    }

    [Fact]
    public async Task a_failed_attempt_is_retried_with_the_same_delivery_id_and_both_attempts_are_listed()
    {
        await using var receiver = await WebhookReceiver.Start();
        receiver.Answer = n => n == 0 ? 500 : 200;
        var subscriptionId = await Subscribe(receiver, ["run.cancelled"]);
        try
        {
            var runId = await _api.Register(new { runId = NewRunId("hook-retry") });
            var cancelled = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { reason = "webhook retry test" });
            Assert.True(cancelled.Status == HttpStatusCode.OK, $"cancel answered {cancelled.Code}: {cancelled.Text}");

            var received = await receiver.WaitFor(r => r.Count(x => x.Body.Contains(runId)) >= 2, Patience, "a failed attempt and its retry");
            var mine = received.Where(r => r.Body.Contains(runId)).ToList();
            Assert.Equal([500, 200], mine.Select(r => r.AnsweredWith));
            Assert.All(mine, r => Assert.True(r.SignatureValid));
            Assert.Single(mine.Select(r => r.DeliveryId).Distinct());
            Assert.Equal(mine[0].Body, mine[1].Body);

            var log = await WaitForLog(subscriptionId, items => items.Any(i => i!["state"]!.GetValue<string>() == "delivered"), "the retried delivery logged");
            var entry = Assert.Single(log);
            Assert.Equal(mine[0].DeliveryId, entry!["deliveryId"]!.GetValue<string>());
            var attempts = entry["attempts"]!.AsArray();
            Assert.Equal([500, 200], attempts.Select(a => a!["statusCode"]!.GetValue<int>()));
            Assert.Contains("500", attempts[0]!["error"]!.GetValue<string>());
        }
        finally
        {
            await Unsubscribe(subscriptionId);
        }
    }

    [Fact]
    public async Task anomalies_are_delivered_with_their_kind_narrowed_by_kind_and_refusals_deliver_nothing()
    {
        await using var all = await WebhookReceiver.Start();
        await using var narrowed = await WebhookReceiver.Start("another-receiver-secret-42");
        var allId = await Subscribe(all, ["anomaly.flagged"]);
        var narrowedId = await Subscribe(narrowed, ["anomaly.flagged"], ["late-completion"]);
        try
        {
            // A completion after the run was lost: late-completion.
            var (late, lateToken) = await _api.Started(new { runId = NewRunId("hook-late"), leaseSeconds = 5 });
            ledger.Clock.Advance(TimeSpan.FromSeconds(30));
            await ledger.Sweep();
            await _api.Events(late, lateToken, Event("run.completed"));
            // Refusals of unauthenticated requests: no event, no anomaly, no delivery.
            Assert.Equal(HttpStatusCode.Unauthorized, (await _api.Events(late, null, Event("run.completed"))).Status);
            Assert.Equal(HttpStatusCode.Unauthorized, (await _api.Events(late, "not-a-token", Event("run.completed"))).Status);
            // Completed while a required score is missing: completed-before-results.
            var (pending, pendingToken) = await _api.Started(new { runId = NewRunId("hook-pending"), requiredScores = new[] { "x" } });
            await _api.Events(pending, pendingToken, Event("run.completed"));

            var received = await all.WaitFor(r => r.Any(x => x.Body.Contains(pending)) && r.Any(x => x.Body.Contains(late)), Patience, "both anomalies");
            Assert.All(received, r => Assert.True(r.SignatureValid));
            var kinds = received.Select(r => r.Json).Select(j => (Kind: j["kind"]!.GetValue<string>(), Run: j["runId"]!.GetValue<string>(), Anomaly: j["anomalyKind"]!.GetValue<string>()));
            Assert.Equal([("anomaly.flagged", late, "late-completion"), ("anomaly.flagged", pending, "completed-before-results")], kinds.OrderBy(k => k.Run == pending));

            // The relay has passed both anomalies (it logged them for the first subscriber in the
            // same transaction): the narrowed subscriber has exactly the late completion.
            var narrowedLog = await Deliveries(narrowedId);
            var only = Assert.Single(narrowedLog);
            Assert.Equal(("late-completion", late), (only!["anomalyKind"]!.GetValue<string>(), only["runId"]!.GetValue<string>()));
            var delivered = await narrowed.WaitFor(r => r.Count >= 1, Patience, "the late completion");
            Assert.Equal("late-completion", Assert.Single(delivered).Json["anomalyKind"]!.GetValue<string>());
            Assert.Equal(2, (await Deliveries(allId)).Count);
        }
        finally
        {
            await Unsubscribe(allId);
            await Unsubscribe(narrowedId);
        }
    }

    [Fact]
    public async Task a_reclassification_delivers_the_decision_and_the_new_verdict()
    {
        await using var receiver = await WebhookReceiver.Start();
        var subscriptionId = await Subscribe(receiver, ["run.reclassified", "run.failed"]);
        try
        {
            var runId = await _api.Register(new { runId = NewRunId("hook-reclassified") });
            Assert.Equal(HttpStatusCode.OK, (await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { })).Status);
            var reclassified = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/reclassify", LedgerHost.AdminKey,
                new { status = "failed", reason = "the provider was down", evidence = new[] { "ticket-1" } });
            Assert.True(reclassified.Status == HttpStatusCode.OK, $"{reclassified.Code}: {reclassified.Text}");

            var received = await receiver.WaitFor(r => r.Count(x => x.Body.Contains(runId)) >= 2, Patience, "the reclassification and the new verdict");
            var mine = received.Where(r => r.Body.Contains(runId)).Select(r => r.Json).ToList();
            Assert.Equal(["run.failed", "run.reclassified"], mine.Select(j => j["kind"]!.GetValue<string>()).Order());
            Assert.All(mine, j => Assert.Equal("failed", j["status"]!.GetValue<string>()));
            Assert.Equal("the provider was down", mine.Single(j => j["kind"]!.GetValue<string>() == "run.reclassified")["reason"]!.GetValue<string>());
            Assert.Equal(2, mine.Select(j => j["deliveryId"]!.GetValue<string>()).Distinct().Count());
        }
        finally
        {
            await Unsubscribe(subscriptionId);
        }
    }

    [Fact]
    public async Task subscriptions_are_admin_only_validated_and_never_show_their_secret()
    {
        const string secret = "a-very-secret-value-0123456789";
        var body = new { url = "https://93.184.215.14/hooks/ledger", kinds = new[] { "run.failed", "anomaly.flagged" }, secret, anomalyKinds = new[] { "late-completion" } };

        Assert.Equal(HttpStatusCode.Unauthorized, (await _api.Send(HttpMethod.Post, "/api/subscriptions", null, body)).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await _api.Send(HttpMethod.Get, "/api/subscriptions", null)).Status);
        var worker = await _api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.WorkerKey, body);
        Assert.Equal((HttpStatusCode.Forbidden, "forbidden"), (worker.Status, worker.ProblemCode));
        Assert.Equal(HttpStatusCode.Forbidden, (await _api.Send(HttpMethod.Get, "/api/subscriptions", LedgerHost.ReadKey)).Status);

        async Task Invalid(object request, string field)
        {
            var refused = await _api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey, request);
            Assert.True(refused.Status == HttpStatusCode.UnprocessableEntity, $"{refused.Code}: {refused.Text}");
            Assert.Equal("invalid-payload", refused.ProblemCode);
            Assert.Contains(field, refused.ErrorFields);
        }
        await Invalid(new { url = "ftp://93.184.215.14/x", kinds = new[] { "run.lost" }, secret }, "url");
        await Invalid(new { url = "https://user:pass@93.184.215.14/x", kinds = new[] { "run.lost" }, secret }, "url");
        await Invalid(new { url = "not a url", kinds = new[] { "run.lost" }, secret }, "url");
        await Invalid(new { url = "https://93.184.215.14/x", kinds = new[] { "run.exploded" }, secret }, "kinds[0]");
        await Invalid(new { url = "https://93.184.215.14/x", kinds = Array.Empty<string>(), secret }, "kinds");
        await Invalid(new { url = "https://93.184.215.14/x", kinds = new[] { "run.lost" } }, "secret");
        await Invalid(new { url = "https://93.184.215.14/x", kinds = new[] { "run.lost" }, secret, anomalyKinds = new[] { "late-event" } }, "anomalyKinds");

        var created = await _api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey, body);
        Assert.True(created.Status == HttpStatusCode.Created, $"{created.Code}: {created.Text}");
        var id = created.Json!["subscriptionId"]!.GetValue<string>();
        Assert.DoesNotContain(secret, created.Text);

        var list = await _api.Send(HttpMethod.Get, "/api/subscriptions", LedgerHost.AdminKey);
        Assert.Equal(HttpStatusCode.OK, list.Status);
        Assert.DoesNotContain(secret, list.Text);
        Assert.DoesNotContain("secret", list.Text, StringComparison.OrdinalIgnoreCase);
        var listed = Assert.Single(list.Json!["items"]!.AsArray(), s => s!["subscriptionId"]!.GetValue<string>() == id);
        Assert.Equal(["run.failed", "anomaly.flagged"], listed!["kinds"]!.AsArray().Select(k => k!.GetValue<string>()));

        Assert.Empty(await Deliveries(id));
        Assert.Equal(HttpStatusCode.NoContent, (await _api.Send(HttpMethod.Delete, $"/api/subscriptions/{id}", LedgerHost.AdminKey)).Status);
        var again = await _api.Send(HttpMethod.Delete, $"/api/subscriptions/{id}", LedgerHost.AdminKey);
        Assert.Equal((HttpStatusCode.NotFound, "subscription-not-found"), (again.Status, again.ProblemCode));
        var unknown = await _api.Send(HttpMethod.Get, "/api/subscriptions/sub_nope/deliveries", LedgerHost.AdminKey);
        Assert.Equal((HttpStatusCode.NotFound, "subscription-not-found"), (unknown.Status, unknown.ProblemCode));
    }

    [Fact]
    public async Task private_targets_are_refused_when_they_are_not_allowed()
    {
        await using var strict = await ledger.SecondInstance(new Dictionary<string, string>
        {
            ["Ledger:Webhooks:AllowPrivateTargets"] = "false",
            ["Ledger:DaemonMode"] = "Disabled",
        });
        var api = new Scenarios(ledger, strict);
        foreach (var url in new[] { "http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/x", "http://192.168.1.1/x", "http://169.254.169.254/latest", "http://[::1]/x" })
        {
            var refused = await api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey,
                new { url, kinds = new[] { "run.lost" }, secret = "a-very-secret-value-0123456789" });
            Assert.True(refused.Status == HttpStatusCode.UnprocessableEntity, $"{url}: {refused.Code} {refused.Text}");
            Assert.Equal(["url"], refused.ErrorFields);
        }
    }
}
