using System.Text;
using System.Text.Json;
using CsCheck;
using Ledger.Infrastructure;
using Ledger.Runs;

namespace Ledger.Tests.Runs;

/// <summary>
/// Property tests of the run aggregate: random run definitions and random, shuffled, retried worker
/// event sequences, driven the way the events endpoint drives the aggregate (evaluate, then append
/// only what is neither refused nor a duplicate). The invariants are checked after every step.
/// </summary>
public sealed class RunPropertyTests
{
    private const int Iterations = 500;
    private static readonly DateTimeOffset T0 = new(2025, 3, 1, 12, 0, 0, TimeSpan.Zero);

    // ---- the properties ----------------------------------------------------------------------

    [Fact]
    public void terminal_is_absorbing()
    {
        Scenarios.Sample(scenario =>
        {
            string? frozen = null;
            var anomalies = 0;
            Simulation.Play(scenario, step =>
            {
                var run = step.Run;
                if (frozen is null)
                {
                    if (run.Status.IsTerminal()) frozen = Verdict(run);
                    anomalies = run.Anomalies.Count;
                    return;
                }

                Assert.True(frozen == Verdict(run),
                    $"step {step.Index} ({Describe(step.Input)}) changed a terminal run:\n  was {frozen}\n  now {Verdict(run)}");
                if (step is { Input: WorkerEvent e, Effect: { } effect } && effect.Kind != EventResultKind.Duplicate)
                {
                    Assert.True(effect.Kind == EventResultKind.RecordedNotApplied && effect.Reason == AnomalyKinds.LateEvent,
                        $"step {step.Index} ({Describe(e)}) after terminal gave {effect.Kind} {effect.Reason}, not a late event");
                    Assert.Equal(anomalies + 1, run.Anomalies.Count);
                    Assert.Equal(AnomalyKinds.LateEvent, run.Anomalies[^1].Kind);
                    Assert.Equal(e.EventId, run.Anomalies[^1].EventId);
                }
                else
                {
                    Assert.Equal(anomalies, run.Anomalies.Count);
                }
                anomalies = run.Anomalies.Count;
            });
        }, iter: Iterations, print: Print);
    }

    [Fact]
    public void succeeded_exactly_when_completion_and_every_result_are_in_and_items_balance()
    {
        Scenarios.Sample(scenario =>
        {
            var model = new Model(scenario.Definition);
            Simulation.Play(scenario, step =>
            {
                if (step.Appended) model.Apply(step.Input, step.Index);

                var succeeded = step.Run.Status == RunStatus.Succeeded;
                Assert.True(succeeded == model.Complete,
                    $"after step {step.Index} ({Describe(step.Input)}) the run is {step.Run.Status} ({step.Run.Reason}) " +
                    $"but the model says complete={model.Complete}: {model}");
                Assert.True(step.Run.Status.IsTerminal() == model.Terminal,
                    $"after step {step.Index} ({Describe(step.Input)}) the run is {step.Run.Status} but the model says terminal={model.Terminal}: {model}");
                if (step.Run.Status == RunStatus.Failed && model.MismatchedAccounting)
                {
                    Assert.Equal(AnomalyKinds.AccountingMismatch, step.Run.Reason);
                }
            });
        }, iter: Iterations, print: Print);
    }

    [Fact]
    public void refusals_and_duplicates_agree_with_an_independent_model()
    {
        Scenarios.Sample(scenario =>
        {
            var model = new Model(scenario.Definition);
            Simulation.Play(scenario, step =>
            {
                if (step is { Input: WorkerEvent e, Effect: { } effect })
                {
                    var expected = model.Expect(e);
                    Assert.True(expected.Matches(effect),
                        $"step {step.Index} ({Describe(e)}) gave {effect.Kind} {effect.Reason}, the model expected {expected}; {model}");
                }
                if (step.Appended) model.Apply(step.Input, step.Index);
            });
        }, iter: Iterations, print: Print);
    }

