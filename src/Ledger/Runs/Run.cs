using Ledger.Infrastructure;
using System.Text.Json.Serialization;
using Ledger.Leaderboards;

namespace Ledger.Runs;

/// <summary>
/// A run, folded from its stream: the evolve half of the run's decider. The Apply methods are
/// the invariants: they never throw and never read a clock; they decide what each event does
/// from the state and the event alone, so any stream, even one holding an event that should
/// have been refused, folds to a state that respects them. <see cref="Evaluate"/> says what
/// applying an event would do without doing it. What to append and what to answer is decided
/// by <see cref="RunDecider"/>, which also knows what the state does not keep: which eventIds
/// and chunk ids the run already recorded.
/// </summary>
public sealed class Run
{
    public string Id { get; set; } = "";
    public long Version { get; set; }
    public RunStatus Status { get; set; }
    public string? Reason { get; set; }

    public string? Board { get; set; }
    public string? Participant { get; set; }
    public string? Batch { get; set; }
    public Dictionary<string, string> Labels { get; set; } = new();
    public List<string> RequiredScores { get; set; } = [];
    public List<string> RequiredOutputs { get; set; } = [];
    public long? ExpectedItems { get; set; }
    public int LeaseSeconds { get; set; }
    public Ranking? Ranking { get; set; }

    public string? Worker { get; set; }
    public string? LeaseTokenHash { get; set; }
    public DateTimeOffset? LeaseExpiresAt { get; set; }
    /// <summary>The digest of the current lease's claimId, when the claim carried one.</summary>
    public string? ClaimIdHash { get; set; }
    /// <summary>The nonce the current lease's token was derived from, when the claim carried a claimId.</summary>
    public string? TokenNonce { get; set; }
    /// <summary>The keyed digest of the key the current lease was claimed with, when the claim carried a claimId: only that key may retry it.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ClaimKeyHash { get; set; }
    public int Claims { get; set; }

    public DateTimeOffset RegisteredAt { get; set; }
    public DateTimeOffset? ClaimedAt { get; set; }
    public DateTimeOffset? StartedAt { get; set; }
    public DateTimeOffset? LastEventAt { get; set; }
    /// <summary>When the lease holder last proved it was alive (its claim or its latest heartbeat): what "stuck" is measured from.</summary>
    public DateTimeOffset? LastHeartbeatAt { get; set; }
    public DateTimeOffset? TerminalAt { get; set; }

    public bool CompletionReported { get; set; }
    public DateTimeOffset? CompletionReportedAt { get; set; }
    public long? ItemsTotalReported { get; set; }
    public string? ErrorClass { get; set; }
    public string? ErrorMessage { get; set; }
    /// <summary>Reported with the completion or derived from the results (an empty output); never blocks success.</summary>
    public List<string> Warnings { get; set; } = [];

    public Dictionary<string, RunStep> Steps { get; set; } = new();
    public Dictionary<string, double> Scores { get; set; } = new();
    public Dictionary<string, RunOutput> Outputs { get; set; } = new();
    /// <summary>How many chunks were committed; which chunk ids they were is the decision's knowledge (<see cref="RecordedKeys"/>), not the state's.</summary>
    public long CommittedChunks { get; set; }
    public long CommittedItems { get; set; }
    public long LogLines { get; set; }

    public List<RunAnomaly> Anomalies { get; set; } = [];
    /// <summary>Once late events were capped: the index in <see cref="Anomalies"/> of the one anomaly that counts those beyond the cap.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? LateEventsCapAnomaly { get; set; }

    /// <summary>
    /// How many late events (after the verdict) were recorded, which the cap of <see cref="LateEventPolicy.MaxPerRun"/>
    /// is on: each added one anomaly naming its eventId (the cap's own anomaly names none).
    /// </summary>
    [JsonIgnore]
    public int LateEvents => Anomalies.Count(a => a.Kind is AnomalyKinds.LateEvent or AnomalyKinds.LateCompletion && a.EventId is not null);
    /// <summary>Other systems' views of the run, in the order recorded; they never change <see cref="Status"/>.</summary>
    public List<RunObservation> Observations { get; set; } = [];
    /// <summary>Every terminal verdict in order; more than one only through operator reclassification.</summary>
    public List<Verdict> Verdicts { get; set; } = [];

