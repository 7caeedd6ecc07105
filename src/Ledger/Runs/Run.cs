using Ledger.Contract;
using System.Text.Json.Serialization;
using Ledger.Leaderboards;

namespace Ledger.Runs;

/// <summary>
/// A run, folded from its stream: the evolve half of the run's decider. The Apply methods are
/// the invariants: they never throw and never read a clock; they decide what each event does
/// from the state and the event alone, so any stream, even one holding an event that should
/// have been refused, folds to a state that respects them. <see cref="EffectOf"/> says what
/// applying an event would do without doing it, by the rules of <see cref="RunRules"/>: one Apply per
/// event, one judge, one dispatcher (<see cref="Fold"/>). What to append and what to answer is decided
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

    /// <summary>
    /// Applies any event of a run's stream (replays, verification and deciding outside Marten): the
    /// one dispatcher over the Apply methods, which Marten's projection calls directly.
    /// </summary>
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
            case RunStarted x: Apply(x); break;
            case StepStarted x: Apply(x); break;
            case StepCompleted x: Apply(x); break;
            case HeartbeatReceived x: Apply(x); break;
            case LogWritten x: Apply(x); break;
            case ScoresReported x: Apply(x); break;
            case OutputRecorded x: Apply(x); break;
            case ItemsCommitted x: Apply(x); break;
            case RunCompleted x: Apply(x); break;
            case RunFailed x: Apply(x); break;
            // A type of the table without an Apply here yet changes nothing of its own: it is recorded
            // (a duplicate, a late one and the start of the work as for any report) and the run settled.
            // Every type of WorkerEventCatalogue.Default has its Apply (EventTypeTableTests checks it),
            // which Marten's projection needs.
            case WorkerEvent x: if (Records(x)) Settle(x); break;
        }
    }

    /// <summary>
    /// What folding an event would do, given the state now, without doing it: the one judge, by the
    /// rule of its kind (<see cref="RunRules"/>). The decider refuses what it refuses; the Apply
    /// methods apply only what it applies; the history shows it for each event.
    /// </summary>
    public EventEffect EffectOf(object @event) => @event switch
    {
        WorkerEvent e when Status.IsTerminal() => RunRules.Late(this, e),
        StepStarted s => RunRules.StepStart(this, s),
        StepCompleted c => RunRules.StepCompletion(this, c),
        ScoresReported s => RunRules.Scores(this, s),
        OutputRecorded o => RunRules.Output(this, o),
        RunCompleted c => RunRules.Completion(this, c),
        WorkerEvent => EventEffect.Applied,
        RunReclassified r => RunRules.Reclassification(this, r),
        VerdictReached => EventEffect.Applied,
        LateEventsCapped => RunRules.LateEventsCap(this),
        StatusObserved o => RunRules.Observation(this, o),
        _ => RunRules.Live(this),
    };

    // ---- the run's lifecycle ------------------------------------------------------------------

    public void Apply(RunClaimed e)
    {
        if (!Applies(e)) return;
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

    public void Apply(RunCancelled e)
    {
        if (!Applies(e)) return;
        Terminate(RunStatus.Cancelled, e.Reason ?? "cancelled-by-operator", e.CancelledAt);
    }

    public void Apply(LeaseExpired e)
    {
        if (!Applies(e)) return;
        // A completion whose results never arrived is a failure, not a loss: the worker did report.
        if (CompletionReported) Terminate(RunStatus.Failed, "incomplete-results", e.DetectedAt);
        else Terminate(RunStatus.Lost, "lease-expired", e.DetectedAt);
    }

    /// <summary>
    /// An operator's verdict. Succeeded means complete, even by an operator's hand: a reclassification
    /// to succeeded of a run without its results or whose counts do not balance (which the decision
    /// refuses) changes nothing.
    /// </summary>
    public void Apply(RunReclassified e)
    {
        if (!Applies(e)) return;
        Status = e.To;
        Reason = e.Reason;
        TerminalAt = e.At;
        Verdicts.Add(new Verdict(e.To, e.Reason, e.At, e.Operator is null ? "operator" : $"operator:{e.Operator}", e.Evidence));
        FlagMismatches(e.At);
    }

    /// <summary>Records that a verdict was published; the verdict itself was derived by the facts before it.</summary>
    public void Apply(VerdictReached e) { }

    /// <summary>Late events reached their cap: one anomaly stands for every one sent after it (its record counts them).</summary>
    public void Apply(LateEventsCapped e)
    {
        if (!Applies(e)) return;
        Anomalies.Add(new RunAnomaly(AnomalyKinds.LateEvent, e.At,
            $"The run took {LateEvents} late events, its cap of {e.Cap}; those sent after them are not recorded, only counted in this anomaly."));
        LateEventsCapAnomaly = Anomalies.Count - 1;
    }

    /// <summary>Another system's view of the run: recorded, and flagged when it disagrees with the verdict; never adopted.</summary>
    public void Apply(StatusObserved e)
    {
        if (!Applies(e)) return;
        var observation = new RunObservation(e.Source, e.Status, e.ObservedAt, e.Detail, e.RecordedAt);
        Observations.Add(observation);
        if (Disagrees(observation)) FlagMismatch(observation, e.RecordedAt);
    }

    // ---- the worker's events: each recorded (Records), then applied, then the run settled ----------

    public void Apply(RunStarted e)
    {
        if (Records(e)) Settle(e);
    }

    public void Apply(StepStarted e)
    {
        if (!Records(e)) return;
        Steps[e.StepId] = new RunStep(e.StepId, e.Name, e.OccurredAt);
        Settle(e);
    }

    public void Apply(StepCompleted e)
    {
        if (!Records(e)) return;
        Steps[e.StepId] = Steps[e.StepId] with { Completed = true, Outcome = e.Outcome, CompletedAt = e.OccurredAt };
        Settle(e);
    }

    public void Apply(HeartbeatReceived e)
    {
        if (!Records(e)) return;
        LeaseExpiresAt = e.RecordedAt.AddSeconds(LeaseSeconds);
        LastHeartbeatAt = e.RecordedAt;
        Settle(e);
    }

    public void Apply(LogWritten e)
    {
        if (!Records(e)) return;
        LogLines += e.Lines.Count;
        Settle(e);
    }

    public void Apply(ScoresReported e)
    {
        if (!Records(e)) return;
        foreach (var (name, value) in e.Scores) Scores.TryAdd(name, value);
        Settle(e);
    }

    public void Apply(OutputRecorded e)
    {
        if (!Records(e)) return;
        Outputs[e.Name] = new RunOutput(e.Name, e.Uri, e.Sha256, e.Bytes);
        if (e.Bytes == 0) Warn(WarningKinds.EmptyOutput);
        Settle(e);
    }

    public void Apply(ItemsCommitted e)
    {
        if (!Records(e)) return;
        CommittedChunks++;
        CommittedItems += e.Count;
        Settle(e);
    }

    public void Apply(RunCompleted e)
    {
        if (!Records(e)) return;
        CompletionReported = true;
        CompletionReportedAt = e.RecordedAt;
        ItemsTotalReported = e.ItemsTotal;
        foreach (var warning in e.Warnings ?? []) Warn(warning);
        Settle(e);
    }

    public void Apply(RunFailed e)
    {
        if (!Records(e)) return;
        ErrorClass = e.ErrorClass;
        ErrorMessage = e.Message;
        Terminate(RunStatus.Failed, e.ErrorClass, e.RecordedAt);
    }

    // ---- what the run holds ---------------------------------------------------------------------

    /// <summary>The verdict to publish for the last terminal decision of this run.</summary>
    public VerdictReached? LatestVerdict() => Verdicts.Count == 0 ? null : new VerdictReached(
        Id, Status, Reason, Board, Participant, Ranking, new Dictionary<string, double>(Scores), Verdicts[^1].At, Verdicts[^1].DecidedBy);

    /// <summary>True when the observation names a terminal status other than the ledger's terminal verdict.</summary>
    public bool Disagrees(RunObservation observation) =>
        Status.IsTerminal() && observation.Status.IsTerminal() && observation.Status != Status;

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

    /// <summary>True when the run holds everything succeeded means, so that even an operator may call it that.</summary>
    public bool CanSucceed() => MissingForSuccess().Count == 0 && RunRules.Imbalance(this) is null;

    // ---- the steps the Apply methods share ----------------------------------------------------------

    /// <summary>True when the event is applied (<see cref="EffectOf"/>); anything else changes nothing.</summary>
    private bool Applies(object e) => EffectOf(e).Kind == EventResultKind.Applied;

    /// <summary>
    /// What a worker event does before its own change: a duplicate, or one that should have been
    /// refused, changes nothing; any other is recorded (<see cref="LastEventAt"/>) and a late one
    /// flagged. True when it is also applied; the first report but a heartbeat starts the run.
    /// </summary>
    private bool Records(WorkerEvent e)
    {
        var effect = EffectOf(e);
        if (effect.Kind is EventResultKind.Duplicate or EventResultKind.Refused) return false;
        LastEventAt = e.RecordedAt;
        if (effect.Late) FlagLate(e, effect.Reason!);
        if (effect.Kind != EventResultKind.Applied) return false;

        // A heartbeat only proves liveness; any other report means the work has begun.
        if (Status == RunStatus.Claimed && e is not HeartbeatReceived)
        {
            Status = RunStatus.Running;
            StartedAt = e.RecordedAt;
        }
        return true;
    }

    private void FlagLate(WorkerEvent e, string kind)
    {
        if (kind == AnomalyKinds.LateCompletion)
        {
            var delay = TerminalAt is { } t ? e.RecordedAt - t : TimeSpan.Zero;
            Anomalies.Add(new RunAnomaly(AnomalyKinds.LateCompletion, e.RecordedAt,
                $"Completion claimed to occur at {e.OccurredAt:O} arrived {delay.TotalSeconds:0}s after the run was marked lost; the run stays lost.",
                e.EventId));
        }
        else
        {
            Anomalies.Add(new RunAnomaly(AnomalyKinds.LateEvent, e.RecordedAt,
                $"{EventNames.WireName(e)} arrived after the run was {Status.Wire()}; status unchanged.",
                e.EventId));
        }
    }

    /// <summary>After any applied fact: does the run now balance, overflow, or complete?</summary>
    private void Settle(WorkerEvent trigger)
    {
        if (Status.IsTerminal()) return;

        if (RunRules.Imbalance(this) is { } imbalance)
        {
            Anomalies.Add(new RunAnomaly(AnomalyKinds.AccountingMismatch, trigger.RecordedAt, imbalance.AnomalyDetail, trigger.EventId));
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
