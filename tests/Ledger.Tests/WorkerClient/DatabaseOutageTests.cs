using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Alba;
using JasperFx.CommandLine;
using Ledger.Client;
using Ledger.Infrastructure;
using Ledger.Tests.Fixtures;
using Ledger.Tests.Infrastructure;
using Npgsql;

namespace Ledger.Tests.WorkerClient;

/// <summary>
/// A real database outage: a ledger on a PostgreSQL cluster of this test's own, which is stopped
/// while the client sends an event and started again. The ledger answers 503
/// database-unavailable with Retry-After; the client retries the same event until it is in.
/// </summary>
public sealed class DatabaseOutageTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    [Fact]
    public async Task a_database_restart_is_retried_and_the_event_recorded_exactly_once()
    {
        var directory = Path.Combine("/var/tmp", "run-ledger", $"client-outage-{Guid.NewGuid():N}");
        var postgres = new EmbeddedPostgres(new EmbeddedPostgresOptions
        {
            DataDirectory = directory, Port = TestPorts.Next(), Database = "ledger_outage",
        }, _ => { });
        IAlbaHost? host = null;
        try
        {
            var connection = postgres.Start();
            host = await ledger.InstanceOn(connection); // the class host's keys and settings, on the test's own cluster
            // More retries than the default six: a cluster restarting on a loaded machine may take longer than they wait.
            await using var harness = new ClientHarness(host, heartbeat: TimeSpan.FromMinutes(5), resilience: r => r.MaxRetryAttempts = 30);
            var runId = await harness.Client.RegisterAsync(new RunRegistration { ExpectedItems = 40 });
            await using var run = await harness.Client.ClaimAsync(runId);
            await run.StartedAsync();

            postgres.Stop();
            // Not ready is a refusal like any other: problem details, retryable, with the failing check.
            using (var probe = host.Server.CreateClient())
            {
                var health = await probe.GetAsync("/health");
                var problem = System.Text.Json.Nodes.JsonNode.Parse(await health.Content.ReadAsStringAsync())!;
                Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
                Assert.Equal("application/problem+json", health.Content.Headers.ContentType?.MediaType);
                Assert.Equal("database-unavailable", problem["code"]!.GetValue<string>());
                Assert.True(problem["retryable"]!.GetValue<bool>());
                Assert.Equal("unhealthy", problem["checks"]!["database"]!["status"]!.GetValue<string>());
                Assert.NotNull(health.Headers.RetryAfter);
            }
            var sending = run.CommitItemsAsync("chunk-1", 40);
            // The first attempt meets the stopped database; the cluster comes back a little later.
            await WaitUntil(() => harness.Tap.Answers.Any(a => a.Request.EventType == "items.committed"), TimeSpan.FromSeconds(20));
            await Task.Delay(TimeSpan.FromMilliseconds(500));
            // The test's own pooled connection to the cluster died with it.
            using (var stale = new NpgsqlConnection(postgres.ServerConnectionString())) NpgsqlConnection.ClearPool(stale);
            postgres.Start();
            var answer = await sending.WaitAsync(TimeSpan.FromMinutes(2));

            var attempts = harness.Tap.Answers.Where(a => a.Request.EventType == "items.committed").ToList();
            Assert.Equal(503, attempts[0].Status);
            Assert.Equal(200, attempts[^1].Status);
            Assert.Single(attempts.Select(a => a.Request.EventId).Distinct());
            Assert.Contains(answer.Results.Single().Result, new[] { EventResults.Applied, EventResults.Duplicate });

            var state = await harness.Client.GetRunAsync(runId);
            Assert.Equal(40, state.Json.GetProperty("items").GetProperty("committed").GetInt64());
            Assert.Equal(1, state.Json.GetProperty("items").GetProperty("chunks").GetInt32());
            await using var data = NpgsqlDataSource.Create(connection);
            await using var count = data.CreateCommand(
                "select count(*) from ledger.mt_events where stream_id = @id and type = 'items_committed'");
            count.Parameters.AddWithValue("id", runId);
            Assert.Equal(1L, await count.ExecuteScalarAsync());
        }
        finally
        {
            if (host is not null) await host.DisposeAsync();
            NpgsqlConnection.ClearAllPools();
            postgres.Stop();
            try
            {
                Directory.Delete(directory, recursive: true);
                File.Delete(directory + ".lock"); // EmbeddedPostgres's start lock beside the directory
                File.Delete(directory + ".password"); // and its password file
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }


    private static async Task WaitUntil(Func<bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout) throw new TimeoutException("condition not reached");
            await Task.Delay(20);
        }
    }
}