    [Fact]
    public void a_recorded_score_never_changes()
    {
        Scenarios.Sample(scenario =>
        {
            var first = new Dictionary<string, double>(StringComparer.Ordinal);
            Simulation.Play(scenario, step =>
            {
                foreach (var (name, value) in first)
                {
                    Assert.True(step.Run.Scores.TryGetValue(name, out var now),
                        $"score {name} disappeared at step {step.Index} ({Describe(step.Input)})");
                    Assert.True(BitConverter.DoubleToInt64Bits(now) == BitConverter.DoubleToInt64Bits(value),
                        $"score {name} changed from {value} to {now} at step {step.Index} ({Describe(step.Input)})");
                }
                foreach (var (name, value) in step.Run.Scores) first.TryAdd(name, value);
            });
        }, iter: Iterations, print: Print);
    }

    [Fact]
    public void replaying_the_accepted_events_reproduces_the_state_byte_for_byte()
    {
        Scenarios.Sample(scenario =>
        {
            var (run, accepted) = Simulation.Play(scenario, _ => { });
            var original = Json(run);

            var replayed = Run.Create(Simulation.Registered(scenario.Definition));
            foreach (var e in accepted) replayed.Fold(e);
            Assert.Equal(original, Json(replayed));

            // The same, from the events as the store keeps them: serialized and read back.
            var stored = Run.Create(Simulation.Registered(scenario.Definition));
            foreach (var e in accepted)
            {
                var bytes = JsonSerializer.SerializeToUtf8Bytes(e, e.GetType(), LedgerJson.Options);
                stored.Fold(JsonSerializer.Deserialize(bytes, e.GetType(), LedgerJson.Options)!);
            }
            Assert.Equal(original, Json(stored));
        }, iter: Iterations, print: Print);
    }

    [Fact]
    public void the_json_copy_the_endpoint_decides_on_decides_like_the_original()
    {
        Scenarios.Sample(scenario =>
        {
            Simulation.Play(scenario, step =>
            {
                if (step.Next is not WorkerEvent next) return;
                var copy = step.Run.Clone();
                Assert.Equal(Json(step.Run), Json(copy));
                Assert.Equal(step.Run.Evaluate(next), copy.Evaluate(next));
            });
        }, iter: 300, print: Print);
    }

    [Fact]
    public void observations_never_change_what_the_worker_events_decide()
    {
        Gen.Select(Scenarios, ObservationInserts).Sample((scenario, inserts) =>
        {
            var (plain, _) = Simulation.Play(scenario, _ => { });
            var (observed, accepted) = Simulation.Play(scenario with { Inputs = Interleave(scenario.Inputs, inserts) }, _ => { });

            Assert.Equal(Json(plain), Json(WithoutObservations(observed)));
            foreach (var anomaly in observed.Anomalies.Where(a => a.Kind == AnomalyKinds.StatusMismatch))
            {
                var mismatch = anomaly.Mismatch!;
                Assert.True(mismatch.Ledger.IsTerminal() && mismatch.Observed.IsTerminal() && mismatch.Ledger != mismatch.Observed,
                    $"a mismatch that is none: {mismatch}");
            }
            // Each source's latest view disagreeing with a terminal verdict is flagged.
            if (observed.Status.IsTerminal())
            {
                foreach (var latest in observed.Observations.GroupBy(o => o.Source).Select(g => g.OrderBy(o => o.ObservedAt).Last()))
                {
                    if (!latest.Status.IsTerminal() || latest.Status == observed.Status) continue;
                    Assert.Contains(observed.Anomalies, a => a.Mismatch is { } m && m.Source == latest.Source && m.Observed == latest.Status
                        && m.ObservedAt == latest.ObservedAt && m.Ledger == observed.Status);
                }
            }

            var replayed = Run.Create(Simulation.Registered(scenario.Definition));
            foreach (var e in accepted) replayed.Fold(e);
            Assert.Equal(Json(observed), Json(replayed));
        }, iter: Iterations, print: t => Print(t.Item1));
    }

