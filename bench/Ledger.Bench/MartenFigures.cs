using System.Diagnostics;
using JasperFx.Events;
using Ledger.Runs;
using Marten;

namespace Ledger.Bench;

/// <summary>Where the time of one decision goes: read the run, decide on a copy, append and commit.</summary>
public sealed class PhaseTimes
{
    private readonly object _gate = new();
    public List<double> FetchMs { get; } = [];
    public List<double> DecideMs { get; } = [];
    public List<double> SaveMs { get; } = [];

    public void Add(double fetch, double decide, double save)
    {
        lock (_gate)
        {
            FetchMs.Add(fetch);
            DecideMs.Add(decide);
            SaveMs.Add(save);
        }
    }
}

/// <summary>
/// In-process Marten figures, on the bench database but in schemas of their own:
/// bare appends in Rich and Quick mode, and the service's write path (fetch the run for writing,
/// decide on a copy, append, commit: what <c>RunDecisions.Decide</c> and the events endpoint do)
/// without HTTP in front of it.
/// </summary>
public sealed class MartenFigures(BenchOptions options, string connectionString) : IAsyncDisposable
{
    private readonly Dictionary<string, DocumentStore> _stores = new();

    public async Task PrepareAsync()
    {
        foreach (var mode in new[] { EventAppendMode.Rich, EventAppendMode.Quick })
        {
            var name = mode.ToString().ToLowerInvariant();
            _stores[$"append-{name}"] = await MartenStores.CreateAsync(
                o => MartenStores.EventsOnly(o, connectionString, $"bench_append_{name}", mode), applySchema: true);
            _stores[$"decide-{name}"] = await MartenStores.CreateAsync(
                o => MartenStores.Mirror(o, connectionString, $"bench_decide_{name}", mode), applySchema: true);
        }
    }

    public DocumentStore Store(string key) => _stores[key];

    /// <summary>Plain appends of <paramref name="perSave"/> events per session to the worker's current run stream.</summary>
    public Task<Sample> AppendAsync(string mode, int perSave, string tag) =>
        Load.Run(options.Workers, options.MartenDuration, async (worker, recorder, deadline) =>
        {
            var store = _stores[$"append-{mode}"];
            for (var n = 0; DateTime.UtcNow < deadline; n++)
            {
                var script = Script($"{tag}-w{worker}-{n}", perSave);
                var now = DateTimeOffset.UtcNow;
                var events = script.Events.Select(e => (object)MartenStores.ToEvent(e, now)).ToList();
                await using (var start = store.LightweightSession())
                {
                    start.Events.StartStream<Run>(script.RunId, MartenStores.Registered(script, now), MartenStores.Claimed("lt_" + script.RunId, now));
                    await start.SaveChangesAsync();
                }
                foreach (var chunk in events.Chunk(perSave))
                {
                    if (DateTime.UtcNow >= deadline) break;
                    var t = Stopwatch.GetTimestamp();
                    await using var session = store.LightweightSession();
                    session.Events.Append(script.RunId, chunk);
                    await session.SaveChangesAsync();
                    recorder.Add(t, chunk.Length);
                }
            }
        });

    /// <summary>The service's write path in-process, with the time of each phase.</summary>
    public Task<Sample> DecideAsync(string mode, int perSave, string tag, int concurrency, TimeSpan duration, PhaseTimes? phases) =>
        Load.Run(concurrency, duration, async (worker, recorder, deadline) =>
        {
            var store = _stores[$"decide-{mode}"];
            for (var n = 0; DateTime.UtcNow < deadline; n++)
            {
                var script = Script($"{tag}-w{worker}-{n}", perSave);
                var token = "lt_" + script.RunId;
                var tokenHash = Ledger.Infrastructure.Access.DigestHex(token);
                var now = DateTimeOffset.UtcNow;
                await using (var start = store.LightweightSession())
                {
                    start.Events.StartStream<Run>(script.RunId, MartenStores.Registered(script, now), MartenStores.Claimed(token, now));
                    await start.SaveChangesAsync();
                }
                foreach (var chunk in script.Events.Chunk(perSave))
                {
                    if (DateTime.UtcNow >= deadline) break;
                    var t0 = Stopwatch.GetTimestamp();
                    await using var session = store.LightweightSession();
                    var stream = await session.Events.FetchForWriting<Run>(script.RunId);
                    var t1 = Stopwatch.GetTimestamp();
                    // As RecordEventsEndpoint: lease check, a private copy, evaluate and fold each event, append.
                    var current = stream.Aggregate ?? throw new InvalidOperationException($"run {script.RunId} not found");
                    if (!Leases.Holds(current, tokenHash)) throw new InvalidOperationException("lease check failed");
                    var run = RunDecisions.Copy(current);
                    var append = new List<object>(chunk.Length);
                    var recordedAt = DateTimeOffset.UtcNow;
                    foreach (var wire in chunk)
                    {
                        var e = MartenStores.ToEvent(wire, recordedAt);
                        var effect = run.Evaluate(e);
                        if (effect.Kind != EventResultKind.Applied) throw new InvalidOperationException($"{wire.EventId}: {effect.Kind} {effect.Reason}");
                        append.Add(e);
                        run.Fold(e);
                    }
                    stream.AppendMany(append);
                    var t2 = Stopwatch.GetTimestamp();
                    await session.SaveChangesAsync();
                    var t3 = Stopwatch.GetTimestamp();
                    recorder.Add(t0, chunk.Length);
                    phases?.Add(Ms(t0, t1), Ms(t1, t2), Ms(t2, t3));
                }
            }
        });

    /// <summary>The SQL of one decision on a fresh run's first event(s): what a single events request costs PostgreSQL.</summary>
    public async Task<List<string>> CaptureOneDecisionAsync(string mode, int perSave, string runId)
    {
        var store = _stores[$"decide-{mode}"];
        var script = Script(runId, perSave);
        var now = DateTimeOffset.UtcNow;
        await using (var start = store.LightweightSession())
        {
            start.Events.StartStream<Run>(script.RunId, MartenStores.Registered(script, now), MartenStores.Claimed("lt_" + runId, now));
            await start.SaveChangesAsync();
        }
        var capture = new SqlCapture();
        await using var session = store.LightweightSession();
        session.Logger = capture;
        var stream = await session.Events.FetchForWriting<Run>(script.RunId);
        var fetched = capture.RoundTrips.Count;
        var run = RunDecisions.Copy(stream.Aggregate!);
        var events = script.Events.Take(perSave).Select(e => (object)MartenStores.ToEvent(e, now)).ToList();
        foreach (var e in events) run.Fold(e);
        stream.AppendMany(events);
        await session.SaveChangesAsync();
        var lines = capture.RoundTrips.Select((sql, i) => $"{(i < fetched ? "fetch" : "save")}: {sql}").ToList();
        lines.Add("save: COMMIT (the transaction's own round trip)");
        return lines;
    }

    private RunScript Script(string runId, int perSave) => perSave == 1
        ? Workload.SingleLifecycle(runId)
        : Workload.BatchLifecycle(runId, options.BatchesPerRun, perSave);

    private static double Ms(long from, long to) => (to - from) * 1000.0 / Stopwatch.Frequency;

    public async ValueTask DisposeAsync()
    {
        foreach (var store in _stores.Values) await store.DisposeAsync();
    }
}