    [JsonIgnore] public long? DeclaredItemsTotal => ExpectedItems ?? ItemsTotalReported;

    /// <summary>A private copy to decide on, so that the state a decision started from is never changed by it.</summary>
    public Run Clone()
    {
        var copy = (Run)MemberwiseClone();
        copy.Labels = new Dictionary<string, string>(Labels);
        copy.RequiredScores = [.. RequiredScores];
        copy.RequiredOutputs = [.. RequiredOutputs];
        copy.Warnings = [.. Warnings];
        copy.Steps = new Dictionary<string, RunStep>(Steps);
        copy.Scores = new Dictionary<string, double>(Scores);
        copy.Outputs = new Dictionary<string, RunOutput>(Outputs);
        copy.Anomalies = [.. Anomalies];
        copy.Observations = [.. Observations];
        copy.Verdicts = [.. Verdicts];
        return copy;
    }

    public static Run Create(RunRegistered e) => new()
    {
        Id = e.RunId,
        Status = RunStatus.Registered,
        Board = e.Board,
        Participant = e.Participant,
        Batch = e.Batch,
        Labels = new Dictionary<string, string>(e.Labels),
        RequiredScores = [.. e.RequiredScores],
        RequiredOutputs = [.. e.RequiredOutputs],
        ExpectedItems = e.ExpectedItems,
        LeaseSeconds = e.LeaseSeconds,
        RegisteredAt = e.RegisteredAt,
        Ranking = e.Ranking,
    };

    /// <summary>Records that a verdict was published; the verdict itself was derived by the facts before it.</summary>
    public void Apply(VerdictReached e) { }

    /// <summary>The verdict to publish for the last terminal decision of this run.</summary>
    public VerdictReached? LatestVerdict() => Verdicts.Count == 0 ? null : new VerdictReached(
        Id, Status, Reason, Board, Participant, Ranking, new Dictionary<string, double>(Scores), Verdicts[^1].At, Verdicts[^1].DecidedBy);

    public void Apply(RunClaimed e)
    {
        if (Status.IsTerminal()) return;
        Worker = e.Worker;
        LeaseTokenHash = e.LeaseTokenHash;
        LeaseExpiresAt = e.LeaseExpiresAt;
        ClaimIdHash = e.ClaimIdHash;
        TokenNonce = e.TokenNonce;
        ClaimKeyHash = e.ClaimKeyHash;
        ClaimedAt ??= e.ClaimedAt;
        LastHeartbeatAt = e.ClaimedAt;
        Claims++;
        if (Status == RunStatus.Registered) Status = RunStatus.Claimed;
    }

    /// <summary>Late events reached their cap: one anomaly stands for every one sent after it (its record counts them).</summary>
    public void Apply(LateEventsCapped e)
    {
        if (!Status.IsTerminal() || LateEventsCapAnomaly is not null) return;
        Anomalies.Add(new RunAnomaly(AnomalyKinds.LateEvent, e.At,
            $"The run took {LateEvents} late events, its cap of {e.Cap}; those sent after them are not recorded, only counted in this anomaly."));
        LateEventsCapAnomaly = Anomalies.Count - 1;
    }

    public void Apply(RunCancelled e)
    {
        if (Status.IsTerminal()) return;
        Terminate(RunStatus.Cancelled, e.Reason ?? "cancelled-by-operator", e.CancelledAt);
    }

    public void Apply(LeaseExpired e)
    {
        if (Status.IsTerminal()) return;
        // A completion whose results never arrived is a failure, not a loss: the worker did report.
        if (CompletionReported) Terminate(RunStatus.Failed, "incomplete-results", e.DetectedAt);
        else Terminate(RunStatus.Lost, "lease-expired", e.DetectedAt);
    }

    public void Apply(RunReclassified e)
    {
        if (!Status.IsTerminal()) return;
        // Succeeded means complete, even by an operator's hand: a reclassification to succeeded of a run
        // without its results or whose counts do not balance (which the decision refuses) changes nothing.
        if (e.To == RunStatus.Succeeded && !CanSucceed()) return;
        Status = e.To;
        Reason = e.Reason;
        TerminalAt = e.At;
        Verdicts.Add(new Verdict(e.To, e.Reason, e.At, e.Operator is null ? "operator" : $"operator:{e.Operator}", e.Evidence));
        FlagMismatches(e.At);
    }

