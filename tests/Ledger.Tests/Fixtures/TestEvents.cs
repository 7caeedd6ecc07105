using Ledger.Runs;

namespace Ledger.Tests.Fixtures;

/// <summary>A worker event's three stamps: its idempotency key, when the worker says it happened, when the ledger recorded it.</summary>
/// <remarks>A default <see cref="RecordedAt"/> is the ledger's to set: a decision stamps it with its own time.</remarks>
public readonly record struct Stamp(string EventId, DateTimeOffset OccurredAt, DateTimeOffset RecordedAt = default);

/// <summary>
/// The run's events as the tests that need no HTTP build them, each defined once: a registration
/// that names only what a test sets, and every worker event from its <see cref="Stamp"/> and its own fields.
/// (Tests through the API build the wire form with <see cref="Scenarios.Event"/>.)
/// </summary>
public static class TestEvents
{
    public static RunRegistered Registered(string runId, DateTimeOffset at, int leaseSeconds = 60,
        IReadOnlyList<string>? scores = null, IReadOnlyList<string>? outputs = null, long? expectedItems = null,
        string? board = null, string? participant = null, IReadOnlyDictionary<string, string>? labels = null) =>
        new(runId, board, participant, null, labels ?? new Dictionary<string, string>(), scores ?? [], outputs ?? [],
            expectedItems, leaseSeconds, at);

    public static RunStarted Started(Stamp s) => new() { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt };

    public static HeartbeatReceived Heartbeat(Stamp s) => new() { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt };

    public static LogWritten Log(Stamp s, params string[] lines) =>
        new() { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, Lines = lines };

    public static StepStarted StepStarted(Stamp s, string stepId, string? name = null) =>
        new() { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, StepId = stepId, Name = name };

    public static StepCompleted StepCompleted(Stamp s, string stepId, string? outcome = "ok") =>
        new() { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, StepId = stepId, Outcome = outcome };

    public static ScoresReported Scores(Stamp s, params (string Name, double Value)[] scores) =>
        new() { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, Scores = scores.ToDictionary(x => x.Name, x => x.Value) };

    public static OutputRecorded Output(Stamp s, string name, string uri, long? bytes = null) =>
        new() { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, Name = name, Uri = uri, Bytes = bytes };

    public static ItemsCommitted Items(Stamp s, string chunkId, long count) =>
        new() { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, ChunkId = chunkId, Count = count };

    public static RunCompleted Completed(Stamp s, long? itemsTotal = null) =>
        new() { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, ItemsTotal = itemsTotal };

    public static RunFailed Failed(Stamp s, string errorClass, string? message = null) =>
        new() { EventId = s.EventId, OccurredAt = s.OccurredAt, RecordedAt = s.RecordedAt, ErrorClass = errorClass, Message = message };
}

/// <summary>
/// A test's worker events in sequence, for the example tests that derive from it: eventIds
/// <c>e1</c>, <c>e2</c>, …, each occurring a second after the one before (the first a second after
/// <paramref name="start"/>), and recorded <paramref name="recordedAfter"/> after it occurred, or left
/// for the decision to stamp when that is null. Each test gets its own sequence (xunit makes an
/// instance per test).
/// </summary>
public abstract class WorkerEventSequence(DateTimeOffset start, TimeSpan? recordedAfter = null)
{
    private int _sequence;

    /// <summary>The next stamp; with <paramref name="eventId"/>, a resend or a collision under that key.</summary>
    protected Stamp Next(string? eventId = null)
    {
        _sequence++;
        var occurred = start.AddSeconds(_sequence);
        return new Stamp(eventId ?? $"e{_sequence}", occurred, recordedAfter is { } after ? occurred + after : default);
    }

    protected RunStarted Started() => TestEvents.Started(Next());
    protected HeartbeatReceived Heartbeat() => TestEvents.Heartbeat(Next());
    protected LogWritten Log(params string[] lines) => TestEvents.Log(Next(), lines);
    protected StepStarted StepStarted(string stepId, string? name = null) => TestEvents.StepStarted(Next(), stepId, name);
    protected StepCompleted StepCompleted(string stepId) => TestEvents.StepCompleted(Next(), stepId);
    protected ScoresReported Scores(params (string Name, double Value)[] scores) => TestEvents.Scores(Next(), scores);
    protected OutputRecorded Output(string name, string uri, long? bytes = null) => TestEvents.Output(Next(), name, uri, bytes);
    protected ItemsCommitted Items(string chunkId, long count, string? eventId = null) => TestEvents.Items(Next(eventId), chunkId, count);
    protected RunCompleted Completed(long? itemsTotal = null) => TestEvents.Completed(Next(), itemsTotal);
    protected RunFailed Failed(string errorClass, string? message = null) => TestEvents.Failed(Next(), errorClass, message);
}
