using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;

namespace Ledger.Bench;

/// <summary>
/// What the soak asks of the service, and for how long. The rates are fixed (paced, not as fast as
/// possible) and well below saturation, so that the service never queues work and what grows is
/// what it keeps, not a backlog: see bench/README.md ("Soak").
/// </summary>
public sealed record SoakPlan(
    TimeSpan Duration,
    TimeSpan GrowthFrom,
    double EventsPerSecond,
    int Workers,
    double RunReadsPerSecond,
    double OtherReadsPerSecond,
    int AbandonEvery,
    int AbandonedAfterEvents,
    int AbandonedLeaseSeconds,
    int JanitorIntervalSeconds,
    int JanitorGraceSeconds,
    int Participants)
{
    public static readonly TimeSpan SampleEvery = TimeSpan.FromSeconds(30);
    public const string Board = "soak-board";
    public const string Schema = "soak";

    public static SoakPlan From(BenchOptions o) => new(
        Duration: TimeSpan.FromMinutes(o.SoakMinutes),
        // The first minute or two hold start-up, JIT and the first compilations: growth is measured after them.
        GrowthFrom: TimeSpan.FromMinutes(o.SoakMinutes >= 5 ? 2 : 1),
        EventsPerSecond: o.SoakEventsPerSecond,
        // 16 workers at 12.5 events/s each: a worker's slot (80 ms) holds its request even when the
        // shared machine makes one take 40 ms, and the slot that opens a run also registers and claims it.
        Workers: 16,
        RunReadsPerSecond: 20,
        OtherReadsPerSecond: 10,
        AbandonEvery: 10,
        AbandonedAfterEvents: 3,
        AbandonedLeaseSeconds: 5,
        JanitorIntervalSeconds: 5,
        JanitorGraceSeconds: 2,
        Participants: 50);

    /// <summary>The service's settings for the soak: its own schema, the janitor on a short interval, webhooks to the bench.</summary>
    public Dictionary<string, string> Environment(IReadOnlyDictionary<string, string> extra)
    {
        var env = new Dictionary<string, string>
        {
            ["Ledger__SchemaName"] = Schema,
            ["Ledger__Janitor__Enabled"] = "true",
            ["Ledger__Janitor__IntervalSeconds"] = JanitorIntervalSeconds.ToString(CultureInfo.InvariantCulture),
            ["Ledger__Janitor__GraceSeconds"] = JanitorGraceSeconds.ToString(CultureInfo.InvariantCulture),
            // The receiver is the bench, on the loopback address.
            ["Ledger__Webhooks__AllowPrivateTargets"] = "true",
        };
        foreach (var (key, value) in extra) env[key] = value;
        return env;
    }
}

/// <summary>One reading every 30 s: the process's memory (/proc) and the GC's (from the /metrics scrape).</summary>
public sealed record SoakSample(TimeSpan At, ProcessMemory Memory, double? GcHeapBytes, double? GcCommittedBytes, long Events, long Requests);

public sealed class SoakResult(SoakPlan plan)
{
    public SoakPlan Plan { get; } = plan;
    public List<SoakSample> Samples { get; } = [];
    public TimeSpan Elapsed { get; set; }
    public TimeSpan Startup { get; set; }
    public int Pid { get; set; }
    public long PeakKb { get; set; }
    public long SampledPeakKb { get; set; }
    public long RssSamples { get; set; }
    public Sample? EventRequests { get; set; }
    public Sample? RunReads { get; set; }
    public Sample? OtherReads { get; set; }
    public long RunsRegistered;
    public long RunsFinished;
    public long RunsAbandoned;
    public long History, Leaderboard, Kpis, Lists, ControlRequests;
    public IReadOnlyDictionary<string, long> RunsByStatus { get; set; } = new Dictionary<string, long>();
    public long WebhooksReceived { get; set; }
    public Outcomes Unexpected { get; } = new();
    public List<string> FirstErrors { get; } = [];
    public CpuCounters? Cpu { get; set; }
    public string MemoryBreakdown { get; set; } = "";
    public string LogPath { get; set; } = "";

