using Ledger.Contract;

namespace Ledger.Runs;

/// <summary>
/// What someone asks of one run. A command holds everything its decision needs besides the run's
/// state and the time: what the edge checked or drew at random (the lease token's digest, a fresh
/// token), and what the writer looked up for it (which of its eventIds and chunk ids the run already
/// recorded). Deciding it reads nothing else.
/// </summary>
public abstract record RunCommand(string RunId);

/// <summary>A worker's events, in the order sent; all are taken or, when one is refused, none.</summary>
/// <param name="Events">The events as sent; the decision stamps their <see cref="WorkerEvent.RecordedAt"/>.</param>
/// <param name="TokenHash">The digest of the lease token the events came with (authenticated for this run).</param>
public sealed record RecordEventsCommand(string RunId, string TokenHash, IReadOnlyList<WorkerEvent> Events) : RunCommand(RunId)
{
    /// <summary>Which of these events' ids and chunk ids the run already holds; filled in by the writer.</summary>
    public RecordedKeys Recorded { get; init; } = RecordedKeys.None;

    /// <summary>How long after the verdict, and how many, late events a terminal run still records (configuration, filled in by the edge).</summary>
    public LateEventPolicy Late { get; init; } = LateEventPolicy.Default;
}

/// <summary>
/// Late events (sent with the run's last lease token after its verdict) are recorded and flagged for
/// <see cref="Grace"/> after the verdict, at most <see cref="MaxPerRun"/> of them per run; those beyond
/// the cap are counted in one anomaly, and after the grace the token is answered <c>409 run-terminal</c>
/// (<c>Ledger:LateEvents:*</c>).
/// </summary>
public sealed class LateEventPolicy
{
    public const string Section = "Ledger:LateEvents";

    public static readonly LateEventPolicy Default = new();

    /// <summary>
    /// From the verdict (its latest time, a reclassification included). An hour: far longer than a
    /// worker's retries of its last requests take (the clients' retry windows are minutes) and than a
    /// lease, short enough that a token that leaked with the worker's logs is dead within the hour.
    /// </summary>
    public TimeSpan Grace { get; set; } = TimeSpan.FromHours(1);

    /// <summary>Late events recorded per run (each one event and one anomaly, and a delivery per anomaly subscriber).</summary>
    public int MaxPerRun { get; set; } = 100;
}

/// <param name="FreshToken">A random token to hand out when the claim carries no claimId.</param>
/// <param name="FreshNonce">A random nonce to derive the token from when it carries one.</param>
public sealed record ClaimCommand(string RunId, string? Worker, string? ClaimId, string FreshToken, string FreshNonce,
    LeaseTokenDerivation Derivation) : RunCommand(RunId)
{
    /// <summary>The keyed digest of the key the claim came with (<see cref="LeaseTokenDerivation.ClaimKeyDigest"/>): a claimId binds to it.</summary>
    public string? KeyHash { get; init; }
}

public sealed record CancelCommand(string RunId, string? Reason) : RunCommand(RunId);

public sealed record ReclassifyCommand(string RunId, RunStatus Status, string Reason, IReadOnlyList<string> Evidence,
    string? Operator) : RunCommand(RunId);

public sealed record ObserveCommand(string RunId, string Source, RunStatus Status, DateTimeOffset ObservedAt, string? Detail)
    : RunCommand(RunId);

/// <summary>The janitor's: mark the run if its lease expired more than <paramref name="Grace"/> ago.</summary>
public sealed record ExpireLeaseCommand(string RunId, TimeSpan Grace) : RunCommand(RunId);

/// <summary>The body of an accepted command's answer (<see cref="Outcome.Accepted"/>).</summary>
public interface IAnswer;

/// <summary>
/// What deciding one command answers, from a closed set; <see cref="RunAnswers.ToHttp"/> is the one
/// place that turns any of them into HTTP. What became of each event of an accepted or late
/// command is in its results (<see cref="EventResult"/>: applied, duplicate, recorded-not-applied).
/// </summary>
public abstract record Outcome
{
    private Outcome() { }

