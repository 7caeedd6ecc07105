using System.Net;
using System.Text.Json.Nodes;
using Ledger.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Webhooks;

/// <summary>
/// A ledger whose deliveries give up after two quick attempts, and whose subscriptions are paused
/// after two deliveries that gave up, with its log lines kept.
/// </summary>
public sealed class SubscriberHealthHost : IAsyncLifetime
{
    public CapturedLogs Logs { get; } = new();
    public LedgerHost Ledger { get; }

    public SubscriberHealthHost() => Ledger = LedgerHost.With(new Dictionary<string, string>
    {
        ["Ledger:Webhooks:MaxAttempts"] = "2",
        ["Ledger:Webhooks:RetryWindowSeconds"] = "1",
        ["Ledger:Webhooks:PauseAfterFailedDeliveries"] = "2",
    }, services => services.AddSingleton<ILoggerProvider>(Logs));

    public Task InitializeAsync() => Ledger.InitializeAsync();
    public Task DisposeAsync() => Ledger.DisposeAsync();
}

/// <summary>
/// A subscriber that keeps failing: each failed attempt is one warning line; once deliveries use
/// every attempt it is failing, then paused; what comes due meanwhile is held and sent, unchanged,
/// on resume. Its state is in the API (and in the metrics: <see cref="SubscriptionGaugeTests"/>).
/// </summary>
public sealed class SubscriberHealthTests(SubscriberHealthHost host) : IClassFixture<SubscriberHealthHost>
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private readonly Scenarios _api = new(host.Ledger);

    private async Task<string> Subscribe(WebhookReceiver receiver)
    {
        var created = await _api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey,
            new { url = receiver.Url, kinds = new[] { "run.cancelled" }, secret = receiver.Secret });
        Assert.True(created.Status == HttpStatusCode.Created, $"subscribing answered {created.Code}: {created.Text}");
        return created.Json!["subscriptionId"]!.GetValue<string>();
    }

    private async Task<string> Cancelled(string prefix)
    {
        var runId = await _api.Register(new { runId = NewRunId(prefix) });
        var cancelled = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { reason = "subscriber health test" });
        Assert.True(cancelled.Status == HttpStatusCode.OK, $"cancel answered {cancelled.Code}: {cancelled.Text}");
        return runId;
    }

    private async Task<JsonNode> Subscription(string id)
    {
        var list = await _api.Send(HttpMethod.Get, "/api/subscriptions", LedgerHost.AdminKey);
        Assert.True(list.Status == HttpStatusCode.OK, $"the list answered {list.Code}: {list.Text}");
        return list.Json!["items"]!.AsArray().Single(s => s!["subscriptionId"]!.GetValue<string>() == id)!;
    }

    private async Task<JsonNode> Delivery(string subscriptionId, string runId, Func<JsonNode, bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (true)
        {
            var page = await _api.Send(HttpMethod.Get, $"/api/subscriptions/{subscriptionId}/deliveries?pageSize=500", LedgerHost.AdminKey);
            var delivery = page.Json!["items"]!.AsArray().FirstOrDefault(d => d!["runId"]!.GetValue<string>() == runId);
            if (delivery is not null && condition(delivery)) return delivery;
            Assert.True(DateTime.UtcNow < deadline, $"within {Patience.TotalSeconds:0}s: {what}; the log: {page.Text}");
            await Task.Delay(200);
        }
    }

    private async Task<JsonNode> WaitForState(string subscriptionId, string state)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (true)
        {
            var subscription = await Subscription(subscriptionId);
            if (subscription["state"]!.GetValue<string>() == state) return subscription;
            Assert.True(DateTime.UtcNow < deadline, $"within {Patience.TotalSeconds:0}s the subscription is {state}: {subscription.ToJsonString()}");
            await Task.Delay(200);
        }
    }

    private static string State(JsonNode delivery) => delivery["state"]!.GetValue<string>();

    /// <summary>
    /// The log lines naming the delivery, once there are <paramref name="expected"/> (the last attempt's
    /// line is written after the delivery and the subscription are saved), and no more a moment later.
    /// </summary>
    private async Task<List<(string Category, LogLevel Level, string Text)>> LogLines(string deliveryId, int expected)
    {
        var deadline = DateTime.UtcNow + Patience;
        List<(string Category, LogLevel Level, string Text)> Lines() => host.Logs.Lines.Where(l => l.Text.Contains(deliveryId)).ToList();
        while (Lines().Count < expected)
        {
            Assert.True(DateTime.UtcNow < deadline, $"within {Patience.TotalSeconds:0}s, {expected} log lines about {deliveryId}: {string.Join("\n", Lines().Select(l => l.Text))}");
            await Task.Delay(100);
        }
        await Task.Delay(300);
        var lines = Lines();
        Assert.Equal(expected, lines.Count);
        return lines;
    }

    [Fact]
    public async Task a_subscriber_that_keeps_failing_is_failing_then_paused_and_what_comes_due_is_held_until_resume()
    {
        await using var receiver = await WebhookReceiver.Start();
        receiver.Answer = _ => 500;
        var subscriptionId = await Subscribe(receiver);
        Assert.Equal("active", (await Subscription(subscriptionId))["state"]!.GetValue<string>());

        // The first delivery uses both its attempts: failing, not yet paused.
        var first = await Cancelled("health-1");
        var gaveUp = await Delivery(subscriptionId, first, d => State(d) == "failed", "the first delivery gives up");
        Assert.Equal(2, gaveUp["attempts"]!.AsArray().Count);
        var failing = await WaitForState(subscriptionId, "failing");
        Assert.NotNull(failing["stateSince"]);

        // Each failed attempt was one warning line naming the subscription, the delivery, the attempt,
        // what went wrong and what comes next; no stack trace, and Wolverine logged no failure.
        var deliveryId = gaveUp["deliveryId"]!.GetValue<string>();
        var lines = await LogLines(deliveryId, 2);
        Assert.All(lines, l => Assert.Equal(LogLevel.Warning, l.Level));
        Assert.All(lines, l => Assert.DoesNotContain("Exception", l.Text));
        Assert.All(lines, l => Assert.Contains(subscriptionId, l.Text));
        Assert.All(lines, l => Assert.Contains("(answered 500)", l.Text));
        Assert.Contains(lines, l => l.Text.Contains("attempt 1 of 2") && l.Text.Contains("next try in"));
        Assert.Contains(lines, l => l.Text.Contains("attempt 2 of 2") && l.Text.Contains("no further try") && l.Text.Contains("is failing (1 of 2"));
        Assert.DoesNotContain(host.Logs.Lines, l => l.Level >= LogLevel.Error && (l.Text.Contains("DeliverWebhook") || l.Text.Contains(deliveryId)));

        // The second one gives up too: paused.
        var second = await Cancelled("health-2");
        await Delivery(subscriptionId, second, d => State(d) == "failed", "the second delivery gives up");
        await WaitForState(subscriptionId, "paused");
        // The pause is logged after it is saved.
        await Wait.Until(() => host.Logs.Lines.Any(l => l.Text.Contains("is now paused after 2 failed deliveries") && l.Text.Contains($"/api/subscriptions/{subscriptionId}/resume")),
            Patience, "the line saying the subscriber is paused and how to resume it");

        // While paused nothing is sent: what comes due is held, with no attempt.
        var received = receiver.All.Count;
        var third = await Cancelled("health-3");
        var held = await Delivery(subscriptionId, third, d => State(d) == "held", "the third delivery is held");
        Assert.Empty(held["attempts"]!.AsArray());
        await Task.Delay(1500);
        Assert.Equal(received, receiver.All.Count);

        // Resumed (the subscriber is back): active again, and the held delivery arrives, signed, under its id.
        receiver.Answer = _ => 204;
        var resumed = await _api.Send(HttpMethod.Post, $"/api/subscriptions/{subscriptionId}/resume", LedgerHost.AdminKey);
        Assert.True(resumed.Status == HttpStatusCode.OK, $"resume answered {resumed.Code}: {resumed.Text}");
        Assert.Equal("active", resumed.Json!["state"]!.GetValue<string>());
        Assert.Equal(1, resumed.Json["resent"]!.GetValue<int>());
        var arrived = await receiver.WaitFor(r => r.Any(x => x.Body.Contains(third)), Patience, "the held delivery after resume");
        var delivery = Assert.Single(arrived, r => r.Body.Contains(third));
        Assert.True(delivery.SignatureValid);
        Assert.Equal(held["deliveryId"]!.GetValue<string>(), delivery.DeliveryId);
        var delivered = await Delivery(subscriptionId, third, d => State(d) == "delivered", "the held delivery logged as delivered");
        Assert.Equal(204, Assert.Single(delivered["attempts"]!.AsArray())!["statusCode"]!.GetValue<int>());
        Assert.Equal("active", (await Subscription(subscriptionId))["state"]!.GetValue<string>());
        // What gave up before the pause stays given up.
        Assert.Equal("failed", State(await Delivery(subscriptionId, first, _ => true, "the first delivery")));

        await _api.Send(HttpMethod.Delete, $"/api/subscriptions/{subscriptionId}", LedgerHost.AdminKey);
    }

    [Fact]
    public async Task a_subscriber_that_is_gone_is_one_warning_line_per_attempt_naming_the_refused_connection()
    {
        // The README's case: the receiver of the walk-through is stopped, its port refuses connections.
        string subscriptionId;
        await using (var receiver = await WebhookReceiver.Start()) subscriptionId = await Subscribe(receiver);

        var runId = await Cancelled("health-gone");
        var gaveUp = await Delivery(subscriptionId, runId, d => State(d) == "failed", "the delivery to a gone subscriber gives up");
        var deliveryId = gaveUp["deliveryId"]!.GetValue<string>();
        var lines = await LogLines(deliveryId, 2);
        Assert.All(lines, l => Assert.Equal(LogLevel.Warning, l.Level));
        Assert.All(lines, l => Assert.Contains(subscriptionId, l.Text));
        Assert.All(lines, l => Assert.Contains("refused", l.Text, StringComparison.OrdinalIgnoreCase));
        Assert.All(lines, l => Assert.DoesNotContain("Exception", l.Text));
        Assert.All(lines, l => Assert.DoesNotContain("\n", l.Text));
        Assert.Contains(lines, l => l.Text.Contains("attempt 1 of 2") && l.Text.Contains("next try in"));
        Assert.Contains(lines, l => l.Text.Contains("attempt 2 of 2") && l.Text.Contains("no further try"));
        Assert.DoesNotContain(host.Logs.Lines, l => l.Level >= LogLevel.Error && (l.Text.Contains("DeliverWebhook") || l.Text.Contains(deliveryId)));

        await _api.Send(HttpMethod.Delete, $"/api/subscriptions/{subscriptionId}", LedgerHost.AdminKey);
    }

    [Fact]
    public async Task a_failing_subscriber_that_answers_again_is_active_again()
    {
        await using var receiver = await WebhookReceiver.Start();
        receiver.Answer = n => n < 2 ? 503 : 200;
        var subscriptionId = await Subscribe(receiver);
        try
        {
            var first = await Cancelled("recover-1");
            await Delivery(subscriptionId, first, d => State(d) == "failed", "the first delivery gives up");
            await WaitForState(subscriptionId, "failing");

            var second = await Cancelled("recover-2");
            await Delivery(subscriptionId, second, d => State(d) == "delivered", "the second delivery arrives");
            var active = await WaitForState(subscriptionId, "active");
            Assert.NotNull(active["stateSince"]);
        }
        finally
        {
            await _api.Send(HttpMethod.Delete, $"/api/subscriptions/{subscriptionId}", LedgerHost.AdminKey);
        }
    }

    [Fact]
    public async Task deleting_a_paused_subscription_drops_what_it_held()
    {
        await using var receiver = await WebhookReceiver.Start();
        receiver.Answer = _ => 500;
        var subscriptionId = await Subscribe(receiver);
        var runs = new[] { await Cancelled("drop-1"), await Cancelled("drop-2") };
        foreach (var run in runs) await Delivery(subscriptionId, run, d => State(d) == "failed", $"the delivery of {run} gives up");
        await WaitForState(subscriptionId, "paused");
        var held = await Cancelled("drop-3");
        await Delivery(subscriptionId, held, d => State(d) == "held", "the delivery is held");

        var deleted = await _api.Send(HttpMethod.Delete, $"/api/subscriptions/{subscriptionId}", LedgerHost.AdminKey);
        Assert.Equal(HttpStatusCode.NoContent, deleted.Status);
        // The log stays readable: the held delivery is dropped, never sent.
        Assert.Equal("dropped", State(await Delivery(subscriptionId, held, _ => true, "the held delivery")));
        var resumed = await _api.Send(HttpMethod.Post, $"/api/subscriptions/{subscriptionId}/resume", LedgerHost.AdminKey);
        Assert.Equal(HttpStatusCode.NotFound, resumed.Status);
    }

    [Fact]
    public async Task resume_is_for_the_admin_key_and_a_known_subscription_and_an_active_one_stays_active()
    {
        await using var receiver = await WebhookReceiver.Start();
        var subscriptionId = await Subscribe(receiver);
        try
        {
            var unknown = await _api.Send(HttpMethod.Post, "/api/subscriptions/sub_nosuchsubscription/resume", LedgerHost.AdminKey);
            Assert.Equal(HttpStatusCode.NotFound, unknown.Status);
            Assert.Equal("subscription-not-found", unknown.Json!["code"]!.GetValue<string>());

            var reader = await _api.Send(HttpMethod.Post, $"/api/subscriptions/{subscriptionId}/resume", LedgerHost.ReadKey);
            Assert.Equal(HttpStatusCode.Forbidden, reader.Status);
            var anonymous = await _api.Send(HttpMethod.Post, $"/api/subscriptions/{subscriptionId}/resume", null);
            Assert.Equal(HttpStatusCode.Unauthorized, anonymous.Status);

            var resumed = await _api.Send(HttpMethod.Post, $"/api/subscriptions/{subscriptionId}/resume", LedgerHost.AdminKey);
            Assert.Equal(HttpStatusCode.OK, resumed.Status);
            Assert.Equal("active", resumed.Json!["state"]!.GetValue<string>());
            Assert.Equal(0, resumed.Json["resent"]!.GetValue<int>());
            Assert.Null((await Subscription(subscriptionId))["stateSince"]);
        }
        finally
        {
            await _api.Send(HttpMethod.Delete, $"/api/subscriptions/{subscriptionId}", LedgerHost.AdminKey);
        }
    }
}
