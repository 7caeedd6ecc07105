using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Ledger.Infrastructure;
using Ledger.Retention;
using Ledger.Runs;
using Marten;
using Npgsql;

namespace Ledger.Bench;

/// <summary>
/// What the retention figure asks of the service (issue 25): runs finishing continuously at a fixed
/// rate with a short window, so that the sweep archives as fast as runs finish once the first
/// window has passed.
/// </summary>
public sealed record RetentionPlan(TimeSpan Duration, TimeSpan Window, TimeSpan SweepInterval, TimeSpan Grace, double RunsPerSecond,
    int EventsPerRun, int HistoryEvents, double ProbeEventsPerSecond, int ProbeWorkers)
{
    public const string Schema = "retention";
    public static readonly TimeSpan SampleEvery = TimeSpan.FromSeconds(15);

    public static RetentionPlan From(BenchOptions o) => new(
        Duration: TimeSpan.FromMinutes(o.RetentionMinutes),
        Window: TimeSpan.FromSeconds(o.RetentionWindowSeconds),
        SweepInterval: TimeSpan.FromSeconds(o.Quick ? 10 : 15),
        // The window must exceed the lease tokens' grace after a verdict (the ledger refuses to start otherwise).
        Grace: TimeSpan.FromSeconds(Math.Max(1, o.RetentionWindowSeconds / 3)),
        RunsPerSecond: o.RetentionRunsPerSecond,
        EventsPerRun: 20,
        HistoryEvents: o.HistoryEvents,
        ProbeEventsPerSecond: 50,
        ProbeWorkers: 4);

    /// <summary>The service's settings: its own schema, retention on with a short window, archives in a folder of the bench's.</summary>
    public Dictionary<string, string> Environment(string archive, IReadOnlyDictionary<string, string> extra)
    {
        var env = new Dictionary<string, string>
        {
            ["Ledger__SchemaName"] = Schema,
            ["Ledger__LateEvents__Grace"] = Grace.ToString("c", CultureInfo.InvariantCulture),
            ["Ledger__Retention__ArchiveAfter"] = Window.ToString("c", CultureInfo.InvariantCulture),
            ["Ledger__Retention__Directory"] = archive,
            ["Ledger__Retention__SweepInterval"] = SweepInterval.ToString("c", CultureInfo.InvariantCulture),
            ["Ledger__Retention__BatchSize"] = "1000",
        };
        foreach (var (key, value) in extra) env[key] = value;
        return env;
    }
}

/// <summary>One reading of what PostgreSQL and the archive folder hold.</summary>
public sealed record RetentionSample(TimeSpan At, long EventsBytes, long EventsRows, long KeysBytes, long KeysRows, long ArchiveBytes,
    long ArchiveFiles, long RunsFinished, long RunsArchived, long EventsHeapBytes, long EventsIndexBytes)
{
    public long EventDerivedBytes => EventsBytes + KeysBytes;
}

public sealed class RetentionResult(RetentionPlan plan)
{
    public RetentionPlan Plan { get; } = plan;
    public List<RetentionSample> Samples { get; } = [];
    public TimeSpan Elapsed { get; set; }
    public long RunsFinished;
    public long EventsAppended;
    public Sample? ProbeWithout { get; set; }
    public Sample? ProbeWith { get; set; }
    public (double P50, double P99, double Max, long Runs)? LagSeconds { get; set; }
    public long NotArchivedInTime { get; set; }
    public IReadOnlyDictionary<string, double> BytesPerArchivedRun { get; set; } = new Dictionary<string, double>();
    public double BytesPerLiveRun { get; set; }
    public Measurement? HistoryPage { get; set; }
    public Measurement? HistoryState { get; set; }
    public TimeSpan HistoryArchivedAfter { get; set; }
    public long HistoryArchiveBytes { get; set; }
    public string LastSweep { get; set; } = "";
    public long Sweeps { get; set; }
    public long ProgressLines { get; set; }
    public long FailureLines { get; set; }
    public List<string> Notes { get; } = [];
    public string LogPath { get; set; } = "";
    public long PeakKb { get; set; }
    public long SampledPeakKb { get; set; }
    public long RssSamples { get; set; }
    public IReadOnlyDictionary<string, long> PeakByPhaseKb { get; set; } = new Dictionary<string, long>();

    /// <summary>The first reading once the first window and a sweep after it have passed: what "steady" is measured against.</summary>
    public RetentionSample? Reference => Samples.FirstOrDefault(s => s.At >= Plan.Window + Plan.SweepInterval + TimeSpan.FromSeconds(60))
                                         ?? (Samples.Count > 0 ? Samples[^1] : null);

    public RetentionSample? Largest => Reference is { } r ? Samples.Where(s => s.At >= r.At).MaxBy(s => s.EventDerivedBytes) : null;

