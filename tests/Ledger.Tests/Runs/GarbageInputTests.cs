using System.Net;
using System.Text;
using Ledger.Tests.Fixtures;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Runs;

/// <summary>Never a 500 for bad input: random bodies at every write endpoint get a stable refusal, and nothing changes.</summary>
public sealed class GarbageInputTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);

    private static readonly string[] Fragments =
    [
        "{", "}", "[", "]", "\"", ":", ",", "null", "true", "1e999", "-0", "NaN", "\"type\"", "\"eventId\"", "\"occurredAt\"",
        "\"run.completed\"", "\"step.completed\"", "\"scores\"", "{\"a\":", "\\u0000", "\"2026-01-01T00:00:00Z\"", "[[[[", "\u00e9", " ",
    ];

    [Fact]
    public async Task random_bodies_at_every_write_endpoint_are_refused_cleanly_and_change_nothing()
    {
        var random = new Random(20261122);
        var (runId, token) = await _api.Started();
        var endpoints = new (string Url, string Key)[]
        {
            ("/api/runs", LedgerHost.AdminKey),
            ($"/api/runs/{runId}/claim", LedgerHost.WorkerKey),
            ($"/api/runs/{runId}/events", token),
            ($"/api/runs/{runId}/cancel", LedgerHost.AdminKey),
            ($"/api/runs/{runId}/reclassify", LedgerHost.AdminKey),
            ("/api/boards", LedgerHost.AdminKey),
            ($"/api/runs/{runId}/observations", LedgerHost.WorkerKey),
            ("/api/batches", LedgerHost.AdminKey),
        };

        var accepted = new List<string>();
        for (var i = 0; i < 300; i++)
        {
            var body = new StringBuilder();
            for (var n = random.Next(1, 12); n > 0; n--) body.Append(Fragments[random.Next(Fragments.Length)]);
            var (url, key) = endpoints[random.Next(endpoints.Length)];
            var response = await _api.Send(HttpMethod.Post, url, key, rawBody: body.ToString());

            Assert.True(response.Code < 500, $"{url} <- {body}: {response.Code} {response.Text}");
            if (response.Code < 400) accepted.Add($"{url} <- '{body}': {response.Code}");
            if (response.Code >= 400)
            {
                Assert.Equal("application/problem+json", response.ContentType);
                Assert.NotNull(response.ProblemCode);
                Assert.False(response.Retryable);
            }
        }

        // The only garbage that is a valid request is a blank body where none is needed: a cancel
        // (this seed sends one). Nothing else got through, so the run is exactly claimed, or
        // cancelled by that request (cancel + verdict), and nothing more.
        Assert.All(accepted, a => Assert.Matches($@"^/api/runs/{runId}/cancel <- '\s*': 200$", a));
        var run = await _api.Run(runId);
        var (status, version) = accepted.Count == 0 ? ("claimed", 2L) : ("cancelled", 4L);
        Assert.True(run["status"]!.GetValue<string>() == status && run["version"]!.GetValue<long>() == version,
            $"expected {status} at version {version}: {run.ToJsonString()}\naccepted:\n{string.Join("\n", accepted)}");
    }

    [Fact]
    public async Task an_unknown_path_is_a_problem_too()
    {
        var response = await _api.Send(HttpMethod.Get, "/api/nothing-here", LedgerHost.AdminKey);
        Assert.Equal(HttpStatusCode.NotFound, response.Status);
        Assert.Equal("not-found", response.ProblemCode);
        Assert.Equal("application/problem+json", response.ContentType);
    }
}
