using CsCheck;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Runs;
using Ledger.Tests.Runs;
using Ledger.Tests.Fixtures;

namespace Ledger.Tests.Forensics;

/// <summary>
/// The pure half of the kept KPIs: what a decision changes (<see cref="KpiDelta"/> of the run's
/// state before and after it), and the time-to-terminal histogram's precision.
/// </summary>
public sealed class KpiRuleTests
{
    private static readonly DateTimeOffset T0 = new(2026, 3, 1, 10, 20, 0, TimeSpan.Zero);

    private static Run Registered(DateTimeOffset at) =>
        Run.Create(TestEvents.Registered("r", at, leaseSeconds: 30, scores: ["s"]));

    private static Run With(Run run, RunStatus status, DateTimeOffset? terminalAt)
    {
        var copy = run.Clone();
        copy.Status = status;
        copy.TerminalAt = terminalAt;
        return copy;
    }

    private static string Bucket(TimeSpan t) => KpiHistogram.BucketOf(t.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public void a_registration_counts_one_registered_run_in_its_hour()
    {
        var changes = new KpiDelta().Run(null, Registered(T0)).Changes;
        Assert.Equal(new Dictionary<KpiKey, long>
        {
            [new(Kpi.Runs, "registered")] = 1,
            [new(Kpi.Registered, "", new DateTimeOffset(2026, 3, 1, 10, 0, 0, TimeSpan.Zero))] = 1,
        }, changes);
    }

    [Fact]
    public void a_first_verdict_moves_the_run_between_statuses_and_adds_its_hour_and_its_time_once()
    {
        var running = With(Registered(T0), RunStatus.Running, null);
        var at = T0.AddHours(2).AddSeconds(5);
        var changes = new KpiDelta().Run(running, With(running, RunStatus.Succeeded, at)).Changes;
        Assert.Equal(new Dictionary<KpiKey, long>
        {
            [new(Kpi.Runs, "running")] = -1,
            [new(Kpi.Runs, "succeeded")] = 1,
            [new(Kpi.Verdicts, "succeeded", new DateTimeOffset(2026, 3, 1, 12, 0, 0, TimeSpan.Zero))] = 1,
            [new(Kpi.TimeToTerminal, Bucket(at - T0))] = 1,
        }, changes);
        // A decision that leaves the status as it was (a log, a heartbeat) changes no counter.
        Assert.True(new KpiDelta().Run(running, running.Clone()).IsEmpty);
    }

    [Fact]
    public void a_reclassification_moves_the_verdict_to_its_new_status_hour_and_time()
    {
        var lostAt = T0.AddSeconds(40);
        var lost = With(Registered(T0), RunStatus.Lost, lostAt);
        var overruledAt = T0.AddDays(1);
        var changes = new KpiDelta().Run(lost, With(lost, RunStatus.Succeeded, overruledAt)).Changes;
        Assert.Equal(new Dictionary<KpiKey, long>
        {
            [new(Kpi.Runs, "lost")] = -1,
            [new(Kpi.Runs, "succeeded")] = 1,
            [new(Kpi.Verdicts, "lost", KpiRules.HourOf(lostAt))] = -1,
            [new(Kpi.Verdicts, "succeeded", KpiRules.HourOf(overruledAt))] = 1,
            [new(Kpi.TimeToTerminal, Bucket(lostAt - T0))] = -1,
            [new(Kpi.TimeToTerminal, Bucket(overruledAt - T0))] = 1,
        }, changes);
    }

    [Fact]
    public void a_kept_refusal_counts_by_reason_and_its_anomaly_by_kind_but_a_sample_of_unauthenticated_ones_does_not()
    {
        var rejection = new Rejection { Reason = "score-conflict", Method = "POST", Path = "/api/runs/r/events", At = T0, Id = Guid.NewGuid() };
        var changes = new KpiDelta().Rejection(rejection).Anomaly(AnomalyRecord.From(rejection)).Changes;
        Assert.Equal(new Dictionary<KpiKey, long>
        {
            [new(Kpi.Rejections, "score-conflict")] = 1,
            [new(Kpi.Anomalies, AnomalyKinds.ScoreConflict)] = 1,
            [new(Kpi.Flagged, "", KpiRules.HourOf(T0))] = 1,
        }, changes);

        // Other refusals are `rejected` anomalies, counted by kind but not among the anomalies flagged per hour.
        var refused = new Rejection { Reason = "unknown-step", Method = "POST", Path = "/x", At = T0, Id = Guid.NewGuid() };
        Assert.Equal(new Dictionary<KpiKey, long> { [new(Kpi.Anomalies, AnomalyKinds.Rejected)] = 1 },
            new KpiDelta().Anomaly(AnomalyRecord.From(refused)).Changes);
        Assert.True(new KpiDelta().Rejection(new Rejection { Reason = "invalid-credentials", Method = "GET", Path = "/", Unauthenticated = true }).IsEmpty);
    }

    private enum Move { Start, Score, Complete, Fail, Log, Cancel, Expire, Observe, ReclassifyFailed, ReclassifySucceeded, ReclassifyLost }

    [Fact]
    public void the_deltas_of_random_decisions_add_up_to_the_counters_of_the_states_they_end_in()
    {
        // Several runs, each a random mix of decisions with random waits (minutes to days) between them.
        var gen = Gen.Select(Gen.Enum<Move>(), Gen.Int[0, 3000]).Array[1, 12].Array[1, 6];
        gen.Sample(runs =>
        {
            var kept = new KpiDelta();
            var finals = new List<Run>();
            for (var r = 0; r < runs.Length; r++)
            {
                var runId = $"r{r}";
                var clock = T0.AddMinutes(r * 37);
                var registered = TestEvents.Registered(runId, clock, leaseSeconds: 200_000, scores: ["s"]);
                var state = Run.Create(registered);
                kept.Run(null, state);
                var stream = new DecidedStream(state);
                // As the writer does: the claim first, then each move on the state the previous one left.
                var decisions = new List<RunCommand> { new ClaimCommand(runId, "w", null, DeciderKit.Token, "nonce", DeciderKit.Derivation) };
                var i = 0;
                foreach (var (move, minutes) in runs[r])
                {
                    clock = clock.AddMinutes(minutes);
                    var stamp = new Stamp($"e{i++}", clock, clock);
                    RunCommand command = move switch
                    {
                        Move.Start => Events(runId, TestEvents.Started(stamp)),
                        Move.Score => Events(runId, TestEvents.Scores(stamp, ("s", minutes))),
                        Move.Complete => Events(runId, TestEvents.Completed(stamp)),
                        Move.Fail => Events(runId, TestEvents.Failed(stamp, "timeout")),
                        Move.Log => Events(runId, TestEvents.Log(stamp, "x")),
                        Move.Cancel => new CancelCommand(runId, "operator"),
                        Move.Expire => new ExpireLeaseCommand(runId, TimeSpan.Zero),
                        Move.Observe => new ObserveCommand(runId, "portal", RunStatus.Failed, clock, null),
                        Move.ReclassifyFailed => new ReclassifyCommand(runId, RunStatus.Failed, "review", ["e"], "op"),
                        Move.ReclassifySucceeded => new ReclassifyCommand(runId, RunStatus.Succeeded, "review", ["e"], "op"),
                        _ => new ReclassifyCommand(runId, RunStatus.Lost, "review", ["e"], "op"),
                    };
                    decisions.Add(command);
                }
                var at = T0.AddMinutes(r * 37);
                foreach (var command in decisions)
                {
                    var before = stream.State!;
                    var decision = stream.Decide(command, command is ClaimCommand ? at : clock);
                    if (decision.Events.Count == 0) continue;
                    kept.Run(before, decision.After);
                    for (var a = before.Anomalies.Count; a < decision.After!.Anomalies.Count; a++) kept.Anomaly(AnomalyRecord.From(decision.After, a));
                }
                finals.Add(stream.State!);
            }

            // The recount: what the final states count for.
            var recount = new KpiDelta();
            foreach (var run in finals)
            {
                recount.Run(null, run);
                foreach (var anomaly in run.Anomalies) recount.Add(KpiRules.OfAnomaly(anomaly.Kind, anomaly.At));
            }
            Assert.Equal(recount.Changes.OrderBy(c => c.Key.ToString()), kept.Changes.OrderBy(c => c.Key.ToString()));
            // Every run is counted under exactly one status, and every terminal run once in the histogram.
            Assert.Equal(finals.Count, kept.Changes.Where(c => c.Key.Kpi == Kpi.Runs).Sum(c => c.Value));
            Assert.Equal(finals.Count(f => f.Status.IsTerminal()), kept.Changes.Where(c => c.Key.Kpi == Kpi.TimeToTerminal).Sum(c => c.Value));
            Assert.All(kept.Changes, c => Assert.True(c.Value > 0, $"{c.Key} went to {c.Value}"));
        }, iter: 500);
    }

    private static RecordEventsCommand Events(string runId, WorkerEvent e) => new(runId, DeciderKit.TokenHash, [e]);

    [Fact]
    public void every_time_falls_inside_the_bounds_of_its_bucket()
    {
        Gen.Double[-5, 12].Select(e => Math.Pow(10, e)).Sample(seconds =>
        {
            var bucket = KpiHistogram.BucketOf(seconds);
            var (lower, upper) = KpiHistogram.Bounds(bucket);
            if (bucket == KpiHistogram.LastBucket) Assert.True(seconds >= lower);
            else Assert.True(lower <= seconds * (1 + 1e-12) && seconds <= upper * (1 + 1e-12), $"{seconds} s in bucket {bucket} [{lower}, {upper})");
        }, iter: 20_000);
        Assert.Equal(0, KpiHistogram.BucketOf(-3));
        Assert.Equal(0, KpiHistogram.BucketOf(double.NaN));
    }

    [Fact]
    public void a_percentile_of_the_histogram_is_within_one_bucket_of_the_exact_nearest_rank_one()
    {
        var widest = Math.Pow(2, 1.0 / KpiHistogram.PerDoubling);
        // Times from 10 ms to a few days, spread over 1 to 6 decades, 1 to 3,000 of them.
        var gen = Gen.Select(Gen.Double[-2, 3], Gen.Double[0, 3], Gen.Int[1, 3000], Gen.Int);
        gen.Sample((low, span, count, seed) =>
        {
            var random = new Random(seed);
            var times = Enumerable.Range(0, count).Select(_ => Math.Pow(10, low + span * random.NextDouble())).Order().ToArray();
            var histogram = times.GroupBy(KpiHistogram.BucketOf).ToDictionary(g => g.Key, g => (long)g.Count());
            double? previous = null;
            foreach (var p in new[] { 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0 })
            {
                var exact = times[Math.Clamp((int)Math.Ceiling(p * count), 1, count) - 1];
                var estimate = KpiHistogram.Percentile(histogram, p)!.Value;
                Assert.True(estimate <= exact * widest && estimate >= exact / widest,
                    $"p{p * 100} of {count} times: exact {exact}, estimate {estimate} ({estimate / exact - 1:P2} off)");
                Assert.True(previous is null || estimate >= previous, $"p{p * 100} = {estimate} is below the previous percentile {previous}");
                previous = estimate;
            }
        }, iter: 300);
        Assert.Null(KpiHistogram.Percentile(new Dictionary<int, long>(), 0.5));
    }
}