    public long Lost => RunsByStatus.GetValueOrDefault("lost");
    /// <summary>Answers other than the expected ones, and a janitor that did not mark exactly the abandoned runs lost.</summary>
    public long Errors => Unexpected.Total;

    public void Error(string what, string detail)
    {
        Unexpected.Add(what);
        lock (FirstErrors)
        {
            if (FirstErrors.Count < 5) FirstErrors.Add($"{what}: {detail[..Math.Min(300, detail.Length)]}");
        }
    }

    /// <summary>The sample nearest to <paramref name="at"/>.</summary>
    public SoakSample? At(TimeSpan at) => Samples.Count == 0 ? null : Samples.MinBy(s => Math.Abs((s.At - at).TotalSeconds));
    public SoakSample? GrowthStart => At(Plan.GrowthFrom);
    public SoakSample? End => Samples.Count == 0 ? null : Samples[^1];

    public double Growth(Func<SoakSample, double?> of) =>
        GrowthStart is { } a && End is { } b && of(a) is > 0 and var from && of(b) is { } to ? (to - from) / from * 100 : double.NaN;

    public double RssGrowthPercent => Growth(s => s.Memory.RssKb);
    public double AchievedEventsPerSecond => EventRequests is { } e ? e.Events / Elapsed.TotalSeconds : 0;
}

/// <summary>
/// The soak: a ledger process of its own (its own schema in the bench database, the janitor every
/// few seconds) under a steady mixed load for <see cref="SoakPlan.Duration"/>: workers register,
/// claim and report runs one event per request, one run in ten is abandoned after a few events so
/// that its short lease expires and the janitor marks it lost, readers read runs, histories, the
/// leaderboard, run lists and KPIs, and every verdict is delivered to a webhook receiver in the bench.
/// Its resident memory is read every 30 s.
/// </summary>
public static class Soak
{
    private const string WebhookSecret = "soak-webhook-secret-0123456789";

