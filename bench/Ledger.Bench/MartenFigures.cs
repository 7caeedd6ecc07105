using System.Diagnostics;
using JasperFx.Events;
using Ledger.Contract;
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
                o =>
                {
                    MartenStores.Mirror(o, connectionString, $"bench_decide_{name}", mode);
                    o.Logger(SqlCapture.StoreLogger);
                }, applySchema: true);
        }
    }

    public DocumentStore Store(string key) => _stores[key];

    /// <summary>Plain appends of <paramref name="perSave"/> events per session to the worker's current run stream.</summary>
    public Task<Sample> AppendAsync(string mode, int perSave, string tag, TimeSpan duration) =>
        Load.Run(options.Workers, duration, async (worker, recorder, deadline) =>
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

    /// <summary>
    /// The service's write path in-process: the same <see cref="RunWriter"/> the endpoints submit to
    /// (group commit, decider, recorded keys), without HTTP in front of it. Phase times are not split
    /// any more: a decision is one part of a group's commit.
    /// </summary>
    public Task<Sample> DecideAsync(string mode, int perSave, string tag, int concurrency, TimeSpan duration, PhaseTimes? phases) =>
        Load.Run(concurrency, duration, async (worker, recorder, deadline) =>
        {
            var store = _stores[$"decide-{mode}"];
            var writer = await Writer(mode);
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
                    var events = chunk.Select(wire => MartenStores.ToEvent(wire, default)).ToList();
                    var decision = await writer.Submit(new RecordEventsCommand(script.RunId, tokenHash, events));
                    if (decision.Answer is not EventsRecorded recorded || recorded.Results.Any(r => r.Result != EventResultKind.Applied))
                    {
                        throw new InvalidOperationException($"{script.RunId}: {decision.Outcome}");
                    }
                    recorder.Add(t0, chunk.Length);
                }
            }
        });

    private readonly Dictionary<string, Task<RunWriter>> _writers = new();

    /// <summary>One writer per store, started once, as the service starts its own.</summary>
    private Task<RunWriter> Writer(string mode)
    {
        lock (_writers)
        {
            if (!_writers.TryGetValue(mode, out var writer))
            {
                _writers[mode] = writer = StartWriter(_stores[$"decide-{mode}"], $"bench_decide_{mode}");
            }
            return writer;
        }
    }

    private static async Task<RunWriter> StartWriter(DocumentStore store, string schema)
    {
        var writer = new RunWriter(store, TimeProvider.System,
            Microsoft.Extensions.Options.Options.Create(new WriterOptions()),
            Microsoft.Extensions.Options.Options.Create(new Ledger.Infrastructure.LedgerOptions { SchemaName = schema }),
            Microsoft.Extensions.Logging.Abstractions.NullLogger<RunWriter>.Instance);
        await writer.StartAsync(CancellationToken.None);
        return writer;
    }

    /// <summary>
    /// The SQL of the writer's first decision on a run (it reads the run) and of the next one (the
    /// writer kept the run's state and version from its commit: no read).
    /// </summary>
    public async Task<(List<string> First, List<string> Next)> CaptureDecisionsAsync(string mode, int perSave, string runId)
    {
        var store = _stores[$"decide-{mode}"];
        var script = Script(runId, perSave);
        var token = "lt_" + runId;
        var now = DateTimeOffset.UtcNow;
        await using (var start = store.LightweightSession())
        {
            start.Events.StartStream<Run>(script.RunId, MartenStores.Registered(script, now), MartenStores.Claimed(token, now));
            await start.SaveChangesAsync();
        }
        var writer = await Writer(mode);
        var captured = new List<List<string>>();
        foreach (var chunk in script.Events.Chunk(perSave).Take(2))
        {
            var capture = new SqlCapture();
            var events = chunk.Select(e => MartenStores.ToEvent(e, default)).ToList();
            using (SqlCapture.Capturing(capture))
            {
                await writer.Submit(new RecordEventsCommand(runId, Ledger.Infrastructure.Access.DigestHex(token), events));
            }
            var lines = capture.RoundTrips.Select(sql => $"group: {sql}").ToList();
            lines.Add("group: COMMIT (the transaction's own round trip)");
            captured.Add(lines);
        }
        return (captured[0], captured[1]);
    }

    private RunScript Script(string runId, int perSave) => perSave == 1
        ? Workload.SingleLifecycle(runId)
        : Workload.BatchLifecycle(runId, options.BatchesPerRun, perSave);

    private static double Ms(long from, long to) => (to - from) * 1000.0 / Stopwatch.Frequency;

    public async ValueTask DisposeAsync()
    {
        foreach (var writer in _writers.Values) await (await writer).StopAsync(CancellationToken.None);
        foreach (var store in _stores.Values) await store.DisposeAsync();
    }
}
