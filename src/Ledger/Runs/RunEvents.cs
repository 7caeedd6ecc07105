using Ledger.Contract;
using Ledger.Leaderboards;

namespace Ledger.Runs;

// Events of a run's stream. Past tense; every fact the state is derived from is in the event
// itself (RecordedAt is the ledger's clock at append time), so a replay never reads a clock.

/// <summary>A run was registered. <see cref="Labels"/> are normalized; <see cref="LabelsAsSent"/> is what the caller sent, when that differed.</summary>
public sealed record RunRegistered(
    string RunId,
    string? Board,
    string? Participant,
    string? Batch,
    IReadOnlyDictionary<string, string> Labels,
    IReadOnlyList<string> RequiredScores,
    IReadOnlyList<string> RequiredOutputs,
    long? ExpectedItems,
    int LeaseSeconds,
    DateTimeOffset RegisteredAt,
    Ranking? Ranking = null,
    IReadOnlyDictionary<string, string>? LabelsAsSent = null);

/// <summary>
/// A worker took the lease. Only the token's SHA-256 digest is kept. A claim sent with a
/// <c>claimId</c> keeps that id's digest (<see cref="ClaimIdHash"/>) and the random
/// <see cref="TokenNonce"/> its token was derived from (see <see cref="LeaseTokenDerivation"/>), so
/// that a retry of the same claim can be answered with the same token; both are null for claims
/// without one and in streams written before claim ids existed. Such a claim also keeps
/// <see cref="ClaimKeyHash"/>, a keyed digest of the key it was made with
/// (<see cref="LeaseTokenDerivation.ClaimKeyDigest"/>), so that only that key can retry it; null in
/// streams written before claims were bound to their key (their retries are not bound).
/// </summary>
public sealed record RunClaimed(
    string? Worker,
    string LeaseTokenHash,
    DateTimeOffset ClaimedAt,
    DateTimeOffset LeaseExpiresAt,
    string? ClaimIdHash = null,
    string? TokenNonce = null,
    string? ClaimKeyHash = null);

public sealed record RunCancelled(string? Reason, DateTimeOffset CancelledAt);

/// <summary>
/// A terminal verdict the Run aggregate derived (or an operator gave), written beside the facts
/// that produced it so that cross-run projections (leaderboards, KPIs) can follow verdicts
/// without re-deriving them. Folding it changes nothing; verify checks it agrees with the fold.
/// </summary>
public sealed record VerdictReached(
    string RunId,
    RunStatus Status,
    string? Reason,
    string? Board,
    string? Participant,
    Ranking? Ranking,
    IReadOnlyDictionary<string, double> Scores,
    DateTimeOffset At,
    string DecidedBy);

/// <summary>
/// A terminal run took as many late events as it may (<see cref="LateEventPolicy.MaxPerRun"/>): those
/// sent after it are not recorded but counted, in the one anomaly this event raises.
/// </summary>
public sealed record LateEventsCapped(int Cap, DateTimeOffset At);

/// <summary>The janitor found the lease expired (past its grace) without a heartbeat.</summary>
public sealed record LeaseExpired(DateTimeOffset LeaseExpiresAt, DateTimeOffset DetectedAt);

/// <summary>An operator overruled a terminal verdict; the earlier one stays in the run's verdicts.</summary>
public sealed record RunReclassified(
    RunStatus From,
    string? FromReason,
    RunStatus To,
    string Reason,
    IReadOnlyList<string> Evidence,
    string? Operator,
    DateTimeOffset At);

/// <summary>
/// Another system's view of the run (an executor, a portal), as it reported it. Recorded in the
/// stream beside the ledger's facts; it never changes the ledger's status, only flags disagreement.
/// </summary>
public sealed record StatusObserved(string Source, RunStatus Status, DateTimeOffset ObservedAt, string? Detail, DateTimeOffset RecordedAt);

/// <summary>Anything a worker reports: carries the client's idempotency key and its claimed time.</summary>
public abstract record WorkerEvent
{
    public required string EventId { get; init; }
    public required DateTimeOffset OccurredAt { get; init; }
    public required DateTimeOffset RecordedAt { get; init; }
}

public sealed record RunStarted : WorkerEvent;

public sealed record StepStarted : WorkerEvent
{
    public required string StepId { get; init; }
    public string? Name { get; init; }
}

public sealed record StepCompleted : WorkerEvent
{
    public required string StepId { get; init; }
    public string? Outcome { get; init; }
}

public sealed record HeartbeatReceived : WorkerEvent;

public sealed record LogWritten : WorkerEvent
{
    public required IReadOnlyList<string> Lines { get; init; }
}

public sealed record ScoresReported : WorkerEvent
{
    public required IReadOnlyDictionary<string, double> Scores { get; init; }
}

public sealed record OutputRecorded : WorkerEvent
{
    public required string Name { get; init; }
    public required string Uri { get; init; }
    public string? Sha256 { get; init; }
    public long? Bytes { get; init; }
}

public sealed record ItemsCommitted : WorkerEvent
{
    public required string ChunkId { get; init; }
    public required long Count { get; init; }
}

public sealed record RunCompleted : WorkerEvent
{
    public long? ItemsTotal { get; init; }
    /// <summary>What the worker wants noticed about a success (e.g. <c>empty-output</c>); it stays a success.</summary>
    public IReadOnlyList<string>? Warnings { get; init; }
}

public sealed record RunFailed : WorkerEvent
{
    /// <summary>One of <see cref="ErrorClasses.All"/> (checked at the edge; older streams may hold others).</summary>
    public required string ErrorClass { get; init; }
    public string? Message { get; init; }
}

public static class EventNames
{
    /// <summary>The name an event of the stream is shown by: the wire type for worker events.</summary>
    public static string WireName(object @event) => @event switch
    {
        WorkerEvent e => WorkerEventCatalogue.Default.ByEvent(e.GetType())?.Wire ?? e.GetType().Name,
        RunRegistered => "run.registered",
        RunClaimed => "run.claimed",
        RunCancelled => "run.cancelled",
        LeaseExpired => "lease.expired",
        LateEventsCapped => "late-events.capped",
        RunReclassified => "run.reclassified",
        VerdictReached => "verdict.reached",
        StatusObserved => "status.observed",
        _ => @event.GetType().Name,
    };
}