    /// <summary>The generator reaches the cases the properties are about; otherwise they would pass vacuously.</summary>
    [Fact]
    public void the_generated_scenarios_reach_every_interesting_outcome()
    {
        var seen = new HashSet<string>();
        Scenarios.Sample(scenario =>
        {
            var (run, _) = Simulation.Play(scenario, step =>
            {
                lock (seen)
                {
                    if (step.Effect is { } effect) seen.Add($"{effect.Kind}:{effect.Reason}");
                    if (step.Run.Reason == AnomalyKinds.CompletedBeforeResults) seen.Add("running:completed-before-results");
                }
            });
            lock (seen)
            {
                seen.Add($"end:{run.Status}:{(run.Status == RunStatus.Failed ? run.Reason : "")}");
                if (run.Status == RunStatus.Succeeded && run.Anomalies.Any(a => a.Kind == AnomalyKinds.CompletedBeforeResults))
                {
                    seen.Add("succeeded-after-waiting");
                }
            }
        }, iter: 2000, print: Print);

        string[] required =
        [
            "end:Succeeded:", "end:Running:", "end:Cancelled:", "end:Failed:oom", "end:Failed:accounting-mismatch",
            "running:completed-before-results", "succeeded-after-waiting",
            "Applied:", "Duplicate:event-id-seen", "Duplicate:chunk-already-committed", "Duplicate:scores-already-recorded",
            "Duplicate:output-already-recorded", "Refused:chunk-conflict", "Refused:score-conflict", "Refused:unknown-score",
            "Refused:unknown-step", "Refused:output-conflict", "RecordedNotApplied:late-event",
            "RecordedNotApplied:step-already-started", "RecordedNotApplied:step-already-completed",
            "RecordedNotApplied:completion-already-reported",
        ];
        Assert.Empty(required.Except(seen));
    }

    // ---- the driver --------------------------------------------------------------------------

    public sealed record Definition(string[] RequiredScores, string[] RequiredOutputs, long? ExpectedItems);

    /// <summary>The orchestrator's cancel, among the worker events.</summary>
    public sealed record Cancel(string? Reason);

    /// <summary>Inputs are worker events (without their RecordedAt, which the ledger sets) or cancels.</summary>
    public sealed record Scenario(Definition Definition, object[] Inputs);

    /// <summary>One input processed: the event as recorded, what evaluating it said, whether it was appended.</summary>
    public sealed record Step(int Index, object Input, EventEffect? Effect, bool Appended, Run Run, object? Next);

    private static class Simulation
    {
        public static RunRegistered Registered(Definition d) =>
            new("run-p", "board", "team", null, new Dictionary<string, string>(), d.RequiredScores, d.RequiredOutputs,
                d.ExpectedItems, 60, T0);

        private static readonly RunClaimed Claimed = new("worker-1", "hash", T0.AddSeconds(1), T0.AddSeconds(61));

        public static Run NewRun(Definition d)
        {
            var run = Run.Create(Registered(d));
            run.Fold(Claimed);
            return run;
        }

        /// <summary>Plays the scenario as the endpoints would; returns the run and the events appended to its stream.</summary>
        public static (Run Run, List<object> Accepted) Play(Scenario scenario, Action<Step> check)
        {
            var run = NewRun(scenario.Definition);
            var accepted = new List<object> { Claimed };
            // Observations take no tick of the clock: the worker events are stamped as they would be without them.
            var ticks = 0;
            var inputs = scenario.Inputs.Select(input => Stamp(input, T0.AddHours(1).AddSeconds(input is StatusObserved ? ticks : ticks++))).ToArray();
            for (var i = 0; i < inputs.Length; i++)
            {
                EventEffect? effect = null;
                var appended = false;
                switch (inputs[i])
                {
                    case WorkerEvent e:
                        effect = run.Evaluate(e);
                        if (effect.Kind is EventResultKind.Refused or EventResultKind.Duplicate) break;
                        run.Fold(e);
                        appended = true;
                        break;
                    case StatusObserved o:
                        effect = run.Evaluate(o);
                        if (effect.Kind == EventResultKind.Duplicate) break;
                        run.Fold(o);
                        appended = true;
                        break;
                    case RunCancelled c:
                        // The cancel endpoint refuses a terminal run; append it anyway: the fold must ignore it.
                        run.Fold(c);
                        appended = true;
                        break;
                }
                if (appended) accepted.Add(inputs[i]);
                check(new Step(i, inputs[i], effect, appended, run, i + 1 < inputs.Length ? inputs[i + 1] : null));
            }
            return (run, accepted);
        }

        private static object Stamp(object input, DateTimeOffset now) => input switch
        {
            WorkerEvent e => e with { RecordedAt = now },
            Cancel c => new RunCancelled(c.Reason, now),
            StatusObserved o => o with { RecordedAt = now },
            _ => throw new InvalidOperationException(),
        };
    }

