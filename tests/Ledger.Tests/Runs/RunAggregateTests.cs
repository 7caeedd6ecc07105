using Ledger.Contract;
using Ledger.Runs;
using Ledger.Tests.Fixtures;

namespace Ledger.Tests.Runs;

/// <summary>
/// Example tests of the evolve half of the run (the aggregate's Apply methods) alone: no database,
/// no HTTP. Events are reported as the fold sees them: evaluated, and folded unless refused or a
/// duplicate of the state's own content. What only the decision knows (repeated eventIds and chunk
/// ids, the lease) is tested in <see cref="RunDeciderTests"/>.
/// </summary>
public sealed class RunAggregateTests() : WorkerEventSequence(T0.AddMinutes(1), recordedAfter: TimeSpan.FromMilliseconds(250))
{
    private static readonly DateTimeOffset T0 = new(2025, 3, 1, 12, 0, 0, TimeSpan.Zero);

    // ---- lifecycle -------------------------------------------------------------------------

    [Fact]
    public void a_claim_moves_a_registered_run_to_claimed()
    {
        var run = Run.Create(Registered());
        Assert.Equal(RunStatus.Registered, run.Status);

        run.Fold(Claim());

        Assert.Equal(RunStatus.Claimed, run.Status);
        Assert.Equal(1, run.Claims);
        Assert.Equal("worker-1", run.Worker);
    }

    [Fact]
    public void a_heartbeat_proves_liveness_but_only_real_work_moves_claimed_to_running()
    {
        var run = NewRun();
        Assert.Equal(RunStatus.Claimed, run.Status);

        Assert.Equal(EventResultKind.Applied, Report(run, Heartbeat()).Kind);
        Assert.Equal(RunStatus.Claimed, run.Status);
        Assert.Null(run.StartedAt);

        var log = Log();
        Assert.Equal(EventResultKind.Applied, Report(run, log).Kind);
        Assert.Equal(RunStatus.Running, run.Status);
        Assert.Equal(log.RecordedAt, run.StartedAt);
    }

    [Fact]
    public void a_later_worker_event_does_not_move_the_start_time()
    {
        var run = NewRun();
        var first = Started();
        Report(run, first);
        Report(run, Log("a", "b"));

        Assert.Equal(RunStatus.Running, run.Status);
        Assert.Equal(first.RecordedAt, run.StartedAt);
        Assert.Equal(2, run.LogLines);
    }

    [Fact]
    public void a_heartbeat_extends_the_lease_from_when_it_was_recorded()
    {
        var run = NewRun(leaseSeconds: 90);
        var heartbeat = Heartbeat();

        Report(run, heartbeat);

        Assert.Equal(heartbeat.RecordedAt.AddSeconds(90), run.LeaseExpiresAt);
    }

    // ---- succeeded means complete ------------------------------------------------------------

    [Fact]
    public void a_run_with_completion_scores_outputs_steps_and_balanced_items_succeeds()
    {
        var run = NewRun(scores: ["accuracy"], outputs: ["predictions"], expectedItems: 10);

        foreach (var e in FullResults()) Assert.Equal(EventResultKind.Applied, Report(run, e).Kind);
        Assert.Equal(RunStatus.Running, run.Status);

        var completion = Completed(itemsTotal: 10);
        Assert.Equal(EventResultKind.Applied, Report(run, completion).Kind);

        Assert.Equal(RunStatus.Succeeded, run.Status);
        Assert.Null(run.Reason);
        Assert.Empty(run.Missing());
        Assert.Equal(completion.RecordedAt, run.TerminalAt);
        Assert.Equal(0.93, run.Scores["accuracy"]);
        Assert.Equal(10, run.CommittedItems);
    }