    public double GrowthPercent => Reference is { EventDerivedBytes: > 0 } r && Largest is { } l
        ? (l.EventDerivedBytes - r.EventDerivedBytes) * 100.0 / r.EventDerivedBytes
        : double.NaN;

    public double ProbeRatio => ProbeWith is { } w && ProbeWithout is { } o ? w.P99Ms / o.P99Ms : double.NaN;
}

/// <summary>
/// Retention under load (issue 25): a ledger process of its own (schema <c>retention</c>, a short
/// window, archives in a folder of the bench's) while runs of about 20 events finish continuously at
/// <see cref="RetentionPlan.RunsPerSecond"/> (appended in-process through Marten with the service's
/// store configuration, their recorded keys with them, as the run writer writes them: over HTTP the
/// load generator alone would take the two cores), and a few workers send single events over HTTP at
/// a fixed rate (the ingestion probe). Every 15 s it reads the size of the event-derived tables
/// (<c>mt_events</c> and <c>ledger_recorded_keys</c>, with indexes and TOAST) and of the archive folder.
/// Before the load, a run of <see cref="RetentionPlan.HistoryEvents"/> events is seeded finished and
/// already past the window, so the first sweep archives it; after the load, its history pages and
/// states are read from the archive.
/// </summary>
public static class RetentionFigures
{
    public const string PageKey = "retention.history.page";
    public const string StateKey = "retention.history.state";
    private const string Prefix = "ret";

