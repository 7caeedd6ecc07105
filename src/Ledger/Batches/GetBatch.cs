using Ledger.Contract;
using Ledger.Infrastructure;
using Ledger.Labels;
using Ledger.Runs;
using Marten;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Batches;

public sealed record SlotRun(string RunId, RunStatus Status, DateTimeOffset RegisteredAt, DateTimeOffset? TerminalAt)
{
    public static SlotRun Of(BatchMember member) => new(member.RunId, member.Status, member.RegisteredAt, member.TerminalAt);
}

/// <summary>One expected run and the run that fills it (the latest registered; earlier ones were retried).</summary>
public sealed record BatchSlot(ExpectedRun Expected, string State, SlotRun? Run, IReadOnlyList<SlotRun> EarlierRuns);

/// <summary>An expected run that never registered, or registered and has no verdict after the configured time.</summary>
public sealed record MissingRun(ExpectedRun Expected, string Reason, SlotRun? Run, string Detail);

/// <summary>A run registered with the batch's id that matches no expectation: flagged, never dropped.</summary>
public sealed record UnexpectedRun(string RunId, RunStatus Status, IReadOnlyDictionary<string, string> Labels,
    DateTimeOffset RegisteredAt, string Reason);

/// <summary>Expected against registered, as of <see cref="AsOf"/>. Complete when every expected run has a terminal verdict.</summary>
public sealed record BatchView(
    string BatchId,
    string? Title,
    DateTimeOffset CreatedAt,
    DateTimeOffset AsOf,
    int MissingAfterSeconds,
    int Expected,
    int Registered,
    int Filled,
    int Terminal,
    bool Complete,
    IReadOnlyDictionary<string, int> Counts,
    IReadOnlyList<MissingRun> Missing,
    IReadOnlyList<UnexpectedRun> Unexpected,
    IReadOnlyList<BatchSlot> Slots);

public static class GetBatchEndpoint
{
    [WolverineGet("/api/batches/{id}", Name = "GetBatch")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Refuses(ProblemCodes.BatchNotFound)]
    [Tags("Batches")]
    [EndpointSummary("Expected against registered runs: counts by status, missing and unexpected runs, complete (admin or read key)")]
    [EndpointDescription("Computed at read time from the runs registered with the batch id, so it is consistent with every registration and verdict already answered.")]
    [ProducesResponseType<BatchView>(200)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, IDocumentStore store,
        LabelVocabulary vocabulary, IOptions<BatchOptions> options, TimeProvider clock)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();

        var view = await Load(id, store, vocabulary, options.Value, clock, context.RequestAborted);
        return view is null ? BatchNotFound(id).ToResult() : Results.Json(view, LedgerJson.Options);
    }

    /// <summary>The batch reconciled now, or null when no such batch is defined (shared with the console).</summary>
    public static async Task<BatchView?> Load(string id, IDocumentStore store, LabelVocabulary vocabulary, BatchOptions options,
        TimeProvider clock, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var batch = await session.LoadAsync<Batch>(id, ct);
        if (batch is null) return null;

        var members = await session.Query<Run>()
            .Where(r => r.Batch == id)
            .OrderBy(r => r.RegisteredAt).ThenBy(r => r.Id)
            .Select(r => new BatchMember { RunId = r.Id, Status = r.Status, Labels = r.Labels, RegisteredAt = r.RegisteredAt, TerminalAt = r.TerminalAt })
            .ToListAsync(ct);

        // An expected run id that is not in the batch may have been registered without it: say so.
        var inBatch = members.Select(m => m.RunId).ToHashSet(StringComparer.Ordinal);
        var absent = batch.Expected.Where(e => e.RunId is not null && !inBatch.Contains(e.RunId)).Select(e => e.RunId!).ToArray();
        var elsewhere = absent.Length == 0
            ? new Dictionary<string, string>()
            : (await session.LoadManyAsync<Run>(ct, absent)).ToDictionary(r => r.Id, r => r.Batch ?? "", StringComparer.Ordinal);

        var view = BatchReconciliation.Reconcile(batch, members, vocabulary, clock.GetUtcNow(),
            TimeSpan.FromSeconds(options.MissingAfterSeconds), elsewhere);
        return view;
    }

    public static Problem BatchNotFound(string id) =>
        Problem.Of(ProblemCodes.BatchNotFound, $"No batch '{id}' is defined; define it with POST /api/batches.");
}