    [Fact]
    public void a_completed_run_missing_any_single_piece_does_not_succeed()
    {
        // Each piece of a complete run left out in turn: the completion alone must never be enough.
        var pieces = new (string Left, Func<WorkerEvent, bool> Omit, string Missing)[]
        {
            ("score", e => e is ScoresReported, "score:accuracy"),
            ("output", e => e is OutputRecorded, "output:predictions"),
            ("step completion", e => e is StepCompleted, "step:s1"),
            ("last chunk", e => e is ItemsCommitted { ChunkId: "c2" }, "items:4"),
        };

        foreach (var (left, omit, missing) in pieces)
        {
            var run = NewRun(scores: ["accuracy"], outputs: ["predictions"], expectedItems: 10);
            foreach (var e in FullResults().Where(e => !omit(e))) Report(run, e);
            Report(run, Completed(itemsTotal: 10));

            Assert.True(run.Status == RunStatus.Running, $"without the {left} the run is {run.Status}");
            Assert.Equal([missing], run.Missing());
        }
    }

    [Fact]
    public void a_completion_without_declared_requirements_succeeds_at_once()
    {
        var run = NewRun();
        Report(run, Started());

        Report(run, Completed());

        Assert.Equal(RunStatus.Succeeded, run.Status);
    }

    [Fact]
    public void completion_before_results_stays_running_listing_exactly_what_is_missing()
    {
        var run = NewRun(scores: ["accuracy", "f1"], outputs: ["predictions"], expectedItems: 10);
        Report(run, StepStarted("s2"));
        Report(run, StepStarted("s1"));
        Report(run, StepCompleted("s2"));
        Report(run, Items("c1", 4));

        var completion = Completed();
        Assert.Equal(EventResultKind.Applied, Report(run, completion).Kind);

        Assert.Equal(RunStatus.Running, run.Status);
        Assert.Equal(AnomalyKinds.CompletedBeforeResults, run.Reason);
        Assert.True(run.CompletionReported);
        Assert.Equal(["score:accuracy", "score:f1", "output:predictions", "step:s1", "items:6"], run.Missing());
        var anomaly = Assert.Single(run.Anomalies);
        Assert.Equal(AnomalyKinds.CompletedBeforeResults, anomaly.Kind);
        Assert.Equal(completion.EventId, anomaly.EventId);
    }

    [Fact]
    public void a_run_that_completed_before_its_results_succeeds_when_the_last_piece_arrives()
    {
        var run = NewRun(scores: ["accuracy", "f1"], outputs: ["predictions"], expectedItems: 10);
        Report(run, StepStarted("s1"));
        Report(run, Items("c1", 4));
        Report(run, Completed());

        Report(run, Scores(("accuracy", 0.9)));
        Assert.Equal(["score:f1", "output:predictions", "step:s1", "items:6"], run.Missing());
        Report(run, Output("predictions", "s3://b/p.csv"));
        Report(run, StepCompleted("s1"));
        Report(run, Items("c2", 5));
        Report(run, Scores(("f1", 0.8)));
        Assert.Equal(["items:1"], run.Missing());
        Assert.Equal(RunStatus.Running, run.Status);
        Assert.Equal(AnomalyKinds.CompletedBeforeResults, run.Reason);

        var last = Items("c3", 1);
        Report(run, last);

        Assert.Equal(RunStatus.Succeeded, run.Status);
        Assert.Null(run.Reason);
        Assert.Equal(last.RecordedAt, run.TerminalAt);
        Assert.Empty(run.Missing());
    }

    [Fact]
    public void items_total_reported_at_completion_is_the_declared_total_when_none_was_registered()
    {
        var run = NewRun();
        Report(run, Items("c1", 3));
        Report(run, Completed(itemsTotal: 5));

        Assert.Equal(RunStatus.Running, run.Status);
        Assert.Equal(["items:2"], run.Missing());

        Report(run, Items("c2", 2));
        Assert.Equal(RunStatus.Succeeded, run.Status);
    }

    // ---- counts balance ----------------------------------------------------------------------

    [Fact]
    public void an_over_count_against_expected_items_fails_at_once_with_accounting_mismatch()
    {
        var run = NewRun(expectedItems: 5);
        Report(run, Items("c1", 3));
        Assert.Equal(RunStatus.Running, run.Status);

        var over = Items("c2", 3);
        Assert.Equal(EventResultKind.Applied, Report(run, over).Kind);

        Assert.Equal(RunStatus.Failed, run.Status);
        Assert.Equal(AnomalyKinds.AccountingMismatch, run.Reason);
        Assert.False(run.CompletionReported); // failed without waiting for the completion
        var anomaly = Assert.Single(run.Anomalies);
        Assert.Equal(AnomalyKinds.AccountingMismatch, anomaly.Kind);
        Assert.Equal(over.EventId, anomaly.EventId);
    }

