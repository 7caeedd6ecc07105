using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Ledger.Bench;

/// <summary>The ledger's public HTTP contract, as a worker and an orchestrator use it.</summary>
public sealed class LedgerClient : IDisposable
{
    private static readonly MediaTypeHeaderValue Json = new("application/json");
    private static readonly byte[] NotApplied = "\"recorded-not-applied\""u8.ToArray();
    private static readonly byte[] Duplicate = "\"duplicate\""u8.ToArray();
    private readonly HttpClient _http;

    public LedgerClient(Uri baseAddress, int connections)
    {
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = connections,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
            UseProxy = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
        };
        _http = new HttpClient(handler) { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(30) };
    }

    private static HttpRequestMessage Request(HttpMethod method, string path, string key, byte[]? body)
    {
        var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        if (body is not null)
        {
            request.Content = new ByteArrayContent(body);
            request.Content.Headers.ContentType = Json;
        }
        return request;
    }

    public async Task RegisterAsync(RunScript script)
    {
        using var request = Request(HttpMethod.Post, "/api/runs", LedgerProcess.AdminKey, script.RegisterBody);
        using var response = await _http.SendAsync(request);
        if (response.StatusCode != HttpStatusCode.Created)
        {
            throw new InvalidOperationException($"register {script.RunId}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
    }

    public async Task<string> ClaimAsync(string runId)
    {
        using var request = Request(HttpMethod.Post, $"/api/runs/{runId}/claim", LedgerProcess.WorkerKey, "{\"worker\":\"bench\"}"u8.ToArray());
        using var response = await _http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        if (response.StatusCode != HttpStatusCode.OK) throw new InvalidOperationException($"claim {runId}: {(int)response.StatusCode} {text}");
        using var json = JsonDocument.Parse(text);
        return json.RootElement.GetProperty("leaseToken").GetString()!;
    }

    public async Task RegisterAsync(string runId, byte[] body)
    {
        using var request = Request(HttpMethod.Post, "/api/runs", LedgerProcess.AdminKey, body);
        using var response = await _http.SendAsync(request);
        if (response.StatusCode != HttpStatusCode.Created)
        {
            throw new InvalidOperationException($"register {runId}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
    }

    /// <summary>Null when every event was applied, else what went wrong.</summary>
    public async Task<string?> PostEventsAsync(string runId, string leaseToken, byte[] body) =>
        (await PostEventsWithStatusAsync(runId, leaseToken, body)).Error;

    /// <summary>The HTTP status, and what went wrong unless every event was applied (a 200 may say an event was not).</summary>
    public async Task<(int Status, string? Error)> PostEventsWithStatusAsync(string runId, string leaseToken, byte[] body)
    {
        using var request = Request(HttpMethod.Post, $"/api/runs/{runId}/events", leaseToken, body);
        using var response = await _http.SendAsync(request);
        var bytes = await response.Content.ReadAsByteArrayAsync();
        var status = (int)response.StatusCode;
        if (response.StatusCode != HttpStatusCode.OK) return (status, $"{status} {Encoding.UTF8.GetString(bytes)}");
        if (bytes.AsSpan().IndexOf(NotApplied) >= 0 || bytes.AsSpan().IndexOf(Duplicate) >= 0)
        {
            return (status, $"not applied: {Encoding.UTF8.GetString(bytes)}");
        }
        return (status, null);
    }

    public async Task<(HttpStatusCode Status, string Body)> GetRunAsync(string runId)
    {
        using var request = Request(HttpMethod.Get, $"/api/runs/{runId}", LedgerProcess.ReadKey, null);
        using var response = await _http.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    /// <summary>A read whose body is drained but not kept: the latency of the call.</summary>
    public async Task<bool> ReadRunAsync(string runId)
    {
        using var request = Request(HttpMethod.Get, $"/api/runs/{runId}", LedgerProcess.ReadKey, null);
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead);
        return response.StatusCode == HttpStatusCode.OK;
    }

    /// <summary>POST /api/boards (admin key): 201 when defined, 200 when it already was with the same ranking.</summary>
    public async Task DefineBoardAsync(object definition)
    {
        using var request = Request(HttpMethod.Post, "/api/boards", LedgerProcess.AdminKey, JsonSerializer.SerializeToUtf8Bytes(definition));
        using var response = await _http.SendAsync(request);
        if (response.StatusCode is not (HttpStatusCode.Created or HttpStatusCode.OK))
        {
            throw new InvalidOperationException($"define board: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
    }

    public static string LeaderboardPath(string board, int page, int pageSize) =>
        $"/api/boards/{Uri.EscapeDataString(board)}/leaderboard?page={page}&pageSize={pageSize}";

    public async Task<(HttpStatusCode Status, string Body)> GetLeaderboardAsync(string board, int page, int pageSize)
    {
        using var request = Request(HttpMethod.Get, LeaderboardPath(board, page, pageSize), LedgerProcess.ReadKey, null);
        using var response = await _http.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    /// <summary>The board as it stood at <paramref name="at"/> (?at=), drained but not kept.</summary>
    public async Task<bool> ReadLeaderboardAsOfAsync(string board, int page, int pageSize, DateTimeOffset at)
    {
        using var request = Request(HttpMethod.Get, LeaderboardPath(board, page, pageSize) + "&at=" + Uri.EscapeDataString(at.ToString("O")),
            LedgerProcess.ReadKey, null);
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead);
        return response.StatusCode == HttpStatusCode.OK;
    }

    /// <summary>A leaderboard read whose body is drained but not kept: the latency of the call.</summary>
    public async Task<bool> ReadLeaderboardAsync(string board, int page, int pageSize)
    {
        using var request = Request(HttpMethod.Get, LeaderboardPath(board, page, pageSize), LedgerProcess.ReadKey, null);
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead);
        return response.StatusCode == HttpStatusCode.OK;
    }

    /// <summary>A GET whose body is drained: its status, and the body when it was not 200.</summary>
    public async Task<(int Status, string? Error)> ReadAsync(string path, string key)
    {
        using var request = Request(HttpMethod.Get, path, key, null);
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead);
        var status = (int)response.StatusCode;
        return response.StatusCode == HttpStatusCode.OK ? (status, null) : (status, $"{status} {await response.Content.ReadAsStringAsync()}");
    }

    public async Task<(int Status, string Body)> GetTextAsync(string path, string key)
    {
        using var request = Request(HttpMethod.Get, path, key, null);
        using var response = await _http.SendAsync(request);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    /// <summary>A POST with a JSON body: its status and body.</summary>
    public async Task<(int Status, string Body)> PostAsync(string path, string key, byte[] body)
    {
        using var request = Request(HttpMethod.Post, path, key, body);
        using var response = await _http.SendAsync(request);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    public void Dispose() => _http.Dispose();
}

public enum IngestionMode { Single, Batch }

/// <summary>Simulated workers driving their own runs through the whole lifecycle over HTTP.</summary>
public static class HttpIngestion
{
    /// <summary>
    /// Each worker registers a run (admin key), claims it (worker key) and reports its events with
    /// the lease token, one per request or in batches, then starts the next run, until the deadline.
    /// Counted: worker events acknowledged as applied, over the whole wall time (register and claim
    /// included in the time, not in the count). Latency: the event requests.
    /// </summary>
    public static Task<Sample> RunAsync(LedgerClient client, BenchOptions options, IngestionMode mode, string tag,
        int concurrency, TimeSpan duration, Recorder? control = null) =>
        Load.Run(concurrency, duration, async (worker, recorder, deadline) =>
        {
            for (var n = 0; DateTime.UtcNow < deadline; n++)
            {
                var script = Script(options, mode, $"{tag}-w{worker}-{n}");
                var t = Stopwatch.GetTimestamp();
                await client.RegisterAsync(script);
                var token = await client.ClaimAsync(script.RunId);
                control?.Add(t, 0);
                foreach (var body in Bodies(options, mode, script))
                {
                    if (DateTime.UtcNow >= deadline) break;
                    var start = Stopwatch.GetTimestamp();
                    var error = await client.PostEventsAsync(script.RunId, token, body.Body);
                    if (error is null) recorder.Add(start, body.Events);
                    else recorder.Error($"{script.RunId}: {error}");
                }
            }
        });

    /// <summary>One complete lifecycle per worker, then the final state must be <c>succeeded</c>.</summary>
    public static async Task WarmUpAsync(LedgerClient client, BenchOptions options, IngestionMode mode, string tag)
    {
        var scripts = Enumerable.Range(0, options.Workers).Select(w => Script(options, mode, $"{tag}-w{w}")).ToList();
        await Task.WhenAll(scripts.Select(async script =>
        {
            await client.RegisterAsync(script);
            var token = await client.ClaimAsync(script.RunId);
            foreach (var body in Bodies(options, mode, script))
            {
                if (await client.PostEventsAsync(script.RunId, token, body.Body) is { } error)
                {
                    throw new InvalidOperationException($"warm-up {script.RunId}: {error}");
                }
            }
        }));
        var (status, run) = await client.GetRunAsync(scripts[0].RunId);
        if (status != HttpStatusCode.OK || !run.Contains("\"status\":\"succeeded\"", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"warm-up run {scripts[0].RunId} did not end succeeded: {(int)status} {run}");
        }
    }

    public static RunScript Script(BenchOptions options, IngestionMode mode, string runId) => mode == IngestionMode.Single
        ? Workload.SingleLifecycle(runId)
        : Workload.BatchLifecycle(runId, options.BatchesPerRun, options.BatchSize);

    private static IEnumerable<(byte[] Body, int Events)> Bodies(BenchOptions options, IngestionMode mode, RunScript script) =>
        mode == IngestionMode.Single
            ? script.Events.Select(e => (e.Json, 1))
            : script.Batches(options.BatchSize).Select(b => (RunScript.ArrayBody(b), b.Length));
}

public static class Reads
{
    /// <summary>GET /api/runs/{id} of random seeded runs by <paramref name="concurrency"/> readers.</summary>
    public static Task<Sample> RunAsync(LedgerClient client, Func<Random, string> pickRun, int concurrency, TimeSpan duration) =>
        Load.Run(concurrency, duration, async (reader, recorder, deadline) =>
        {
            var random = new Random(reader * 7919 + Environment.TickCount);
            while (DateTime.UtcNow < deadline)
            {
                var runId = pickRun(random);
                var t = Stopwatch.GetTimestamp();
                if (await client.ReadRunAsync(runId)) recorder.Add(t, 1);
                else recorder.Error($"GET /api/runs/{runId} failed");
            }
        });

    /// <summary>
    /// GET /api/boards/{board}/leaderboard by <paramref name="concurrency"/> readers, each asking for a
    /// random page (1..<paramref name="pages"/>) of <paramref name="pageSize"/> participants.
    /// </summary>
    public static Task<Sample> LeaderboardAsync(LedgerClient client, string board, int pages, int pageSize, int concurrency, TimeSpan duration) =>
        Load.Run(concurrency, duration, async (reader, recorder, deadline) =>
        {
            var random = new Random(reader * 104_729 + Environment.TickCount);
            while (DateTime.UtcNow < deadline)
            {
                var page = 1 + random.Next(pages);
                var t = Stopwatch.GetTimestamp();
                if (await client.ReadLeaderboardAsync(board, page, pageSize)) recorder.Add(t, 1);
                else recorder.Error($"GET {LedgerClient.LeaderboardPath(board, page, pageSize)} failed");
            }
        });

    /// <summary>
    /// GET /api/boards/{board}/leaderboard?at=TIME by <paramref name="concurrency"/> readers: a random
    /// time between <paramref name="from"/> and <paramref name="to"/>, a random page among the first <paramref name="pages"/>.
    /// </summary>
    public static Task<Sample> LeaderboardAsOfAsync(LedgerClient client, string board, int pages, int pageSize, int concurrency,
        TimeSpan duration, DateTimeOffset from, DateTimeOffset to) =>
        Load.Run(concurrency, duration, async (reader, recorder, deadline) =>
        {
            var random = new Random(reader * 15_485_863 + Environment.TickCount);
            while (DateTime.UtcNow < deadline)
            {
                var at = from + (to - from) * random.NextDouble();
                var page = 1 + random.Next(pages);
                var t = Stopwatch.GetTimestamp();
                if (await client.ReadLeaderboardAsOfAsync(board, page, pageSize, at)) recorder.Add(t, 1);
                else recorder.Error($"GET {LedgerClient.LeaderboardPath(board, page, pageSize)}&at={at:O} failed");
            }
        });
}
