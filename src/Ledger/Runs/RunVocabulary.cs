using Ledger.Contract;

namespace Ledger.Runs;

// The words a run is described in: what recording an event did to it, error classes, warnings, and
// the parts of the state (steps, outputs, observations, verdicts). Those the wire and the refusals
// share with every slice (event results, anomaly kinds, statuses) are in Ledger.Contract.

public sealed record EventEffect(EventResultKind Kind, string? Reason = null, string? Detail = null)
{
    /// <summary>
    /// Recorded while the run was terminal (recorded-not-applied on the wire, <see cref="Reason"/> the
    /// anomaly kind it is flagged with): what a run takes a limited number of (<see cref="LateEventPolicy"/>).
    /// </summary>
    public bool Late { get; init; }

    public static readonly EventEffect Applied = new(EventResultKind.Applied);
    public static EventEffect Duplicate(string reason) => new(EventResultKind.Duplicate, reason);
    public static EventEffect NotApplied(string reason, string? detail = null) => new(EventResultKind.RecordedNotApplied, reason, detail);
    /// <summary>An event of a terminal run, flagged as the anomaly <paramref name="kind"/> (late-event or late-completion).</summary>
    public static EventEffect LateAs(string kind, string detail) => new(EventResultKind.RecordedNotApplied, kind, detail) { Late = true };
    /// <summary>The event is refused; <paramref name="reason"/> is a code of the problem catalogue.</summary>
    public static EventEffect Refuse(string reason, string detail) => new(EventResultKind.Refused, reason, detail);
}

/// <summary>Why a run failed, from a closed list, so that a dashboard can tell a timeout from a bad answer.</summary>
public static class ErrorClasses
{
    public const string Timeout = "timeout";
    public const string Validation = "validation";
    public const string Provider = "provider";
    public const string Infrastructure = "infrastructure";
    public const string Cancelled = "cancelled";
    public const string Unknown = "unknown";

    public static readonly IReadOnlyList<string> All = [Timeout, Validation, Provider, Infrastructure, Cancelled, Unknown];
}

/// <summary>What a run carries beside its status: a success with a warning is still a success.</summary>
public static class WarningKinds
{
    /// <summary>An output was recorded with zero bytes: an empty answer, not a failure.</summary>
    public const string EmptyOutput = "empty-output";
}

public sealed record RunAnomaly(string Kind, DateTimeOffset At, string Detail, string? EventId = null, StatusMismatch? Mismatch = null) : IAnomaly;

/// <summary>Both sides of a disagreement: what the ledger decided and what another system said.</summary>
public sealed record StatusMismatch(RunStatus Ledger, RunStatus Observed, string Source, DateTimeOffset ObservedAt);

/// <summary>Another system's view of the run, as recorded.</summary>
public sealed record RunObservation(string Source, RunStatus Status, DateTimeOffset ObservedAt, string? Detail, DateTimeOffset RecordedAt);

public sealed record RunStep(string StepId, string? Name, DateTimeOffset StartedAt, bool Completed = false,
    string? Outcome = null, DateTimeOffset? CompletedAt = null);

public sealed record RunOutput(string Name, string Uri, string? Sha256, long? Bytes);

/// <summary>A terminal decision: by the ledger from the stream, or by an operator reclassifying it.</summary>
public sealed record Verdict(RunStatus Status, string? Reason, DateTimeOffset At, string DecidedBy,
    IReadOnlyList<string>? Evidence = null);
