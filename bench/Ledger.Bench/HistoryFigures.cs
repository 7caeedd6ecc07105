using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Ledger.Runs;
using Marten;

namespace Ledger.Bench;

/// <summary>
/// Long runs stay readable: one run of <see cref="BenchOptions.HistoryEvents"/> events (150,000, the
/// size of seed 003's extraction job) and one of 1,000 (the baseline), seeded in-process through
/// Marten, then history pages (<c>?after=V&amp;limit=1000</c>) and states at a version
/// (<c>?version=V</c>) at random V over HTTP, from the service's snapshots of the refold.
/// </summary>
public static class HistoryFigures
{
    public const int PageSize = 1000;
    public const int ShortRunEvents = 1000;
    public const string PageKey = "history.page";
    public const string StateKey = "history.state";
    public const string ShortPageKey = "history.page.short";
    public const string ShortStateKey = "history.state.short";

    /// <summary>A seeded run: its id and its version (the registration and the claim come before its events).</summary>
    private sealed record Seeded(string RunId, long Version);

    public static async Task MeasureAsync(BenchOptions o, Results results, IDocumentStore store, LedgerProcess ledger, CancellationToken ct)
    {
        ledger.Phase("history (seeding)");
        var seeding = Stopwatch.StartNew();
        var tag = $"hist-{DateTime.UtcNow:HHmmss}";
        var longRun = await SeedAsync(store, $"{tag}-long", o.HistoryEvents);
        var seedTime = seeding.Elapsed;
        var shortRun = await SeedAsync(store, $"{tag}-short", ShortRunEvents);
        BenchProgram.Log($"history: seeded a run of {o.HistoryEvents:N0} events in {seedTime.TotalSeconds:0.0} s ({o.HistoryEvents / seedTime.TotalSeconds:N0} events/s) and one of {ShortRunEvents:N0}");

        using var http = Client(ledger.BaseAddress, o.ReadConcurrency + 1);
        ledger.Phase("history (first reads)");
        // The first read of a run without snapshots refolds it from the start (what every read did before them) and stores them.
        var cold = Stopwatch.StartNew();
        var (status, body) = await GetAsync(http, $"/api/runs/{longRun.RunId}/state?version={longRun.Version}");
        var coldTime = cold.Elapsed;
        Check(status, body, longRun.Version, "running", $"state of {longRun.RunId} at its last version");
        (status, body) = await GetAsync(http, $"/api/runs/{longRun.RunId}/events?after={longRun.Version / 2}&limit={PageSize}");
        CheckPage(status, body, longRun.Version / 2, longRun.Version);
        _ = await GetAsync(http, $"/api/runs/{shortRun.RunId}/state?version={shortRun.Version}");
        BenchProgram.Log($"history: the first read of the long run (no snapshots yet: the whole refold, storing them) took {coldTime.TotalMilliseconds:N0} ms");

        ledger.Phase("history (reads)");
        // CPU per read of the ledger and of PostgreSQL: on a shared machine, steadier than the latencies.
        var probe = new CpuProbe(o.PostgresDirectory) { LedgerPid = ledger.Pid };
        var duration = o.Quick ? TimeSpan.FromSeconds(2) : o.ReadDuration;
        for (var i = 0; i < 20; i++)
        {
            await ReadAsync(http, PagePath(longRun, new Random(i)));
            await ReadAsync(http, StatePath(longRun, new Random(i)));
        }
        for (var rep = 1; rep <= o.Repetitions; rep++)
        {
            ct.ThrowIfCancellationRequested();
            async Task Long()
            {
                await Measure(results, PageKey, $"GET /api/runs/{{id}}/events?after=V&limit={PageSize}, run of {o.HistoryEvents:N0} events",
                    probe, http, r => PagePath(longRun, r), o.ReadConcurrency, duration);
                await Measure(results, StateKey, $"GET /api/runs/{{id}}/state?version=V, run of {o.HistoryEvents:N0} events",
                    probe, http, r => StatePath(longRun, r), o.ReadConcurrency, duration);
            }
            async Task Short()
            {
                // Its one full page: as many entries as a page of the long run, without the events before it.
                await Measure(results, ShortPageKey, $"GET /api/runs/{{id}}/events?after=0&limit={PageSize}, run of {ShortRunEvents:N0} events",
                    probe, http, _ => $"/api/runs/{shortRun.RunId}/events?after=0&limit={PageSize}", o.ReadConcurrency, duration);
                await Measure(results, ShortStateKey, $"GET /api/runs/{{id}}/state?version=V, run of {ShortRunEvents:N0} events",
                    probe, http, r => StatePath(shortRun, r), o.ReadConcurrency, duration);
            }
            // Alternate which goes first, so that neither always meets the same noise.
            if (rep % 2 == 1) { await Long(); await Short(); }
            else { await Short(); await Long(); }
            BenchProgram.Log($"history rep {rep}/{o.Repetitions}: page p99 {results[PageKey].Samples[^1].P99Ms:0.0} ms (short run {results[ShortPageKey].Samples[^1].P99Ms:0.0}), " +
                             $"state p99 {results[StateKey].Samples[^1].P99Ms:0.0} ms (short run {results[ShortStateKey].Samples[^1].P99Ms:0.0})");
        }
        ledger.Phase("idle");

        results.HistoryEvents = o.HistoryEvents;
        results.Notes.Add($"History: one run of {o.HistoryEvents:N0} worker events (version {longRun.Version:N0}) shaped like seed 003's extraction job " +
                          "(run.started, then ten steps, each a long stretch of logs, heartbeats and items.committed; registered with nothing required, so it stays running) " +
                          $"and one of {ShortRunEvents:N0} events the same way, appended in-process through Marten ({HistorySeedBatch:N0} events per transaction, the service's store configuration) " +
                          $"in {seedTime.TotalSeconds:0.0} s for the long one. The service keeps a snapshot of the refold every `Ledger:History:SnapshotEvery` versions (default 250), " +
                          $"written by the reads: the first read of the long run, `state?version={longRun.Version}`, refolded all of it and stored them in {coldTime.TotalMilliseconds:N0} ms " +
                          $"(what every read cost before snapshots). Then each repetition read, by {o.ReadConcurrency} readers for {duration.TotalSeconds:0.#} s each, pages of {PageSize:N0} " +
                          "after a random version and states at a random version on the long run, and the same on the short one (its pages: its one full page, after=0), alternating which went first. " +
                          "CPU per read: the ledger's and PostgreSQL's CPU time (from /proc) over all repetitions, divided by the reads.");
    }