    [Fact]
    public void a_completion_claiming_fewer_items_than_already_committed_fails_with_accounting_mismatch()
    {
        var run = NewRun();
        Report(run, Items("c1", 7));

        Report(run, Completed(itemsTotal: 5));

        Assert.Equal(RunStatus.Failed, run.Status);
        Assert.Equal(AnomalyKinds.AccountingMismatch, run.Reason);
    }

    [Fact]
    public void expected_items_disagreeing_with_the_reported_items_total_fails_with_accounting_mismatch()
    {
        // Committed matches the registration, but the worker claims another total: not a success.
        var run = NewRun(expectedItems: 10);
        Report(run, Items("c1", 10));

        Report(run, Completed(itemsTotal: 8));

        Assert.Equal(RunStatus.Failed, run.Status);
        Assert.Equal(AnomalyKinds.AccountingMismatch, run.Reason);
        Assert.Equal([AnomalyKinds.AccountingMismatch], run.Anomalies.Select(a => a.Kind));
    }

    [Fact]
    public void an_under_count_waits_for_the_missing_items()
    {
        var run = NewRun(expectedItems: 10);
        Report(run, Items("c1", 4));

        Report(run, Completed(itemsTotal: 10));

        Assert.Equal(RunStatus.Running, run.Status);
        Assert.Equal(["items:6"], run.Missing());
    }

    // ---- scores are immutable ----------------------------------------------------------------

    [Fact]
    public void the_same_score_again_is_a_duplicate()
    {
        var run = NewRun(scores: ["accuracy"]);
        Report(run, Scores(("accuracy", 0.9)));

        var effect = run.EffectOf(Scores(("accuracy", 0.9)));

        Assert.Equal(EventResultKind.Duplicate, effect.Kind);
        Assert.Equal("scores-already-recorded", effect.Reason);
    }

    [Fact]
    public void a_different_value_for_a_recorded_score_is_refused_409_score_conflict_and_the_value_stays()
    {
        var run = NewRun(scores: ["accuracy", "f1"]);
        Report(run, Scores(("accuracy", 0.9)));

        // Even bundled with a new score, the conflicting one refuses the whole event.
        var conflicting = Scores(("f1", 0.5), ("accuracy", 0.95));
        var effect = run.EffectOf(conflicting);

        Assert.Equal(EventResultKind.Refused, effect.Kind);
        Assert.Equal(409, ProblemCatalogue.Get(effect.Reason!).Status);
        Assert.Equal("score-conflict", effect.Reason);
        run.Fold(conflicting);
        Assert.Equal(0.9, run.Scores["accuracy"]);
        Assert.False(run.Scores.ContainsKey("f1"));
    }

    [Fact]
    public void an_undeclared_score_is_refused_422_unknown_score_when_scores_were_declared()
    {
        var run = NewRun(scores: ["accuracy"]);

        var effect = run.EffectOf(Scores(("recall", 0.4)));

        Assert.Equal(EventResultKind.Refused, effect.Kind);
        Assert.Equal(422, ProblemCatalogue.Get(effect.Reason!).Status);
        Assert.Equal("unknown-score", effect.Reason);
    }

    [Fact]
    public void any_score_name_is_accepted_when_no_scores_were_declared()
    {
        var run = NewRun();

        Assert.Equal(EventResultKind.Applied, Report(run, Scores(("recall", 0.4))).Kind);

        Assert.Equal(0.4, run.Scores["recall"]);
    }

    [Fact]
    public void a_new_value_for_a_recorded_output_is_refused_409_output_conflict()
    {
        var run = NewRun(outputs: ["predictions"]);
        Report(run, Output("predictions", "s3://b/p.csv"));

        Assert.Equal(EventResultKind.Duplicate, run.EffectOf(Output("predictions", "s3://b/p.csv")).Kind);
        var effect = run.EffectOf(Output("predictions", "s3://b/other.csv"));

        Assert.Equal(EventResultKind.Refused, effect.Kind);
        Assert.Equal(409, ProblemCatalogue.Get(effect.Reason!).Status);
        Assert.Equal("output-conflict", effect.Reason);
    }