    /// <summary>What recording another system's view would do: a repeat is a duplicate, anything else is recorded.</summary>
    public EventEffect Evaluate(StatusObserved e)
    {
        if (Observations.Any(o => o.Source == e.Source && o.Status == e.Status && o.ObservedAt == e.ObservedAt))
        {
            return EventEffect.Duplicate("observation-already-recorded");
        }
        // A source polled every minute says the same thing again and again: only a change of its view is news.
        return Observations.LastOrDefault(o => o.Source == e.Source) is { } latest && latest.Status == e.Status
            ? EventEffect.Duplicate("observation-unchanged")
            : EventEffect.Applied;
    }

    public void Apply(StatusObserved e)
    {
        if (Evaluate(e).Kind != EventResultKind.Applied) return;
        var observation = new RunObservation(e.Source, e.Status, e.ObservedAt, e.Detail, e.RecordedAt);
        Observations.Add(observation);
        if (Disagrees(observation)) FlagMismatch(observation, e.RecordedAt);
    }

    /// <summary>True when the observation names a terminal status other than the ledger's terminal verdict.</summary>
    public bool Disagrees(RunObservation observation) =>
        Status.IsTerminal() && observation.Status.IsTerminal() && observation.Status != Status;

    /// <summary>At a new verdict, each source's latest view is compared with it.</summary>
    private void FlagMismatches(DateTimeOffset at)
    {
        var latestBySource = Observations
            .GroupBy(o => o.Source, StringComparer.Ordinal)
            .Select(g => g.OrderBy(o => o.ObservedAt).Last());
        foreach (var observation in latestBySource.Where(Disagrees).ToList()) FlagMismatch(observation, at);
    }

    private void FlagMismatch(RunObservation o, DateTimeOffset at) =>
        Anomalies.Add(new RunAnomaly(AnomalyKinds.StatusMismatch, at,
            $"The ledger says {Status.Wire()}{(Reason is null ? "" : $" ({Reason})")}; {o.Source} observed {o.Status.Wire()} at {o.ObservedAt:O}" +
            $"{(o.Detail is null ? "" : $": {o.Detail}")}. The ledger's status stands.",
            Mismatch: new StatusMismatch(Status, o.Status, o.Source, o.ObservedAt)));

    public void Apply(RunStarted e) => Record(e);
    public void Apply(StepStarted e) => Record(e);
    public void Apply(StepCompleted e) => Record(e);
    public void Apply(HeartbeatReceived e) => Record(e);
    public void Apply(LogWritten e) => Record(e);
    public void Apply(ScoresReported e) => Record(e);
    public void Apply(OutputRecorded e) => Record(e);
    public void Apply(ItemsCommitted e) => Record(e);
    public void Apply(RunCompleted e) => Record(e);
    public void Apply(RunFailed e) => Record(e);

    /// <summary>Applies any event of a run's stream (for replays and batch evaluation outside Marten).</summary>
    public void Fold(object @event)
    {
        switch (@event)
        {
            case RunClaimed x: Apply(x); break;
            case RunCancelled x: Apply(x); break;
            case LeaseExpired x: Apply(x); break;
            case LateEventsCapped x: Apply(x); break;
            case RunReclassified x: Apply(x); break;
            case VerdictReached x: Apply(x); break;
            case StatusObserved x: Apply(x); break;
            case WorkerEvent x: Record(x); break;
        }
    }

    /// <summary>What folding any event of the stream would do: the history's "what applying it did".</summary>
    public EventEffect EffectOf(object @event) => @event switch
    {
        WorkerEvent worker => Evaluate(worker),
        RunReclassified r => !Status.IsTerminal() ? EventEffect.NotApplied("run-not-terminal")
            : r.To == RunStatus.Succeeded && !CanSucceed() ? EventEffect.NotApplied(ProblemCodes.IncompleteResults)
            : EventEffect.Applied,
        VerdictReached => EventEffect.Applied,
        LateEventsCapped => Status.IsTerminal() && LateEventsCapAnomaly is null ? EventEffect.Applied : EventEffect.NotApplied("late-events-not-capped"),
        StatusObserved observed => Evaluate(observed),
        _ => Status.IsTerminal() ? EventEffect.NotApplied(AnomalyKinds.LateEvent) : EventEffect.Applied,
    };

