using System.Text.Json;
using JasperFx.Events;
using Ledger.Infrastructure;
using Ledger.Infrastructure.OpenApi;
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

/// <summary>
/// One page of a run's history: the events after version <c>after</c>, at most <c>limit</c> of
/// them. <c>status</c> and <c>version</c> are the run's now; <c>next</c> is the <c>after</c> of the
/// following page, null on the last one.
/// </summary>
public sealed record RunHistory(string RunId, RunStatus Status, long Version, IReadOnlyList<HistoryEntry> Events, long? Next);

public static class GetRunHistoryEndpoint
{
    [WolverineGet("/api/runs/{id}/events", Name = "GetRunHistory")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Refuses(ProblemCodes.RunNotFound)]
    [Tags("Runs")]
    [EndpointSummary("Every event of the run, when it occurred and was recorded, and what applying it did, paged by version (?after=V&limit=N)")]
    [ProducesResponseType<RunHistory>(200)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, IDocumentStore store, long? after, int? limit)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        await using var session = store.QuerySession();
        var events = await session.Events.FetchStreamAsync(id, token: context.RequestAborted);
        if (events.Count == 0) return RunDecider.NotFound(id).ToProblem(id).ToResult();

        // What each event did depends on every event before it, so the page is cut from the whole refold.
        var replay = RunReplay.Explain(events);
        var from = after ?? 0;
        var size = limit ?? DefaultLimit;
        if (from < 0 || size is < 1 or > MaxLimit)
        {
            return (RequestBody.Invalid(new Dictionary<string, string[]>
            {
                [from < 0 ? "after" : "limit"] = [from < 0 ? "A version, 0 or more." : $"Between 1 and {MaxLimit}."],
            }) with { RunId = id, RunStatus = replay.Run.Status }).ToResult();
        }

        var page = replay.Entries.Where(e => e.Version > from).Take(size).ToList();
        long? next = page.Count == size && page[^1].Version < replay.Run.Version ? page[^1].Version : null;
        return Results.Json(new RunHistory(id, replay.Run.Status, replay.Run.Version, page, next), LedgerJson.Options);
    }

    public const int DefaultLimit = 1000;
    public const int MaxLimit = 5000;
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
            if (e.Data is RunRegistered registered)
            {
                run = Run.Create(registered);
                effect = EventEffect.Applied;
            }
            else if (run is null)
            {
                continue;
            }
            else
            {
                effect = run.EffectOf(e.Data);
                run.Fold(e.Data);
            }

            run.Version = e.Version;
            var worker = e.Data as WorkerEvent;
            entries.Add(new HistoryEntry(e.Sequence, e.Version, EventNames.WireName(e.Data), OccurredAt(e.Data),
                RecordedAt(e), worker?.EventId, effect.Kind, effect.Reason, effect.Detail, run.Status,
                JsonSerializer.SerializeToElement(e.Data, e.Data.GetType(), LedgerJson.Options)));
        }
        return new Explained(run ?? new Run(), entries);
    }

    /// <summary>The ledger's own clock when the event was recorded (what time travel goes by).</summary>
    public static DateTimeOffset RecordedAt(IEvent e) => e.Data switch
    {
        WorkerEvent w => w.RecordedAt,
        RunRegistered r => r.RegisteredAt,
        RunClaimed c => c.ClaimedAt,
        RunCancelled c => c.CancelledAt,
        LeaseExpired l => l.DetectedAt,
        RunReclassified r => r.At,
        VerdictReached v => v.At,
        StatusObserved o => o.RecordedAt,
        _ => e.Timestamp,
    };

    private static DateTimeOffset? OccurredAt(object data) => data switch
    {
        WorkerEvent w => w.OccurredAt,
        RunRegistered r => r.RegisteredAt,
        RunClaimed c => c.ClaimedAt,
        RunCancelled c => c.CancelledAt,
        LeaseExpired l => l.DetectedAt,
        RunReclassified r => r.At,
        VerdictReached v => v.At,
        StatusObserved o => o.ObservedAt,
        _ => null,
    };
}