    /// <summary>
    /// What the product brief says the run should be, computed from the appended events alone, without
    /// asking the aggregate (no Missing(), no Evaluate()).
    /// </summary>
    private sealed class Model(Definition definition)
    {
        private readonly HashSet<string> _eventIds = new(StringComparer.Ordinal);
        private readonly Dictionary<string, bool> _steps = new(StringComparer.Ordinal);
        private readonly Dictionary<string, double> _scores = new(StringComparer.Ordinal);
        private readonly Dictionary<string, string> _outputs = new(StringComparer.Ordinal);
        private readonly Dictionary<string, long> _chunks = new(StringComparer.Ordinal);
        private bool _completed;
        private long? _itemsTotal;

        public bool Terminal { get; private set; }
        public bool MismatchedAccounting { get; private set; }
        private long Committed => _chunks.Values.Sum();

        public bool Complete =>
            _completed
            && definition.RequiredScores.All(_scores.ContainsKey)
            && definition.RequiredOutputs.All(_outputs.ContainsKey)
            && _steps.Values.All(done => done)
            && (definition.ExpectedItems is not { } expected || Committed == expected)
            && (_itemsTotal is not { } total || Committed == total);

        public void Apply(object appended, int index)
        {
            if (appended is WorkerEvent { EventId: var id }) _eventIds.Add(id);
            if (Terminal) return;

            switch (appended)
            {
                case RunCancelled:
                case RunFailed:
                    Terminal = true;
                    return;
                case StepStarted s:
                    _steps.TryAdd(s.StepId, false);
                    break;
                case StepCompleted c:
                    Assert.True(_steps.ContainsKey(c.StepId), $"step {index}: completion of never-started step {c.StepId} was appended");
                    _steps[c.StepId] = true;
                    break;
                case ScoresReported s:
                    foreach (var (name, value) in s.Scores) _scores.TryAdd(name, value);
                    break;
                case OutputRecorded o:
                    _outputs.TryAdd(o.Name, o.Uri);
                    break;
                case ItemsCommitted i:
                    _chunks.TryAdd(i.ChunkId, i.Count);
                    break;
                case RunCompleted c when !_completed:
                    _completed = true;
                    _itemsTotal = c.ItemsTotal;
                    break;
            }

            var declared = definition.ExpectedItems ?? _itemsTotal;
            if (declared is { } d && Committed > d
                || definition.ExpectedItems is { } e && _itemsTotal is { } t && e != t)
            {
                MismatchedAccounting = true;
                Terminal = true;
            }
            else if (Complete)
            {
                Terminal = true;
            }
        }

        /// <summary>What the ledger must answer to this event, as far as the brief pins it.</summary>
        public Expectation Expect(WorkerEvent e)
        {
            if (_eventIds.Contains(e.EventId)) return new(EventResultKind.Duplicate, "event-id-seen");
            if (Terminal) return new(EventResultKind.RecordedNotApplied, AnomalyKinds.LateEvent);
            switch (e)
            {
                case StepCompleted c when !_steps.ContainsKey(c.StepId):
                    return new(EventResultKind.Refused, "unknown-step", 409);
                case ScoresReported s:
                    var declared = definition.RequiredScores;
                    if (declared.Length > 0 && s.Scores.Keys.Any(n => !declared.Contains(n)))
                    {
                        // Which refusal wins when both apply is not pinned: accept either.
                        var conflict = s.Scores.Any(kv => _scores.TryGetValue(kv.Key, out var v) && v != kv.Value);
                        return conflict ? new(EventResultKind.Refused, null) : new(EventResultKind.Refused, "unknown-score", 422);
                    }
                    if (s.Scores.Any(kv => _scores.TryGetValue(kv.Key, out var v) && v != kv.Value))
                        return new(EventResultKind.Refused, "score-conflict", 409);
                    return s.Scores.Keys.All(_scores.ContainsKey)
                        ? new(EventResultKind.Duplicate, "scores-already-recorded")
                        : new(EventResultKind.Applied, null);
                case ItemsCommitted i when _chunks.TryGetValue(i.ChunkId, out var count):
                    return count == i.Count
                        ? new(EventResultKind.Duplicate, "chunk-already-committed")
                        : new(EventResultKind.Refused, "chunk-conflict", 409);
                case OutputRecorded o when _outputs.TryGetValue(o.Name, out var uri):
                    return uri == o.Uri
                        ? new(EventResultKind.Duplicate, "output-already-recorded")
                        : new(EventResultKind.Refused, "output-conflict", 409);
                case ItemsCommitted or OutputRecorded or LogWritten or HeartbeatReceived or RunStarted or RunFailed:
                    return new(EventResultKind.Applied, null);
                case StepCompleted c when !_steps[c.StepId]:
                    return new(EventResultKind.Applied, null);
                case StepStarted s when !_steps.ContainsKey(s.StepId):
                    return new(EventResultKind.Applied, null);
                case RunCompleted when !_completed:
                    return new(EventResultKind.Applied, null);
                default:
                    // A repeated step start/completion or completion: recorded, not applied.
                    return new(EventResultKind.RecordedNotApplied, null);
            }
        }

