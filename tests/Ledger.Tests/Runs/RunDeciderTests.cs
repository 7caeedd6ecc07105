using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Runs;
using Ledger.Tests.Fixtures;

namespace Ledger.Tests.Runs;

/// <summary>
/// Example tests of the decide half of the run, <see cref="RunDecider.Decide"/>: for each command
/// and each refusal, what is appended and what is answered, from a state, a command and a time
/// alone (no database, no HTTP, no clock). States are built by deciding (<see cref="DecidedStream"/>,
/// which also checks on every decision that the state given is left unchanged, that a refusal
/// appends nothing and that the version counts the appended events).
/// </summary>
public sealed class RunDeciderTests() : WorkerEventSequence(T0)
{
    private const string RunId = "run-1";
    private const int LeaseSeconds = 60;
    private static readonly DateTimeOffset T0 = new(2025, 3, 1, 12, 0, 0, TimeSpan.Zero);
    private static readonly DateTimeOffset ClaimedAt = T0.AddSeconds(1);
    private static readonly DateTimeOffset LeaseEnds = ClaimedAt.AddSeconds(LeaseSeconds);
    /// <summary>A time well within the claim's lease.</summary>
    private static readonly DateTimeOffset Now = T0.AddSeconds(30);

    // ---- recording events -------------------------------------------------------------------

    [Fact]
    public void an_event_on_a_live_run_is_appended_stamped_with_now_and_answered_applied()
    {
        var stream = Stream(Claimed());
        var started = Started();

        var decision = stream.Decide(Events(started), Now);

        Assert.Equal([started with { RecordedAt = Now }], decision.Events);
        var answer = Assert.IsType<EventsRecorded>(decision.Answer);
        Assert.Equal(RunStatus.Running, answer.Status);
        Assert.Equal([new EventResult(started.EventId, EventResultKind.Applied)], answer.Results);
        Assert.Equal(RunStatus.Running, decision.After!.Status);
        Assert.Equal(Now, decision.After.StartedAt);
        Assert.Equal(3, decision.After.Version);
    }

    [Fact]
    public void an_event_id_the_run_already_recorded_is_a_duplicate_whatever_it_carries_and_appends_nothing()
    {
        var stream = Stream(Claimed(expectedItems: 10));
        var first = Items("c1", 4);
        stream.Decide(Events(first), Now);

        var sameId = Items("c2", 3, eventId: first.EventId);
        var decision = stream.Decide(Events(sameId), Now.AddSeconds(1));

        Assert.Empty(decision.Events);
        var result = Assert.Single(Assert.IsType<EventsRecorded>(decision.Answer).Results);
        Assert.Equal((EventResultKind.Duplicate, "event-id-seen"), (result.Result, result.Reason));
        Assert.Equal(4, decision.After!.CommittedItems);
        Assert.Equal(1, decision.After.CommittedChunks);
    }

    [Fact]
    public void a_recorded_event_id_is_known_from_the_recorded_keys_not_from_the_state()
    {
        // The state keeps no eventIds: the writer looks them up, and the decision trusts what it was given.
        var run = Claimed();
        var log = Log("x");

        var known = RunDecider.Decide(run, Events(log) with { Recorded = Keys(eventIds: [log.EventId]) }, Now);
        var unknown = RunDecider.Decide(run, Events(log) with { Recorded = RecordedKeys.None }, Now);

        Assert.Empty(known.Events);
        Assert.Equal(EventResultKind.Duplicate, Assert.Single(DeciderKit.ResultsOf(known)!).Result);
        Assert.Single(unknown.Events);
        Assert.Equal(EventResultKind.Applied, Assert.Single(DeciderKit.ResultsOf(unknown)!).Result);
    }

    [Fact]
    public void an_event_id_repeated_within_one_request_is_appended_once()
    {
        var stream = Stream(Claimed(expectedItems: 10));
        var first = Items("c1", 4);
        var again = Items("c2", 3, eventId: first.EventId);

        var decision = stream.Decide(Events(first, again), Now);

        Assert.Equal([first.EventId], decision.Events.OfType<WorkerEvent>().Select(e => e.EventId));
        Assert.Equal(
            [(first.EventId, EventResultKind.Applied, (string?)null), (first.EventId, EventResultKind.Duplicate, "event-id-seen")],
            DeciderKit.ResultsOf(decision)!.Select(r => (r.EventId, r.Result, r.Reason)));
        Assert.Equal(4, decision.After!.CommittedItems);
    }

    [Fact]
    public void a_chunk_committed_again_with_the_same_count_is_a_duplicate_and_does_not_inflate_the_count()
    {
        var stream = Stream(Claimed(expectedItems: 10));
        stream.Decide(Events(Items("c1", 4)), Now);

        // Under a new eventId, in a later request (known from the recorded keys) and twice within one request.
        var later = stream.Decide(Events(Items("c1", 4)), Now.AddSeconds(1));
        var within = stream.Decide(Events(Items("c2", 2), Items("c2", 2)), Now.AddSeconds(2));

        Assert.Empty(later.Events);
        var result = Assert.Single(DeciderKit.ResultsOf(later)!);
        Assert.Equal((EventResultKind.Duplicate, "chunk-already-committed"), (result.Result, result.Reason));
        Assert.Single(within.Events);
        Assert.Equal([EventResultKind.Applied, EventResultKind.Duplicate], DeciderKit.ResultsOf(within)!.Select(r => r.Result));
        Assert.Equal(6, stream.State!.CommittedItems);
        Assert.Equal(2, stream.State.CommittedChunks);
    }

    [Fact]
    public void a_chunk_committed_again_with_another_count_is_refused_409_chunk_conflict_and_nothing_is_appended()
    {
        var stream = Stream(Claimed(expectedItems: 10));
        stream.Decide(Events(Items("c1", 4)), Now);

        var conflicting = Items("c1", 5);
        var later = stream.Decide(Events(conflicting), Now.AddSeconds(1));
        var withinFirst = Items("c2", 1);
        var withinSecond = Items("c2", 2);
        var within = stream.Decide(Events(withinFirst, withinSecond), Now.AddSeconds(2));

        Assert.Equal(ProblemCodes.ChunkConflict, later.Refusal?.Code);
        Assert.Equal(409, ProblemCatalogue.Get(later.Refusal!.Code).Status);
        Assert.Equal(conflicting.EventId, later.Refusal.EventId);
        Assert.Contains("4", later.Refusal.Detail);
        Assert.Equal(ProblemCodes.ChunkConflict, within.Refusal?.Code);
        Assert.Equal(withinSecond.EventId, within.Refusal!.EventId);
        Assert.Empty(later.Events);
        Assert.Empty(within.Events);
        Assert.Equal(4, stream.State!.CommittedItems);
    }

