using System.Text.Json;
using JasperFx.Events;
using Ledger.Infrastructure;

namespace Ledger.Runs;

/// <summary>An event of a run's stream as the history reads it: where it is in the stream, when the database stored it, what it says.</summary>
public readonly record struct StoredEvent(long Version, long Sequence, DateTimeOffset Timestamp, object Data)
{
    public DateTimeOffset RecordedAt => RunReplay.RecordedAt(Data, Timestamp);
}

/// <summary>
/// Refolds a stream from its events alone, saying what each event did: the audit trail. A refold
/// may start from a snapshot of an earlier one (<see cref="RunSnapshot"/>): the same code over the
/// same events before it, so the same state.
/// </summary>
public static class RunReplay
{
    public sealed record Explained(Run Run, IReadOnlyList<HistoryEntry> Entries);

    public static Explained Explain(IReadOnlyList<IEvent> events)
    {
        var fold = new Fold();
        var entries = new List<HistoryEntry>(events.Count);
        foreach (var e in events)
        {
            if (fold.Apply(e, explain: true) is { } entry) entries.Add(entry);
        }
        return new Explained(fold.Run ?? new Run(), entries);
    }

    /// <summary>
    /// One refold under way: every event of the stream, in version order, from the first or from
    /// the one after a snapshot. Pure: the state, and what each event did to it, come from the events.
    /// </summary>
    public sealed class Fold
    {
        public Fold() { }

        /// <summary>Goes on from a snapshot; the fold owns its state from then on.</summary>
        public Fold(RunSnapshot from)
        {
            Run = from.State;
            Version = from.Version;
            Sequence = from.Sequence;
            RecordedThrough = from.RecordedThrough;
        }

        /// <summary>The run so far; null until its registration.</summary>
        public Run? Run { get; private set; }
        /// <summary>The version (and global sequence) of the last event applied.</summary>
        public long Version { get; private set; }
        public long Sequence { get; private set; }
        /// <summary>The latest ledger time among the events applied (they need not be in time order).</summary>
        public DateTimeOffset? RecordedThrough { get; private set; }

        /// <summary>Applies the next event of the stream; with <paramref name="explain"/>, says what it did.</summary>
        public HistoryEntry? Apply(IEvent e, bool explain) => Apply(new StoredEvent(e.Version, e.Sequence, e.Timestamp, e.Data), explain);

        /// <inheritdoc cref="Apply(IEvent, bool)"/>
        public HistoryEntry? Apply(StoredEvent e, bool explain)
        {
            if (e.Version != Version + 1)
            {
                throw new InvalidOperationException($"A refold of run {Run?.Id} was given version {e.Version} after {Version}: it takes every event, in order.");
            }
            Version = e.Version;
            Sequence = e.Sequence;
            var recordedAt = e.RecordedAt;
            if (RecordedThrough is not { } through || recordedAt > through) RecordedThrough = recordedAt;

            EventEffect effect;
            if (e.Data is RunRegistered registered)
            {
                Run = Run.Create(registered);
                effect = EventEffect.Applied;
            }
            else if (Run is null)
            {
                return null;
            }
            else
            {
                effect = Run.EffectOf(e.Data);
                Run.Fold(e.Data);
            }

            Run.Version = e.Version;
            if (!explain) return null;
            var worker = e.Data as WorkerEvent;
            return new HistoryEntry(e.Sequence, e.Version, EventNames.WireName(e.Data), OccurredAt(e.Data),
                recordedAt, worker?.EventId, effect.Kind, effect.Reason, effect.Detail, Run.Status,
                JsonSerializer.SerializeToElement(e.Data, e.Data.GetType(), LedgerJson.Options));
        }
    }

    /// <summary>The ledger's own clock when the event was recorded (what time travel goes by).</summary>
    public static DateTimeOffset RecordedAt(IEvent e) => RecordedAt(e.Data, e.Timestamp);

    /// <inheritdoc cref="RecordedAt(IEvent)"/>
    public static DateTimeOffset RecordedAt(object data, DateTimeOffset stored) => data switch
    {
        WorkerEvent w => w.RecordedAt,
        StatusObserved o => o.RecordedAt,
        _ => LedgerTime(data) ?? stored,
    };

    private static DateTimeOffset? OccurredAt(object data) => data switch
    {
        WorkerEvent w => w.OccurredAt,
        StatusObserved o => o.ObservedAt,
        _ => LedgerTime(data),
    };

    /// <summary>The one time an event the ledger itself decides carries: both when it happened and when it was recorded.</summary>
    private static DateTimeOffset? LedgerTime(object data) => data switch
    {
        RunRegistered r => r.RegisteredAt,
        RunClaimed c => c.ClaimedAt,
        RunCancelled c => c.CancelledAt,
        LeaseExpired l => l.DetectedAt,
        LateEventsCapped c => c.At,
        RunReclassified r => r.At,
        VerdictReached v => v.At,
        _ => null,
    };
}
