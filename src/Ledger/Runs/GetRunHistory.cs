using System.Text.Json;
using JasperFx.Events;
using Ledger.Infrastructure;
using Marten;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Runs;

public sealed record HistoryEntry(
    long Sequence,
    long Version,
    string Type,
    DateTimeOffset? OccurredAt,
    DateTimeOffset RecordedAt,
    string? EventId,
    EventResultKind Result,
    string? Reason,
    string? Detail,
    RunStatus StatusAfter,
    JsonElement Data);

public sealed record RunHistory(string RunId, RunStatus Status, long Version, IReadOnlyList<HistoryEntry> Events);

public static class GetRunHistoryEndpoint
{
    [WolverineGet("/api/runs/{id}/events", Name = "GetRunHistory")]
    [Tags("Runs")]
    [EndpointSummary("Every event of the run, when it occurred and was recorded, and what applying it did")]
    [ProducesResponseType<RunHistory>(200)]
    [ProducesResponseType<Problem>(401), ProducesResponseType<Problem>(404)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, IDocumentStore store)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(id, token: context.RequestAborted);
        if (events.Count == 0) return RunProblems.NotFound(id).ToResult();

        var replay = RunReplay.Explain(events);
        return Results.Json(new RunHistory(id, replay.Run.Status, replay.Run.Version, replay.Entries), LedgerJson.Options);
    }
}

/// <summary>Refolds a stream from its events alone, saying what each event did: the audit trail.</summary>
public static class RunReplay
{
    public sealed record Explained(Run Run, IReadOnlyList<HistoryEntry> Entries);

    public static Explained Explain(IReadOnlyList<IEvent> events)
    {
        Run? run = null;
        var entries = new List<HistoryEntry>(events.Count);
        foreach (var e in events)
        {
            EventEffect effect;
            DateTimeOffset? occurredAt = null;
            string? eventId = null;
            switch (e.Data)
            {
                case RunRegistered registered:
                    run = Run.Create(registered);
                    effect = EventEffect.Applied;
                    occurredAt = registered.RegisteredAt;
                    break;
                case WorkerEvent worker when run is not null:
                    effect = run.Evaluate(worker);
                    occurredAt = worker.OccurredAt;
                    eventId = worker.EventId;
                    run.Fold(worker);
                    break;
                case RunClaimed claimed when run is not null:
                    effect = run.Status.IsTerminal() ? EventEffect.NotApplied(AnomalyKinds.LateEvent) : EventEffect.Applied;
                    occurredAt = claimed.ClaimedAt;
                    run.Apply(claimed);
                    break;
                case RunCancelled cancelled when run is not null:
                    effect = run.Status.IsTerminal() ? EventEffect.NotApplied(AnomalyKinds.LateEvent) : EventEffect.Applied;
                    occurredAt = cancelled.CancelledAt;
                    run.Apply(cancelled);
                    break;
                default:
                    effect = EventEffect.NotApplied("unknown-event");
                    break;
            }

            if (run is null) continue;
            run.Version = e.Version;
            entries.Add(new HistoryEntry(e.Sequence, e.Version, EventNames.WireName(e.Data), occurredAt,
                RecordedAt(e), eventId, effect.Kind, effect.Reason, effect.Detail, run.Status,
                JsonSerializer.SerializeToElement(e.Data, e.Data.GetType(), LedgerJson.Options)));
        }
        return new Explained(run ?? new Run(), entries);
    }

    private static DateTimeOffset RecordedAt(IEvent e) => e.Data switch
    {
        WorkerEvent w => w.RecordedAt,
        _ => e.Timestamp,
    };
}
