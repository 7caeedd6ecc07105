using System.Net;
using Ledger.Forensics;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>
/// Who is asking is decided before anything else: a caller without valid credentials gets a 401
/// (or a 403) that discloses nothing about the run, whatever its body; after that, every refusal
/// on a run's route says where the run stands. Refusals of callers without credentials are
/// counted, not kept, so they cannot fill the database.
/// </summary>
public sealed class OrderOfChecksTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private static void AssertDisclosesNothing(Response response, HttpStatusCode status, string code)
    {
        Assert.True(response.Status == status, $"expected {(int)status} {code}, got {response.Code}: {response.Text}");
        Assert.Equal(code, response.ProblemCode);
        Assert.False(response.Json!.AsObject().ContainsKey("runStatus"), response.Text);
        Assert.False(response.Json!.AsObject().ContainsKey("errors"), response.Text);
    }

    [Theory]
    [InlineData("{")]
    [InlineData("{\"type\":\"step.completed\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\"}")]
    [InlineData("[]")]
    public async Task a_bad_token_with_a_bad_payload_is_a_401_not_a_400_or_422(string body)
    {
        var (runId, _) = await _api.Started();
        AssertDisclosesNothing(await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/events", "lt_forged", rawBody: body),
            HttpStatusCode.Unauthorized, "invalid-credentials");
        AssertDisclosesNothing(await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/events", null, rawBody: body),
            HttpStatusCode.Unauthorized, "missing-credentials");
        AssertDisclosesNothing(await _api.Send(HttpMethod.Post, "/api/runs", "not-a-key", rawBody: body),
            HttpStatusCode.Unauthorized, "invalid-credentials");
        AssertDisclosesNothing(await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.ReadKey, rawBody: body),
            HttpStatusCode.Forbidden, "forbidden");
        Assert.Equal(2, (await _api.Run(runId))["version"]!.GetValue<long>());
    }

    [Fact]
    public async Task an_oversized_body_without_credentials_is_a_401_not_a_413()
    {
        var (runId, _) = await _api.Started();
        var huge = $"{{\"lines\":[\"{new string('x', 300 * 1024)}\"]}}";
        AssertDisclosesNothing(await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/events", "lt_forged", rawBody: huge),
            HttpStatusCode.Unauthorized, "invalid-credentials");
        AssertDisclosesNothing(await _api.Send(HttpMethod.Post, "/api/runs", null, rawBody: huge),
            HttpStatusCode.Unauthorized, "missing-credentials");
    }

    [Fact]
    public async Task a_token_of_another_run_is_a_403_that_says_nothing_about_this_run_even_if_it_does_not_exist()
    {
        var (_, token) = await _api.Started();
        var (other, _) = await _api.Started();
        AssertDisclosesNothing(await _api.Events(other, token, Event("heartbeat")), HttpStatusCode.Forbidden, "foreign-lease");
        AssertDisclosesNothing(await _api.Events(NewRunId(), token, Event("heartbeat")), HttpStatusCode.Forbidden, "foreign-lease");
    }

    [Fact]
    public async Task hostile_query_values_from_a_caller_without_credentials_are_a_401()
    {
        AssertDisclosesNothing(await _api.Send(HttpMethod.Get, "/api/runs?board=%00", null), HttpStatusCode.Unauthorized, "missing-credentials");
        AssertDisclosesNothing(await _api.Send(HttpMethod.Get, "/api/runs?page=abc", "not-a-key"), HttpStatusCode.Unauthorized, "invalid-credentials");
        Assert.Equal(HttpStatusCode.UnprocessableEntity, (await _api.Send(HttpMethod.Get, "/api/runs?page=abc", LedgerHost.ReadKey)).Status);
    }

    public static TheoryData<string, string, string> RefusalsAfterAuthentication => new()
    {
        // route (RUN and TOKEN filled in), key, raw body
        { "/api/runs/RUN/events", "TOKEN", "{\"type\":\"step.completed\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"outcome\":\"ok\"}" },
        { "/api/runs/RUN/events", "TOKEN", "{" },
        { "/api/runs/RUN/events", "TOKEN", "{\"type\":\"step.completed\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"stepId\":\"never\"}" },
        { "/api/runs/RUN/events", "TOKEN", "{\"type\":\"log\",\"eventId\":\"e\",\"occurredAt\":\"2026-01-01T00:00:00Z\",\"lines\":[\"a\\u0000\"]}" },
        { "/api/runs/RUN/claim", LedgerHost.WorkerKey, "{\"worker\":\"a\\u0001b\"}" },
        { "/api/runs/RUN/claim", LedgerHost.WorkerKey, "{\"worker\":\"w\"}" },
        { "/api/runs/RUN/cancel", LedgerHost.AdminKey, $"{{\"reason\":\"{new string('r', 600)}\"}}" },
        { "/api/runs/RUN/reclassify", LedgerHost.AdminKey, "{\"status\":\"failed\"}" },
        { "/api/runs/RUN/reclassify", LedgerHost.AdminKey, "{\"status\":\"failed\",\"reason\":\"r\",\"evidence\":[\"e\"]}" },
        { "/api/runs/RUN/observations", LedgerHost.WorkerKey, "{\"source\":\"\",\"status\":\"running\"}" },
    };

    [Theory]
    [MemberData(nameof(RefusalsAfterAuthentication))]
    public async Task every_refusal_after_authentication_on_a_runs_route_carries_its_status(string route, string key, string body)
    {
        var (runId, token) = await _api.Started();
        var response = await _api.Send(HttpMethod.Post, route.Replace("RUN", runId), key == "TOKEN" ? token : key, rawBody: body);
        Assert.True(response.Code is >= 400 and < 500, $"{route} {body}: {response.Code} {response.Text}");
        Assert.Equal("claimed", response.Json!["runStatus"]?.GetValue<string>());
        Assert.Equal(runId, response.Json!["runId"]?.GetValue<string>());
    }

    [Theory]
    [InlineData("state?version=0")]
    [InlineData("state?version=99")]
    [InlineData("state?at=yesterday")]
    public async Task a_refused_time_travel_says_where_the_run_stands_now(string query)
    {
        var (runId, _) = await _api.Started();
        var response = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/{query}", LedgerHost.ReadKey);
        Assert.True(response.Code is 404 or 422, response.Text);
        Assert.Equal("claimed", response.Json!["runStatus"]?.GetValue<string>());
    }

    [Fact]
    public async Task refusals_without_credentials_are_counted_per_hour_with_a_bounded_sample_not_kept_one_row_each()
    {
        // A fresh hour of the test's own clock, so that the counts of this hour are this test's alone.
        var now = ledger.Clock.GetUtcNow();
        ledger.Clock.Advance(CountedRefusals.HourOf(now).AddHours(1).AddMinutes(1) - now);
        var hour = CountedRefusals.HourOf(ledger.Clock.GetUtcNow());
        var (runId, _) = await _api.Started();
        var kpisBefore = (await _api.Send(HttpMethod.Get, "/api/kpis", LedgerHost.ReadKey)).Json!["rejectionsByReason"]!;
        var store = ledger.Host.Services.GetRequiredService<IDocumentStore>();
        async Task<int> Rows()
        {
            await using var q = store.QuerySession();
            return await q.Query<Rejection>().CountAsync();
        }
        var rowsBefore = await Rows();

        const int missing = 6_000, invalid = 4_000;
        var requests = Enumerable.Range(0, missing + invalid).Select(i => i < missing
            ? (Url: $"/api/runs/{runId}/events", Key: (string?)null)
            : (Url: i % 2 == 0 ? "/api/runs" : $"/api/runs/{NewRunId()}/events", Key: "forged-" + i));
        foreach (var chunk in requests.Chunk(50))
        {
            var answers = await Task.WhenAll(chunk.Select(r => _api.Send(HttpMethod.Post, r.Url, r.Key, rawBody: "{\"runId\":\"x\"}")));
            Assert.All(answers, a => Assert.Equal(HttpStatusCode.Unauthorized, a.Status));
        }

        var page = await _api.Send(HttpMethod.Get, $"/api/rejections?since={Uri.EscapeDataString(hour.ToString("O"))}", LedgerHost.ReadKey);
        var counts = page.Json!["unauthenticated"]!.AsArray()
            .Where(c => DateTimeOffset.Parse(c!["hour"]!.GetValue<string>()) == hour)
            .ToDictionary(c => c!["reason"]!.GetValue<string>(), c => c!["count"]!.GetValue<long>());
        Assert.Equal(new Dictionary<string, long> { ["missing-credentials"] = missing, ["invalid-credentials"] = invalid }, counts);

        // 10,000 refusals added exactly the sample rows: 20 per reason and hour, without payload.
        var samples = ledger.Host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<Ledger.Infrastructure.LedgerOptions>>().Value.Rejections.SamplesPerHour;
        Assert.Equal(rowsBefore + 2 * samples, await Rows());
        await using (var q = store.QuerySession())
        {
            var kept = await q.Query<Rejection>().Where(r => r.Unauthenticated && r.At >= hour).ToListAsync();
            Assert.Equal(2 * samples, kept.Count);
            Assert.All(kept, r => Assert.Null(r.Payload));
        }

        var kpisAfter = (await _api.Send(HttpMethod.Get, "/api/kpis", LedgerHost.ReadKey)).Json!["rejectionsByReason"]!;
        long Kpi(System.Text.Json.Nodes.JsonNode node, string reason) => node[reason]?.GetValue<long>() ?? 0;
        Assert.Equal(missing, Kpi(kpisAfter, "missing-credentials") - Kpi(kpisBefore, "missing-credentials"));
        Assert.Equal(invalid, Kpi(kpisAfter, "invalid-credentials") - Kpi(kpisBefore, "invalid-credentials"));
    }
}
