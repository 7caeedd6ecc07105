using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Ledger.Runs;
using Ledger.Tests.Fixtures;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using static Ledger.Tests.Fixtures.Scenarios;

namespace Ledger.Tests.Forensics;

/// <summary>
/// The KPIs are kept as data arrives (counters moved in the transaction that changes what they
/// count) and <c>verify</c> proves them equal to a recount of the stored data.
/// </summary>
public sealed class KpiTests(LedgerHost ledger) : IClassFixture<LedgerHost>
{
    private readonly Scenarios _api = new(ledger);
    private KpiStore Store => ledger.Host.Services.GetRequiredService<KpiStore>();
    private string Table => ledger.Host.Services.GetRequiredService<StorageNames>().Own(KpiCounters.TableName);

    private async Task<JsonNode> Kpis()
    {
        var response = await _api.Send(HttpMethod.Get, "/api/kpis", LedgerHost.ReadKey);
        Assert.True(response.Status == HttpStatusCode.OK, response.Text);
        return response.Json!;
    }

    /// <summary>The JSON with every object's keys in order, so that two answers compare as text.</summary>
    private static string Canonical(JsonNode? node) => node switch
    {
        JsonObject o => "{" + string.Join(",", o.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"\"{p.Key}\":{Canonical(p.Value)}")) + "}",
        JsonArray a => "[" + string.Join(",", a.Select(Canonical)) + "]",
        null => "null",
        _ => node.ToJsonString(),
    };

    /// <summary>What GET /api/kpis must answer: the KPIs of a recount of the stored data.</summary>
    private async Task<string> Recounted() =>
        Canonical(JsonSerializer.SerializeToNode(GetKpisEndpoint.From(await Store.RecountAsync(CancellationToken.None)), LedgerJson.Options));

    private async Task Execute(string sql)
    {
        await using var connection = new NpgsqlConnection(ledger.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    [Fact]
    public async Task a_randomized_workload_over_http_ends_with_every_counter_equal_to_its_recount()
    {
        var seed = Environment.TickCount;
        var random = new Random(seed);
        var from = _api.Now;
        var runs = new List<(string Id, string? Token)>();
        for (var i = 0; i < 30; i++)
        {
            var runId = await _api.Register(new
            {
                runId = NewRunId("kpi"), requiredScores = random.Next(3) == 0 ? new[] { "s" } : [], leaseSeconds = random.Next(2) == 0 ? 5 : 3600,
            });
            runs.Add((runId, random.Next(10) == 0 ? null : await _api.Claim(runId)));
        }

        for (var step = 0; step < 250; step++)
        {
            var (runId, token) = runs[random.Next(runs.Count)];
            var other = runs[random.Next(runs.Count)].Token;
            var now = _api.Now;
            var response = random.Next(13) switch
            {
                0 => await _api.Events(runId, token, Event("run.started")),
                1 => await _api.Events(runId, token, Event("scores.reported", fields: new { scores = new { s = (double)random.Next(2) } })), // conflicts
                2 => await _api.Events(runId, token, Event("run.completed")),
                3 => await _api.Events(runId, token, Event("run.failed", fields: new { errorClass = "timeout" })),
                4 => await _api.Events(runId, token, Event("step.completed", fields: new { stepId = "never-started" })), // 409 unknown-step
                5 => await _api.Events(runId, "lt_forged", Event("heartbeat")), // 401, counted without being kept
                6 => await _api.Events(runId, other, Event("heartbeat")), // another run's lease: 403
                7 => await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/cancel", LedgerHost.AdminKey, new { reason = "not needed" }),
                8 => await _api.Observe(runId, new { source = "portal", status = "failed", observedAt = now }),
                9 => await _api.Send(HttpMethod.Post, $"/api/runs/{runId}/reclassify", LedgerHost.AdminKey, new
                {
                    status = new[] { "succeeded", "failed", "lost", "cancelled" }[random.Next(4)], reason = "review", evidence = new[] { "ticket-1" }, @operator = "op",
                }),
                10 => await _api.Events(runId, token, Event("heartbeat")),
                _ => null,
            };
            Assert.True(response is null || response.Code < 500, $"seed {seed}, step {step}: {response?.Text}");
            if (response is null)
            {
                // Time passes (minutes to hours), and the janitor marks the runs whose lease ran out as lost.
                ledger.Clock.Advance(TimeSpan.FromMinutes(random.Next(1, 240)));
                await ledger.Sweep();
            }
        }

        var kpis = await Kpis(); // also adds this node's counted unauthenticated refusals to the stored counters
        var report = await ledger.Verify();
        Assert.True(report.Passed, $"seed {seed}:\n" + string.Join("\n", report.Differences));
        Assert.Equal(await Recounted(), Canonical(kpis));
        Assert.True(kpis["rejectionsByReason"]!["invalid-credentials"]!.GetValue<long>() > 0, kpis.ToJsonString());
        Assert.True(kpis["runsByStatus"]!["lost"]!.GetValue<long>() > 0, kpis.ToJsonString());

        // The series, hour by hour, is the recount's hours too.
        var recount = await Store.RecountAsync(CancellationToken.None);
        var series = await _api.Send(HttpMethod.Get,
            $"/api/kpis/series?bucket=hour&from={Uri.EscapeDataString(from.ToString("O"))}&to={Uri.EscapeDataString(_api.Now.ToString("O"))}", LedgerHost.ReadKey);
        Assert.True(series.Status == HttpStatusCode.OK, series.Text);
        foreach (var bucket in series.Json!["buckets"]!.AsArray())
        {
            var hour = bucket!["start"]!.GetValue<DateTimeOffset>();
            long Recounted(string kpi, string label = "") => recount.GetValueOrDefault(new KpiKey(kpi, label, hour));
            Assert.Equal(Recounted(Kpi.Registered), bucket["registered"]!.GetValue<long>());
            foreach (var status in new[] { "succeeded", "failed", "lost", "cancelled" })
            {
                Assert.Equal(Recounted(Kpi.Verdicts, status), bucket[status]!.GetValue<long>());
            }
            Assert.Equal(Recounted(Kpi.Flagged), bucket["anomalies"]!.GetValue<long>());
        }
    }

    [Fact]
    public async Task verify_names_a_corrupted_counter_and_kpis_rebuild_puts_it_back()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, new[] { Event("run.started"), Event("run.completed") });
        Assert.True((await ledger.Verify()).Passed);
        var succeeded = (await Kpis())["runsByStatus"]!["succeeded"]!.GetValue<long>();

        // One shard's row of the counter is off by 5 (a hand-made edit, a bug, a restore of half a backup).
        await Execute($"update {Table} set value = value + 5 where ctid = (select ctid from {Table} where kpi = '{Kpi.Runs}' and label = 'succeeded' limit 1)");
        Assert.Equal(succeeded + 5, (await Kpis())["runsByStatus"]!["succeeded"]!.GetValue<long>());
        var report = await ledger.Verify();
        Assert.False(report.Passed);
        Assert.Equal($"kpi {Kpi.Runs}/succeeded: kept {succeeded + 5}, recounted {succeeded}", Assert.Single(report.Differences));

        var rebuilt = await Store.RebuildAsync(once: false, CancellationToken.None);
        Assert.True(rebuilt.Rebuilt);
        Assert.Empty(await Store.CompareAsync(null, CancellationToken.None));
        Assert.Equal(succeeded, (await Kpis())["runsByStatus"]!["succeeded"]!.GetValue<long>());
        Assert.True((await ledger.Verify()).Passed);
    }

    [Fact]
    public async Task runs_written_past_the_counters_are_counted_once_by_the_backfill_of_nodes_starting_together()
    {
        var (runId, token) = await _api.Started();
        await _api.Events(runId, token, new[] { Event("run.started"), Event("run.failed", fields: new { errorClass = "timeout" }) });
        // A run appended straight through Marten, as a database from before the counters (or the bench's seeding) holds it.
        await using (var session = ledger.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession())
        {
            var seeded = NewRunId("seeded");
            session.Events.StartStream<Run>(seeded, TestEvents.Registered(seeded, _api.Now));
            await session.SaveChangesAsync();
        }
        Assert.NotEmpty(await Store.CompareAsync(null, CancellationToken.None));
        var expected = await Recounted();

        // No counters at all, as before this version: two nodes start at once; one recounts, the other finds it done.
        await Execute($"delete from {Table}");
        var nodes = await Task.WhenAll(ledger.SecondInstance(), ledger.SecondInstance());
        try
        {
            Assert.Empty(await Store.CompareAsync(null, CancellationToken.None));
            Assert.Equal(expected, Canonical(await Kpis()));
            // Started again, a node leaves established counters alone (a recount would not change them, but it costs a scan).
            await Execute($"update {Table} set value = value + 1 where kpi = '{Kpi.Runs}' and label = 'failed'");
            await using var third = await ledger.SecondInstance();
            Assert.NotEmpty(await Store.CompareAsync(null, CancellationToken.None));
            await Store.RebuildAsync(once: false, CancellationToken.None);
        }
        finally
        {
            foreach (var node in nodes) await node.DisposeAsync();
        }
        Assert.Equal(expected, await Recounted());
        Assert.Empty(await Store.CompareAsync(null, CancellationToken.None));
    }

    [Fact]
    public async Task a_rebuild_beside_live_writers_leaves_every_counter_equal_to_its_recount()
    {
        // Enough stored runs that a recount takes a while, so that writers commit while it reads.
        await using (var session = ledger.Host.Services.GetRequiredService<IDocumentStore>().LightweightSession())
        {
            for (var i = 0; i < 5000; i++)
            {
                var seeded = NewRunId("many");
                session.Events.StartStream<Run>(seeded, TestEvents.Registered(seeded, _api.Now));
            }
            await session.SaveChangesAsync();
        }
        using var stop = new CancellationTokenSource();
        var done = 0;
        var writers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            var api = new Scenarios(ledger);
            while (!stop.IsCancellationRequested)
            {
                var (runId, token) = await api.Started();
                await api.Events(runId, token, new[] { Event("run.started"), Event(runId.GetHashCode() % 2 == 0 ? "run.completed" : "heartbeat") });
                Interlocked.Increment(ref done);
            }
        })).ToList();

        // Rebuilds while the writers register, claim, start and finish runs (each a change of the counters).
        // A writer that throws ends the test with its error, not a loop that never ends.
        while (Volatile.Read(ref done) < 4)
        {
            if (writers.FirstOrDefault(w => w.IsFaulted) is { } failed) await failed;
            await Task.Delay(10);
        }
        var rebuilds = 0;
        for (var start = Volatile.Read(ref done); rebuilds < 5 || Volatile.Read(ref done) < start + 40; rebuilds++)
        {
            if (writers.FirstOrDefault(w => w.IsFaulted) is { } failed) await failed;
            await Store.RebuildAsync(once: false, CancellationToken.None);
        }
        await stop.CancelAsync();
        await Task.WhenAll(writers);
        Assert.Empty(await Store.CompareAsync(null, CancellationToken.None));
    }
}