    // ---- steps ---------------------------------------------------------------------------------

    [Fact]
    public void completing_a_step_that_was_never_started_is_refused_409_unknown_step()
    {
        var run = NewRun();
        Report(run, StepStarted("s1"));

        var unknown = StepCompleted("s9");
        var effect = run.EffectOf(unknown);

        Assert.Equal(EventResultKind.Refused, effect.Kind);
        Assert.Equal(409, ProblemCatalogue.Get(effect.Reason!).Status);
        Assert.Equal("unknown-step", effect.Reason);
        run.Fold(unknown);
        Assert.False(run.Steps.ContainsKey("s9"));
    }

    [Fact]
    public void a_step_started_again_is_recorded_but_not_applied()
    {
        var run = NewRun();
        var first = StepStarted("s1", name: "load");
        Report(run, first);

        var again = StepStarted("s1", name: "other");
        var effect = Report(run, again);

        Assert.Equal(EventResultKind.RecordedNotApplied, effect.Kind);
        Assert.Equal("step-already-started", effect.Reason);
        Assert.Equal("load", run.Steps["s1"].Name);
        Assert.Equal(first.OccurredAt, run.Steps["s1"].StartedAt);
    }

    [Fact]
    public void a_second_completion_keeps_the_first_items_total()
    {
        var run = NewRun();
        Report(run, StepStarted("s1"));
        Report(run, Completed(itemsTotal: 3));

        var effect = Report(run, Completed(itemsTotal: 7));

        Assert.Equal(EventResultKind.RecordedNotApplied, effect.Kind);
        Assert.Equal("completion-already-reported", effect.Reason);
        Assert.Equal(3, run.ItemsTotalReported);
    }

    // ---- terminal is absorbing ---------------------------------------------------------------

    [Fact]
    public void a_failure_report_fails_the_run_with_its_error_class()
    {
        var run = NewRun();
        Report(run, Started());

        var failure = Failed("oom", "out of memory");
        Report(run, failure);

        Assert.Equal(RunStatus.Failed, run.Status);
        Assert.Equal("oom", run.Reason);
        Assert.Equal("out of memory", run.ErrorMessage);
        Assert.Equal(failure.RecordedAt, run.TerminalAt);
    }

    [Fact]
    public void events_after_a_failure_are_recorded_not_applied_and_flagged_late()
    {
        var run = NewRun(scores: ["accuracy"], expectedItems: 5);
        Report(run, Items("c1", 2));
        Report(run, Failed("oom"));
        var terminalAt = run.TerminalAt;

        var lateScore = Scores(("accuracy", 0.99));
        var effect = Report(run, lateScore);

        Assert.Equal(EventResultKind.RecordedNotApplied, effect.Kind);
        Assert.Equal(AnomalyKinds.LateEvent, effect.Reason);
        Assert.Equal(RunStatus.Failed, run.Status);
        Assert.Equal("oom", run.Reason);
        Assert.Empty(run.Scores);
        Assert.Equal(terminalAt, run.TerminalAt);
        var anomaly = Assert.Single(run.Anomalies);
        Assert.Equal(AnomalyKinds.LateEvent, anomaly.Kind);
        Assert.Equal(lateScore.EventId, anomaly.EventId);

        Assert.Equal(EventResultKind.RecordedNotApplied, Report(run, Items("c2", 3)).Kind);
        Assert.Equal(2, run.CommittedItems);
    }

    [Fact]
    public void a_completion_after_a_failure_is_a_late_event_and_the_run_stays_failed()
    {
        var run = NewRun();
        Report(run, Failed("timeout"));

        var effect = Report(run, Completed());

        Assert.Equal(EventResultKind.RecordedNotApplied, effect.Kind);
        Assert.Equal(AnomalyKinds.LateEvent, effect.Reason);
        Assert.Equal(RunStatus.Failed, run.Status);
        Assert.False(run.CompletionReported);
        Assert.Equal(AnomalyKinds.LateEvent, Assert.Single(run.Anomalies).Kind);
    }