        public override string ToString() =>
            $"model(completed={_completed}, itemsTotal={_itemsTotal}, committed={Committed}, " +
            $"scores=[{string.Join(",", _scores.Keys)}], outputs=[{string.Join(",", _outputs.Keys)}], " +
            $"steps=[{string.Join(",", _steps.Select(s => $"{s.Key}:{(s.Value ? "done" : "open")}"))}], terminal={Terminal})";
    }

    /// <summary>An expected answer; a null reason accepts any reason of that kind.</summary>
    private sealed record Expectation(EventResultKind Kind, string? Reason, int HttpStatus = 0)
    {
        public bool Matches(EventEffect effect) =>
            effect.Kind == Kind
            && (Reason is null || effect.Reason == Reason)
            && (HttpStatus == 0 || ProblemCatalogue.Get(effect.Reason!).Status == HttpStatus);
    }

    // ---- the generators ----------------------------------------------------------------------

    private static readonly string[] StepIds = ["s1", "s2", "s3"];
    private static readonly string[] ScoreNames = ["acc", "f1", "loss"];
    private static readonly string[] OutputNames = ["pred", "model", "report"];
    private static readonly string[] ChunkIds = ["c1", "c2", "c3", "c4"];
    private static readonly double[] ScoreValues = [0.25, 0.5, 0.75];

    private static readonly Gen<string[]> RequiredScores = Gen.OneOf<string[]>([], ["acc"], ["f1"], ["acc", "f1"]);
    private static readonly Gen<string[]> RequiredOutputs = Gen.OneOf<string[]>([], ["pred"], ["model"], ["pred", "model"]);
    private static readonly Gen<long?> OptionalTotal =
        Gen.Frequency((1, Gen.Const((long?)null)), (2, Gen.Int[0, 12].Select(n => (long?)n)));

    private static readonly Gen<Definition> Definitions =
        Gen.Select(RequiredScores, RequiredOutputs, OptionalTotal, (s, o, n) => new Definition(s, o, n));

    private static readonly Gen<object> Noise = Gen.Frequency<object>(
        (1, Gen.Const<object>(new RunStarted { EventId = "", OccurredAt = T0, RecordedAt = T0 })),
        (3, Gen.OneOf(StepIds).Select(id => (object)new StepStarted { EventId = "", OccurredAt = T0, RecordedAt = T0, StepId = id, Name = "step " + id })),
        (3, Gen.OneOf<string>([.. StepIds, "ghost"]).Select(id => (object)new StepCompleted { EventId = "", OccurredAt = T0, RecordedAt = T0, StepId = id, Outcome = "ok" })),
        (1, Gen.Const<object>(new HeartbeatReceived { EventId = "", OccurredAt = T0, RecordedAt = T0 })),
        (1, Gen.Int[1, 3].Select(n => (object)new LogWritten { EventId = "", OccurredAt = T0, RecordedAt = T0, Lines = Enumerable.Repeat("line", n).ToArray() })),
        (4, Gen.Select(Gen.OneOf(ScoreNames), Gen.OneOf(ScoreValues)).Array[1, 2]
            .Select(scores => (object)new ScoresReported
            {
                EventId = "", OccurredAt = T0, RecordedAt = T0,
                Scores = scores.DistinctBy(s => s.Item1).ToDictionary(s => s.Item1, s => s.Item2),
            })),
        (2, Gen.Select(Gen.OneOf(OutputNames), Gen.OneOf("s3://b/one", "s3://b/two"))
            .Select((name, uri) => (object)new OutputRecorded { EventId = "", OccurredAt = T0, RecordedAt = T0, Name = name, Uri = uri })),
        (4, Gen.Select(Gen.OneOf(ChunkIds), Gen.Int[0, 5])
            .Select((chunk, count) => (object)new ItemsCommitted { EventId = "", OccurredAt = T0, RecordedAt = T0, ChunkId = chunk, Count = count })),
        (1, OptionalTotal.Select(total => (object)new RunCompleted { EventId = "", OccurredAt = T0, RecordedAt = T0, ItemsTotal = total })),
        (1, Gen.Const<object>(new RunFailed { EventId = "", OccurredAt = T0, RecordedAt = T0, ErrorClass = "oom", Message = "out of memory" })),
        (1, Gen.Const<object>(new Cancel("operator"))));