    public static async Task<RetentionResult> RunAsync(BenchOptions o, string dll, string connectionString, string logPath, Action<string> log,
        CancellationToken ct)
    {
        var plan = RetentionPlan.From(o);
        var result = new RetentionResult(plan) { LogPath = logPath };
        var archive = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(o.PostgresDirectory).TrimEnd('/'))!, "bench-archive");
        if (Directory.Exists(archive)) Directory.Delete(archive, recursive: true);
        Directory.CreateDirectory(archive);

        var ledger = await LedgerProcess.StartAsync(dll, o.LedgerPort, connectionString, logPath, TimeSpan.FromSeconds(180),
            plan.Environment(archive, o.LedgerEnvironment));
        log($"retention: ledger pid {ledger.Pid} healthy (schema {RetentionPlan.Schema}, window {plan.Window.TotalSeconds:0} s, sweep every " +
            $"{plan.SweepInterval.TotalSeconds:0} s, archives in {archive}); {plan.Duration.TotalMinutes:0.#} min at {plan.RunsPerSecond:0} runs/s of {plan.EventsPerRun} events");
        await using var store = await MartenStores.CreateAsync(m => MartenStores.Mirror(m, connectionString, RetentionPlan.Schema), applySchema: false);
        await using var db = NpgsqlDataSource.Create(connectionString);
        var names = new StorageNames(store);
        try
        {
            using var http = Client(ledger.BaseAddress, plan.ProbeWorkers + 4);
            using var client = new LedgerClient(ledger.BaseAddress, plan.ProbeWorkers + 2);

            // The long run: finished and past the window already, so the first sweep archives it.
            ledger.Phase("retention (seeding the long run)");
            var seeding = Stopwatch.StartNew();
            var longRun = await SeedLongRunAsync(store, $"{Prefix}-long-{DateTime.UtcNow:HHmmss}", plan.HistoryEvents, plan.Window);
            log($"retention: seeded a finished run of {longRun.Version:N0} events in {seeding.Elapsed.TotalSeconds:0.0} s");
            // Archived before the load starts, so that the first window measures ingestion with nothing to archive.
            var archivedTable = names.Own(ArchivedRunStore.TableName);
            var waiting = Stopwatch.StartNew();
            while (await ScalarAsync<long>(db, $"select count(*) from {archivedTable} where run_id = '{longRun.RunId}' and archived_version > 0") == 0)
            {
                if (waiting.Elapsed > TimeSpan.FromMinutes(5)) throw new InvalidOperationException($"the run of {longRun.Version:N0} events was not archived within 5 minutes");
                await Task.Delay(500, ct);
            }
            result.HistoryArchivedAfter = seeding.Elapsed;
            log($"retention: it was archived {waiting.Elapsed.TotalSeconds:0.0} s after its seeding");

            // The probe's runs: long leases, nothing required, so heartbeats never end them.
            var probes = new List<(string RunId, string Token)>();
            for (var i = 0; i < plan.ProbeWorkers; i++)
            {
                var runId = $"{Prefix}-probe-{i}-{Guid.NewGuid():N}";
                await client.RegisterAsync(runId, Workload.OpenRunRegistration(runId));
                probes.Add((runId, await client.ClaimAsync(runId)));
            }

            ledger.Phase("retention (load)");
            using var stop = new CancellationTokenSource();
            var started = Stopwatch.StartNew();
            var probeSamples = new ConcurrentBag<(double At, double Ms, bool Ok)>();
            var loadTask = Task.Run(() => LoadAsync(store, names, plan, result, started, stop.Token), ct);
            var probeTask = Task.Run(() => ProbeAsync(client, probes, plan, probeSamples, started, stop.Token), ct);
            while (started.Elapsed < plan.Duration)
            {
                ct.ThrowIfCancellationRequested();
                result.Samples.Add(await ReadSampleAsync(db, names, archive, started.Elapsed));
                var s = result.Samples[^1];
                log($"retention {s.At.TotalSeconds:0} s: {s.RunsFinished:N0} runs finished, {s.RunsArchived:N0} archived; mt_events {s.EventsBytes / 1e6:0.0} MB " +
                    $"(heap {s.EventsHeapBytes / 1e6:0.0}, indexes {s.EventsIndexBytes / 1e6:0.0}) " +
                    $"({s.EventsRows:N0} rows), keys {s.KeysBytes / 1e6:0.0} MB; archive {s.ArchiveBytes / 1e6:0.0} MB in {s.ArchiveFiles:N0} files");
                var next = TimeSpan.FromTicks(RetentionPlan.SampleEvery.Ticks * (long)(started.Elapsed / RetentionPlan.SampleEvery + 1));
                var wait = (next < plan.Duration ? next : plan.Duration) - started.Elapsed;
                if (wait > TimeSpan.Zero) await Task.Delay(wait, ct);
            }
            await stop.CancelAsync();
            await Task.WhenAll(loadTask, probeTask);
            result.Elapsed = started.Elapsed;
            result.Samples.Add(await ReadSampleAsync(db, names, archive, started.Elapsed));

            // Ingestion without archiving (the first window: nothing is old enough yet) and with it (once it is steady).
            var quietEnd = plan.Window.TotalSeconds;
            var busyFrom = (plan.Window + plan.SweepInterval + TimeSpan.FromSeconds(30)).TotalSeconds;
            result.ProbeWithout = Summarize(probeSamples.Where(p => p.At >= 10 && p.At < quietEnd), quietEnd - 10);
            result.ProbeWith = Summarize(probeSamples.Where(p => p.At >= busyFrom), result.Elapsed.TotalSeconds - busyFrom);

            // Lag: a run's verdict to its archive, for the runs that finished under load.
            var archived = names.Own(ArchivedRunStore.TableName);
            var lag = await LagAsync(db, archived);
            result.LagSeconds = lag;
            // Runs that should have been archived by the end (past the window and a sweep, with a minute to spare) and were not.
            result.NotArchivedInTime = await ScalarAsync<long>(db,
                $"select count(*) from {names.Table<Run>()} r left join {archived} a on a.run_id = r.id and a.archived_version > 0 " +
                $"where r.id like '{Prefix}-load-%' and a.run_id is null and (r.data ->> 'terminalAt')::timestamptz < now() - interval '{(plan.Window + plan.SweepInterval + TimeSpan.FromMinutes(1)).TotalSeconds} seconds'");
            result.BytesPerArchivedRun = await BytesPerArchivedRunAsync(db, names);
            result.BytesPerLiveRun = await BytesPerLiveRunAsync(db, names);

            // The backlog, if any, archived before the reads (bounded): the reads then meet no sweep.
            var draining = Stopwatch.StartNew();
            var backlog = $"select count(*) from {names.Table<Run>()} r left join {names.Own(ArchivedRunStore.TableName)} a on a.run_id = r.id and a.archived_version > 0 " +
                          $"where r.id like '{Prefix}-load-%' and a.run_id is null and (r.data ->> 'terminalAt')::timestamptz < now() - interval '{plan.Window.TotalSeconds} seconds'";
            long left;
            while ((left = await ScalarAsync<long>(db, backlog)) > 0 && draining.Elapsed < TimeSpan.FromMinutes(3)) await Task.Delay(1000, ct);
            result.Notes.Add($"After the load, the sweeps archived the runs already past the window within {draining.Elapsed.TotalSeconds:0} s ({left:N0} left then); " +
                             "the archived run's history was read after that.");

            // The long run's history, from its archive.
            ledger.Phase("retention (archived history)");
            var archivedAt = await ScalarAsync<DateTime?>(db, $"select archived_at from {archived} where run_id = '{longRun.RunId}' and archived_version > 0");
            if (archivedAt is null) throw new InvalidOperationException($"the run of {longRun.Version:N0} events was not archived");
            result.HistoryArchiveBytes = await ScalarAsync<long>(db, $"select bytes from {archived} where run_id = '{longRun.RunId}'");
            var (status, body) = await GetAsync(http, $"/api/runs/{longRun.RunId}/events?after={longRun.Version / 2}&limit={HistoryFigures.PageSize}");
            if (status != HttpStatusCode.OK || !body.Contains("\"archived\":true", StringComparison.Ordinal))
            {
                throw new InvalidOperationException($"the archived run's history should be read from its archive: {(int)status} {body[..Math.Min(300, body.Length)]}");
            }
            var page = new Measurement(PageKey, $"GET /api/runs/{{id}}/events?after=V&limit={HistoryFigures.PageSize}, archived run of {longRun.Version:N0} events");
            var state = new Measurement(StateKey, $"GET /api/runs/{{id}}/state?version=V, archived run of {longRun.Version:N0} events");
            var duration = o.Quick ? TimeSpan.FromSeconds(2) : o.ReadDuration;
            for (var rep = 1; rep <= o.Repetitions; rep++)
            {
                page.Samples.Add(await ReadsAsync(http, r => $"/api/runs/{longRun.RunId}/events?after={r.NextInt64(0, longRun.Version)}&limit={HistoryFigures.PageSize}",
                    o.ReadConcurrency, duration));
                state.Samples.Add(await ReadsAsync(http, r => $"/api/runs/{longRun.RunId}/state?version={r.NextInt64(1, longRun.Version + 1)}",
                    o.ReadConcurrency, duration));
                log($"retention: archived history rep {rep}/{o.Repetitions}: page p99 {page.Samples[^1].P99Ms:0.0} ms, state p99 {state.Samples[^1].P99Ms:0.0} ms");
            }
            result.HistoryPage = page;
            result.HistoryState = state;

            // What GET /api/retention says, and the sweep's progress lines in the service's log.
            var (_, retention) = await client.GetTextAsync("/api/retention", LedgerProcess.AdminKey);
            using (var json = JsonDocument.Parse(retention))
            {
                var sweeps = json.RootElement.GetProperty("sweeps");
                result.Sweeps = await ScalarAsync<long>(db, $"select count(*) from {names.Own(ArchivedRunStore.SweepsTable)}");
                if (sweeps.GetArrayLength() > 0) result.LastSweep = sweeps[0].GetRawText();
            }
            ledger.Phase("idle");
        }
        finally
        {
            result.PeakKb = ledger.PeakRssKb;
            result.SampledPeakKb = ledger.SampledPeakRssKb;
            result.RssSamples = ledger.Samples;
            result.PeakByPhaseKb = ledger.PeakRssByPhaseKb;
            await ledger.DisposeAsync();
            if (File.Exists(logPath))
            {
                foreach (var line in File.ReadLines(logPath))
                {
                    if (line.Contains("step archive-runs:", StringComparison.Ordinal)) result.ProgressLines++;
                    if (line.Contains("was not archived", StringComparison.Ordinal)) result.FailureLines++;
                }
            }
            try { Directory.Delete(archive, recursive: true); }
            catch (IOException) { }
        }
        return result;
    }

    private sealed record Seeded(string RunId, long Version);

    /// <summary>A run of <paramref name="events"/> events like the history figure's, then completed, its verdict beside it, all before the window.</summary>
    private static async Task<Seeded> SeedLongRunAsync(IDocumentStore store, string runId, int events, TimeSpan window)
    {
        var script = Workload.LongRun(runId, events);
        var origin = DateTimeOffset.UtcNow - window - TimeSpan.FromMinutes(10) - TimeSpan.FromMilliseconds(10.0 * events);
        var registered = new RunRegistered(runId, null, null, null, new Dictionary<string, string>(), [], [], null, 3600, origin);
        var claimed = MartenStores.Claimed($"lt_{runId}", origin);
        var at = origin;
        var version = 2L;
        var wire = script.Events.Select(w => (object)MartenStores.ToEvent(w, at = at.AddMilliseconds(10))).ToList();
        wire.Add(new RunCompleted { EventId = $"{runId}-done", OccurredAt = at, RecordedAt = at = at.AddMilliseconds(10) });
        var fold = Run.Create(registered);
        fold.Fold(claimed);
        foreach (var e in wire) fold.Fold(e);
        if (fold.LatestVerdict() is { } verdict) wire.Add(verdict);
        foreach (var chunk in wire.Chunk(5000))
        {
            await using var session = store.LightweightSession();
            if (version == 2) session.Events.StartStream<Run>(runId, [registered, claimed, .. chunk]);
            else (await session.Events.FetchForWriting<Run>(runId)).AppendMany(chunk);
            await session.SaveChangesAsync();
            version += chunk.Length;
        }
        return new Seeded(runId, version);
    }

    /// <summary>Runs of about 20 events, each finished with its verdict, a tenth of a second's worth per transaction, on a fixed schedule.</summary>
    private static async Task LoadAsync(IDocumentStore store, StorageNames names, RetentionPlan plan, RetentionResult result, Stopwatch started,
        CancellationToken stop)
    {
        var tick = TimeSpan.FromMilliseconds(100);
        var perTick = plan.RunsPerSecond / 10;
        double owed = 0;
        var n = 0L;
        var next = TimeSpan.Zero;
        while (!stop.IsCancellationRequested)
        {
            owed += perTick;
            var count = (int)owed;
            owed -= count;
            if (count > 0)
            {
                await using var session = store.LightweightSession();
                var keys = new List<(string RunId, string Key, long? Count)>();
                for (var i = 0; i < count; i++)
                {
                    var runId = $"{Prefix}-load-{n++:D8}";
                    var stream = Finished(runId, DateTimeOffset.UtcNow, plan.EventsPerRun);
                    session.Events.StartStream<Run>(runId, stream);
                    foreach (var e in stream)
                    {
                        foreach (var (key, c) in RecordedKeyStore.KeysOf(e)) keys.Add((runId, key, c));
                    }
                    Interlocked.Add(ref result.EventsAppended, stream.Length);
                }
                RecordedKeyStore.Record(session, names.Schema, keys);
                try
                {
                    await session.SaveChangesAsync(stop);
                    Interlocked.Add(ref result.RunsFinished, count);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    return;
                }
            }
            next += tick;
            // Behind schedule: no sleep, the next tick's runs follow at once (and the ones owed accumulate).
            var wait = next - started.Elapsed;
            if (wait > TimeSpan.Zero)
            {
                try { await Task.Delay(wait, stop); }
                catch (OperationCanceledException) { return; }
            }
        }
    }

    private static object[] Finished(string runId, DateTimeOffset at, int events)
    {
        var registered = new RunRegistered(runId, null, null, null, new Dictionary<string, string>(), [], [], null, 600, at);
        var list = new List<object> { registered, MartenStores.Claimed($"lt_{runId}", at) };
        var worker = new List<WorkerEvent>
        {
            new RunStarted { EventId = $"{runId}-1", OccurredAt = at, RecordedAt = at },
            new StepStarted { EventId = $"{runId}-2", OccurredAt = at, RecordedAt = at, StepId = "s1", Name = "extract" },
        };
        for (var i = 0; worker.Count < events - 6; i++)
        {
            worker.Add(i % 2 == 0
                ? new LogWritten { EventId = $"{runId}-l{i}", OccurredAt = at, RecordedAt = at, Lines = [$"{runId}: chunk {i} extracted", "rows 1000"] }
                : new HeartbeatReceived { EventId = $"{runId}-h{i}", OccurredAt = at, RecordedAt = at });
        }
        worker.Add(new StepCompleted { EventId = $"{runId}-3", OccurredAt = at, RecordedAt = at, StepId = "s1", Outcome = "ok" });
        worker.Add(new ScoresReported { EventId = $"{runId}-4", OccurredAt = at, RecordedAt = at, Scores = new Dictionary<string, double> { ["accuracy"] = 0.9 } });
        worker.Add(new RunCompleted { EventId = $"{runId}-5", OccurredAt = at, RecordedAt = at });
        var fold = Run.Create(registered);
        foreach (var e in list.Skip(1).Concat(worker)) fold.Fold(e);
        list.AddRange(worker);
        if (fold.LatestVerdict() is { } verdict) list.Add(verdict);
        return list.ToArray();
    }

    /// <summary>Single heartbeats over HTTP at a fixed rate, spread over the probe's runs: each one's start and latency.</summary>
    private static async Task ProbeAsync(LedgerClient client, List<(string RunId, string Token)> runs, RetentionPlan plan,
        ConcurrentBag<(double At, double Ms, bool Ok)> samples, Stopwatch started, CancellationToken stop)
    {
        var interval = TimeSpan.FromSeconds(1 / plan.ProbeEventsPerSecond);
        var next = started.Elapsed;
        var inFlight = new List<Task>();
        var n = 0;
        while (!stop.IsCancellationRequested)
        {
            var (runId, token) = runs[n % runs.Count];
            var body = Workload.Filler(runId, $"{runId}-p{n}", 1);
            n++;
            inFlight.Add(Task.Run(async () =>
            {
                var at = started.Elapsed.TotalSeconds;
                var t = Stopwatch.GetTimestamp();
                var (_, error) = await client.PostEventsWithStatusAsync(runId, token, body);
                samples.Add((at, Stopwatch.GetElapsedTime(t).TotalMilliseconds, error is null));
            }));
            next += interval;
            var wait = next - started.Elapsed;
            if (wait > TimeSpan.Zero)
            {
                try { await Task.Delay(wait, stop); }
                catch (OperationCanceledException) { break; }
            }
            inFlight.RemoveAll(x => x.IsCompleted);
        }
        await Task.WhenAll(inFlight);
    }

    private static Sample Summarize(IEnumerable<(double At, double Ms, bool Ok)> samples, double seconds)
    {
        var list = samples.ToList();
        var sorted = list.Where(s => s.Ok).Select(s => s.Ms).Order().ToList();
        double P(double q) => sorted.Count == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Count) - 1, 0, sorted.Count - 1)];
        var errors = list.Count(s => !s.Ok);
        return new Sample(TimeSpan.FromSeconds(Math.Max(1, seconds)), sorted.Count, sorted.Count, errors, errors > 0 ? "an event not applied" : null,
            P(0.50), P(0.95), P(0.99));
    }

    private static async Task<RetentionSample> ReadSampleAsync(NpgsqlDataSource db, StorageNames names, string archive, TimeSpan at)
    {
        var events = names.Events;
        var keys = names.Own(RecordedKeyStore.TableName);
        var archived = names.Own(ArchivedRunStore.TableName);
        await using var cmd = db.CreateCommand(
            $"select pg_total_relation_size('{events}'), (select count(*) from {events}), pg_total_relation_size('{keys}'), (select count(*) from {keys}), " +
            $"(select count(*) from {names.Table<Run>()} where id like '{Prefix}-load-%'), (select count(*) from {archived} where archived_version > 0), " +
            $"pg_relation_size('{events}'), pg_indexes_size('{events}')");
        await using var reader = await cmd.ExecuteReaderAsync();
        await reader.ReadAsync();
        long bytes = 0, files = 0;
        foreach (var file in Directory.EnumerateFiles(archive, "*", SearchOption.AllDirectories))
        {
            try
            {
                bytes += new FileInfo(file).Length;
                files++;
            }
            catch (FileNotFoundException)
            {
                // a temporary file renamed meanwhile
            }
        }
        return new RetentionSample(at, reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3), bytes, files,
            reader.GetInt64(4), reader.GetInt64(5), reader.GetInt64(6), reader.GetInt64(7));
    }

    private static async Task<(double P50, double P99, double Max, long Runs)?> LagAsync(NpgsqlDataSource db, string archived)
    {
        await using var cmd = db.CreateCommand(
            $"select percentile_disc(0.5) within group (order by s), percentile_disc(0.99) within group (order by s), max(s), count(*) " +
            $"from (select extract(epoch from archived_at - terminal_at)::float8 as s from {archived} where run_id like '{Prefix}-load-%' and archived_version > 0) x");
        await using var reader = await cmd.ExecuteReaderAsync();
        if (!await reader.ReadAsync() || reader.IsDBNull(0)) return null;
        return (reader.GetDouble(0), reader.GetDouble(1), reader.GetDouble(2), reader.GetInt64(3));
    }

    /// <summary>Row bytes (pg_column_size of each row, its 24-byte header included; index entries not) an archived run keeps, per table.</summary>
    private static async Task<IReadOnlyDictionary<string, double>> BytesPerArchivedRunAsync(NpgsqlDataSource db, StorageNames names)
    {
        var archived = names.Own(ArchivedRunStore.TableName);
        var parts = new Dictionary<string, double>
        {
            ["mt_events (the marker)"] = await ScalarAsync<double>(db,
                $"select coalesce(avg(pg_column_size(e.*) + 24), 0)::float8 from {names.Events} e join {archived} a on a.run_id = e.stream_id and a.archived_version > 0 where a.run_id like '{Prefix}-load-%'"),
            ["mt_streams"] = await ScalarAsync<double>(db,
                $"select coalesce(avg(pg_column_size(s.*) + 24), 0)::float8 from {names.Streams} s join {archived} a on a.run_id = s.id and a.archived_version > 0 where a.run_id like '{Prefix}-load-%'"),
            ["the run document"] = await ScalarAsync<double>(db,
                $"select coalesce(avg(pg_column_size(d.*) + 24), 0)::float8 from {names.Table<Run>()} d join {archived} a on a.run_id = d.id and a.archived_version > 0 where a.run_id like '{Prefix}-load-%'"),
            ["its lease index entry"] = await ScalarAsync<double>(db,
                $"select coalesce(avg(pg_column_size(l.*) + 24), 0)::float8 from {names.Table<LeaseHolder>()} l join {archived} a on a.run_id = l.data ->> 'runId' and a.archived_version > 0 where a.run_id like '{Prefix}-load-%'"),
            [ArchivedRunStore.TableName] = await ScalarAsync<double>(db,
                $"select coalesce(avg(pg_column_size(a.*) + 24), 0)::float8 from {archived} a where a.archived_version > 0 and a.run_id like '{Prefix}-load-%'"),
        };
        return parts;
    }

    /// <summary>The same for a run of the load not archived yet: its events and recorded keys (the document and the rest are the same).</summary>
    private static async Task<double> BytesPerLiveRunAsync(NpgsqlDataSource db, StorageNames names)
    {
        var archived = names.Own(ArchivedRunStore.TableName);
        return await ScalarAsync<double>(db,
            $"select coalesce(avg(b), 0)::float8 from (select (select sum(pg_column_size(e.*) + 24) from {names.Events} e where e.stream_id = r.id) + " +
            $"(select coalesce(sum(pg_column_size(k.*) + 24), 0) from {names.Own(RecordedKeyStore.TableName)} k where k.run_id = r.id) as b " +
            $"from {names.Table<Run>()} r where r.id like '{Prefix}-load-%' and not exists (select 1 from {archived} a where a.run_id = r.id and a.archived_version > 0) " +
            "order by r.id desc limit 200) x");
    }

    private static async Task<T> ScalarAsync<T>(NpgsqlDataSource db, string sql)
    {
        await using var cmd = db.CreateCommand(sql);
        var value = await cmd.ExecuteScalarAsync();
        return value is null or DBNull ? default! : (T)Convert.ChangeType(value, Nullable.GetUnderlyingType(typeof(T)) ?? typeof(T), CultureInfo.InvariantCulture);
    }

    private static async Task<Sample> ReadsAsync(HttpClient http, Func<Random, string> path, int readers, TimeSpan duration) =>
        await Load.Run(readers, duration, async (reader, recorder, deadline) =>
        {
            var random = new Random(reader * 7919 + Environment.TickCount);
            while (DateTime.UtcNow < deadline)
            {
                var p = path(random);
                var t = Stopwatch.GetTimestamp();
                using var response = await http.GetAsync(p, HttpCompletionOption.ResponseContentRead);
                if (response.StatusCode == HttpStatusCode.OK) recorder.Add(t, 1);
                else recorder.Error($"GET {p}: {(int)response.StatusCode}");
            }
        });

    private static HttpClient Client(Uri baseAddress, int connections)
    {
        var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = connections, UseProxy = false, UseCookies = false })
        {
            BaseAddress = baseAddress,
            Timeout = TimeSpan.FromSeconds(120),
        };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", LedgerProcess.ReadKey);
        return http;
    }

    private static async Task<(HttpStatusCode Status, string Body)> GetAsync(HttpClient http, string path)
    {
        using var response = await http.GetAsync(path);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    /// <summary>The report's rows of this figure: (figure, value, unit, target, met).</summary>
    public static IEnumerable<(string Figure, double Value, string Unit, string Target, bool? Met)> Rows(RetentionResult r)
    {
        var p = r.Plan;
        var title = $"Retention ({r.Elapsed.TotalMinutes:0.#} min, {p.RunsPerSecond:0} runs/s of {p.EventsPerRun} events, window {p.Window.TotalSeconds:0} s, sweep every {p.SweepInterval.TotalSeconds:0} s)";
        var growth = r.GrowthPercent;
        yield return ($"{title}: event-derived tables (mt_events + recorded keys), largest after the first window against the first reading after it",
            growth, "%", "≤ 10 %", double.IsNaN(growth) ? null : growth <= 10);
        var archive = r.Samples.Count > 0 ? r.Samples[^1].ArchiveBytes / 1e6 : double.NaN;
        yield return ("Retention: archive folder at the end", archive, "MB", "grows", null);
        var kept = r.BytesPerArchivedRun.Values.Sum();
        yield return ($"Retention: bytes PostgreSQL keeps per archived run (row data; a run not archived yet: {r.BytesPerLiveRun:N0} B of events and keys on top)",
            kept, "B", "–", null);
        var lag = r.LagSeconds;
        var limit = (p.Window + p.SweepInterval + TimeSpan.FromMinutes(1)).TotalSeconds;
        yield return ($"Retention: sweep lag, verdict to archived, p99 (max {Results.Num(lag?.Max)} s; window {p.Window.TotalSeconds:0} s)", lag?.P99 ?? double.NaN, "s",
            $"≤ window + SweepInterval + 1 min ({limit:0} s)", lag is { } l ? l.Max <= limit && r.NotArchivedInTime == 0 : null);
        yield return ($"Retention: single-event ingestion p99 with the sweep archiving (without: {Results.Num(r.ProbeWithout?.P99Ms)} ms)",
            r.ProbeWith?.P99Ms ?? double.NaN, "ms", "≤ 1.2 × without", double.IsNaN(r.ProbeRatio) ? null : r.ProbeRatio <= 1.2);
        if (r.HistoryPage is { } page)
        {
            yield return ($"Retention: history page of {HistoryFigures.PageSize:N0}, archived run of {p.HistoryEvents:N0} events, p99", page.MedianP99, "ms", "≤ 100 ms", page.MedianP99 <= 100);
        }
        if (r.HistoryState is { } state)
        {
            yield return ($"Retention: state at a version, archived run of {p.HistoryEvents:N0} events, p99", state.MedianP99, "ms", "≤ 100 ms", state.MedianP99 <= 100);
        }
    }

    public static void AppendDetails(StringBuilder sb, RetentionResult r)
    {
        var p = r.Plan;
        sb.AppendLine($"### Retention");
        sb.AppendLine();
        sb.AppendLine($"A ledger process of its own (schema `{RetentionPlan.Schema}`, `Ledger:Retention:ArchiveAfter={p.Window:c}`, `SweepInterval={p.SweepInterval:c}`, " +
                      $"`BatchSize=1000`, `Ledger:LateEvents:Grace={p.Grace:c}`; log {r.LogPath}). {r.RunsFinished:N0} runs of {p.EventsPerRun} events ({r.EventsAppended:N0} events) " +
                      $"finished in {r.Elapsed.TotalMinutes:0.0} min ({r.RunsFinished / Math.Max(1, r.Elapsed.TotalSeconds):0} runs/s asked {p.RunsPerSecond:0}), appended in-process " +
                      "through Marten with the service's store configuration and their recorded keys, a tenth of a second's runs per transaction, each stream ending with its verdict; " +
                      $"{p.ProbeWorkers} runs took single heartbeats over HTTP at {p.ProbeEventsPerSecond:0}/s all along (the ingestion probe).");
        sb.AppendLine();
        sb.AppendLine("| at | runs finished | runs archived | mt_events | its heap | its indexes | its rows | recorded keys | their rows | archive folder | files |");
        sb.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var s in r.Samples)
        {
            sb.AppendLine($"| {s.At.TotalSeconds:0} s | {s.RunsFinished:N0} | {s.RunsArchived:N0} | {s.EventsBytes / 1e6:0.0} MB | {s.EventsHeapBytes / 1e6:0.0} MB | " +
                          $"{s.EventsIndexBytes / 1e6:0.0} MB | {s.EventsRows:N0} | {s.KeysBytes / 1e6:0.0} MB | " +
                          $"{s.KeysRows:N0} | {s.ArchiveBytes / 1e6:0.0} MB | {s.ArchiveFiles:N0} |");
        }
        sb.AppendLine();
        if (r.Reference is { } reference && r.Largest is { } largest)
        {
            sb.AppendLine($"Event-derived tables (relation sizes with indexes and TOAST): {reference.EventDerivedBytes / 1e6:0.0} MB at {reference.At.TotalSeconds:0} s (the first reading " +
                          $"a window, a sweep and a minute in), at most {largest.EventDerivedBytes / 1e6:0.0} MB after it (at {largest.At.TotalSeconds:0} s), " +
                          $"{r.Samples[^1].EventDerivedBytes / 1e6:0.0} MB at the end.");
        }
        sb.AppendLine($"Bytes PostgreSQL keeps per archived run (row data, index entries not counted): " +
                      string.Join(", ", r.BytesPerArchivedRun.Select(kv => $"{kv.Key} {kv.Value:N0} B")) + $"; in all {r.BytesPerArchivedRun.Values.Sum():N0} B. " +
                      $"A run of the load not archived yet held {r.BytesPerLiveRun:N0} B of events and recorded keys on top of the same document, stream and lease rows.");
        if (r.LagSeconds is { } lag)
        {
            sb.AppendLine($"Sweep lag, verdict to archived, over {lag.Runs:N0} runs: p50 {lag.P50:0.0} s, p99 {lag.P99:0.0} s, max {lag.Max:0.0} s (the window is {p.Window.TotalSeconds:0} s); " +
                          $"{r.NotArchivedInTime:N0} runs past the window, a sweep and a minute were not archived at the end.");
        }
        sb.AppendLine($"Ingestion probe, single heartbeats: without archiving (10 s to the end of the first window) {Describe(r.ProbeWithout)}; with the sweep archiving " +
                      $"(from a window, a sweep and 30 s in) {Describe(r.ProbeWith)}; ratio of the p99s {r.ProbeRatio:0.00}.");
        sb.AppendLine($"The archived run of {p.HistoryEvents:N0} events: its bundle {r.HistoryArchiveBytes / 1e6:0.0} MB; history page p50 {r.HistoryPage?.MedianP50:0.0} ms, p99 " +
                      $"{r.HistoryPage?.MedianP99:0.0} ms; state p50 {r.HistoryState?.MedianP50:0.0} ms, p99 {r.HistoryState?.MedianP99:0.0} ms (medians of repetitions, after the load).");
        sb.AppendLine($"Sweeps recorded: {r.Sweeps}; progress lines in the service's log: {r.ProgressLines:N0}; runs logged as not archived: {r.FailureLines:N0}. " +
                      $"The last sweep as `GET /api/retention` showed it: `{(r.LastSweep.Length > 600 ? r.LastSweep[..600] + "…" : r.LastSweep)}`.");
        sb.AppendLine($"Ledger RSS peak (VmHWM) of this process: {r.PeakKb / 1024.0:0} MB; VmRSS peak per phase: " +
                      string.Join(", ", r.PeakByPhaseKb.Select(kv => $"{kv.Key} {kv.Value / 1024.0:0} MB")) + ".");
        foreach (var note in r.Notes) sb.AppendLine($"- {note}");
        sb.AppendLine();
    }

    private static string Describe(Sample? s) => s is null
        ? "–"
        : $"{s.Operations:N0} requests, p50 {s.P50Ms:0.0} ms, p99 {s.P99Ms:0.0} ms{(s.Errors > 0 ? $", {s.Errors} not applied" : "")}";
}
