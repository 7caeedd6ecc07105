namespace Ledger.Contract;

/// <summary>What recording one event did to the run, as the worker is told and the history shows.</summary>
public enum EventResultKind { Applied, Duplicate, RecordedNotApplied, Refused }

/// <summary>What became of one event of a worker's request, as the answer and the history tell it.</summary>
public sealed record EventResult(string EventId, EventResultKind Result, string? Reason = null, string? Detail = null);
