using System.Net;
using System.Text.Json.Nodes;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Retention;
using Ledger.Tests.Fixtures;
using Ledger.Webhooks;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Ledger.Tests.Forensics;

/// <summary>
/// Valid keys cannot grow the database without bound: refusals are kept whole up to a budget per
/// caller and hour and counted beyond it; subscriptions are capped and listed in pages; refusals and
/// finished deliveries are pruned after their age, by the node that leads the async daemon, and the
/// KPIs still add up.
/// </summary>
public sealed class RefusalBudgetTests
{
    private const int Budget = 5;
    private const int Samples = 2;

    private static readonly Dictionary<string, string> Settings = new()
    {
        ["Ledger:Rejections:BudgetPerKeyHour"] = Budget.ToString(),
        ["Ledger:Rejections:SamplesPerHour"] = Samples.ToString(),
        ["Ledger:Rejections:KeepFor"] = "1.00:00:00",
        ["Ledger:Webhooks:KeepDeliveriesFor"] = "1.00:00:00",
        ["Ledger:Webhooks:MaxSubscriptions"] = "3",
        ["Ledger:Webhooks:AllowPrivateTargets"] = "true",
    };

    private static async Task<T> With<T>(Func<LedgerHost, Scenarios, Task<T>> test, Dictionary<string, string>? more = null)
    {
        var ledger = LedgerHost.With(more is null ? Settings : Settings.Concat(more).ToDictionary());
        await ledger.InitializeAsync();
        try
        {
            return await test(ledger, new Scenarios(ledger));
        }
        finally
        {
            await ledger.DisposeAsync();
        }
    }

    /// <summary>Moves the host's clock to the start of a fresh hour, so that the budgets and counts of this hour are the test's alone.</summary>
    private static DateTimeOffset FreshHour(LedgerHost ledger)
    {
        var now = ledger.Clock.GetUtcNow();
        ledger.Clock.Advance(CountedRefusals.HourOf(now).AddHours(1).AddMinutes(1) - now);
        return CountedRefusals.HourOf(ledger.Clock.GetUtcNow());
    }

    private static async Task<JsonNode> Kpis(Scenarios api) => (await api.Send(HttpMethod.Get, "/api/kpis", LedgerHost.ReadKey)).Json!;

    private static long Count(JsonNode kpis, string map, string key) => kpis[map]?[key]?.GetValue<long>() ?? 0;

