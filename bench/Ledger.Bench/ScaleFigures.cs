using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;

namespace Ledger.Bench;

/// <summary>A run a worker reports on, with the lease token of its claim.</summary>
public sealed record LeasedRun(string RunId, string Token);

/// <summary>How the requests of a figure that did not apply their event ended, by HTTP status, over all its repetitions.</summary>
public sealed class Outcomes
{
    private readonly ConcurrentDictionary<string, long> _counts = new();

    public void Add(string outcome) => _counts.AddOrUpdate(outcome, 1, (_, n) => n + 1);
    public long Total => _counts.Values.Sum();

    /// <summary>"503 ×12, 500 ×3", most frequent first; "none" when every request applied its event.</summary>
    public override string ToString() => _counts.IsEmpty
        ? "none"
        : string.Join(", ", _counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key).Select(kv => $"{kv.Key} ×{kv.Value:N0}"));
}

/// <summary>What PostgreSQL's own log (the cluster's server.log) said between two points in time.</summary>
public sealed class ServerLog(string path)
{
    public long Mark()
    {
        try { return new FileInfo(path).Length; }
        catch (IOException) { return 0; }
    }

    /// <summary>Deadlocks PostgreSQL detected (one ERROR line each) and every ERROR line, written since <paramref name="from"/>.</summary>
    public (long Deadlocks, long Errors) Since(long from)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            if (from > stream.Length) return (0, 0);
            stream.Seek(from, SeekOrigin.Begin);
            using var reader = new StreamReader(stream);
            long deadlocks = 0, errors = 0;
            while (reader.ReadLine() is { } line)
            {
                if (!line.Contains("ERROR:", StringComparison.Ordinal)) continue;
                errors++;
                if (line.Contains("deadlock detected", StringComparison.Ordinal)) deadlocks++;
            }
            return (deadlocks, errors);
        }
        catch (IOException) { return (0, 0); }
    }
}

/// <summary>
/// Single-event requests on runs that are already long, on fresh runs, and on one hot run whose
/// lease every worker shares, over one or several ledger processes.
/// </summary>
public static class ScaleFigures
{
    /// <summary>Registers (nothing required, so heartbeats and logs never end them) and claims one run per id.</summary>
    public static async Task<IReadOnlyList<LeasedRun>> OpenAsync(LedgerClient client, IEnumerable<string> runIds)
    {
        return await Task.WhenAll(runIds.Select(async runId =>
        {
            await client.RegisterAsync(runId, Workload.OpenRunRegistration(runId));
            return new LeasedRun(runId, await client.ClaimAsync(runId));
        }));
    }

    /// <summary>
    /// One run per worker, each brought to <paramref name="events"/> events over HTTP: registered,
    /// claimed, then its events (<see cref="Workload.LongRun"/>) in batches of <paramref name="batchSize"/>
    /// with the lease token. Every batch must be applied whole.
    /// </summary>
    public static async Task<(IReadOnlyList<LeasedRun> Runs, TimeSpan Elapsed, long Requests)> SeedLongRunsAsync(
        LedgerClient client, int runs, int events, int batchSize, string tag)
    {
        var started = Stopwatch.GetTimestamp();
        long requests = 0;
        var seeded = await Task.WhenAll(Enumerable.Range(0, runs).Select(async w =>
        {
            var script = Workload.LongRun($"{tag}-w{w}", events);
            await client.RegisterAsync(script.RunId, script.RegisterBody);
            var token = await client.ClaimAsync(script.RunId);
            foreach (var batch in script.Batches(batchSize))
            {
                if (await client.PostEventsAsync(script.RunId, token, RunScript.ArrayBody(batch)) is { } error)
                {
                    throw new InvalidOperationException($"seeding long run {script.RunId}: {error}");
                }
                Interlocked.Increment(ref requests);
            }
            return new LeasedRun(script.RunId, token);
        }));
        return (seeded, Stopwatch.GetElapsedTime(started), requests);
    }

    /// <summary>
    /// <paramref name="concurrency"/> workers, worker w on <c>runs[w % runs.Count]</c>, each sending
    /// one event per request (a log, then a heartbeat, in turn; unique event ids) to the nodes in
    /// turn, starting at node w. Counted: events applied. Latency: every request answered, refused
    /// ones included; a refusal or an unanswered request is tallied by status in <paramref name="outcomes"/>.
    /// </summary>
    public static Task<Sample> SingleEventsAsync(IReadOnlyList<LedgerClient> nodes, IReadOnlyList<LeasedRun> runs, string tag,
        int concurrency, TimeSpan duration, Outcomes? outcomes = null) =>
        Load.Run(concurrency, duration, async (worker, recorder, deadline) =>
        {
            var run = runs[worker % runs.Count];
            for (var i = 0; DateTime.UtcNow < deadline; i++)
            {
                var node = (worker + i) % nodes.Count;
                var body = Workload.Filler(run.RunId, $"{tag}-w{worker}-{i}", i);
                var start = Stopwatch.GetTimestamp();
                try
                {
                    var (status, error) = await nodes[node].PostEventsWithStatusAsync(run.RunId, run.Token, body);
                    if (error is null)
                    {
                        recorder.Add(start, 1);
                        continue;
                    }
                    recorder.Add(start, 0);
                    recorder.Error($"{run.RunId} via node {node + 1}: {error}");
                    outcomes?.Add(status == (int)HttpStatusCode.OK ? "200 not applied" : status.ToString(System.Globalization.CultureInfo.InvariantCulture));
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
                {
                    recorder.Error($"{run.RunId} via node {node + 1}: no answer: {e.GetType().Name}: {e.Message}");
                    outcomes?.Add($"no answer ({e.GetType().Name})");
                }
            }
        });
}
