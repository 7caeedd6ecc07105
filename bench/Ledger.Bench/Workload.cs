using System.Buffers;
using System.Text;
using System.Text.Json;

namespace Ledger.Bench;

/// <summary>One worker event as sent on the wire; <see cref="Json"/> is the exact body (or array element).</summary>
public sealed record WireEvent(string Type, string EventId, byte[] Json)
{
    public string JsonText => Encoding.UTF8.GetString(Json);
}

/// <summary>What a run is registered with, and the events a worker reports for it.</summary>
public sealed record RunScript(string RunId, byte[] RegisterBody, IReadOnlyList<WireEvent> Events, long ExpectedItems)
{
    public IEnumerable<WireEvent[]> Batches(int size) => Events.Chunk(size);

    /// <summary>A JSON array of the given events, byte for byte the same objects as when sent one by one.</summary>
    public static byte[] ArrayBody(IReadOnlyList<WireEvent> events)
    {
        var length = 2 + events.Sum(e => e.Json.Length) + Math.Max(0, events.Count - 1);
        var body = new byte[length];
        var at = 0;
        body[at++] = (byte)'[';
        for (var i = 0; i < events.Count; i++)
        {
            if (i > 0) body[at++] = (byte)',';
            events[i].Json.CopyTo(body, at);
            at += events[i].Json.Length;
        }
        body[at] = (byte)']';
        return body;
    }
}

/// <summary>
/// Realistic run lifecycles, the same for the ledger, the raw-Npgsql baseline and the in-process
/// Marten figures: run.started, steps (started, logs, heartbeat, items, completed), scores, an
/// output, completion. Every run is registered so that its lifecycle ends in <c>succeeded</c>.
/// </summary>
public static class Workload
{
    public static readonly string[] RequiredScores = ["accuracy", "f1"];
    public const string RequiredOutput = "model";
    public const int ItemsPerChunk = 100;

    private static readonly string[] StepNames = ["fetch", "prepare", "train", "evaluate", "export"];

    /// <summary>The single-event lifecycle: 3 steps, 19 events, each sent as its own request.</summary>
    public static RunScript SingleLifecycle(string runId, int steps = 3) => Build(runId, totalEvents: null, steps);

    /// <summary>The batch lifecycle: exactly <paramref name="batches"/> × <paramref name="batchSize"/> events.</summary>
    public static RunScript BatchLifecycle(string runId, int batches, int batchSize) =>
        Build(runId, totalEvents: batches * batchSize, steps: 0);

    /// <summary>
    /// A run that never ends: registered without required scores, outputs or expected items, then
    /// exactly <paramref name="events"/> events that keep it running: run.started, then steps of 10
    /// (started, 5 logs, heartbeat, items.committed, log, completed), padded with logs and heartbeats.
    /// </summary>
    public static RunScript LongRun(string runId, int events)
    {
        var list = new List<WireEvent>(events);
        var clock = DateTimeOffset.UtcNow;
        var seq = 0;
        WireEvent Next(string type, Action<Utf8JsonWriter>? fields) => Event(type, $"{runId}-e{++seq}", clock.AddMilliseconds(seq * 7), fields);

        list.Add(Next("run.started", null));
        // A long job as the seeds describe them (seed 003: a data extraction committing chunk after
        // chunk): ten steps, each a long stretch of logs, heartbeats and committed chunks. What the
        // run's state keeps grows with its steps, not with its events; see bench/README.md.
        const int steps = 10;
        var perStep = Math.Max(3, (events - 1) / steps);
        for (var step = 1; step <= steps && list.Count + 2 <= events; step++)
        {
            var stepId = $"s{step}";
            var end = Math.Min(events - 1, list.Count + perStep - 1);
            list.Add(Next("step.started", w => { w.WriteString("stepId", stepId); w.WriteString("name", StepNames[step % StepNames.Length]); }));
            for (var i = 0; list.Count < end; i++)
            {
                list.Add((i % 8) switch
                {
                    3 => Next("heartbeat", null),
                    5 or 7 => Next("items.committed", w => { w.WriteString("chunkId", $"c{seq}"); w.WriteNumber("count", ItemsPerChunk); }),
                    _ => Next("log", w => LogLines(w, runId, seq, 3)),
                });
            }
            list.Add(Next("step.completed", w => { w.WriteString("stepId", stepId); w.WriteString("outcome", "ok"); }));
        }
        while (list.Count < events) list.Add(list.Count % 4 == 3 ? Next("heartbeat", null) : Next("log", w => LogLines(w, runId, seq, 3)));

        var register = JsonSerializer.SerializeToUtf8Bytes(new { runId, leaseSeconds = 3600 });
        return new RunScript(runId, register, list, 0);
    }

    /// <summary>
    /// A run registered for the single-event figures on fresh and hot runs: nothing required, so
    /// that heartbeats and logs alone never end it.
    /// </summary>
    public static byte[] OpenRunRegistration(string runId) => JsonSerializer.SerializeToUtf8Bytes(new { runId, leaseSeconds = 3600 });