    [Fact]
    public void a_failure_after_success_is_a_late_event_and_the_run_stays_succeeded()
    {
        var run = NewRun(scores: ["accuracy"]);
        Report(run, Scores(("accuracy", 0.9)));
        Report(run, Completed());
        Assert.Equal(RunStatus.Succeeded, run.Status);

        var effect = Report(run, Failed("oom"));

        Assert.Equal(EventResultKind.RecordedNotApplied, effect.Kind);
        Assert.Equal(RunStatus.Succeeded, run.Status);
        Assert.Null(run.Reason);
        Assert.Null(run.ErrorClass);
        Assert.Equal(0.9, run.Scores["accuracy"]);
    }

    [Fact]
    public void a_score_conflict_after_terminal_is_late_not_refused_and_the_score_stays()
    {
        var run = NewRun(scores: ["accuracy"]);
        Report(run, Scores(("accuracy", 0.9)));
        Report(run, Completed());

        var effect = Report(run, Scores(("accuracy", 0.1)));

        Assert.Equal(EventResultKind.RecordedNotApplied, effect.Kind);
        Assert.Equal(AnomalyKinds.LateEvent, effect.Reason);
        Assert.Equal(0.9, run.Scores["accuracy"]);
    }

    [Fact]
    public void cancelling_a_live_run_cancels_it()
    {
        var run = NewRun();
        Report(run, Started());

        run.Fold(new RunCancelled(null, T0.AddHours(1)));

        Assert.Equal(RunStatus.Cancelled, run.Status);
        Assert.Equal("cancelled-by-operator", run.Reason);
        Assert.Equal(T0.AddHours(1), run.TerminalAt);
        Assert.Equal(EventResultKind.RecordedNotApplied, Report(run, Completed()).Kind);
        Assert.Equal(RunStatus.Cancelled, run.Status);
    }

    [Fact]
    public void cancel_after_terminal_does_nothing()
    {
        var succeeded = NewRun();
        var completion = Completed();
        Report(succeeded, completion);
        var failed = NewRun();
        var failure = Failed("oom");
        Report(failed, failure);

        foreach (var (run, status, reason, at) in new[]
                 {
                     (succeeded, RunStatus.Succeeded, (string?)null, completion.RecordedAt),
                     (failed, RunStatus.Failed, "oom", failure.RecordedAt),
                 })
        {
            Assert.Equal(status, run.Status);
            var anomalies = run.Anomalies.Count;

            run.Fold(new RunCancelled("too late", T0.AddHours(1)));

            Assert.Equal(status, run.Status);
            Assert.Equal(reason, run.Reason);
            Assert.Equal(at, run.TerminalAt);
            Assert.Equal(anomalies, run.Anomalies.Count);
        }
    }

    [Fact]
    public void a_completion_folded_onto_a_lost_run_is_a_late_completion_and_the_run_never_becomes_succeeded()
    {
        // Seed 001 in the stream itself: whatever the decision let through, lost never turns into succeeded.
        var run = NewRun();
        run.Fold(Started());
        run.Fold(new LeaseExpired(T0.AddSeconds(61), T0.AddSeconds(61.5)));
        Assert.Equal((RunStatus.Lost, "lease-expired"), (run.Status, run.Reason));
        var completion = Completed();

        run.Fold(completion);
        run.Fold(new RunReclassified(RunStatus.Lost, "lease-expired", RunStatus.Succeeded, "it finished after all", ["log"], "ops", T0.AddHours(1)));

        Assert.Equal((RunStatus.Lost, "lease-expired"), (run.Status, run.Reason));
        Assert.False(run.CompletionReported);
        Assert.Equal((AnomalyKinds.LateCompletion, completion.EventId), (run.Anomalies[^1].Kind, run.Anomalies[^1].EventId));
        Assert.Equal([RunStatus.Lost], run.Verdicts.Select(v => v.Status));
    }

    // ---- only an operator changes a verdict, and never to an incomplete success ------------------

