using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Ledger.Tests.Fixtures;
using Ledger.Tests.Infrastructure;
using Xunit.Abstractions;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Webhooks;

/// <summary>At least once across a kill -9 of the service: the committed verdict's delivery still arrives.</summary>
public sealed class WebhookCrashTests(ITestOutputHelper output)
{
    private const string Admin = "webhook-crash-admin-key";

    [Fact]
    public async Task a_delivery_in_flight_when_the_service_is_killed_arrives_after_the_restart_with_the_same_id()
    {
        var (server, database, name) = TestDatabase.Create();
        var cwd = Directory.CreateTempSubdirectory("ledger-webhooks-").FullName;
        await using var receiver = await WebhookReceiver.Start();
        // The first attempt never gets an answer: the service is killed while it waits.
        receiver.Answer = n => n == 0 ? null : 200;
        var env = new Dictionary<string, string?>
        {
            ["ASPNETCORE_ENVIRONMENT"] = "Production",
            ["Ledger__AdminKey"] = Admin,
            ["ConnectionStrings__Ledger"] = database,
            ["Ledger__Janitor__Enabled"] = "false",
            ["Ledger__Webhooks__AllowPrivateTargets"] = "true",
            ["Ledger__Webhooks__TimeoutSeconds"] = "60",
            ["Ledger__Webhooks__MaxAttempts"] = "4",
            ["Ledger__Webhooks__RetryWindowSeconds"] = "3",
        };
        try
        {
            string runId, deliveryId;
            using (var first = LedgerProcess.Start(env, ["--urls", "http://127.0.0.1:0"], cwd))
            {
                using var http = Client(await first.WaitForAddress(TimeSpan.FromSeconds(90)));
                var created = await Post(http, "/api/subscriptions", new { url = receiver.Url, kinds = new[] { "run.cancelled" }, secret = receiver.Secret });
                Assert.Equal(HttpStatusCode.Created, created.Status);
                runId = NewRunId("hook-crash");
                Assert.Equal(HttpStatusCode.Created, (await Post(http, "/api/runs", new { runId })).Status);
                Assert.Equal(HttpStatusCode.OK, (await Post(http, $"/api/runs/{runId}/cancel", new { reason = "crash test" })).Status);

                var inFlight = await receiver.WaitFor(r => r.Count >= 1, TimeSpan.FromSeconds(90), "the first attempt");
                deliveryId = inFlight[0].DeliveryId;
                Assert.Contains(runId, inFlight[0].Body);
                first.KillHard();
            }

            var restarted = Stopwatch.StartNew();
            using var second = LedgerProcess.Start(env, ["--urls", "http://127.0.0.1:0"], cwd);
            using var http2 = Client(await second.WaitForAddress(TimeSpan.FromSeconds(90)));
            var received = await receiver.WaitFor(r => r.Any(x => x.AnsweredWith == 200), TimeSpan.FromMinutes(4), "the delivery after the restart");
            output.WriteLine($"delivered {restarted.Elapsed.TotalSeconds:0.0}s after the restart began");
            var delivered = Assert.Single(received, r => r.AnsweredWith == 200);
            Assert.Equal(deliveryId, delivered.DeliveryId);
            Assert.True(delivered.SignatureValid);
            Assert.Equal(runId, JsonNode.Parse(delivered.Body)!["runId"]!.GetValue<string>());
            Assert.All(received, r => Assert.Equal(deliveryId, r.DeliveryId));
        }
        finally
        {
            Directory.Delete(cwd, recursive: true);
            Npgsql.NpgsqlConnection.ClearAllPools();
            TestDatabase.Drop(server, name);
        }
    }

    private static HttpClient Client(string address)
    {
        var http = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Admin);
        return http;
    }

    private static async Task<(HttpStatusCode Status, string Text)> Post(HttpClient http, string url, object body)
    {
        using var response = await http.PostAsync(url, new StringContent(JsonSerializer.Serialize(body, Scenarios.Json), Encoding.UTF8, "application/json"));
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }
}
