using System.Text.Json;
using System.Text.Json.Serialization;

namespace Ledger.Client;

/// <summary>
/// The JSON of the ledger's wire (camelCase, nulls left out). The client defines its own DTOs
/// so that it depends on nothing but the pinned wire format, not on the service's assembly.
/// </summary>
internal static class WireJson
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        // Unknown members are ignored: a newer ledger may answer with more than this client knows.
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip,
    };
}

/// <summary>What <see cref="LedgerClient.RegisterAsync"/> sends. Every member is optional.</summary>
public sealed record RunRegistration
{
    /// <summary>The run's id; the client generates one when it is null, so that a retried registration is the same run.</summary>
    public string? RunId { get; init; }
    public string? Board { get; init; }
    public string? Participant { get; init; }
    public string? Batch { get; init; }
    public IReadOnlyDictionary<string, string>? Labels { get; init; }
    public IReadOnlyList<string>? RequiredScores { get; init; }
    public IReadOnlyList<string>? RequiredOutputs { get; init; }
    public long? ExpectedItems { get; init; }
    public int? LeaseSeconds { get; init; }
}

internal sealed record RegisteredWire(string RunId, string? Status, int? LeaseSeconds);

internal sealed record ClaimWire(string Worker, string ClaimId);

internal sealed record LeaseWire(
    string? RunId,
    string LeaseToken,
    DateTimeOffset LeaseExpiresAt,
    int? LeaseSeconds,
    List<string>? RequiredScores,
    List<string>? RequiredOutputs,
    long? ExpectedItems);

internal sealed record CancelWire(string? Reason);

/// <summary>One worker event: the union of every type's members, nulls left out.</summary>
internal sealed record EventWire
{
    public required string Type { get; init; }
    public required string EventId { get; init; }
    public required DateTimeOffset OccurredAt { get; init; }
    public string? StepId { get; init; }
    public string? Name { get; init; }
    public string? Outcome { get; init; }
    public IReadOnlyList<string>? Lines { get; init; }
    public IReadOnlyDictionary<string, double>? Scores { get; init; }
    public string? Uri { get; init; }
    public string? Sha256 { get; init; }
    public long? Bytes { get; init; }
    public string? ChunkId { get; init; }
    public long? Count { get; init; }
    public long? ItemsTotal { get; init; }
    public IReadOnlyList<string>? Warnings { get; init; }
    public string? ErrorClass { get; init; }
    public string? Message { get; init; }
}

/// <summary>The event types of the wire.</summary>
internal static class EventTypes
{
    public const string RunStarted = "run.started";
    public const string StepStarted = "step.started";
    public const string StepCompleted = "step.completed";
    public const string Heartbeat = "heartbeat";
    public const string Log = "log";
    public const string ScoresReported = "scores.reported";
    public const string OutputRecorded = "output.recorded";
    public const string ItemsCommitted = "items.committed";
    public const string RunCompleted = "run.completed";
    public const string RunFailed = "run.failed";
}

/// <summary>The ledger's answer to an event: the run's status after it, and what happened to the event.</summary>
public sealed record EventsAnswer(string RunId, string Status, IReadOnlyList<EventResult> Results);

/// <summary>What recording one event did: <c>applied</c>, <c>duplicate</c> (a retry of a recorded event) or <c>recorded-not-applied</c>.</summary>
public sealed record EventResult(string EventId, string Result, string? Reason = null, string? Detail = null)
{
    /// <summary>The ledger has the event: applied now, or earlier (a duplicate).</summary>
    public bool Acknowledged => Result is EventResults.Applied or EventResults.Duplicate;
}

public static class EventResults
{
    public const string Applied = "applied";
    public const string Duplicate = "duplicate";
    public const string RecordedNotApplied = "recorded-not-applied";
}

/// <summary>The run statuses as the wire spells them.</summary>
public static class RunStatuses
{
    public const string Registered = "registered";
    public const string Claimed = "claimed";
    public const string Running = "running";
    public const string Succeeded = "succeeded";
    public const string Failed = "failed";
    public const string Lost = "lost";
    public const string Cancelled = "cancelled";

    /// <summary>Succeeded, failed, lost or cancelled: no worker event changes the run any more.</summary>
    public static bool IsTerminal(string? status) => status is Succeeded or Failed or Lost or Cancelled;
}

/// <summary>The values <c>run.failed</c> accepts as <c>errorClass</c>.</summary>
public static class ErrorClasses
{
    public const string Timeout = "timeout";
    public const string Validation = "validation";
    public const string Provider = "provider";
    public const string Infrastructure = "infrastructure";
    public const string Cancelled = "cancelled";
    public const string Unknown = "unknown";
}

/// <summary>RFC 9457 problem details with the ledger's members.</summary>
public sealed record LedgerProblem
{
    public string? Type { get; init; }
    public string? Title { get; init; }
    public int Status { get; init; }
    public string? Detail { get; init; }
    public string? Instance { get; init; }
    public string? Code { get; init; }
    public bool Retryable { get; init; }
    public string? RunId { get; init; }
    public string? RunStatus { get; init; }
    public IReadOnlyDictionary<string, string[]>? Errors { get; init; }
    public IReadOnlyList<string>? Allowed { get; init; }
    public IReadOnlyList<EventResult>? Results { get; init; }
    public string? EventId { get; init; }
}

/// <summary>The stable problem codes this client acts on.</summary>
public static class ProblemCodes
{
    public const string RunTerminal = "run-terminal";
    public const string LeaseExpired = "lease-expired";
    public const string LeaseLost = "lease-lost";
    public const string LeaseHeld = "lease-held";
    public const string RunExists = "run-exists";
    public const string InvalidPayload = "invalid-payload";
    public const string DatabaseUnavailable = "database-unavailable";
}

/// <summary>A run as <c>GET /api/runs/{id}</c> shows it: the members most workers need, and the whole answer in <see cref="Json"/>.</summary>
public sealed record RunState
{
    public required string RunId { get; init; }
    public required string Status { get; init; }
    public string? Reason { get; init; }
    public long Version { get; init; }
    public IReadOnlyList<string> Missing { get; init; } = [];
    public IReadOnlyDictionary<string, double> Scores { get; init; } = new Dictionary<string, double>();
    public string? ErrorClass { get; init; }
    public IReadOnlyList<string> Warnings { get; init; } = [];
    /// <summary>The answer as sent (steps, outputs, items, anomalies, verdicts, ...).</summary>
    public JsonElement Json { get; init; }
}

/// <summary>What the claim says the run needs before it can succeed.</summary>
/// <param name="Scores">Required score names.</param>
/// <param name="Outputs">Required output names.</param>
/// <param name="ExpectedItems">How many items the run must commit, when it says.</param>
/// <param name="Known">False when the ledger's claim answer did not carry the requirements (an older ledger):
/// then the client cannot check them before completing.</param>
public sealed record RunRequirements(IReadOnlyList<string> Scores, IReadOnlyList<string> Outputs, long? ExpectedItems, bool Known);