    [Fact]
    public Task a_keys_refusals_beyond_its_budget_for_the_hour_are_counted_with_bounded_samples_and_still_add_up() => With(async (ledger, api) =>
    {
        var hour = FreshHour(ledger);
        var before = await Kpis(api);
        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();

        // 20 forbidden writes with a read key (the issue's 200, at a budget of 5).
        for (var i = 0; i < 20; i++)
        {
            var refused = await api.Send(HttpMethod.Post, "/api/runs", LedgerHost.ReadKey, new { runId = $"forbidden-{i}" });
            Assert.Equal(HttpStatusCode.Forbidden, refused.Status);
        }

        var caller = Access.DigestHex(LedgerHost.ReadKey)[..16];
        await using (var session = store.QuerySession())
        {
            var rows = await session.Query<Rejection>().Where(r => r.Caller == caller && r.At >= hour).ToListAsync();
            Assert.Equal(Budget, rows.Count(r => !r.OverBudget));
            Assert.Equal(Samples, rows.Count(r => r.OverBudget));
            Assert.All(rows, r => Assert.Equal(Redaction.Version, r.Redaction));
            var anomalies = await session.Query<AnomalyRecord>().Where(a => a.At >= hour && a.Kind == AnomalyKinds.Rejected).CountAsync();
            Assert.Equal(Budget, anomalies);
        }

        var page = await api.Send(HttpMethod.Get, $"/api/rejections?since={Uri.EscapeDataString(hour.ToString("O"))}&pageSize=500", LedgerHost.ReadKey);
        var overBudget = page.Json!["overBudget"]!.AsArray().Single()!;
        Assert.Equal(("forbidden", caller, 20L - Budget), (overBudget["reason"]!.GetValue<string>(), overBudget["caller"]!.GetValue<string>(), overBudget["count"]!.GetValue<long>()));
        Assert.Empty(page.Json!["unauthenticated"]!.AsArray());
        // The key is named by the start of its digest, never in clear.
        Assert.DoesNotContain(LedgerHost.ReadKey, page.Text);

        // Every refusal counts in the KPIs, kept or not; only the kept ones are anomalies.
        var after = await Kpis(api);
        Assert.Equal(20, Count(after, "rejectionsByReason", "forbidden") - Count(before, "rejectionsByReason", "forbidden"));
        Assert.Equal(Budget, Count(after, "anomaliesByKind", "rejected") - Count(before, "anomaliesByKind", "rejected"));
        Assert.Empty(await ledger.Host.Services.GetRequiredService<KpiStore>().CompareAsync(null, CancellationToken.None));

        // Another caller has a budget of its own; the next hour gives the read key a new one.
        Assert.Equal(HttpStatusCode.Forbidden, (await api.Send(HttpMethod.Post, "/api/runs", LedgerHost.WorkerKey, new { })).Status);
        var next = FreshHour(ledger);
        Assert.Equal(HttpStatusCode.Forbidden, (await api.Send(HttpMethod.Post, "/api/runs", LedgerHost.ReadKey, new { runId = "next-hour" })).Status);
        await using (var session = store.QuerySession())
        {
            var worker = Access.DigestHex(LedgerHost.WorkerKey)[..16];
            Assert.True(await session.Query<Rejection>().AnyAsync(r => r.Caller == worker && !r.OverBudget));
            Assert.True(await session.Query<Rejection>().AnyAsync(r => r.Caller == caller && !r.OverBudget && r.At >= next));
        }
        return true;
    });

    [Fact]
    public Task a_late_completion_beyond_the_tokens_budget_is_still_flagged_once() => With(async (ledger, api) =>
    {
        var (runId, token) = await api.Started(new { runId = Scenarios.NewRunId("ghost-flood"), leaseSeconds = 30 });
        await api.Events(runId, token, Scenarios.Event("run.started"));
        ledger.Clock.Advance(TimeSpan.FromSeconds(45));
        await ledger.Sweep();
        ledger.Clock.Advance(TimeSpan.FromHours(2));
        FreshHour(ledger);

        // Past the grace, the token spends its budget and its samples on heartbeats, then completes, twice.
        for (var i = 0; i < Budget + Samples + 3; i++) Assert.Equal("run-terminal", (await api.Events(runId, token, Scenarios.Event("heartbeat"))).ProblemCode);
        for (var i = 0; i < 2; i++) Assert.Equal("run-terminal", (await api.Events(runId, token, Scenarios.Event("run.completed"))).ProblemCode);

        var anomalies = (await api.Send(HttpMethod.Get, $"/api/anomalies?runId={runId}&pageSize=500", LedgerHost.ReadKey)).Json!["items"]!.AsArray();
        Assert.Single(anomalies, a => a!["kind"]!.GetValue<string>() == AnomalyKinds.LateCompletion);
        var kept = (await api.Send(HttpMethod.Get, $"/api/rejections?runId={runId}&pageSize=500", LedgerHost.ReadKey)).Json!["items"]!.AsArray();
        Assert.Equal(Budget + Samples + 1, kept.Count);
        return true;
    }, new() { ["Ledger:LateEvents:Grace"] = "00:10:00" });

