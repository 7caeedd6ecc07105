using Ledger.Contract;

namespace Ledger.Runs;

/// <summary>
/// The rules that judge one event against a run, each a pure function of (the run's state, the
/// event) and each written once. <see cref="Run.EffectOf"/> is the one judge that picks the rule of
/// an event: <see cref="RunDecider"/> asks it and refuses what it refuses; the run's Apply methods ask
/// it too, and record without applying an event that a stream holds although it should have been
/// refused, so that any stream folds to a state that keeps the invariants. The rules that need what
/// the state does not keep (which eventIds and chunk ids were recorded) are the decider's.
/// </summary>
public static class RunRules
{
    /// <summary>
    /// Invariant 1, terminal is absorbing: a worker event for a terminal run is recorded and flagged,
    /// never applied; a completion of a lost run as a late completion, any other as a late event.
    /// </summary>
    public static EventEffect Late(Run run, WorkerEvent e) =>
        e is RunCompleted && run.Status == RunStatus.Lost
            ? EventEffect.LateAs(AnomalyKinds.LateCompletion, $"The run was already lost at {run.TerminalAt:O}.")
            : EventEffect.LateAs(AnomalyKinds.LateEvent, $"The run was already {run.Status.Wire()}.");

    /// <summary>Invariant 4, steps are well-formed: a step is started once.</summary>
    public static EventEffect StepStart(Run run, StepStarted s) =>
        run.Steps.ContainsKey(s.StepId)
            ? EventEffect.NotApplied("step-already-started", $"Step '{s.StepId}' was already started.")
            : EventEffect.Applied;

    /// <summary>Invariant 4, steps are well-formed: only a started step is completed (else <c>unknown-step</c>), and once.</summary>
    public static EventEffect StepCompletion(Run run, StepCompleted c) =>
        !run.Steps.TryGetValue(c.StepId, out var step)
            ? EventEffect.Refuse(ProblemCodes.UnknownStep, $"Step '{c.StepId}' was never started in this run.")
            : step.Completed
                ? EventEffect.NotApplied("step-already-completed", $"Step '{c.StepId}' was already completed.")
                : EventEffect.Applied;

    /// <summary>
    /// Invariant 8, scores are immutable: a score is one the run declared, when it declares them (else
    /// <c>unknown-score</c>), and keeps its first value (another is <c>score-conflict</c>); a report
    /// of only recorded scores is a duplicate.
    /// </summary>
    public static EventEffect Scores(Run run, ScoresReported s)
    {
        var allKnown = true;
        foreach (var (name, value) in s.Scores)
        {
            if (run.RequiredScores.Count > 0 && !run.RequiredScores.Contains(name))
            {
                return EventEffect.Refuse(ProblemCodes.UnknownScore,
                    $"Score '{name}' is not among the declared scores: {string.Join(", ", run.RequiredScores)}.");
            }
            if (run.Scores.TryGetValue(name, out var existing))
            {
                if (existing != value)
                {
                    return EventEffect.Refuse(ProblemCodes.ScoreConflict,
                        $"Score '{name}' is already recorded as {existing}; scores are immutable.");
                }
            }
            else
            {
                allKnown = false;
            }
        }
        return allKnown ? EventEffect.Duplicate("scores-already-recorded") : EventEffect.Applied;
    }

    /// <summary>An output is recorded once: the same again is a duplicate, another uri or digest is <c>output-conflict</c>.</summary>
    public static EventEffect Output(Run run, OutputRecorded o) =>
        !run.Outputs.TryGetValue(o.Name, out var existing) ? EventEffect.Applied
            : existing.Uri == o.Uri && existing.Sha256 == o.Sha256 && existing.Bytes == o.Bytes
                ? EventEffect.Duplicate("output-already-recorded")
                : EventEffect.Refuse(ProblemCodes.OutputConflict, $"Output '{o.Name}' is already recorded with another uri or digest.");

    /// <summary>Completion is reported once.</summary>
    public static EventEffect Completion(Run run, RunCompleted c) =>
        run.CompletionReported
            ? EventEffect.NotApplied("completion-already-reported", "Completion was already reported.")
            : EventEffect.Applied;

    /// <summary>
    /// Only a terminal verdict is reclassified, to another status, and to succeeded only a run that
    /// holds everything succeeded means (invariant 2, even by an operator's hand): succeeded means
    /// complete, and an over-count is not made whole by calling it a success.
    /// </summary>
    public static EventEffect Reclassification(Run run, RunReclassified r)
    {
        if (!run.Status.IsTerminal())
            return EventEffect.Refuse(ProblemCodes.RunNotTerminal, $"The run is {run.Status.Wire()}; cancel it instead.");
        if (run.Status == r.To)
            return EventEffect.Refuse(ProblemCodes.ReclassifyNoChange, $"The run is already {run.Status.Wire()}.");
        if (r.To == RunStatus.Succeeded && run.MissingForSuccess() is { Count: > 0 } missing)
            return EventEffect.Refuse(ProblemCodes.IncompleteResults, $"Missing: {string.Join(", ", missing)}.");
        if (r.To == RunStatus.Succeeded && Imbalance(run) is { } imbalance)
            return EventEffect.Refuse(ProblemCodes.IncompleteResults, $"The item counts do not balance: {imbalance.Description}.");
        return EventEffect.Applied;
    }

    /// <summary>Another system's view: a repeat is a duplicate, and so is the same view again from the same source; anything else is recorded.</summary>
    public static EventEffect Observation(Run run, StatusObserved e)
    {
        if (run.Observations.Any(o => o.Source == e.Source && o.Status == e.Status && o.ObservedAt == e.ObservedAt))
        {
            return EventEffect.Duplicate("observation-already-recorded");
        }
        // A source polled every minute says the same thing again and again: only a change of its view is news.
        return run.Observations.LastOrDefault(o => o.Source == e.Source) is { } latest && latest.Status == e.Status
            ? EventEffect.Duplicate("observation-unchanged")
            : EventEffect.Applied;
    }

    /// <summary>The cap of late events is reached once, by a terminal run.</summary>
    public static EventEffect LateEventsCap(Run run) =>
        run.Status.IsTerminal() && run.LateEventsCapAnomaly is null ? EventEffect.Applied : EventEffect.NotApplied("late-events-not-capped");

    /// <summary>A claim, a cancel or the janitor's expiry changes a live run only.</summary>
    public static EventEffect Live(Run run) =>
        run.Status.IsTerminal() ? EventEffect.NotApplied(AnomalyKinds.LateEvent) : EventEffect.Applied;

    /// <summary>
    /// Invariant 3, counts balance: how the item counts fail to balance beyond what is still missing
    /// (more committed than the declared total, or a reported total other than the registered one),
    /// in the words of a refusal and of the anomaly; null when they balance or only wait for items.
    /// </summary>
    public static ItemImbalance? Imbalance(Run run) =>
        run.ExpectedItems is { } expected && run.ItemsTotalReported is { } reported && expected != reported
            ? new ItemImbalance(
                $"registered with {expected} expected items but completion claims {reported}",
                $"Registered with {expected} expected items but completion claims {reported}.")
            : run.DeclaredItemsTotal is { } total && run.CommittedItems > total
                ? new ItemImbalance(
                    $"{run.CommittedItems} items committed but the declared total is {total}",
                    $"Committed {run.CommittedItems} items but the declared total is {total}.")
                : null;
}

/// <summary>How a run's item counts fail to balance: as a refusal says it, and as the fold's anomaly records it.</summary>
public sealed record ItemImbalance(string Description, string AnomalyDetail);