    /// <summary>What folding this worker event would do, given the state now. Pure.</summary>
    public EventEffect Evaluate(WorkerEvent e)
    {
        if (Status.IsTerminal())
        {
            return e is RunCompleted && Status == RunStatus.Lost
                ? EventEffect.LateAs(AnomalyKinds.LateCompletion, $"The run was already lost at {TerminalAt:O}.")
                : EventEffect.LateAs(AnomalyKinds.LateEvent, $"The run was already {Status.Wire()}.");
        }

        switch (e)
        {
            case StepStarted s when Steps.ContainsKey(s.StepId):
                return EventEffect.NotApplied("step-already-started", $"Step '{s.StepId}' was already started.");

            case StepCompleted c when !Steps.TryGetValue(c.StepId, out _):
                return EventEffect.Refuse(ProblemCodes.UnknownStep, $"Step '{c.StepId}' was never started in this run.");

            case StepCompleted c when Steps[c.StepId].Completed:
                return EventEffect.NotApplied("step-already-completed", $"Step '{c.StepId}' was already completed.");

            case ScoresReported s:
            {
                var allKnown = true;
                foreach (var (name, value) in s.Scores)
                {
                    if (RequiredScores.Count > 0 && !RequiredScores.Contains(name))
                    {
                        return EventEffect.Refuse(ProblemCodes.UnknownScore,
                            $"Score '{name}' is not among the declared scores: {string.Join(", ", RequiredScores)}.");
                    }
                    if (Scores.TryGetValue(name, out var existing))
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

            case OutputRecorded o when Outputs.TryGetValue(o.Name, out var existing):
                return existing.Uri == o.Uri && existing.Sha256 == o.Sha256 && existing.Bytes == o.Bytes
                    ? EventEffect.Duplicate("output-already-recorded")
                    : EventEffect.Refuse(ProblemCodes.OutputConflict,
                        $"Output '{o.Name}' is already recorded with another uri or digest.");

            case RunCompleted when CompletionReported:
                return EventEffect.NotApplied("completion-already-reported", "Completion was already reported.");

            default:
                return EventEffect.Applied;
        }
    }

    /// <summary>What is still required before a reported completion can become a success.</summary>
    public IReadOnlyList<string> Missing()
    {
        var missing = new List<string>();
        missing.AddRange(RequiredScores.Where(s => !Scores.ContainsKey(s)).Select(s => $"score:{s}"));
        missing.AddRange(RequiredOutputs.Where(o => !Outputs.ContainsKey(o)).Select(o => $"output:{o}"));
        missing.AddRange(Steps.Values.Where(s => !s.Completed).OrderBy(s => s.StepId, StringComparer.Ordinal)
            .Select(s => $"step:{s.StepId}"));
        if (DeclaredItemsTotal is { } total && CommittedItems < total)
        {
            missing.Add($"items:{total - CommittedItems}");
        }
        return missing;
    }

    /// <summary>Everything still needed to succeed, the completion report included.</summary>
    public IReadOnlyList<string> MissingForSuccess() =>
        CompletionReported ? Missing() : ["completion", .. Missing()];

    /// <summary>
    /// How the item counts fail to balance beyond what is still missing: more committed than the
    /// declared total, or a reported total other than the registered one. Null when they balance or
    /// only wait for items (<see cref="Missing"/>).
    /// </summary>
    public string? Imbalance() =>
        ExpectedItems is { } expected && ItemsTotalReported is { } reported && expected != reported
            ? $"registered with {expected} expected items but completion claims {reported}"
            : DeclaredItemsTotal is { } total && CommittedItems > total
                ? $"{CommittedItems} items committed but the declared total is {total}"
                : null;

    /// <summary>True when the run holds everything succeeded means, so that even an operator may call it that.</summary>
    public bool CanSucceed() => MissingForSuccess().Count == 0 && Imbalance() is null;

    private void Record(WorkerEvent e)
    {
        var effect = Evaluate(e);
        if (effect.Kind is EventResultKind.Duplicate or EventResultKind.Refused) return;

        LastEventAt = e.RecordedAt;

        if (effect.Kind == EventResultKind.RecordedNotApplied)
        {
            if (effect.Reason == AnomalyKinds.LateCompletion)
            {
                var delay = TerminalAt is { } t ? e.RecordedAt - t : TimeSpan.Zero;
                Anomalies.Add(new RunAnomaly(AnomalyKinds.LateCompletion, e.RecordedAt,
                    $"Completion claimed to occur at {e.OccurredAt:O} arrived {delay.TotalSeconds:0}s after the run was marked lost; the run stays lost.",
                    e.EventId));
            }
            else if (effect.Reason == AnomalyKinds.LateEvent)
            {
                Anomalies.Add(new RunAnomaly(AnomalyKinds.LateEvent, e.RecordedAt,
                    $"{EventNames.WireName(e)} arrived after the run was {Status.Wire()}; status unchanged.",
                    e.EventId));
            }
            return;
        }

        // A heartbeat only proves liveness; any other report means the work has begun.
        if (Status == RunStatus.Claimed && e is not HeartbeatReceived)
        {
            Status = RunStatus.Running;
            StartedAt = e.RecordedAt;
        }

        switch (e)
        {
            case StepStarted s:
                Steps[s.StepId] = new RunStep(s.StepId, s.Name, s.OccurredAt);
                break;
            case StepCompleted c:
                Steps[c.StepId] = Steps[c.StepId] with { Completed = true, Outcome = c.Outcome, CompletedAt = c.OccurredAt };
                break;
            case HeartbeatReceived h:
                LeaseExpiresAt = h.RecordedAt.AddSeconds(LeaseSeconds);
                LastHeartbeatAt = h.RecordedAt;
                break;
            case LogWritten l:
                LogLines += l.Lines.Count;
                break;
            case ScoresReported s:
                foreach (var (name, value) in s.Scores) Scores.TryAdd(name, value);
                break;
            case OutputRecorded o:
                Outputs[o.Name] = new RunOutput(o.Name, o.Uri, o.Sha256, o.Bytes);
                if (o.Bytes == 0) Warn(WarningKinds.EmptyOutput);
                break;
            case ItemsCommitted i:
                CommittedChunks++;
                CommittedItems += i.Count;
                break;
            case RunCompleted c:
                CompletionReported = true;
                CompletionReportedAt = c.RecordedAt;
                ItemsTotalReported = c.ItemsTotal;
                foreach (var warning in c.Warnings ?? []) Warn(warning);
                break;
            case RunFailed f:
                ErrorClass = f.ErrorClass;
                ErrorMessage = f.Message;
                Terminate(RunStatus.Failed, f.ErrorClass, f.RecordedAt);
                return;
        }

        Settle(e);
    }

    /// <summary>After any applied fact: does the run now balance, overflow, or complete?</summary>
    private void Settle(WorkerEvent trigger)
    {
        if (Status.IsTerminal()) return;

        if (ExpectedItems is { } expected && ItemsTotalReported is { } reported && expected != reported)
        {
            Anomalies.Add(new RunAnomaly(AnomalyKinds.AccountingMismatch, trigger.RecordedAt,
                $"Registered with {expected} expected items but completion claims {reported}.", trigger.EventId));
            Terminate(RunStatus.Failed, AnomalyKinds.AccountingMismatch, trigger.RecordedAt);
            return;
        }

        if (DeclaredItemsTotal is { } total && CommittedItems > total)
        {
            Anomalies.Add(new RunAnomaly(AnomalyKinds.AccountingMismatch, trigger.RecordedAt,
                $"Committed {CommittedItems} items but the declared total is {total}.", trigger.EventId));
            Terminate(RunStatus.Failed, AnomalyKinds.AccountingMismatch, trigger.RecordedAt);
            return;
        }

        if (!CompletionReported) return;

        var missing = Missing();
        if (missing.Count == 0)
        {
            Terminate(RunStatus.Succeeded, null, trigger.RecordedAt);
        }
        else if (trigger is RunCompleted)
        {
            Reason = AnomalyKinds.CompletedBeforeResults;
            Anomalies.Add(new RunAnomaly(AnomalyKinds.CompletedBeforeResults, trigger.RecordedAt,
                $"Completion reported while missing: {string.Join(", ", missing)}.", trigger.EventId));
        }
    }

    private void Warn(string warning)
    {
        if (!Warnings.Contains(warning)) Warnings.Add(warning);
    }

    private void Terminate(RunStatus status, string? reason, DateTimeOffset at)
    {
        Status = status;
        Reason = reason;
        TerminalAt = at;
        Verdicts.Add(new Verdict(status, reason, at, "ledger"));
        FlagMismatches(at);
    }
}