    /// <summary>The command was taken (its events, if any, are appended); <paramref name="Value"/> is the answer.</summary>
    public sealed record Accepted(IAnswer Value) : Outcome;

    /// <summary>
    /// Late events of a run that was terminal when they came: recorded and flagged (those beyond the
    /// run's cap only counted), and the worker told to stop with <paramref name="Stop"/> (run-terminal)
    /// and what became of each event. Not a refusal: events may have been appended.
    /// </summary>
    public sealed record Late(Refusal Stop, IReadOnlyList<EventResult> Results) : Outcome;

    /// <summary>Refused: nothing is appended.</summary>
    public sealed record Refused(Refusal Refusal) : Outcome;
}

/// <summary>
/// The outcome of deciding one command: the events to append (possibly none) and what to answer
/// (<see cref="Outcome"/>). <see cref="After"/> is the run once the events are folded.
/// </summary>
public sealed record Decision(IReadOnlyList<object> Events, Outcome Outcome, Run? After)
{
    /// <summary>The answer when the command was accepted; null otherwise.</summary>
    public IAnswer? Answer => (Outcome as Outcome.Accepted)?.Value;

    /// <summary>The refusal when the command was refused; null otherwise.</summary>
    public Refusal? Refusal => (Outcome as Outcome.Refused)?.Refusal;

    /// <summary>The late events' outcome when the run was terminal; null otherwise.</summary>
    public Outcome.Late? Late => Outcome as Outcome.Late;

    /// <summary>What became of each event of a worker's request, accepted or late; null for other outcomes.</summary>
    public IReadOnlyList<EventResult>? Results => Outcome switch
    {
        Outcome.Accepted { Value: EventsRecorded recorded } => recorded.Results,
        Outcome.Late late => late.Results,
        _ => null,
    };

    /// <summary>Late events of the command beyond the run's cap, not recorded: added to the count of the cap's anomaly.</summary>
    public long LateEventsBeyondCap { get; init; }

    public static Decision Refuse(Refusal refusal, Run? run) => new([], new Outcome.Refused(refusal), run);

    public static Decision Accept(IReadOnlyList<object> events, IAnswer answer, Run? after) => new(events, new Outcome.Accepted(answer), after);
}

/// <summary>What the janitor's command did: the status it marked, or null when there was nothing to mark.</summary>
public sealed record LeaseExpiryOutcome(RunStatus? Marked) : IAnswer;

/// <summary>
/// Which eventIds and chunk ids (with their counts) a run already recorded, among those a command
/// carries: the at-most-once guard, kept in the database (<see cref="RecordedKeyStore"/>) rather
/// than in the run's state, so an event costs the same on the run's first and its 100,000th.
/// </summary>
public sealed class RecordedKeys
{
    public static readonly RecordedKeys None = new(new HashSet<string>(StringComparer.Ordinal), new Dictionary<string, long>(StringComparer.Ordinal));

    public RecordedKeys(IReadOnlySet<string> eventIds, IReadOnlyDictionary<string, long> chunks)
    {
        EventIds = eventIds;
        Chunks = chunks;
    }

    public IReadOnlySet<string> EventIds { get; }
    public IReadOnlyDictionary<string, long> Chunks { get; }

    /// <summary>These keys together with those of events appended since they were read.</summary>
    public RecordedKeys With(IEnumerable<object> appended)
    {
        var ids = new HashSet<string>(EventIds, StringComparer.Ordinal);
        var chunks = new Dictionary<string, long>(Chunks, StringComparer.Ordinal);
        foreach (var e in appended.OfType<WorkerEvent>())
        {
            ids.Add(e.EventId);
            if (e is ItemsCommitted i) chunks.TryAdd(i.ChunkId, i.Count);
        }
        return new RecordedKeys(ids, chunks);
    }
}
