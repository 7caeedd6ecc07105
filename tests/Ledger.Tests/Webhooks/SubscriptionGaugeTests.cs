using System.Net;
using Ledger.Tests.Fixtures;
using Ledger.Tests.Operations;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Webhooks;

/// <summary>A ledger whose deliveries give up at their first failed attempt, and whose subscriptions are paused after two of them.</summary>
public sealed class QuickToGiveUpHost : IAsyncLifetime
{
    public LedgerHost Ledger { get; } = LedgerHost.With(new Dictionary<string, string>
    {
        ["Ledger:Webhooks:MaxAttempts"] = "1",
        ["Ledger:Webhooks:PauseAfterFailedDeliveries"] = "2",
    });

    public Task InitializeAsync() => Ledger.InitializeAsync();
    public Task DisposeAsync() => Ledger.DisposeAsync();
}

/// <summary><c>ledger_webhook_subscriptions{state}</c> counts the stored subscriptions by state (in the metrics collection: see MetricsCollection).</summary>
[Collection(MetricsCollection.Name)]
public sealed class SubscriptionGaugeTests(QuickToGiveUpHost host) : IClassFixture<QuickToGiveUpHost>
{
    private readonly Scenarios _api = new(host.Ledger);

    private async Task<string> Subscribe(WebhookReceiver receiver, string kind)
    {
        var created = await _api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey,
            new { url = receiver.Url, kinds = new[] { kind }, secret = receiver.Secret });
        Assert.True(created.Status == HttpStatusCode.Created, $"subscribing answered {created.Code}: {created.Text}");
        return created.Json!["subscriptionId"]!.GetValue<string>();
    }

    private async Task Until(string subscriptionId, string state)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            var list = await _api.Send(HttpMethod.Get, "/api/subscriptions", LedgerHost.AdminKey);
            var subscription = list.Json!["items"]!.AsArray().Single(s => s!["subscriptionId"]!.GetValue<string>() == subscriptionId)!;
            if (subscription["state"]!.GetValue<string>() == state) return;
            Assert.True(DateTime.UtcNow < deadline, $"the subscription did not become {state}: {subscription.ToJsonString()}");
            await Task.Delay(200);
        }
    }

    [Fact]
    public async Task subscriptions_are_counted_by_state()
    {
        await using var receiver = await WebhookReceiver.Start();
        receiver.Answer = _ => 500;
        var failing = await Subscribe(receiver, "run.cancelled");
        var paused = await Subscribe(receiver, "run.failed");
        await Subscribe(receiver, "run.lost");

        var cancelled = await _api.Register(new { runId = NewRunId("gauge-cancelled") });
        Assert.Equal(HttpStatusCode.OK, (await _api.Send(HttpMethod.Post, $"/api/runs/{cancelled}/cancel", LedgerHost.AdminKey, new { reason = "gauge" })).Status);
        for (var i = 0; i < 2; i++)
        {
            var (runId, token) = await _api.Started(new { runId = NewRunId("gauge-failed") });
            Assert.Equal(HttpStatusCode.OK, (await _api.Events(runId, token, Event("run.failed", fields: new { errorClass = "timeout" }))).Status);
        }
        await Until(failing, "failing");
        await Until(paused, "paused");

        var scrape = await Scrape.Of(host.Ledger.Host);
        Assert.True(scrape.Value("ledger_webhook_subscriptions", ("state", "active")) == 1, scrape.Text);
        Assert.True(scrape.Value("ledger_webhook_subscriptions", ("state", "failing")) == 1, scrape.Text);
        Assert.True(scrape.Value("ledger_webhook_subscriptions", ("state", "paused")) == 1, scrape.Text);
    }
}