    private const int HistorySeedBatch = 5000;

    private static string PagePath(Seeded run, Random r) => $"/api/runs/{run.RunId}/events?after={r.NextInt64(0, run.Version)}&limit={PageSize}";
    private static string StatePath(Seeded run, Random r) => $"/api/runs/{run.RunId}/state?version={r.NextInt64(1, run.Version + 1)}";

    /// <summary>Registration, claim, then the long-run workload's events, recorded 10 ms apart, a few thousand per transaction.</summary>
    private static async Task<Seeded> SeedAsync(IDocumentStore store, string runId, int events)
    {
        var script = Workload.LongRun(runId, events);
        var origin = DateTimeOffset.UtcNow.AddMinutes(-10).AddMilliseconds(-10.0 * events);
        var registered = new RunRegistered(runId, null, null, null, new Dictionary<string, string>(), [], [], null, 3600, origin);
        var claimed = MartenStores.Claimed($"lt_{runId}", origin);
        var version = 2L;
        var at = origin;
        foreach (var chunk in script.Events.Chunk(HistorySeedBatch))
        {
            var batch = chunk.Select(w => (object)MartenStores.ToEvent(w, at = at.AddMilliseconds(10))).ToList();
            await using var session = store.LightweightSession();
            if (version == 2)
            {
                session.Events.StartStream<Run>(runId, [registered, claimed, .. batch]);
            }
            else
            {
                // As the service's writer appends: a quick append to a stream fetched for writing, so that the
                // inline Run document gets the stream's version (a bare Append in Quick mode leaves it unset).
                var stream = await session.Events.FetchForWriting<Run>(runId);
                stream.AppendMany(batch);
            }
            await session.SaveChangesAsync();
            version += batch.Count;
        }
        return new Seeded(runId, version);
    }

    private static async Task Measure(Results results, string key, string title, CpuProbe probe, HttpClient http, Func<Random, string> path,
        int readers, TimeSpan duration)
    {
        var before = probe.Read();
        var sample = await Load.Run(readers, duration, async (reader, recorder, deadline) =>
        {
            var random = new Random(reader * 7919 + Environment.TickCount);
            while (DateTime.UtcNow < deadline)
            {
                var p = path(random);
                var t = Stopwatch.GetTimestamp();
                if (await ReadAsync(http, p)) recorder.Add(t, 1);
                else recorder.Error($"GET {p} failed");
            }
        });
        results.AddCpu(key, probe.Read() - before);
        results.Get(key, title).Samples.Add(sample);
        if (sample.Errors > 0) BenchProgram.Log($"{title}: {sample.Errors} errors, first: {sample.FirstError}");
    }

    private static HttpClient Client(Uri baseAddress, int connections)
    {
        var http = new HttpClient(new SocketsHttpHandler
        {
            MaxConnectionsPerServer = connections,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            UseProxy = false,
            UseCookies = false,
        }) { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(120) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", LedgerProcess.ReadKey);
        return http;
    }

    /// <summary>A read whose body is drained but not kept: the latency of the call.</summary>
    private static async Task<bool> ReadAsync(HttpClient http, string path)
    {
        using var response = await http.GetAsync(path, HttpCompletionOption.ResponseContentRead);
        return response.StatusCode == HttpStatusCode.OK;
    }

    private static async Task<(HttpStatusCode Status, string Body)> GetAsync(HttpClient http, string path)
    {
        using var response = await http.GetAsync(path);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    private static void Check(HttpStatusCode status, string body, long version, string runStatus, string what)
    {
        using var json = status == HttpStatusCode.OK ? JsonDocument.Parse(body) : null;
        if (json is null || json.RootElement.GetProperty("version").GetInt64() != version
                         || json.RootElement.GetProperty("state").GetProperty("status").GetString() != runStatus)
        {
            throw new InvalidOperationException($"{what} should be {runStatus} at version {version}: {(int)status} {body[..Math.Min(300, body.Length)]}");
        }
    }

    private static void CheckPage(HttpStatusCode status, string body, long after, long version)
    {
        using var json = status == HttpStatusCode.OK ? JsonDocument.Parse(body) : null;
        var events = json?.RootElement.GetProperty("events");
        if (json is null || events is not { } list || list.GetArrayLength() != Math.Min(PageSize, version - after)
            || list[0].GetProperty("version").GetInt64() != after + 1 || json.RootElement.GetProperty("version").GetInt64() != version)
        {
            throw new InvalidOperationException($"the page after {after} should hold versions {after + 1}.. of {version}: {(int)status} {body[..Math.Min(300, body.Length)]}");
        }
    }
}