    /// <summary>The <paramref name="n"/>-th one-off event of a stream of single-event requests: a log of 5 lines, then a heartbeat, in turn.</summary>
    public static byte[] Filler(string runId, string eventId, int n) => n % 2 == 0
        ? Event("log", eventId, DateTimeOffset.UtcNow, w => LogLines(w, runId, n, 5)).Json
        : Event("heartbeat", eventId, DateTimeOffset.UtcNow, null).Json;

    private static WireEvent Event(string type, string eventId, DateTimeOffset occurredAt, Action<Utf8JsonWriter>? fields)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("type", type);
            w.WriteString("eventId", eventId);
            w.WriteString("occurredAt", occurredAt);
            fields?.Invoke(w);
            w.WriteEndObject();
        }
        return new WireEvent(type, eventId, buffer.WrittenSpan.ToArray());
    }

    private static void LogLines(Utf8JsonWriter w, string runId, int seq, int lines)
    {
        var now = DateTimeOffset.UtcNow;
        w.WriteStartArray("lines");
        for (var i = 0; i < lines; i++)
        {
            w.WriteStringValue($"{now.AddMilliseconds(i):HH:mm:ss.fff} INFO worker {runId}: processed batch {seq}.{i} (loss=0.{seq * 31 % 997:000}, lr=3e-4)");
        }
        w.WriteEndArray();
    }

    private static RunScript Build(string runId, int? totalEvents, int steps)
    {
        var events = new List<WireEvent>();
        var clock = DateTimeOffset.UtcNow;
        var seq = 0;
        var chunks = 0;

        WireEvent Make(string type, Action<Utf8JsonWriter>? fields)
        {
            var id = $"{runId}-e{++seq}";
            var buffer = new ArrayBufferWriter<byte>(256);
            using (var w = new Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                w.WriteString("type", type);
                w.WriteString("eventId", id);
                w.WriteString("occurredAt", clock.AddMilliseconds(seq * 7));
                fields?.Invoke(w);
                w.WriteEndObject();
            }
            return new WireEvent(type, id, buffer.WrittenSpan.ToArray());
        }

        void Log(int lines)
        {
            events.Add(Make("log", w =>
            {
                w.WriteStartArray("lines");
                for (var i = 0; i < lines; i++)
                {
                    w.WriteStringValue($"{clock.AddMilliseconds(seq * 7 + i):HH:mm:ss.fff} INFO worker {runId}: processed batch {seq}.{i} (loss=0.{seq * 31 % 997:000}, lr=3e-4)");
                }
                w.WriteEndArray();
            }));
        }

        void Step(int number, int logs)
        {
            var stepId = $"s{number}";
            var name = StepNames[(number - 1) % StepNames.Length];
            events.Add(Make("step.started", w => { w.WriteString("stepId", stepId); w.WriteString("name", name); }));
            for (var i = 0; i < logs; i++) Log(5);
            events.Add(Make("heartbeat", null));
            var chunk = $"c{++chunks}";
            events.Add(Make("items.committed", w => { w.WriteString("chunkId", chunk); w.WriteNumber("count", ItemsPerChunk); }));
            events.Add(Make("step.completed", w => { w.WriteString("stepId", stepId); w.WriteString("outcome", "ok"); }));
        }

        events.Add(Make("run.started", null));
        const int closing = 3; // scores, output, completion
        int stepCount;
        if (totalEvents is { } total)
        {
            // Steps of 10 events (started, 6 logs, heartbeat, items, completed) while they fit; pad with logs and heartbeats.
            stepCount = 0;
            while (events.Count + 10 + closing <= total) Step(++stepCount, logs: 6);
            var pad = 0;
            while (events.Count + closing < total)
            {
                if (pad++ % 4 == 3) events.Add(Make("heartbeat", null)); else Log(3);
            }
        }
        else
        {
            stepCount = steps;
            for (var s = 1; s <= steps; s++) Step(s, logs: 1);
        }

        var itemsTotal = (long)chunks * ItemsPerChunk;
        var hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(runId)));
        events.Add(Make("scores.reported", w =>
        {
            w.WriteStartObject("scores");
            w.WriteNumber("accuracy", 0.5 + (runId.GetHashCode() & 0xFFFF) / 200_000.0);
            w.WriteNumber("f1", 0.4 + (seq % 100) / 1000.0);
            w.WriteEndObject();
        }));
        events.Add(Make("output.recorded", w =>
        {
            w.WriteString("name", RequiredOutput);
            w.WriteString("uri", $"s3://bench-artifacts/{runId}/model.safetensors");
            w.WriteString("sha256", hash);
            w.WriteNumber("bytes", 1_048_576 + seq);
        }));
        events.Add(Make("run.completed", w => w.WriteNumber("itemsTotal", itemsTotal)));

        var register = JsonSerializer.SerializeToUtf8Bytes(new
        {
            runId,
            requiredScores = RequiredScores,
            requiredOutputs = new[] { RequiredOutput },
            expectedItems = itemsTotal,
            leaseSeconds = 3600,
        });
        return new RunScript(runId, register, events, itemsTotal);
    }
}