    [Fact]
    public void a_reclassification_to_succeeded_in_the_stream_is_ignored_when_the_run_lacks_its_results_or_balance()
    {
        // The decision refuses these; a stream holding one anyway must not fold to an incomplete success.
        var lost = NewRun(scores: ["accuracy"]);
        Report(lost, Started());
        lost.Fold(new LeaseExpired(T0.AddSeconds(61), T0.AddMinutes(2)));
        var overCounted = NewRun();
        Report(overCounted, Completed(itemsTotal: 10));
        Report(overCounted, Items("c1", 13));

        foreach (var (run, status) in new[] { (lost, RunStatus.Lost), (overCounted, RunStatus.Failed) })
        {
            Assert.Equal(status, run.Status);
            var reclassified = new RunReclassified(status, run.Reason, RunStatus.Succeeded, "review", ["evidence"], "ops", T0.AddHours(1));

            var effect = run.EffectOf(reclassified);
            Assert.Equal((EventResultKind.Refused, ProblemCodes.IncompleteResults), (effect.Kind, effect.Reason));
            run.Fold(reclassified);

            Assert.Equal(status, run.Status);
            Assert.Single(run.Verdicts);
        }
    }

    [Fact]
    public void a_reclassification_of_a_terminal_run_to_another_status_is_applied_and_keeps_the_earlier_verdict()
    {
        var run = NewRun(scores: ["accuracy"]);
        Report(run, Started());
        run.Fold(new LeaseExpired(T0.AddSeconds(61), T0.AddMinutes(2)));
        var reclassified = new RunReclassified(RunStatus.Lost, "lease-expired", RunStatus.Failed, "crashed", ["ticket-1"], "ops", T0.AddHours(1));

        Assert.Equal(EventEffect.Applied, run.EffectOf(reclassified));
        run.Fold(reclassified);

        Assert.Equal((RunStatus.Failed, "crashed", T0.AddHours(1)), (run.Status, run.Reason, run.TerminalAt));
        Assert.Equal(["ledger", "operator:ops"], run.Verdicts.Select(v => v.DecidedBy));
    }

    // ---- outcome detail and other systems' views ----------------------------------------------

    [Fact]
    public void an_empty_output_is_a_warning_and_the_run_still_succeeds()
    {
        var run = NewRun(outputs: ["answer"]);
        Report(run, Output("answer", "s3://answers/1.txt", bytes: 0));

        Report(run, Completed());

        Assert.Equal(RunStatus.Succeeded, run.Status);
        Assert.Null(run.Reason);
        Assert.Equal([WarningKinds.EmptyOutput], run.Warnings);
    }

    [Fact]
    public void an_observation_is_recorded_and_never_changes_the_status()
    {
        var run = NewRun();
        Report(run, Started());

        run.Fold(Observed("modal", RunStatus.Succeeded));

        Assert.Equal(RunStatus.Running, run.Status);
        Assert.Null(run.TerminalAt);
        Assert.Empty(run.Verdicts);
        var observation = Assert.Single(run.Observations);
        Assert.Equal(("modal", RunStatus.Succeeded), (observation.Source, observation.Status));
        Assert.Empty(run.Anomalies); // no verdict yet, nothing to disagree with
    }

    [Fact]
    public void an_observation_that_disagrees_with_the_verdict_is_flagged_with_both_sides()
    {
        var run = NewRun(outputs: ["answer"]);
        Report(run, Output("answer", "s3://answers/1.txt", bytes: 0));
        Report(run, Completed());
        var observed = Observed("portal", RunStatus.Failed, "EMPTY_MODEL_RESPONSE");

        run.Fold(observed);

        Assert.Equal(RunStatus.Succeeded, run.Status);
        var anomaly = Assert.Single(run.Anomalies);
        Assert.Equal(AnomalyKinds.StatusMismatch, anomaly.Kind);
        Assert.Equal(new StatusMismatch(RunStatus.Succeeded, RunStatus.Failed, "portal", observed.ObservedAt), anomaly.Mismatch);
        Assert.Contains("EMPTY_MODEL_RESPONSE", anomaly.Detail);
    }

    [Fact]
    public void an_observation_made_before_the_verdict_is_compared_when_the_verdict_is_reached()
    {
        var run = NewRun();
        run.Fold(Observed("modal", RunStatus.Succeeded));
        run.Fold(Observed("portal", RunStatus.Failed));
        Assert.Empty(run.Anomalies);

        var failure = Failed("provider", "empty response");
        Report(run, failure);

        Assert.Equal(RunStatus.Failed, run.Status);
        var anomaly = Assert.Single(run.Anomalies);
        Assert.Equal(new StatusMismatch(RunStatus.Failed, RunStatus.Succeeded, "modal", run.Observations[0].ObservedAt), anomaly.Mismatch);
        Assert.Equal(failure.RecordedAt, anomaly.At);
    }