    /// <summary>Everything the definition needs to succeed: the results, balanced chunks, step pairs, a completion.</summary>
    private static Gen<object[]> HappyPath(Definition d) =>
        from values in Gen.OneOf(ScoreValues).Array[d.RequiredScores.Length]
        from steps in Gen.Int[0, 2]
        from total in d.ExpectedItems is { } expected ? Gen.Const(expected) : Gen.Long[0, 12]
        from split in Gen.Long[0, total]
        from reportTotal in Gen.Bool
        select new object[]
        {
            new RunStarted { EventId = "", OccurredAt = T0, RecordedAt = T0 },
        }
        .Concat(d.RequiredScores.Select((name, i) => (object)new ScoresReported
        {
            EventId = "", OccurredAt = T0, RecordedAt = T0, Scores = new Dictionary<string, double> { [name] = values[i] },
        }))
        .Concat(d.RequiredOutputs.Select(name => (object)new OutputRecorded
        {
            EventId = "", OccurredAt = T0, RecordedAt = T0, Name = name, Uri = "s3://b/one",
        }))
        .Concat(StepIds.Take(steps).SelectMany(id => new object[]
        {
            new StepStarted { EventId = "", OccurredAt = T0, RecordedAt = T0, StepId = id },
            new StepCompleted { EventId = "", OccurredAt = T0, RecordedAt = T0, StepId = id, Outcome = "ok" },
        }))
        .Concat(
        [
            new ItemsCommitted { EventId = "", OccurredAt = T0, RecordedAt = T0, ChunkId = "c1", Count = split },
            new ItemsCommitted { EventId = "", OccurredAt = T0, RecordedAt = T0, ChunkId = "c2", Count = total - split },
            new RunCompleted { EventId = "", OccurredAt = T0, RecordedAt = T0, ItemsTotal = reportTotal ? total : null },
        ])
        .ToArray();

    /// <summary>Gives each input its own event id and claimed time, in list order.</summary>
    private static object[] Identify(object[] inputs, string prefix) =>
        inputs.Select((input, i) => input is WorkerEvent e
            ? e with { EventId = $"{prefix}{i}", OccurredAt = T0.AddMinutes(10).AddSeconds(i) }
            : input).ToArray();

    /// <summary>Retries: copies of earlier inputs (same event id) put back at other places.</summary>
    private static object[] Retry(object[] inputs, (int From, int To)[] retries)
    {
        var list = inputs.ToList();
        if (list.Count == 0) return [];
        foreach (var (from, to) in retries) list.Insert(to % (list.Count + 1), list[from % list.Count]);
        return [.. list];
    }

    /// <summary>Event id collisions: an input takes the id of another one, as a buggy client would.</summary>
    private static object[] Collide(object[] inputs, (int Of, int Into)[] collisions)
    {
        var array = inputs.ToArray();
        foreach (var (of, into) in collisions)
        {
            if (array.Length < 2) break;
            if (array[of % array.Length] is WorkerEvent source && array[into % array.Length] is WorkerEvent target)
            {
                array[into % array.Length] = target with { EventId = source.EventId };
            }
        }
        return array;
    }

    /// <summary>Other systems' views, each with where it lands among the inputs.</summary>
    private static readonly Gen<(int At, StatusObserved Observation)[]> ObservationInserts =
        Gen.Select(Gen.Int[0, 1000], Gen.OneOf("modal", "portal"), Gen.Enum<RunStatus>(), Gen.Int[0, 3],
                (at, source, status, minute) => (at, new StatusObserved(source, status, T0.AddMinutes(minute), null, T0)))
            .Array[0, 6];