    [Fact]
    public void completing_a_step_never_started_is_refused_409_unknown_step()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(StepStarted("s1")), Now);

        var ghost = StepCompleted("s2");
        var decision = stream.Decide(Events(ghost), Now);

        Assert.Equal(ProblemCodes.UnknownStep, decision.Refusal?.Code);
        Assert.Equal(409, ProblemCatalogue.Get(ProblemCodes.UnknownStep).Status);
        Assert.Equal(ghost.EventId, decision.Refusal!.EventId);
        Assert.Equal(RunStatus.Running, decision.Refusal.RunStatus);
        Assert.Empty(decision.Events);
    }

    [Fact]
    public void a_different_value_for_a_recorded_score_is_refused_409_score_conflict_and_the_same_value_is_a_duplicate()
    {
        var stream = Stream(Claimed(scores: ["accuracy", "f1"]));
        stream.Decide(Events(Scores(("accuracy", 0.9))), Now);

        var conflict = stream.Decide(Events(Scores(("accuracy", 0.8), ("f1", 0.5))), Now);
        var same = stream.Decide(Events(Scores(("accuracy", 0.9))), Now);

        Assert.Equal(ProblemCodes.ScoreConflict, conflict.Refusal?.Code);
        Assert.Empty(conflict.Events);
        Assert.False(stream.State!.Scores.ContainsKey("f1"));
        Assert.Equal(0.9, stream.State.Scores["accuracy"]);
        Assert.Empty(same.Events);
        Assert.Equal("scores-already-recorded", Assert.Single(DeciderKit.ResultsOf(same)!).Reason);
    }

    [Fact]
    public void a_score_the_run_does_not_declare_is_refused_422_unknown_score()
    {
        var stream = Stream(Claimed(scores: ["accuracy"]));

        var decision = stream.Decide(Events(Scores(("bleu", 0.3))), Now);

        Assert.Equal(ProblemCodes.UnknownScore, decision.Refusal?.Code);
        Assert.Equal(422, ProblemCatalogue.Get(ProblemCodes.UnknownScore).Status);
        Assert.Contains("accuracy", decision.Refusal!.Detail);
        Assert.Empty(decision.Events);
    }

    [Fact]
    public void an_output_recorded_again_with_another_uri_is_refused_409_output_conflict_and_the_same_one_is_a_duplicate()
    {
        var stream = Stream(Claimed(outputs: ["predictions"]));
        stream.Decide(Events(Output("predictions", "s3://b/one.csv")), Now);

        var other = stream.Decide(Events(Output("predictions", "s3://b/two.csv")), Now);
        var same = stream.Decide(Events(Output("predictions", "s3://b/one.csv")), Now);

        Assert.Equal(ProblemCodes.OutputConflict, other.Refusal?.Code);
        Assert.Empty(other.Events);
        Assert.Equal("s3://b/one.csv", stream.State!.Outputs["predictions"].Uri);
        Assert.Empty(same.Events);
        Assert.Equal("output-already-recorded", Assert.Single(DeciderKit.ResultsOf(same)!).Reason);
    }

    /// <summary>
    /// Each refusal rule of <see cref="RunRules"/> as given (the run's events) / when (one more) / then
    /// (the refusal): the decider refuses it, and a stream that holds it all the same (appended past
    /// the decider) folds to the state it had without it.
    /// </summary>
    [Theory]
    [InlineData(ProblemCodes.UnknownStep)]
    [InlineData(ProblemCodes.ScoreConflict)]
    [InlineData(ProblemCodes.UnknownScore)]
    [InlineData(ProblemCodes.OutputConflict)]
    public void a_refusal_rule_refuses_in_the_decider_and_the_fold_does_not_apply_the_event(string rule)
    {
        var (given, sent, then) = rule switch
        {
            //                                given                                                                    when                                          then
            ProblemCodes.UnknownStep    => (Given(Claimed(), StepStarted("s1")),                                      (WorkerEvent)StepCompleted("s2"),             ProblemCodes.UnknownStep),
            ProblemCodes.ScoreConflict  => (Given(Claimed(scores: ["accuracy"]), Scores(("accuracy", 0.9))),           Scores(("accuracy", 0.8)),                    ProblemCodes.ScoreConflict),
            ProblemCodes.UnknownScore   => (Given(Claimed(scores: ["accuracy"])),                                       Scores(("bleu", 0.3)),                        ProblemCodes.UnknownScore),
            ProblemCodes.OutputConflict => (Given(Claimed(), Output("predictions", "s3://b/one.csv")),                  Output("predictions", "s3://b/two.csv"),      ProblemCodes.OutputConflict),
            _ => throw new ArgumentOutOfRangeException(nameof(rule)),
        };

        var later = Now.AddSeconds(1);
        var decision = given.Decide(Events(sent), later);
        Assert.Equal(then, decision.Refusal?.Code);
        Assert.Empty(decision.Events);

        var folded = given.State!.Clone();
        folded.Fold(sent with { RecordedAt = later });
        Assert.Equal(DeciderKit.Json(given.State), DeciderKit.Json(folded));
        Assert.Equal((EventResultKind.Refused, then), (given.State.EffectOf(sent).Kind, given.State.EffectOf(sent).Reason));
    }

    [Fact]
    public void a_late_event_on_a_terminal_run_is_recorded_flagged_and_answered_run_terminal_with_its_results()
    {
        var stream = Stream(Claimed(scores: ["accuracy"]));
        stream.Decide(Events(Failed("oom")), Now);
        var late = Scores(("accuracy", 0.99));

        var decision = stream.Decide(Events(late), Now.AddSeconds(5));

        Assert.Equal([late with { RecordedAt = Now.AddSeconds(5) }], decision.Events);
        var answer = Assert.IsType<Outcome.Late>(decision.Outcome);
        Assert.Equal(ProblemCodes.RunTerminal, answer.Stop.Code);
        Assert.Equal(RunStatus.Failed, answer.Stop.RunStatus);
        Assert.StartsWith("The run is over (failed: oom); nothing can change it.", answer.Stop.Detail);
        var result = Assert.Single(answer.Results);
        Assert.Equal((late.EventId, EventResultKind.RecordedNotApplied, AnomalyKinds.LateEvent), (result.EventId, result.Result, result.Reason));
        Assert.Equal(RunStatus.Failed, decision.After!.Status);
        Assert.Empty(decision.After.Scores);
        var anomaly = Assert.Single(decision.After.Anomalies);
        Assert.Equal((AnomalyKinds.LateEvent, late.EventId), (anomaly.Kind, anomaly.EventId));
    }

    [Fact]
    public void a_completion_after_lost_within_the_grace_is_recorded_as_a_late_completion_and_the_run_stays_lost()
    {
        // Seed 001: the lease ran out, the janitor marked the run lost, and the worker that should have
        // died sends its completion later, with its expired token (within the hour's grace: recorded).
        var stream = Stream(Claimed());
        stream.Decide(Events(Started()), Now);
        stream.Decide(new ExpireLeaseCommand(RunId, TimeSpan.Zero), LeaseEnds);
        Assert.Equal(RunStatus.Lost, stream.State!.Status);
        var completion = Completed();

        var decision = stream.Decide(Events(completion), LeaseEnds + LateEventPolicy.Default.Grace - TimeSpan.FromSeconds(1));

        Assert.Equal(ProblemCodes.RunTerminal, decision.Late?.Stop.Code);
        Assert.Equal(AnomalyKinds.LateCompletion, Assert.Single(decision.Late!.Results).Reason);
        Assert.Equal([typeof(RunCompleted)], decision.Events.Select(e => e.GetType()));
        Assert.Equal(RunStatus.Lost, decision.After!.Status);
        Assert.False(decision.After.CompletionReported);
        Assert.Equal(AnomalyKinds.LateCompletion, decision.After.Anomalies[^1].Kind);
    }

    // ---- late events: the grace after the verdict and the cap per run -----------------------------

    [Fact]
    public void late_events_are_recorded_until_the_grace_after_the_verdict_and_refused_run_terminal_from_then_on()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Failed("oom")), Now);
        var grace = TimeSpan.FromMinutes(10);
        var within = stream.Decide(Events(Log("just in time")) with { Late = Policy(grace) }, Now + grace - TimeSpan.FromTicks(1));

        var after = stream.Decide(Events(Log("too late")) with { Late = Policy(grace) }, Now + grace);

        Assert.Single(within.Events);
        Assert.Equal(ProblemCodes.RunTerminal, within.Late?.Stop.Code);
        Assert.Null(within.Refusal);
        Assert.Empty(after.Events);
        Assert.Equal(ProblemCodes.RunTerminal, after.Refusal?.Code);
        // Nothing recorded: a refusal, which the edge keeps in the rejection log.
        Assert.Null(after.Late);
        Assert.Null(after.Refusal!.Flag);
        Assert.StartsWith("The run is over (failed: oom) since ", after.Refusal.Detail);
        Assert.Equal(RunStatus.Failed, after.Refusal.RunStatus);
    }

    [Fact]
    public void the_grace_runs_from_the_latest_verdict_a_reclassification_included()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Failed("oom")), Now);
        var grace = TimeSpan.FromMinutes(10);
        stream.Decide(Reclassify(RunStatus.Lost), Now.AddMinutes(8));

        var decision = stream.Decide(Events(Log("x")) with { Late = Policy(grace) }, Now.AddMinutes(15));

        Assert.Single(decision.Events);
    }

    [Fact]
    public void a_completion_of_a_lost_run_after_the_grace_is_refused_but_flagged_late_completion()
    {
        var stream = Stream(Claimed());
        stream.Decide(new ExpireLeaseCommand(RunId, TimeSpan.Zero), LeaseEnds);
        var recorded = Completed();
        stream.Decide(Events(recorded), LeaseEnds.AddMinutes(1));
        var later = LeaseEnds.AddHours(2);

        var ghost = stream.Decide(Events(Completed()), later);
        var retryOfTheRecordedOne = stream.Decide(Events(recorded), later);
        var notACompletion = stream.Decide(Events(Log("x")), later);

        Assert.Empty(ghost.Events);
        Assert.Equal((ProblemCodes.RunTerminal, AnomalyKinds.LateCompletion), (ghost.Refusal?.Code, ghost.Refusal?.Flag));
        Assert.Null(ghost.Late);
        Assert.Equal(RunStatus.Lost, ghost.After!.Status);
        // A late completion already recorded (and flagged) is not flagged again; other events flag nothing.
        Assert.Equal((ProblemCodes.RunTerminal, (string?)null), (retryOfTheRecordedOne.Refusal?.Code, retryOfTheRecordedOne.Refusal?.Flag));
        Assert.Null(notACompletion.Refusal!.Flag);
        // Of a run that is not lost, a completion is an ordinary late event: no ghost.
        var failed = Stream(Claimed());
        failed.Decide(Events(Failed("oom")), Now);
        Assert.Null(failed.Decide(Events(Completed()), Now.AddHours(2)).Refusal!.Flag);
    }

    [Fact]
    public void beyond_the_cap_late_events_are_counted_not_recorded_and_one_anomaly_stands_for_them()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Failed("oom")), Now);
        var cap = Policy(TimeSpan.FromHours(1), maxPerRun: 2);
        var (first, second, third) = (Log("1"), Log("2"), Log("3"));

        var filling = stream.Decide(Events(first, second, third) with { Late = cap }, Now.AddSeconds(1));

        Assert.Equal([first.EventId, second.EventId], filling.Events.OfType<WorkerEvent>().Select(e => e.EventId));
        var capped = Assert.IsType<LateEventsCapped>(filling.Events[^1]);
        Assert.Equal((2, Now.AddSeconds(1)), (capped.Cap, capped.At));
        Assert.Equal(1, filling.LateEventsBeyondCap);
        Assert.Equal(
            [EventResultKind.RecordedNotApplied, EventResultKind.RecordedNotApplied, EventResultKind.Refused],
            filling.Late!.Results.Select(r => r.Result));
        Assert.Equal(RunDecider.LateEventsCappedReason, filling.Late.Results[2].Reason);
        Assert.Equal(2, filling.After!.LateEvents);
        Assert.Equal(3, filling.After.Anomalies.Count);
        var anomaly = filling.After.Anomalies[filling.After.LateEventsCapAnomaly!.Value];
        Assert.Equal((AnomalyKinds.LateEvent, (string?)null), (anomaly.Kind, anomaly.EventId));

        // Later ones: nothing appended, no new anomaly, only counted (a repeat within the request once).
        var (fourth, fifth) = (Log("4"), Log("5"));
        var beyond = stream.Decide(Events(fourth, fifth, fifth) with { Late = cap }, Now.AddSeconds(2));

        Assert.Empty(beyond.Events);
        Assert.Equal(2, beyond.LateEventsBeyondCap);
        Assert.Equal(ProblemCodes.RunTerminal, beyond.Late?.Stop.Code);
        Assert.Equal([EventResultKind.Refused, EventResultKind.Refused, EventResultKind.Duplicate], beyond.Late!.Results.Select(r => r.Result));
        Assert.Null(beyond.Late.Stop.Flag);
        Assert.Equal(3, beyond.After!.Anomalies.Count);
        // What was recorded before the cap is still a duplicate, not counted.
        var retry = stream.Decide(Events(first) with { Late = cap }, Now.AddSeconds(3));
        Assert.Equal(0, retry.LateEventsBeyondCap);
        Assert.IsType<EventsRecorded>(retry.Answer);
    }

    [Fact]
    public void a_late_completion_of_a_lost_run_beyond_the_cap_is_counted_and_still_flagged()
    {
        var stream = Stream(Claimed());
        stream.Decide(new ExpireLeaseCommand(RunId, TimeSpan.Zero), LeaseEnds);

        var decision = stream.Decide(Events(Completed()) with { Late = Policy(TimeSpan.FromHours(1), maxPerRun: 0) }, LeaseEnds.AddMinutes(1));

        Assert.Equal([typeof(LateEventsCapped)], decision.Events.Select(e => e.GetType()));
        Assert.Equal(1, decision.LateEventsBeyondCap);
        Assert.Equal(AnomalyKinds.LateCompletion, decision.Late?.Stop.Flag);
        Assert.Equal(RunStatus.Lost, decision.After!.Status);
        Assert.False(decision.After.CompletionReported);
    }

    [Fact]
    public void a_repeated_event_id_after_terminal_is_still_a_duplicate_and_adds_no_anomaly()
    {
        var stream = Stream(Claimed());
        var failure = Failed("oom");
        stream.Decide(Events(failure), Now);

        var decision = stream.Decide(Events(failure), Now.AddSeconds(1));

        Assert.Empty(decision.Events);
        // Nothing recorded: the retry is answered as the first was, not as a late event.
        var answer = Assert.IsType<EventsRecorded>(decision.Answer);
        Assert.Equal(RunStatus.Failed, answer.Status);
        Assert.Equal((EventResultKind.Duplicate, "event-id-seen"), (answer.Results[0].Result, answer.Results[0].Reason));
        Assert.Empty(decision.After!.Anomalies);
    }

    [Fact]
    public void events_with_the_token_of_another_lease_are_refused_lease_lost_live_or_terminal()
    {
        var live = Claimed();
        var terminal = Stream(Claimed());
        terminal.Decide(Events(Failed("oom")), Now);

        foreach (var run in new[] { live, terminal.State! })
        {
            var decision = RunDecider.Decide(run, new RecordEventsCommand(RunId, DeciderKit.OtherTokenHash, [Log("x")]), Now);

            Assert.Equal(ProblemCodes.LeaseLost, decision.Refusal?.Code);
            Assert.Equal(run.Status, decision.Refusal!.RunStatus);
            Assert.Empty(decision.Events);
        }
    }

    [Fact]
    public void events_at_or_after_the_lease_expiry_are_refused_lease_expired_and_just_before_are_taken()
    {
        var run = Claimed();
        var log = Log("x");

        var before = RunDecider.Decide(run, Events(log), LeaseEnds.AddTicks(-1));
        var at = RunDecider.Decide(run, Events(log), LeaseEnds);
        var after = RunDecider.Decide(run, Events(log), LeaseEnds.AddMinutes(5));

        Assert.Null(before.Refusal);
        Assert.Single(before.Events);
        foreach (var refused in new[] { at, after })
        {
            Assert.Equal(ProblemCodes.LeaseExpired, refused.Refusal?.Code);
            Assert.Empty(refused.Events);
        }
    }

    [Fact]
    public void a_heartbeat_extends_the_lease_from_when_it_was_recorded()
    {
        var stream = Stream(Claimed());
        var heartbeatAt = LeaseEnds.AddSeconds(-10);
        stream.Decide(Events(Heartbeat()), heartbeatAt);
        Assert.Equal(heartbeatAt.AddSeconds(LeaseSeconds), stream.State!.LeaseExpiresAt);

        var taken = stream.Decide(Events(Log("x")), LeaseEnds.AddSeconds(30));
        var refused = stream.Decide(Events(Log("y")), heartbeatAt.AddSeconds(LeaseSeconds));

        Assert.Null(taken.Refusal);
        Assert.Equal(ProblemCodes.LeaseExpired, refused.Refusal?.Code);
    }

    [Fact]
    public void every_command_on_a_run_that_does_not_exist_is_refused_run_not_found_but_the_janitors()
    {
        RunCommand[] commands =
        [
            Events(Log("x")), Claim(), new CancelCommand(RunId, null), Reclassify(RunStatus.Failed),
            new ObserveCommand(RunId, "modal", RunStatus.Running, Now, null),
        ];
        foreach (var command in commands)
        {
            var decision = RunDecider.Decide(null, command, Now);

            Assert.Equal(ProblemCodes.RunNotFound, decision.Refusal?.Code);
            Assert.Contains(RunId, decision.Refusal!.Detail);
            Assert.Empty(decision.Events);
            Assert.Null(decision.After);
        }

        var janitor = RunDecider.Decide(null, new ExpireLeaseCommand(RunId, TimeSpan.Zero), Now);
        Assert.Equal(new LeaseExpiryOutcome(null), janitor.Answer);
        Assert.Empty(janitor.Events);
    }

    [Fact]
    public void when_one_event_of_a_request_is_refused_none_is_appended_and_the_refusal_names_it()
    {
        var stream = Stream(Claimed(expectedItems: 10));
        var state = DeciderKit.Json(stream.State);
        var ghost = StepCompleted("never-started");

        var decision = stream.Decide(Events(Started(), Items("c1", 4), ghost, Completed()), Now);

        Assert.Empty(decision.Events);
        Assert.Equal(ProblemCodes.UnknownStep, decision.Refusal?.Code);
        Assert.Equal(ghost.EventId, decision.Refusal!.EventId);
        Assert.Contains("No event of this request was recorded.", decision.Refusal.Detail);
        Assert.Equal(RunStatus.Claimed, decision.Refusal.RunStatus);
        Assert.Equal(state, DeciderKit.Json(stream.State));
    }

    [Fact]
    public void a_refusal_of_a_single_event_says_nothing_about_other_events()
    {
        var decision = RunDecider.Decide(Claimed(), Events(StepCompleted("never-started")), Now);

        Assert.DoesNotContain("No event of this request", decision.Refusal!.Detail);
    }

    [Fact]
    public void a_request_that_ends_the_run_appends_the_verdict_after_all_its_events()
    {
        var stream = Stream(Claimed(scores: ["accuracy"], board: "board-1"));
        var score = Scores(("accuracy", 0.9));
        var completion = Completed();
        var late = Log("after the end");

        var decision = stream.Decide(Events(score, completion, late), Now);

        Assert.Equal([typeof(ScoresReported), typeof(RunCompleted), typeof(LogWritten), typeof(VerdictReached)],
            decision.Events.Select(e => e.GetType()));
        var verdict = (VerdictReached)decision.Events[^1];
        Assert.Equal((RunId, RunStatus.Succeeded, (string?)null, "board-1", "team-a", Now, "ledger"),
            (verdict.RunId, verdict.Status, verdict.Reason, verdict.Board, verdict.Participant, verdict.At, verdict.DecidedBy));
        Assert.Equal(0.9, verdict.Scores["accuracy"]);
        // Answered as accepted: the run was live when the request came; the late log is flagged in its result.
        var answer = Assert.IsType<EventsRecorded>(decision.Answer);
        Assert.Equal(RunStatus.Succeeded, answer.Status);
        Assert.Equal(AnomalyKinds.LateEvent, answer.Results[2].Reason);
        Assert.Equal(6, decision.After!.Version);
    }

    [Fact]
    public void a_request_that_does_not_end_the_run_publishes_no_verdict()
    {
        var stream = Stream(Claimed(scores: ["accuracy"]));

        var decision = stream.Decide(Events(Started(), Completed()), Now);

        Assert.Equal(RunStatus.Running, decision.After!.Status);
        Assert.DoesNotContain(decision.Events, e => e is VerdictReached);
    }

    // ---- claiming -----------------------------------------------------------------------------

    [Fact]
    public void claiming_a_registered_run_grants_a_new_lease_keeping_only_the_tokens_digest()
    {
        var run = Registered(scores: ["accuracy"], outputs: ["predictions"], expectedItems: 7);

        var decision = RunDecider.Decide(run, Claim(worker: "worker-9", freshToken: "lt_fresh"), Now);

        var claimed = Assert.IsType<RunClaimed>(Assert.Single(decision.Events));
        Assert.Equal(new RunClaimed("worker-9", Access.DigestHex("lt_fresh"), Now, Now.AddSeconds(LeaseSeconds)), claimed);
        var granted = Assert.IsType<LeaseGranted>(decision.Answer);
        Assert.Equal((RunId, "lt_fresh", Now.AddSeconds(LeaseSeconds), 7L), (granted.RunId, granted.LeaseToken, granted.LeaseExpiresAt, granted.ExpectedItems));
        Assert.Equal(["accuracy"], granted.RequiredScores);
        Assert.Equal(["predictions"], granted.RequiredOutputs);
        Assert.Equal(RunStatus.Claimed, decision.After!.Status);
        Assert.Equal(1, decision.After.Claims);
        Assert.DoesNotContain("lt_fresh", DeciderKit.Json(decision.Events.ToList()));
    }

    [Fact]
    public void the_same_claim_id_again_while_the_lease_is_live_is_answered_with_the_same_token_and_appends_nothing()
    {
        var stream = Stream(Registered());
        var first = stream.Decide(Claim(claimId: "claim-1", freshNonce: "nonce-1"), Now);
        var granted = Assert.IsType<LeaseGranted>(first.Answer);
        Assert.Equal(DeciderKit.Derivation.Derive(RunId, "claim-1", "nonce-1"), granted.LeaseToken);
        var claimed = Assert.IsType<RunClaimed>(Assert.Single(first.Events));
        Assert.Equal((Access.DigestHex("claim-1"), "nonce-1"), (claimed.ClaimIdHash, claimed.TokenNonce));

        // The retry draws another nonce and token; neither is used.
        var again = stream.Decide(Claim(claimId: "claim-1", freshToken: "lt_other", freshNonce: "nonce-2"), Now.AddSeconds(5));

        Assert.Empty(again.Events);
        var regranted = Assert.IsType<LeaseGranted>(again.Answer);
        Assert.Equal(granted.LeaseToken, regranted.LeaseToken);
        Assert.Equal(granted.LeaseExpiresAt, regranted.LeaseExpiresAt);
    }

    [Fact]
    public void another_claim_while_the_lease_is_live_is_refused_lease_held()
    {
        var stream = Stream(Registered());
        stream.Decide(Claim(worker: "worker-1", claimId: "claim-1"), Now);

        ClaimCommand[] others =
        [
            Claim(worker: "worker-2"),
            Claim(worker: "worker-1"),
            Claim(worker: "worker-2", claimId: "claim-1"),
            Claim(worker: "worker-1", claimId: "claim-2"),
        ];
        foreach (var other in others)
        {
            var decision = stream.Decide(other, Now.AddSeconds(10));

            Assert.Equal(ProblemCodes.LeaseHeld, decision.Refusal?.Code);
            Assert.Contains("worker-1", decision.Refusal!.Detail);
            Assert.Empty(decision.Events);
        }
    }

    [Fact]
    public void the_same_claim_id_with_another_key_is_refused_lease_held_and_a_claim_without_a_key_binding_is_answered_as_before()
    {
        var stream = Stream(Registered());
        var workerKey = DeciderKit.Derivation.ClaimKeyDigest(RunId, "the-worker-key");
        var adminKey = DeciderKit.Derivation.ClaimKeyDigest(RunId, "the-admin-key");
        var first = stream.Decide(Claim(worker: "worker-1", claimId: "claim-1") with { KeyHash = workerKey }, Now);
        Assert.Equal(workerKey, Assert.IsType<RunClaimed>(Assert.Single(first.Events)).ClaimKeyHash);

        var sameKey = stream.Decide(Claim(worker: "worker-1", claimId: "claim-1") with { KeyHash = workerKey }, Now.AddSeconds(1));
        var otherKey = stream.Decide(Claim(worker: "worker-1", claimId: "claim-1") with { KeyHash = adminKey }, Now.AddSeconds(1));
        var noKey = stream.Decide(Claim(worker: "worker-1", claimId: "claim-1"), Now.AddSeconds(1));

        Assert.Equal(Assert.IsType<LeaseGranted>(first.Answer).LeaseToken, Assert.IsType<LeaseGranted>(sameKey.Answer).LeaseToken);
        Assert.Equal(ProblemCodes.LeaseHeld, otherKey.Refusal?.Code);
        Assert.Equal(ProblemCodes.LeaseHeld, noKey.Refusal?.Code);
        Assert.Empty(otherKey.Events);

        // A claim recorded before claims were bound to their key carries none: its retries are not bound.
        var older = Registered();
        var token = DeciderKit.Derivation.Derive(RunId, "claim-1", "nonce-1");
        older.Fold(new RunClaimed("worker-1", Access.DigestHex(token), Now, Now.AddSeconds(LeaseSeconds), Access.DigestHex("claim-1"), "nonce-1"));
        var retried = RunDecider.Decide(older, Claim(worker: "worker-1", claimId: "claim-1") with { KeyHash = adminKey }, Now.AddSeconds(1));
        Assert.Equal(token, Assert.IsType<LeaseGranted>(retried.Answer).LeaseToken);
        // A claim without a claimId keeps no key digest: there is nothing to retry.
        Assert.Null(Assert.IsType<RunClaimed>(Assert.Single(Stream(Registered()).Decide(Claim() with { KeyHash = workerKey }, Now).Events)).ClaimKeyHash);
    }

    [Fact]
    public void a_claim_after_the_lease_expired_takes_the_run_and_the_earlier_token_is_lost()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Started()), Now);

        var decision = stream.Decide(Claim(worker: "worker-2", freshToken: DeciderKit.OtherToken), LeaseEnds);

        Assert.IsType<LeaseGranted>(decision.Answer);
        Assert.Equal((RunStatus.Running, 2, "worker-2"), (decision.After!.Status, decision.After.Claims, decision.After.Worker));
        Assert.Equal(ProblemCodes.LeaseLost, stream.Decide(Events(Log("old")), LeaseEnds.AddSeconds(1)).Refusal?.Code);
        var newHolder = stream.Decide(new RecordEventsCommand(RunId, DeciderKit.OtherTokenHash, [Log("new")]), LeaseEnds.AddSeconds(1));
        Assert.Null(newHolder.Refusal);
    }

    [Fact]
    public void claiming_a_terminal_run_is_refused_run_terminal()
    {
        var stream = Stream(Claimed());
        stream.Decide(new CancelCommand(RunId, null), Now);

        var decision = stream.Decide(Claim(), LeaseEnds.AddHours(1));

        Assert.Equal(ProblemCodes.RunTerminal, decision.Refusal?.Code);
        Assert.Equal(RunStatus.Cancelled, decision.Refusal!.RunStatus);
        Assert.Empty(decision.Events);
    }

    // ---- cancelling ---------------------------------------------------------------------------

    [Fact]
    public void cancelling_a_live_run_appends_the_cancel_and_its_verdict()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Started()), Now);

        var decision = stream.Decide(new CancelCommand(RunId, "superseded"), Now.AddSeconds(1));

        Assert.Equal(new RunCancelled("superseded", Now.AddSeconds(1)), decision.Events[0]);
        var verdict = Assert.IsType<VerdictReached>(decision.Events[1]);
        Assert.Equal((RunStatus.Cancelled, "superseded", "ledger"), (verdict.Status, verdict.Reason, verdict.DecidedBy));
        Assert.Equal(2, decision.Events.Count);
        Assert.Equal(new RunCancelledResponse(RunId, RunStatus.Cancelled, "superseded"), decision.Answer);
    }

    [Fact]
    public void a_cancel_without_a_reason_is_cancelled_by_the_operator()
    {
        var decision = RunDecider.Decide(Claimed(), new CancelCommand(RunId, null), Now);

        Assert.Equal(new RunCancelledResponse(RunId, RunStatus.Cancelled, "cancelled-by-operator"), decision.Answer);
    }

    [Fact]
    public void cancelling_a_terminal_run_is_refused_run_terminal_and_changes_nothing()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Completed()), Now);

        var decision = stream.Decide(new CancelCommand(RunId, "too late"), Now.AddSeconds(1));

        Assert.Equal(ProblemCodes.RunTerminal, decision.Refusal?.Code);
        Assert.Equal(RunStatus.Succeeded, decision.Refusal!.RunStatus);
        Assert.Empty(decision.Events);
        Assert.Equal(RunStatus.Succeeded, decision.After!.Status);
    }

    // ---- reclassifying ------------------------------------------------------------------------

    [Fact]
    public void only_a_terminal_run_can_be_reclassified()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Started()), Now);

        var decision = stream.Decide(Reclassify(RunStatus.Failed), Now);

        Assert.Equal(ProblemCodes.RunNotTerminal, decision.Refusal?.Code);
        Assert.Equal(RunStatus.Running, decision.Refusal!.RunStatus);
        Assert.Empty(decision.Events);
    }

    [Fact]
    public void a_reclassification_to_the_status_the_run_has_is_refused_reclassify_no_change()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Failed("oom")), Now);

        var decision = stream.Decide(Reclassify(RunStatus.Failed), Now);

        Assert.Equal(ProblemCodes.ReclassifyNoChange, decision.Refusal?.Code);
        Assert.Empty(decision.Events);
    }

    /// <summary>
    /// The reclassification rule (<see cref="RunRules.Reclassification"/>) as given / when / then: the
    /// decider refuses, and a stream that holds the reclassification all the same (appended past the
    /// decider) folds to the state it had without it: no second verdict, no new time of the verdict.
    /// </summary>
    [Theory]
    [InlineData(ProblemCodes.RunNotTerminal)]
    [InlineData(ProblemCodes.ReclassifyNoChange)]
    [InlineData(ProblemCodes.IncompleteResults)]
    public void a_reclassification_the_rule_refuses_is_refused_by_the_decider_and_not_applied_by_the_fold(string rule)
    {
        //                                             given                                                  when: reclassified to
        var (given, to) = rule switch
        {
            ProblemCodes.RunNotTerminal     => (Given(Claimed(), Started()),                                         RunStatus.Failed),
            ProblemCodes.ReclassifyNoChange => (Given(Claimed(), Failed("oom")),                                     RunStatus.Failed),
            ProblemCodes.IncompleteResults  => (Given(Claimed(scores: ["accuracy"]), Failed("oom")),                 RunStatus.Succeeded),
            _ => throw new ArgumentOutOfRangeException(nameof(rule)),
        };
        var later = Now.AddMinutes(1);

        var decision = given.Decide(Reclassify(to), later);
        Assert.Equal(rule, decision.Refusal?.Code);
        Assert.Empty(decision.Events);

        var state = given.State!;
        var appended = new RunReclassified(state.Status, state.Reason, to, "review", ["evidence"], "ops", later);
        var folded = state.Clone();
        folded.Fold(appended);
        Assert.Equal(DeciderKit.Json(state), DeciderKit.Json(folded));
        Assert.Equal((EventResultKind.Refused, rule), (state.EffectOf(appended).Kind, state.EffectOf(appended).Reason));
    }

    [Fact]
    public void a_reclassification_to_succeeded_without_the_results_is_refused_incomplete_results_naming_what_is_missing()
    {
        var stream = Stream(Claimed(scores: ["accuracy"]));
        stream.Decide(Events(Started()), Now);
        stream.Decide(new ExpireLeaseCommand(RunId, TimeSpan.Zero), LeaseEnds);

        var decision = stream.Decide(Reclassify(RunStatus.Succeeded), LeaseEnds.AddMinutes(1));

        Assert.Equal(ProblemCodes.IncompleteResults, decision.Refusal?.Code);
        Assert.Contains("completion", decision.Refusal!.Detail);
        Assert.Contains("score:accuracy", decision.Refusal.Detail);
        Assert.Empty(decision.Events);
        Assert.Equal(RunStatus.Lost, decision.After!.Status);
    }

    [Fact]
    public void a_reclassification_appends_it_with_a_new_verdict_and_keeps_the_earlier_one()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Started()), Now);
        stream.Decide(new ExpireLeaseCommand(RunId, TimeSpan.Zero), LeaseEnds);
        var at = LeaseEnds.AddMinutes(1);

        var decision = stream.Decide(new ReclassifyCommand(RunId, RunStatus.Failed, "worker crashed", ["ticket-7"], "ops"), at);

        var reclassified = Assert.IsType<RunReclassified>(decision.Events[0]);
        Assert.Equal((RunStatus.Lost, "lease-expired", RunStatus.Failed, "worker crashed", "ops", at),
            (reclassified.From, reclassified.FromReason, reclassified.To, reclassified.Reason, reclassified.Operator, reclassified.At));
        Assert.Equal(["ticket-7"], reclassified.Evidence);
        var verdict = Assert.IsType<VerdictReached>(decision.Events[1]);
        Assert.Equal((RunStatus.Failed, "worker crashed", "operator:ops", at), (verdict.Status, verdict.Reason, verdict.DecidedBy, verdict.At));
        Assert.Equal(2, decision.Events.Count);
        var after = Assert.IsType<RunView>(decision.Answer);
        Assert.Equal(RunStatus.Failed, after.Status);
        Assert.Equal([RunStatus.Lost, RunStatus.Failed], after.Verdicts.Select(v => v.Status));
    }

    [Fact]
    public void a_run_with_all_its_results_can_be_reclassified_to_succeeded_and_one_without_cannot()
    {
        // Completed before its score, then failed: the completion is in but the score never came.
        var incomplete = Stream(Claimed(scores: ["accuracy"]));
        incomplete.Decide(Events(Completed()), Now);
        incomplete.Decide(Events(Failed("provider")), Now);
        var refused = incomplete.Decide(Reclassify(RunStatus.Succeeded), Now.AddSeconds(1));

        // Succeeded, failed by an operator's mistake, and set right again.
        var complete = Stream(Claimed(scores: ["accuracy"]));
        complete.Decide(Events(Scores(("accuracy", 0.7)), Completed()), Now);
        complete.Decide(Reclassify(RunStatus.Failed), Now.AddSeconds(1));
        var accepted = complete.Decide(Reclassify(RunStatus.Succeeded), Now.AddSeconds(2));

        Assert.Equal(ProblemCodes.IncompleteResults, refused.Refusal?.Code);
        Assert.Equal("Missing: score:accuracy.", refused.Refusal!.Detail);
        Assert.Null(accepted.Refusal);
        Assert.Equal(RunStatus.Succeeded, accepted.After!.Status);
        Assert.Equal(["ledger", "operator:ops", "operator:ops"], accepted.After.Verdicts.Select(v => v.DecidedBy));
    }

    [Fact]
    public void a_reclassification_to_succeeded_of_a_run_whose_counts_do_not_balance_is_refused_incomplete_results()
    {
        // Completion and results are in, nothing is missing, but 13 items were committed of the 10 declared...
        var over = Stream(Claimed());
        over.Decide(Events(Completed(itemsTotal: 10), Items("c1", 6), Items("c2", 7)), Now);
        // ...or the completion claims another total than the registration expected.
        var disagreeing = Stream(Claimed(expectedItems: 10));
        disagreeing.Decide(Events(Items("c1", 10), Completed(itemsTotal: 8)), Now);

        foreach (var (stream, imbalance) in new[]
                 {
                     (over, "13 items committed but the declared total is 10"),
                     (disagreeing, "registered with 10 expected items but completion claims 8"),
                 })
        {
            Assert.Equal((RunStatus.Failed, AnomalyKinds.AccountingMismatch), (stream.State!.Status, stream.State.Reason));
            Assert.Empty(stream.State.MissingForSuccess());

            var decision = stream.Decide(Reclassify(RunStatus.Succeeded), Now.AddSeconds(1));

            Assert.Equal(ProblemCodes.IncompleteResults, decision.Refusal?.Code);
            Assert.Equal($"The item counts do not balance: {imbalance}.", decision.Refusal!.Detail);
            Assert.Empty(decision.Events);
            // Any other verdict stays the operator's to give.
            Assert.Null(stream.Decide(Reclassify(RunStatus.Lost), Now.AddSeconds(2)).Refusal);
        }
    }

    // ---- observing ----------------------------------------------------------------------------

    [Fact]
    public void an_observation_is_appended_stamped_with_now_and_never_changes_the_status()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Started()), Now);
        var observedAt = Now.AddSeconds(-3);

        var decision = stream.Decide(new ObserveCommand(RunId, "modal", RunStatus.Succeeded, observedAt, "exit 0"), Now);

        Assert.Equal([new StatusObserved("modal", RunStatus.Succeeded, observedAt, "exit 0", Now)], decision.Events);
        Assert.Equal(new ObservationRecorded(RunId, RunStatus.Running, EventResultKind.Applied, null, false), decision.Answer);
        Assert.Equal(RunStatus.Running, decision.After!.Status);
        Assert.Single(decision.After.Observations);
    }

    [Fact]
    public void the_same_observation_again_or_an_unchanged_view_is_a_duplicate_and_appends_nothing()
    {
        var stream = Stream(Claimed());
        var observedAt = Now.AddSeconds(-3);
        stream.Decide(new ObserveCommand(RunId, "portal", RunStatus.Running, observedAt, null), Now);

        var same = stream.Decide(new ObserveCommand(RunId, "portal", RunStatus.Running, observedAt, null), Now.AddSeconds(1));
        var unchanged = stream.Decide(new ObserveCommand(RunId, "portal", RunStatus.Running, observedAt.AddMinutes(1), null), Now.AddSeconds(2));

        Assert.Empty(same.Events);
        Assert.Equal(new ObservationRecorded(RunId, RunStatus.Claimed, EventResultKind.Duplicate, "observation-already-recorded", false), same.Answer);
        Assert.Empty(unchanged.Events);
        Assert.Equal("observation-unchanged", Assert.IsType<ObservationRecorded>(unchanged.Answer).Reason);
        Assert.Single(stream.State!.Observations);
    }

    [Fact]
    public void an_observation_disagreeing_with_the_verdict_is_appended_and_flagged_as_a_mismatch()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Completed()), Now);

        var decision = stream.Decide(new ObserveCommand(RunId, "portal", RunStatus.Failed, Now, "EMPTY_MODEL_RESPONSE"), Now.AddSeconds(1));

        Assert.Single(decision.Events);
        Assert.Equal(new ObservationRecorded(RunId, RunStatus.Succeeded, EventResultKind.Applied, AnomalyKinds.StatusMismatch, true), decision.Answer);
        Assert.Equal(RunStatus.Succeeded, decision.After!.Status);
        var anomaly = Assert.Single(decision.After.Anomalies);
        Assert.Equal(new StatusMismatch(RunStatus.Succeeded, RunStatus.Failed, "portal", Now), anomaly.Mismatch);
    }

    // ---- the janitor --------------------------------------------------------------------------

    [Fact]
    public void an_expired_lease_without_a_completion_makes_the_run_lost_with_its_verdict()
    {
        var stream = Stream(Claimed());
        stream.Decide(Events(Started()), Now);
        var grace = TimeSpan.FromSeconds(30);
        var at = LeaseEnds + grace;

        var decision = stream.Decide(new ExpireLeaseCommand(RunId, grace), at);

        Assert.Equal(new LeaseExpired(LeaseEnds, at), decision.Events[0]);
        var verdict = Assert.IsType<VerdictReached>(decision.Events[1]);
        Assert.Equal((RunStatus.Lost, "lease-expired", at), (verdict.Status, verdict.Reason, verdict.At));
        Assert.Equal(2, decision.Events.Count);
        Assert.Equal(new LeaseExpiryOutcome(RunStatus.Lost), decision.Answer);
        Assert.Equal((RunStatus.Lost, "lease-expired"), (decision.After!.Status, decision.After.Reason));
    }

    [Fact]
    public void an_expired_lease_after_a_completion_without_its_results_fails_the_run_incomplete_results()
    {
        var stream = Stream(Claimed(scores: ["accuracy"]));
        stream.Decide(Events(Completed()), Now);
        Assert.Equal(RunStatus.Running, stream.State!.Status);

        var decision = stream.Decide(new ExpireLeaseCommand(RunId, TimeSpan.Zero), LeaseEnds);

        Assert.Equal(new LeaseExpiryOutcome(RunStatus.Failed), decision.Answer);
        Assert.Equal((RunStatus.Failed, "incomplete-results"), (decision.After!.Status, decision.After.Reason));
        Assert.Equal(RunStatus.Failed, Assert.IsType<VerdictReached>(decision.Events[^1]).Status);
    }

    [Fact]
    public void the_janitor_decides_nothing_for_a_heartbeated_run_within_its_grace_a_terminal_run_or_an_unclaimed_one()
    {
        var heartbeated = Stream(Claimed());
        heartbeated.Decide(Events(Heartbeat()), LeaseEnds.AddSeconds(-1));
        var finished = Stream(Claimed());
        finished.Decide(Events(Completed()), Now);

        (Run Run, TimeSpan Grace, DateTimeOffset At)[] nothingToDo =
        [
            (heartbeated.State!, TimeSpan.Zero, LeaseEnds),
            (Claimed(), TimeSpan.FromSeconds(30), LeaseEnds.AddSeconds(29)),
            (finished.State!, TimeSpan.Zero, LeaseEnds.AddHours(1)),
            (Registered(), TimeSpan.Zero, LeaseEnds.AddHours(1)),
        ];
        foreach (var (run, grace, at) in nothingToDo)
        {
            var decision = RunDecider.Decide(run, new ExpireLeaseCommand(RunId, grace), at);

            Assert.Empty(decision.Events);
            Assert.Equal(new LeaseExpiryOutcome(null), decision.Answer);
        }
        // The first one, once its extended lease has run out, is marked.
        Assert.Equal(new LeaseExpiryOutcome(RunStatus.Lost),
            RunDecider.Decide(heartbeated.State, new ExpireLeaseCommand(RunId, TimeSpan.Zero), LeaseEnds.AddSeconds(LeaseSeconds - 1)).Answer);
    }

    // ---- of every decision --------------------------------------------------------------------

    [Fact]
    public void deciding_never_changes_the_state_it_was_given()
    {
        foreach (var (name, run, command, now) in EveryKindOfDecision())
        {
            var before = DeciderKit.Json(run);

            var decision = RunDecider.Decide(run, command, now);

            Assert.True(before == DeciderKit.Json(run), $"{name}: deciding changed the state it was given");
            // The state after is another object whenever anything was appended.
            if (decision.Events.Count > 0) Assert.NotSame(run, decision.After);
        }
    }

    [Fact]
    public void deciding_is_deterministic()
    {
        foreach (var (name, run, command, now) in EveryKindOfDecision())
        {
            var first = DeciderKit.Json(RunDecider.Decide(run, command, now));
            var second = DeciderKit.Json(RunDecider.Decide(run, command, now));
            var onACopy = DeciderKit.Json(RunDecider.Decide(run?.Clone(), command, now));

            Assert.True(first == second, $"{name}: two decisions differ:\n{first}\n{second}");
            Assert.True(first == onACopy, $"{name}: a copy of the state decides otherwise:\n{first}\n{onACopy}");
        }
    }

    /// <summary>One of each decision, accepted and refused, with the state it is decided on.</summary>
    private IEnumerable<(string Name, Run? Run, RunCommand Command, DateTimeOffset Now)> EveryKindOfDecision()
    {
        var running = Stream(Claimed(scores: ["accuracy"], expectedItems: 10));
        running.Decide(Events(Started(), StepStarted("s1"), Items("c1", 4), Scores(("accuracy", 0.5))), Now);
        var live = running.State!;
        var failed = Stream(Claimed());
        failed.Decide(Events(Failed("oom")), Now);
        var terminal = failed.State!;
        var keys = running.Keys;

        yield return ("events applied", live, Events(Log("x"), Items("c2", 6), StepCompleted("s1"), Completed()), Now);
        yield return ("events duplicate", live, Events(Items("c1", 4)) with { Recorded = keys }, Now);
        yield return ("events refused", live, Events(Scores(("accuracy", 0.6))), Now);
        yield return ("events over-count", live, Events(Items("c9", 7)), Now);
        yield return ("events late", terminal, Events(Completed()), Now);
        yield return ("events late beyond the cap", terminal, Events(Completed(), Log("x")) with { Late = Policy(TimeSpan.FromHours(1), maxPerRun: 1) }, Now);
        yield return ("events late after the grace", terminal, Events(Completed()), Now.AddDays(1));
        yield return ("events lease lost", live, new RecordEventsCommand(RunId, DeciderKit.OtherTokenHash, [Log("x")]), Now);
        yield return ("events lease expired", live, Events(Log("x")), LeaseEnds);
        yield return ("events no run", null, Events(Log("x")), Now);
        yield return ("claim new", Registered(), Claim(claimId: "c"), Now);
        yield return ("claim held", live, Claim(), Now);
        yield return ("claim after expiry", live, Claim(), LeaseEnds);
        yield return ("cancel", live, new CancelCommand(RunId, null), Now);
        yield return ("cancel terminal", terminal, new CancelCommand(RunId, null), Now);
        yield return ("reclassify", terminal, Reclassify(RunStatus.Lost), Now);
        yield return ("reclassify refused", terminal, Reclassify(RunStatus.Succeeded), Now);
        yield return ("observe", terminal, new ObserveCommand(RunId, "modal", RunStatus.Succeeded, Now, null), Now);
        yield return ("expire", live, new ExpireLeaseCommand(RunId, TimeSpan.Zero), LeaseEnds);
        yield return ("expire nothing", live, new ExpireLeaseCommand(RunId, TimeSpan.Zero), Now);
    }

    // ---- helpers -----------------------------------------------------------------------------

    private static DecidedStream Stream(Run run) => new(run);

    /// <summary>A run that took <paramref name="events"/>, decided one request each.</summary>
    private static DecidedStream Given(Run run, params WorkerEvent[] events)
    {
        var stream = Stream(run);
        foreach (var e in events) Assert.Null(stream.Decide(Events(e), Now).Refusal);
        return stream;
    }

    private static Run Registered(string[]? scores = null, string[]? outputs = null, long? expectedItems = null, string? board = null)
    {
        var run = Run.Create(TestEvents.Registered(RunId, T0, LeaseSeconds, scores, outputs, expectedItems, board, participant: "team-a"));
        run.Version = 1;
        return run;
    }

    /// <summary>Registered and claimed by worker-1 with <see cref="DeciderKit.Token"/> at <see cref="ClaimedAt"/>.</summary>
    private static Run Claimed(string[]? scores = null, string[]? outputs = null, long? expectedItems = null, string? board = null)
    {
        var run = Registered(scores, outputs, expectedItems, board);
        run.Fold(new RunClaimed("worker-1", DeciderKit.TokenHash, ClaimedAt, LeaseEnds));
        run.Version = 2;
        return run;
    }

    private static RecordEventsCommand Events(params WorkerEvent[] events) => new(RunId, DeciderKit.TokenHash, events);

    private static RecordedKeys Keys(string[]? eventIds = null, Dictionary<string, long>? chunks = null) =>
        new(new HashSet<string>(eventIds ?? [], StringComparer.Ordinal), chunks ?? new Dictionary<string, long>(StringComparer.Ordinal));

    private static ClaimCommand Claim(string? worker = "worker-2", string? claimId = null, string freshToken = "lt_fresh-token",
        string freshNonce = "fresh-nonce") =>
        new(RunId, worker, claimId, freshToken, freshNonce, DeciderKit.Derivation);

    private static ReclassifyCommand Reclassify(RunStatus to) => new(RunId, to, "review", ["evidence"], "ops");

    private static LateEventPolicy Policy(TimeSpan grace, int maxPerRun = 100) => new() { Grace = grace, MaxPerRun = maxPerRun };
}