    [Fact]
    public void only_a_sources_latest_view_is_compared_with_a_verdict()
    {
        var run = NewRun();
        run.Fold(Observed("modal", RunStatus.Failed));
        run.Fold(Observed("modal", RunStatus.Succeeded)); // the executor corrected itself before the ledger decided
        Report(run, Completed());

        Assert.Equal(RunStatus.Succeeded, run.Status);
        Assert.Empty(run.Anomalies);
        Assert.Equal(2, run.Observations.Count);
    }

    [Fact]
    public void an_agreeing_or_non_terminal_observation_is_not_a_mismatch()
    {
        var run = NewRun();
        Report(run, Completed());

        run.Fold(Observed("modal", RunStatus.Succeeded));
        run.Fold(Observed("portal", RunStatus.Running));

        Assert.Empty(run.Anomalies);
    }

    [Fact]
    public void a_repeated_observation_is_a_duplicate_and_is_not_recorded_twice()
    {
        var run = NewRun();
        Report(run, Completed());
        var observed = Observed("portal", RunStatus.Failed);
        run.Fold(observed);

        Assert.Equal(EventResultKind.Duplicate, run.EffectOf(observed).Kind);
        var again = Observed("portal", RunStatus.Failed);
        Assert.Equal(new EventEffect(EventResultKind.Duplicate, "observation-unchanged"), run.EffectOf(again));
        run.Fold(observed);
        run.Fold(again);

        Assert.Single(run.Observations);
        Assert.Single(run.Anomalies);
    }

    [Fact]
    public void a_reclassification_is_compared_with_the_observations_too()
    {
        var run = NewRun();
        run.Fold(Observed("modal", RunStatus.Succeeded));
        Report(run, Failed("provider"));
        Assert.Single(run.Anomalies);

        run.Fold(new RunReclassified(RunStatus.Failed, "provider", RunStatus.Lost, "worker vanished", ["ticket-1"], "ops", T0.AddHours(1)));

        Assert.Equal(RunStatus.Lost, run.Status);
        Assert.Equal(2, run.Anomalies.Count);
        Assert.Equal(RunStatus.Lost, run.Anomalies[1].Mismatch!.Ledger);
    }

    // ---- helpers -----------------------------------------------------------------------------

    /// <summary>Reports an event as the endpoint does: refused and duplicate events are never appended.</summary>
    private static EventEffect Report(Run run, WorkerEvent e)
    {
        var effect = run.EffectOf(e);
        if (effect.Kind is not (EventResultKind.Refused or EventResultKind.Duplicate)) run.Fold(e);
        return effect;
    }

    /// <summary>Everything a run registered with score accuracy, output predictions and 10 items needs, but its completion.</summary>
    private WorkerEvent[] FullResults() =>
    [
        Started(),
        StepStarted("s1"),
        Items("c1", 6),
        Items("c2", 4),
        Scores(("accuracy", 0.93)),
        Output("predictions", "s3://bucket/predictions.csv"),
        StepCompleted("s1"),
    ];

    private static RunRegistered Registered(string[]? scores = null, string[]? outputs = null, long? expectedItems = null,
        int leaseSeconds = 60) =>
        TestEvents.Registered("run-1", T0, leaseSeconds, scores, outputs, expectedItems, board: "board", participant: "team-a");

    private static RunClaimed Claim() => new("worker-1", DeciderKit.TokenHash, T0.AddSeconds(1), T0.AddSeconds(61));

    private static Run NewRun(string[]? scores = null, string[]? outputs = null, long? expectedItems = null,
        int leaseSeconds = 60)
    {
        var run = Run.Create(Registered(scores, outputs, expectedItems, leaseSeconds));
        run.Fold(Claim());
        return run;
    }

    private StatusObserved Observed(string source, RunStatus status, string? detail = null)
    {
        var (_, occurred, recorded) = Next();
        return new StatusObserved(source, status, occurred, detail, recorded);
    }
}