    private static object[] Interleave(object[] inputs, (int At, StatusObserved Observation)[] inserts)
    {
        var list = inputs.ToList();
        foreach (var (at, observation) in inserts) list.Insert(at % (list.Count + 1), observation);
        return [.. list];
    }

    private static Run WithoutObservations(Run run)
    {
        var copy = run.Clone();
        copy.Observations.Clear();
        copy.Anomalies.RemoveAll(a => a.Kind == AnomalyKinds.StatusMismatch);
        return copy;
    }

    private static readonly Gen<(int, int)> IndexPair = Gen.Select(Gen.Int[0, 1000], Gen.Int[0, 1000]);

    private static readonly Gen<Scenario> Scenarios =
        from definition in Definitions
        from happy in Gen.Frequency((2, Gen.Const(true)), (1, Gen.Const(false)))
        from path in happy ? HappyPath(definition) : Gen.Const(Array.Empty<object>())
        from noise in Noise.Array[0, 12]
        from order in Gen.Shuffle(Identify([.. path, .. noise], "e"))
        from collisions in IndexPair.Array[0, 1]
        from retries in IndexPair.Array[0, 5]
        from end in Gen.Frequency<object?>(
            (3, Gen.Const((object?)null)),
            (2, Gen.Const<object?>(new RunFailed { EventId = "end", OccurredAt = T0.AddHours(1), RecordedAt = T0, ErrorClass = "oom" })),
            (1, Gen.Const<object?>(new Cancel(null))))
        from tail in Noise.Array[0, 4]
        from lateRetries in IndexPair.Array[0, 3]
        let body = Retry(Collide(order, collisions), retries)
        let late = Identify(tail, "t").Concat(lateRetries.Select(r => body.Length == 0 ? null : body[r.Item1 % body.Length]))
        select new Scenario(definition, [.. body, .. end is null ? Array.Empty<object>() : new object[] { end }, .. late.OfType<object>()]);

    // ---- helpers -----------------------------------------------------------------------------

    private static byte[] Json(Run run) => JsonSerializer.SerializeToUtf8Bytes(run, LedgerJson.Options);

    /// <summary>The parts of a run a terminal verdict freezes.</summary>
    private static string Verdict(Run run) => JsonSerializer.Serialize(new
    {
        run.Status, run.Reason, run.TerminalAt, run.Scores, run.Outputs, run.CommittedItems, run.CommittedChunks, run.Steps,
        run.CompletionReported, run.ItemsTotalReported, run.ErrorClass,
    }, LedgerJson.Options);

    private static string Describe(object input) => input switch
    {
        RunStarted e => $"{e.EventId} run.started",
        StepStarted e => $"{e.EventId} step.started {e.StepId}",
        StepCompleted e => $"{e.EventId} step.completed {e.StepId}",
        HeartbeatReceived e => $"{e.EventId} heartbeat",
        LogWritten e => $"{e.EventId} log x{e.Lines.Count}",
        ScoresReported e => $"{e.EventId} scores {string.Join(",", e.Scores.Select(s => $"{s.Key}={s.Value}"))}",
        OutputRecorded e => $"{e.EventId} output {e.Name}={e.Uri}",
        ItemsCommitted e => $"{e.EventId} items {e.ChunkId}={e.Count}",
        RunCompleted e => $"{e.EventId} run.completed itemsTotal={e.ItemsTotal?.ToString() ?? "-"}",
        RunFailed e => $"{e.EventId} run.failed {e.ErrorClass}",
        Cancel or RunCancelled => "cancel",
        StatusObserved o => $"observed {o.Source} {o.Status} at {o.ObservedAt:HH:mm}",
        _ => input.ToString() ?? "?",
    };

    private static string Print(Scenario s)
    {
        var text = new StringBuilder();
        text.Append($"\nrun: scores=[{string.Join(",", s.Definition.RequiredScores)}] outputs=[{string.Join(",", s.Definition.RequiredOutputs)}] ");
        text.Append($"expectedItems={s.Definition.ExpectedItems?.ToString() ?? "-"}\n");
        for (var i = 0; i < s.Inputs.Length; i++) text.Append($"  {i}: {Describe(s.Inputs[i])}\n");
        return text.ToString();
    }
}