    [Fact]
    public Task subscriptions_are_capped_and_listed_in_pages() => With(async (ledger, api) =>
    {
        object Subscription(int i) => new { url = $"http://127.0.0.1:9/hook-{i}", kinds = new[] { "run.lost" }, secret = $"the-secret-of-subscription-{i}" };
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            var created = await api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey, Subscription(i));
            Assert.Equal(HttpStatusCode.Created, created.Status);
            ids.Add(created.Json!["subscriptionId"]!.GetValue<string>());
        }

        var fourth = await api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey, Subscription(3));

        Assert.Equal(HttpStatusCode.Conflict, fourth.Status);
        Assert.Equal(ProblemCodes.SubscriptionLimit, fourth.ProblemCode);
        var kept = await api.Send(HttpMethod.Get, $"/api/rejections?reason={ProblemCodes.SubscriptionLimit}", LedgerHost.ReadKey);
        Assert.Equal(1, kept.Json!["total"]!.GetValue<long>());
        Assert.DoesNotContain("the-secret-of-subscription-3", kept.Text);

        var first = await api.Send(HttpMethod.Get, "/api/subscriptions?pageSize=2", LedgerHost.AdminKey);
        var second = await api.Send(HttpMethod.Get, "/api/subscriptions?pageSize=2&page=2", LedgerHost.AdminKey);
        Assert.Equal((3L, 1, 2), (first.Json!["total"]!.GetValue<long>(), first.Json["page"]!.GetValue<int>(), first.Json["pageSize"]!.GetValue<int>()));
        Assert.Equal(ids, first.Json["items"]!.AsArray().Concat(second.Json!["items"]!.AsArray()).Select(s => s!["subscriptionId"]!.GetValue<string>()));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, (await api.Send(HttpMethod.Get, "/api/subscriptions?pageSize=501", LedgerHost.AdminKey)).Status);

        // Room again once one is deleted.
        Assert.Equal(HttpStatusCode.NoContent, (await api.Send(HttpMethod.Delete, $"/api/subscriptions/{ids[0]}", LedgerHost.AdminKey)).Status);
        Assert.Equal(HttpStatusCode.Created, (await api.Send(HttpMethod.Post, "/api/subscriptions", LedgerHost.AdminKey, Subscription(4))).Status);
        return true;
    });

    [Fact]
    public void the_pruning_rule_keeps_what_is_younger_than_its_age_and_every_pending_delivery()
    {
        var now = new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero);
        var policy = new PrunePolicy(TimeSpan.FromDays(30), TimeSpan.FromDays(7));
        Rejection Refusal(TimeSpan age) => new() { At = now - age, Reason = "forbidden", Method = "POST", Path = "/api/runs" };
        WebhookDelivery Delivery(string state, TimeSpan age) => new() { Kind = "run.lost", State = state, CreatedAt = now - age };

        Assert.False(policy.Prunable(Refusal(TimeSpan.FromDays(30)), now));
        Assert.True(policy.Prunable(Refusal(TimeSpan.FromDays(30) + TimeSpan.FromTicks(1)), now));
        Assert.False(policy.Prunable(Delivery(WebhookDelivery.Delivered, TimeSpan.FromDays(7)), now));
        foreach (var state in new[] { WebhookDelivery.Delivered, WebhookDelivery.Failed, WebhookDelivery.Dropped })
        {
            Assert.True(policy.Prunable(Delivery(state, TimeSpan.FromDays(8)), now));
        }
        // A delivery that may still be sent never goes: pending, or held while its subscription is paused.
        Assert.False(policy.Prunable(Delivery(WebhookDelivery.Pending, TimeSpan.FromDays(365)), now));
        Assert.False(policy.Prunable(Delivery(WebhookDelivery.Held, TimeSpan.FromDays(365)), now));
        // A period of zero keeps everything.
        var keepAll = new PrunePolicy(TimeSpan.Zero, TimeSpan.Zero);
        Assert.False(keepAll.Prunable(Refusal(TimeSpan.FromDays(3650)), now));
        Assert.False(keepAll.Prunable(Delivery(WebhookDelivery.Failed, TimeSpan.FromDays(3650)), now));
        Assert.Equal((null, null), keepAll.At(now));
    }

    [Fact]
    public Task old_refusals_and_finished_deliveries_are_pruned_pending_ones_kept_and_the_kpis_still_add_up() => With(async (ledger, api) =>
    {
        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();
        var (runId, token) = await api.Started();
        await api.Events(runId, token, Scenarios.Event("scores.reported", fields: new { scores = new { a = 1.0 } }));
        await api.Events(runId, token, Scenarios.Event("scores.reported", fields: new { scores = new { a = 2.0 } })); // score-conflict
        await api.Send(HttpMethod.Post, "/api/runs", LedgerHost.ReadKey, new { }); // forbidden
        await api.Send(HttpMethod.Post, "/api/runs", "not-a-key", new { }); // counted, sampled
        var old = ledger.Clock.GetUtcNow();
        await using (var session = store.LightweightSession())
        {
            foreach (var state in new[] { WebhookDelivery.Pending, WebhookDelivery.Held, WebhookDelivery.Delivered, WebhookDelivery.Failed, WebhookDelivery.Dropped })
            {
                session.Store(new WebhookDelivery { Id = $"dlv_old_{state}", SubscriptionId = "sub_x", Kind = "run.lost", State = state, CreatedAt = old });
            }
            await session.SaveChangesAsync();
        }
        var before = await Kpis(api);
        await using (var session = store.QuerySession()) Assert.True(await session.Query<Rejection>().CountAsync() >= 3);

        // Two days on: everything above is older than the day it is kept for; this new one is not.
        ledger.Clock.Advance(TimeSpan.FromDays(2));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, (await api.Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey, new { runId = "young", leaseSeconds = 0 })).Status);
        await using (var session = store.LightweightSession())
        {
            session.Store(new WebhookDelivery { Id = "dlv_young", SubscriptionId = "sub_x", Kind = "run.lost", State = WebhookDelivery.Delivered, CreatedAt = ledger.Clock.GetUtcNow() });
            await session.SaveChangesAsync();
        }
        var pruner = ledger.Host.Services.GetRequiredService<Pruner>();

        var result = await pruner.PruneAsync(ledger.Clock.GetUtcNow(), CancellationToken.None);

        Assert.Equal(3, result.Deliveries);
        Assert.True(result.Rejections >= 3, $"{result}");
        Assert.True(result.Anomalies >= 2, $"{result}");
        await using (var session = store.QuerySession())
        {
            Assert.Equal(["dlv_old_held", "dlv_old_pending", "dlv_young"], (await session.Query<WebhookDelivery>().Select(d => d.Id).ToListAsync()).Order());
            var left = await session.Query<Rejection>().ToListAsync();
            Assert.Equal(["young"], left.Select(r => r.Payload!).Select(p => JsonNode.Parse(p)!["runId"]!.GetValue<string>()));
            Assert.Empty(await session.Query<AnomalyRecord>().Where(a => a.Id.StartsWith("rejection:") && a.At < old.AddDays(1)).ToListAsync());
        }
        // The KPIs count what was pruned: refusals by reason and anomalies by kind still add up, and a recount agrees.
        var after = await Kpis(api);
        Assert.Equal(Count(before, "rejectionsByReason", "score-conflict"), Count(after, "rejectionsByReason", "score-conflict"));
        Assert.Equal(Count(before, "rejectionsByReason", "forbidden"), Count(after, "rejectionsByReason", "forbidden"));
        Assert.Equal(Count(before, "rejectionsByReason", "invalid-credentials"), Count(after, "rejectionsByReason", "invalid-credentials"));
        Assert.Equal(Count(before, "rejectionsByReason", "invalid-payload") + 1, Count(after, "rejectionsByReason", "invalid-payload"));
        Assert.Equal(Count(before, "anomaliesByKind", "score-conflict"), Count(after, "anomaliesByKind", "score-conflict"));
        Assert.Empty(await ledger.Host.Services.GetRequiredService<KpiStore>().CompareAsync(null, CancellationToken.None));
        var verify = await ledger.Verify();
        Assert.True(verify.Passed, string.Join("\n", verify.Differences));

        // Nothing more to prune: a second prune removes nothing.
        var again = await pruner.PruneAsync(ledger.Clock.GetUtcNow(), CancellationToken.None);
        Assert.Equal((0L, 0L, 0L), (again.Rejections, again.Anomalies, again.Deliveries));
        return true;
    }, new() { ["Ledger:Pruning:Enabled"] = "false" }); // the test calls the step itself

    [Fact]
    public Task only_the_node_that_leads_the_async_daemon_prunes_and_it_does_so_with_every_retention_sweep() => With(async (ledger, api) =>
    {
        // Archiving is off in this host: the sweep runs for its prune-logs step alone.
        static RetentionService Pruning(IServiceProvider services) => services.GetServices<IHostedService>().OfType<RetentionService>().Single();
        var leader = Pruning(ledger.Host.Services);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!leader.Leads())
        {
            Assert.True(DateTime.UtcNow < deadline, "the first node never took the daemon's leadership");
            await Task.Delay(100); // waiting for Marten's election, which polls
        }
        await using (var follower = await ledger.SecondInstance())
        {
            await Task.Delay(TimeSpan.FromSeconds(3)); // several of the follower's election polls
            Assert.False(Pruning(follower.Services).Leads());
        }
        await using (var disabled = await ledger.SecondInstance(new Dictionary<string, string> { ["Ledger:DaemonMode"] = "Disabled" }))
        {
            Assert.False(Pruning(disabled.Services).Leads());
        }

        // The leader's periodic step, on the host's clock: a refusal two days old is gone after the next interval.
        await api.Send(HttpMethod.Post, "/api/runs", LedgerHost.AdminKey, new { runId = "to-be-pruned", leaseSeconds = 0 });
        ledger.Clock.Advance(TimeSpan.FromDays(2));
        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();
        deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            await using var session = store.QuerySession();
            if (!await session.Query<Rejection>().AnyAsync(r => r.Payload != null && r.Payload.Contains("to-be-pruned"))) break;
            Assert.True(DateTime.UtcNow < deadline, "the leader did not prune within a minute of its interval");
            await Task.Delay(200); // the periodic step runs on its own task
        }
        // The sweep's report says what was pruned, and GET /api/retention shows it with the policy. The
        // report is saved once the step is over, after the rows are gone: it may come a moment later.
        JsonNode view = null!;
        await Wait.Until(async () =>
        {
            var retention = await api.Send(HttpMethod.Get, "/api/retention", LedgerHost.AdminKey);
            Assert.Equal(HttpStatusCode.OK, retention.Status);
            view = JsonNode.Parse(retention.Text)!;
            return view["sweeps"]!.AsArray().SelectMany(w => w!["steps"]!.AsArray()).Where(step => step!["step"]!.GetValue<string>() == "prune-logs")
                .Any(step => (step!["counts"]!["rejections"]?.GetValue<long>() ?? 0) >= 1);
        }, TimeSpan.FromSeconds(30), () => $"a sweep that reports a pruned refusal: {view["sweeps"]!.ToJsonString()}");
        Assert.False(view["policy"]!["enabled"]!.GetValue<bool>());
        Assert.True(view["policy"]!["pruning"]!.GetValue<bool>());
        Assert.Equal("1.00:00:00", view["policy"]!["keepRejectionsFor"]!.GetValue<string>());
        Assert.Contains(view["nextSweep"]!.AsArray(), step => step!["step"]!.GetValue<string>() == "prune-logs" && step["counts"]!["rejections"]!.GetValue<long>() == 0);
        return true;
    });
}