    public static async Task<SoakResult> RunAsync(BenchOptions o, string dll, string connectionString, string logPath,
        CpuProbe? probe, Action<string> log, CancellationToken ct)
    {
        var plan = SoakPlan.From(o);
        var result = new SoakResult(plan) { LogPath = logPath };
        await using var receiver = new WebhookReceiver(o.LedgerPort + 8);
        var startup = Stopwatch.StartNew();
        var ledger = await LedgerProcess.StartAsync(dll, o.LedgerPort, connectionString, logPath, TimeSpan.FromSeconds(180),
            plan.Environment(o.LedgerEnvironment));
        result.Startup = startup.Elapsed;
        result.Pid = ledger.Pid;
        log($"soak: ledger pid {ledger.Pid} healthy after {startup.Elapsed.TotalSeconds:0.0} s (schema {SoakPlan.Schema}, log {logPath}); " +
            $"{plan.Duration.TotalMinutes:0.#} min at {plan.EventsPerSecond:0} events/s, {plan.RunReadsPerSecond + plan.OtherReadsPerSecond:0} reads/s");
        try
        {
            using var client = new LedgerClient(ledger.BaseAddress, plan.Workers + 4);
            await client.DefineBoardAsync(new
            {
                id = SoakPlan.Board, title = "Soak board", primaryScore = Seeder.PrimaryScore, direction = "max",
                tieBreakScore = Seeder.TieBreakScore, tieBreakDirection = "max",
            });
            var (subscribed, subscription) = await client.PostAsync("/api/subscriptions", LedgerProcess.AdminKey, JsonSerializer.SerializeToUtf8Bytes(new
            {
                url = $"{receiver.Url}hooks",
                kinds = new[] { "run.succeeded", "run.failed", "run.lost" },
                secret = WebhookSecret,
            }));
            if (subscribed != 201) throw new InvalidOperationException($"soak: the webhook subscription was refused: {subscribed} {subscription}");

            var cpuBefore = probe is null ? (CpuCounters?)null : ReadCpu(probe, ledger.Pid);
            var started = Stopwatch.GetTimestamp();
            var deadline = DateTime.UtcNow + plan.Duration;
            var recent = new RecentRuns(1024);
            var events = new Recorder();
            var runReads = new Recorder();
            var otherReads = new Recorder();
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);

            var sampler = SampleAsync(ledger, client, result, events, runReads, otherReads, started, plan, log, stop.Token);
            var load = new List<Task>();
            for (var w = 0; w < plan.Workers; w++)
            {
                var worker = w;
                load.Add(Task.Run(() => WorkerAsync(client, plan, worker, result, events, recent, deadline, stop.Token)));
            }
            load.Add(Task.Run(() => Paced(plan.RunReadsPerSecond, deadline, stop.Token, async _ =>
            {
                if (recent.Pick() is not { } runId) return;
                await Read(client, $"/api/runs/{runId}", "GET /api/runs/{id}", runReads, result);
            })));
            load.Add(Task.Run(() => Paced(plan.OtherReadsPerSecond, deadline, stop.Token, async k =>
            {
                switch (k % 10)
                {
                    case 0 or 2 or 4 or 6:
                        if (recent.Pick() is not { } runId) return;
                        Interlocked.Increment(ref result.History);
                        await Read(client, $"/api/runs/{runId}/events", "GET /api/runs/{id}/events", otherReads, result);
                        break;
                    case 1 or 3 or 5 or 7:
                        Interlocked.Increment(ref result.Leaderboard);
                        await Read(client, LedgerClient.LeaderboardPath(SoakPlan.Board, 1 + (int)(k / 10 % 2), 50), "GET /api/boards/{id}/leaderboard", otherReads, result);
                        break;
                    case 8:
                        Interlocked.Increment(ref result.Kpis);
                        await Read(client, "/api/kpis", "GET /api/kpis", otherReads, result);
                        break;
                    default:
                        Interlocked.Increment(ref result.Lists);
                        await Read(client, "/api/runs?status=running&pageSize=50", "GET /api/runs", otherReads, result);
                        break;
                }
            })));
            await Task.WhenAll(load);
            result.Elapsed = Stopwatch.GetElapsedTime(started);
            await sampler;
            if (probe is not null && cpuBefore is { } cb) result.Cpu = ReadCpu(probe, ledger.Pid) - cb;
            result.EventRequests = events.Finish(result.Elapsed);
            result.RunReads = runReads.Finish(result.Elapsed);
            result.OtherReads = otherReads.Finish(result.Elapsed);

            // The last abandoned leases expire after the load: wait for the janitor to mark them, then count.
            var settle = TimeSpan.FromSeconds(plan.AbandonedLeaseSeconds + plan.JanitorGraceSeconds + 2 * plan.JanitorIntervalSeconds + 2);
            var until = DateTime.UtcNow + settle;
            do
            {
                await Task.Delay(TimeSpan.FromSeconds(1), ct);
                result.RunsByStatus = await RunsByStatusAsync(client);
            } while (result.Lost != Interlocked.Read(ref result.RunsAbandoned) && DateTime.UtcNow < until);
            result.WebhooksReceived = receiver.Received;
            if (result.Lost != result.RunsAbandoned)
            {
                result.Error("janitor", $"{result.RunsAbandoned} runs were abandoned, {result.Lost} marked lost {settle.TotalSeconds:0} s after the load");
            }
            log($"soak: {result.EventRequests.Events:N0} events ({result.AchievedEventsPerSecond:0.0}/s of {plan.EventsPerSecond:0} asked), " +
                $"{result.RunsRegistered:N0} runs ({result.RunsAbandoned:N0} abandoned, {result.Lost:N0} lost), unexpected answers: {result.Unexpected}; " +
                $"RSS growth {result.RssGrowthPercent:0.0}% from minute {plan.GrowthFrom.TotalMinutes:0}, peak {ledger.PeakRssKb / 1024.0:0} MB");
        }
        finally
        {
            result.PeakKb = ledger.PeakRssKb;
            result.SampledPeakKb = ledger.SampledPeakRssKb;
            result.RssSamples = ledger.Samples;
            result.MemoryBreakdown = ledger.MemoryBreakdown();
            await ledger.DisposeAsync();
        }
        return result;
    }

    private static CpuCounters ReadCpu(CpuProbe probe, int pid)
    {
        var before = probe.LedgerPid;
        probe.LedgerPid = pid;
        try { return probe.Read(); }
        finally { probe.LedgerPid = before; }
    }

    /// <summary>
    /// One worker: registers a run (on the board, with a participant), claims it and reports its 19
    /// events, one request per paced slot (register and claim ride in the slot of the first event);
    /// every <see cref="SoakPlan.AbandonEvery"/>-th run is registered with a short lease and left
    /// after a few events, for the janitor.
    /// </summary>
    private static Task WorkerAsync(LedgerClient client, SoakPlan plan, int worker, SoakResult result, Recorder events,
        RecentRuns recent, DateTime deadline, CancellationToken ct)
    {
        var n = 0;
        (RunScript Script, string Token, bool Abandon, int Next)? run = null;
        return Paced(plan.EventsPerSecond / plan.Workers, deadline, ct, async _ =>
        {
            if (run is null)
            {
                var runId = $"soak-w{worker}-{n}";
                var abandon = n % plan.AbandonEvery == plan.AbandonEvery - 1;
                var participant = $"p{(worker * 7 + n) % plan.Participants}";
                n++;
                var script = Workload.SingleLifecycle(runId);
                var register = JsonSerializer.SerializeToUtf8Bytes(new
                {
                    runId,
                    board = SoakPlan.Board,
                    participant,
                    requiredScores = Workload.RequiredScores,
                    requiredOutputs = new[] { Workload.RequiredOutput },
                    expectedItems = script.ExpectedItems,
                    leaseSeconds = abandon ? plan.AbandonedLeaseSeconds : 120,
                });
                Interlocked.Add(ref result.ControlRequests, 2);
                var (registered, body) = await client.PostAsync("/api/runs", LedgerProcess.AdminKey, register);
                if (registered != 201)
                {
                    result.Error($"POST /api/runs {registered}", body);
                    return;
                }
                Interlocked.Increment(ref result.RunsRegistered);
                recent.Add(runId);
                var (claimed, claim) = await client.PostAsync($"/api/runs/{runId}/claim", LedgerProcess.WorkerKey, "{\"worker\":\"soak\"}"u8.ToArray());
                if (claimed != 200)
                {
                    result.Error($"POST /api/runs/{{id}}/claim {claimed}", claim);
                    return;
                }
                using var json = JsonDocument.Parse(claim);
                run = (script, json.RootElement.GetProperty("leaseToken").GetString()!, abandon, 0);
            }

            var (s, token, left, next) = run.Value;
            var start = Stopwatch.GetTimestamp();
            var (status, error) = await client.PostEventsWithStatusAsync(s.RunId, token, s.Events[next].Json);
            if (error is null) events.Add(start, 1);
            else result.Error($"POST /api/runs/{{id}}/events {status}", error);
            next++;
            if (left && next == plan.AbandonedAfterEvents)
            {
                Interlocked.Increment(ref result.RunsAbandoned);
                run = null;
            }
            else if (next == s.Events.Count)
            {
                Interlocked.Increment(ref result.RunsFinished);
                run = null;
            }
            else
            {
                run = (s, token, left, next);
            }
        });
    }

    private static async Task Read(LedgerClient client, string path, string what, Recorder recorder, SoakResult result)
    {
        var start = Stopwatch.GetTimestamp();
        var (status, error) = await client.ReadAsync(path, LedgerProcess.ReadKey);
        if (error is null) recorder.Add(start, 1);
        else result.Error($"{what} {status}", error);
    }

    /// <summary>
    /// Calls <paramref name="operation"/> (with its slot number) on a fixed schedule of
    /// <paramref name="perSecond"/> until the deadline. A slot that comes due while the previous
    /// call still runs starts as soon as it ends, so a slow spell is caught up, and the achieved
    /// rate says whether the schedule was kept. A call that throws counts as an error of the figure.
    /// </summary>
    private static async Task Paced(double perSecond, DateTime deadline, CancellationToken ct, Func<long, Task> operation)
    {
        var interval = Stopwatch.Frequency / perSecond;
        var start = Stopwatch.GetTimestamp();
        for (long k = 0; !ct.IsCancellationRequested; k++)
        {
            var wait = start + (long)(k * interval) - Stopwatch.GetTimestamp();
            if (wait > 0) await Task.Delay(TimeSpan.FromSeconds(wait / (double)Stopwatch.Frequency), ct);
            if (DateTime.UtcNow >= deadline) return;
            await operation(k);
        }
    }

    private static async Task SampleAsync(LedgerProcess ledger, LedgerClient client, SoakResult result, Recorder events,
        Recorder runReads, Recorder otherReads, long started, SoakPlan plan, Action<string> log, CancellationToken ct)
    {
        var every = SoakPlan.SampleEvery;
        for (var k = 0; k * every <= plan.Duration; k++)
        {
            var wait = k * every - Stopwatch.GetElapsedTime(started);
            if (wait > TimeSpan.Zero) await Task.Delay(wait, ct);
            if (ledger.Memory() is not { } memory) return;
            var (heap, committed) = await GcFromMetricsAsync(client);
            var (e, _) = Counts(events);
            var requests = Counts(runReads).Operations + Counts(otherReads).Operations + e + Interlocked.Read(ref result.ControlRequests);
            var sample = new SoakSample(Stopwatch.GetElapsedTime(started), memory, heap, committed, e, requests);
            lock (result.Samples) result.Samples.Add(sample);
            log($"soak {sample.At.TotalMinutes:0.0} min: RSS {memory.RssKb / 1024.0:0} MB (anon {memory.AnonymousKb / 1024.0:0}, file {memory.FileKb / 1024.0:0}, " +
                $"shmem {memory.SharedKb / 1024.0:0}), GC heap {Mb(heap)} MB, committed {Mb(committed)} MB, {e:N0} events, {requests:N0} requests");
        }

        static (long Events, long Operations) Counts(Recorder r) => (r.Events, r.Operations);
    }

    private static string Mb(double? bytes) => bytes is { } b ? (b / 1024 / 1024).ToString("0.0", CultureInfo.InvariantCulture) : "–";

    /// <summary>
    /// The GC's view from the service's own /metrics (the runtime's meter): heap size after the last
    /// collection (all generations) and memory the GC had committed then. Null when the scrape fails.
    /// </summary>
    private static async Task<(double? Heap, double? Committed)> GcFromMetricsAsync(LedgerClient client)
    {
        try
        {
            var (status, text) = await client.GetTextAsync("/metrics", LedgerProcess.ReadKey);
            return status != 200 ? (null, null) : ParseGc(text);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            return (null, null);
        }
    }

    public static (double? Heap, double? Committed) ParseGc(string prometheus)
    {
        double? heap = null, committed = null;
        foreach (var line in prometheus.Split('\n'))
        {
            if (line.StartsWith("dotnet_gc_last_collection_heap_size_bytes{", StringComparison.Ordinal)) heap = (heap ?? 0) + Value(line);
            else if (line.StartsWith("dotnet_gc_last_collection_memory_committed_size_bytes", StringComparison.Ordinal)) committed = (committed ?? 0) + Value(line);
        }
        return (heap, committed);

        static double Value(string line)
        {
            // "name{labels} value [timestamp]"
            var parts = line[(line.LastIndexOf('}') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0) parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1..];
            return double.Parse(parts[0], CultureInfo.InvariantCulture);
        }
    }

    private static async Task<IReadOnlyDictionary<string, long>> RunsByStatusAsync(LedgerClient client)
    {
        var (status, body) = await client.GetTextAsync("/api/kpis", LedgerProcess.ReadKey);
        if (status != 200) return new Dictionary<string, long>();
        using var json = JsonDocument.Parse(body);
        return json.RootElement.GetProperty("runsByStatus").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt64());
    }

    /// <summary>The last run ids registered, for the readers to pick from.</summary>
    private sealed class RecentRuns(int capacity)
    {
        private readonly string?[] _ids = new string?[capacity];
        private long _count;

        public void Add(string runId)
        {
            var i = Interlocked.Increment(ref _count) - 1;
            _ids[i % capacity] = runId;
        }

        public string? Pick()
        {
            var count = Interlocked.Read(ref _count);
            return count == 0 ? null : _ids[Random.Shared.NextInt64(Math.Min(count, capacity))];
        }
    }

    /// <summary>The subscriber the service delivers to: counts deliveries and answers 204.</summary>
    private sealed class WebhookReceiver : IAsyncDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly Task _loop;
        private long _received;

        public WebhookReceiver(int port)
        {
            Url = $"http://127.0.0.1:{port}/";
            _listener.Prefixes.Add(Url);
            _listener.Start();
            _loop = Task.Run(LoopAsync);
        }

        public string Url { get; }
        public long Received => Interlocked.Read(ref _received);

        private async Task LoopAsync()
        {
            while (_listener.IsListening)
            {
                HttpListenerContext context;
                try { context = await _listener.GetContextAsync(); }
                catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
                _ = Task.Run(async () =>
                {
                    try
                    {
                        await context.Request.InputStream.CopyToAsync(Stream.Null);
                        Interlocked.Increment(ref _received);
                        context.Response.StatusCode = 204;
                        context.Response.Close();
                    }
                    catch (Exception e) when (e is HttpListenerException or IOException or ObjectDisposedException) { }
                });
            }
        }

        public async ValueTask DisposeAsync()
        {
            _listener.Stop();
            _listener.Close();
            try { await _loop; } catch { /* stopping */ }
        }
    }

    /// <summary>The soak's rows of the details section.</summary>
    public static void AppendDetails(StringBuilder sb, SoakResult s)
    {
        var p = s.Plan;
        sb.AppendLine($"Soak: one ledger process of its own (pid {s.Pid}, healthy {s.Startup.TotalSeconds:0.0} s after start, schema `{SoakPlan.Schema}` in the bench database, " +
                      $"janitor every {p.JanitorIntervalSeconds} s with {p.JanitorGraceSeconds} s of grace), {p.Duration.TotalMinutes:0.#} min of paced load: " +
                      $"{p.Workers} workers at {p.EventsPerSecond:0} events/s in all, one event per request, each run registered on `{SoakPlan.Board}` ({p.Participants} participants) and claimed first " +
                      $"(19 events, ending succeeded); one run in {p.AbandonEvery} registered with a {p.AbandonedLeaseSeconds} s lease and left after {p.AbandonedAfterEvents} events, for the janitor; " +
                      $"GET /api/runs/{{id}} of recent runs at {p.RunReadsPerSecond:0}/s; histories (4 in 10), leaderboard pages (4 in 10), KPIs and running-run lists (1 in 10 each) at {p.OtherReadsPerSecond:0}/s; " +
                      $"verdicts (succeeded, failed, lost) delivered to a webhook receiver in the bench. Log: {s.LogPath}.");
        sb.AppendLine();
        sb.AppendLine("| minute | RSS MB | anonymous MB | file MB | shmem MB | GC heap MB | GC committed MB | events | requests |");
        sb.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var x in s.Samples)
        {
            sb.AppendLine($"| {x.At.TotalMinutes:0.0} | {x.Memory.RssKb / 1024.0:0.0} | {x.Memory.AnonymousKb / 1024.0:0.0} | {x.Memory.FileKb / 1024.0:0.0} | " +
                          $"{x.Memory.SharedKb / 1024.0:0.0} | {Mb(x.GcHeapBytes)} | {Mb(x.GcCommittedBytes)} | {x.Events:N0} | {x.Requests:N0} |");
        }
        sb.AppendLine();
        var e = s.EventRequests;
        string Lat(Sample? x) => x is null ? "–" : $"p50 {Results.Num(x.P50Ms)} ms, p99 {Results.Num(x.P99Ms)} ms";
        sb.AppendLine($"Soak load: {e?.Events ?? 0:N0} events applied in {s.Elapsed.TotalSeconds:0} s = {s.AchievedEventsPerSecond:0.0}/s of {p.EventsPerSecond:0} asked ({Lat(e)}); " +
                      $"{s.RunsRegistered:N0} runs registered and claimed, {s.RunsFinished:N0} reported to the end, {s.RunsAbandoned:N0} abandoned; " +
                      $"{s.RunReads?.Operations ?? 0:N0} run reads ({(s.RunReads?.Operations ?? 0) / Math.Max(1, s.Elapsed.TotalSeconds):0.0}/s of {p.RunReadsPerSecond:0}, {Lat(s.RunReads)}); " +
                      $"{s.OtherReads?.Operations ?? 0:N0} other reads ({(s.OtherReads?.Operations ?? 0) / Math.Max(1, s.Elapsed.TotalSeconds):0.0}/s of {p.OtherReadsPerSecond:0}, {Lat(s.OtherReads)}: " +
                      $"{s.History:N0} histories, {s.Leaderboard:N0} leaderboard pages, {s.Kpis:N0} KPIs, {s.Lists:N0} lists). " +
                      $"Runs by status at the end: {string.Join(", ", s.RunsByStatus.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key} {kv.Value:N0}"))}; " +
                      $"the janitor marked {s.Lost:N0} of the {s.RunsAbandoned:N0} abandoned runs lost. Webhook deliveries received: {s.WebhooksReceived:N0}. " +
                      $"Unexpected answers: {s.Unexpected}{(s.FirstErrors.Count > 0 ? " (first: " + string.Join("; ", s.FirstErrors).Replace("|", "/") + ")" : "")}.");
        if (s.Cpu is { } u)
        {
            double S(long ticks) => ticks / CpuProbe.TicksPerSecond;
            sb.AppendLine();
            sb.AppendLine($"Soak CPU: ledger {S(u.Ledger):0} s, PostgreSQL {S(u.Postgres):0} s, bench {S(u.Bench):0} s, other processes {S(u.Other):0} s " +
                          $"over {s.Elapsed.TotalSeconds:0} s ({(u.MachineTotal == 0 ? double.NaN : 100.0 * u.MachineBusy / u.MachineTotal):0}% of both cores busy).");
        }
        sb.AppendLine();
        sb.AppendLine($"Soak peak RSS: {s.PeakKb / 1024.0:0.0} MB (kernel high-water mark VmHWM; the largest of {s.RssSamples:N0} samples taken every " +
                      $"{LedgerProcess.SampleEvery.TotalMilliseconds:0} ms: {s.SampledPeakKb / 1024.0:0.0} MB). Its memory at the end: {s.MemoryBreakdown}.");
        sb.AppendLine();
    }
}
