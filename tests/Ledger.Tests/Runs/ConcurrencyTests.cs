using System.Net;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>Races on one run: one consistent result, nothing lost, nothing applied twice.</summary>
public sealed class ConcurrencyTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    [Fact]
    public async Task many_parallel_deliveries_of_one_event_id_append_it_once()
    {
        for (var round = 0; round < 5; round++)
        {
            var (runId, token) = await _api.Started();
            var same = Event("items.committed", $"evt-{round}", fields: new { chunkId = "c1", count = 7 });

            var responses = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => _api.Events(runId, token, same)));

            Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.Status));
            var results = responses.Select(r => r.Json!["results"]![0]!["result"]!.GetValue<string>()).ToList();
            Assert.Equal(1, results.Count(r => r == "applied"));
            Assert.Equal(15, results.Count(r => r == "duplicate"));

            var run = await _api.Run(runId);
            Assert.Equal(3, run["version"]!.GetValue<long>());
            Assert.Equal(7, run["items"]!["committed"]!.GetValue<long>());
        }
    }

    [Fact]
    public async Task deliveries_of_one_event_id_through_two_ledger_instances_append_it_once()
    {
        // Within one instance decisions on a run queue up; across instances only the database's
        // optimistic concurrency stands between two copies of one event.
        await using var second = await ledger.SecondInstance();
        var other = second.Server.CreateClient();
        for (var round = 0; round < 5; round++)
        {
            var (runId, token) = await _api.Started();
            var payload = System.Text.Json.JsonSerializer.Serialize(
                Event("scores.reported", $"twin-{round}", fields: new { scores = new { f1 = 0.5 } }), Scenarios.Json);
            var viaSecond = Enumerable.Range(0, 6).Select(async _ =>
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, $"/api/runs/{runId}/events")
                {
                    Content = new StringContent(payload, System.Text.Encoding.UTF8, "application/json"),
                };
                request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
                using var response = await other.SendAsync(request);
                return (response.StatusCode, await response.Content.ReadAsStringAsync());
            });
            var viaFirst = Enumerable.Range(0, 6).Select(async _ =>
            {
                var r = await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/events", token, rawBody: payload);
                return (r.Status, r.Text);
            });
            var responses = await Task.WhenAll(viaSecond.Concat(viaFirst));

            Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.Item1));
            Assert.Equal(1, responses.Count(r => r.Item2.Contains("\"applied\"")));
            var run = await _api.Run(runId);
            Assert.Equal(3, run["version"]!.GetValue<long>());
        }
    }

    [Fact]
    public async Task parallel_distinct_events_are_all_applied_and_none_is_lost()
    {
        var (runId, token) = await _api.Started();
        var responses = await Task.WhenAll(Enumerable.Range(0, 24).Select(i =>
            _api.Events(runId, token, Event("items.committed", $"chunk-evt-{i}", fields: new { chunkId = $"c{i}", count = 1 }))));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.Status));
        var run = await _api.Run(runId);
        Assert.Equal(24, run["items"]!["committed"]!.GetValue<long>());
        Assert.Equal(26, run["version"]!.GetValue<long>());
    }

    [Fact]
    public async Task parallel_completion_and_cancel_give_exactly_one_terminal_status()
    {
        for (var round = 0; round < 10; round++)
        {
            var (runId, token) = await _api.Started();
            var complete = _api.Events(runId, token, Event("run.completed", $"done-{round}"));
            var cancel = _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { reason = "race" });
            var (completed, cancelled) = (await complete, await cancel);

            var run = await _api.Run(runId);
            var status = run["status"]!.GetValue<string>();
            Assert.Contains(status, new[] { "succeeded", "cancelled" });

            if (status == "succeeded")
            {
                Assert.Equal(HttpStatusCode.OK, completed.Status);
                Assert.Equal(HttpStatusCode.Conflict, cancelled.Status);
                Assert.Equal("run-terminal", cancelled.ProblemCode);
                Assert.Equal("succeeded", cancelled.RunStatus);
            }
            else
            {
                Assert.Equal(HttpStatusCode.OK, cancelled.Status);
                Assert.Equal(HttpStatusCode.Conflict, completed.Status);
                Assert.Equal("run-terminal", completed.ProblemCode);
                Assert.Equal("cancelled", completed.RunStatus);
                Assert.Equal("late-event", completed.Json!["results"]![0]!["reason"]!.GetValue<string>());
            }

            var history = await _api.Send(HttpMethod.Get, $"/api/runs/{runId}/events", LedgerHost.AdminKey);
            var statuses = history.Json!["events"]!.AsArray().Select(e => e!["statusAfter"]!.GetValue<string>()).ToList();
            var terminalTransitions = statuses.Zip(statuses.Skip(1)).Count(p => p.First != p.Second && p.Second is "succeeded" or "cancelled");
            Assert.Equal(1, terminalTransitions);
            Assert.Equal([status], run["verdicts"]!.AsArray().Select(v => v!["status"]!.GetValue<string>()));
        }
    }

    [Fact]
    public async Task parallel_claims_grant_exactly_one_lease()
    {
        var runId = await _api.Register();
        var claims = await Task.WhenAll(Enumerable.Range(0, 8).Select(i =>
            _api.Send(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerHost.WorkerKey, new { worker = $"w{i}" })));

        Assert.Equal(1, claims.Count(c => c.Status == HttpStatusCode.OK));
        Assert.All(claims.Where(c => c.Status != HttpStatusCode.OK), c => Assert.Equal("lease-held", c.ProblemCode));
        var run = await _api.Run(runId);
        Assert.Equal(1, run["lease"]!["claims"]!.GetValue<int>());
    }
}
