using FluentValidation;
using Ledger.Contract;
using Ledger.Forensics;
using Ledger.Infrastructure;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Wolverine.Http;

namespace Ledger.Retention;

/// <summary>
/// The policy as configured (times as TimeSpan text, e.g. <c>30.00:00:00</c>): archiving (<c>Ledger:Retention:*</c>,
/// <see cref="Enabled"/> when <see cref="ArchiveAfter"/> is set) and the pruning of the logs
/// (<c>Ledger:Pruning:Enabled</c>, <c>Ledger:Rejections:KeepFor</c>, <c>Ledger:Webhooks:KeepDeliveriesFor</c>; 0 keeps everything).
/// </summary>
public sealed record RetentionPolicyView(bool Enabled, string? ArchiveAfter, string? Directory, string SweepInterval, int BatchSize,
    string LateEventsGrace, bool Sweeper, int Parallelism, int ChunkEvents, long MinFreeBytes, bool Vacuum,
    bool Pruning, string KeepRejectionsFor, string KeepDeliveriesFor);

/// <summary>What the archives hold now, and the room left where they are written.</summary>
public sealed record ArchiveTotals(long Runs, long Events, long Bytes, long? FreeBytes);

/// <summary>The policy, what the next sweep would do (per step), what the archives hold, and the last sweeps, newest first (a running one shows its progress).</summary>
public sealed record RetentionView(RetentionPolicyView Policy, IReadOnlyList<RetentionStepReport> NextSweep, ArchiveTotals Archive,
    IReadOnlyList<RetentionSweepReport> Sweeps);

/// <summary>Why the run is restored: kept in the log beside the restore.</summary>
public sealed record RestoreRun
{
    public string? Reason { get; init; }

    public sealed class Validator : AbstractValidator<RestoreRun>
    {
        public Validator() => RuleFor(r => r.Reason!).NotEmpty().MaximumLength(InputLimits.MaxReason).When(r => r.Reason is not null);
    }
}

public static class RetentionEndpoints
{
    [WolverineGet("/api/retention", Name = "GetRetention")]
    [Accepts(Credential.AdminKey)]
    [Tags("Retention")]
    [EndpointSummary("The retention policy, what the next sweep would archive (runs, events, bytes) and prune (refusals, deliveries), the archives' totals and the last sweeps (admin key)")]
    [ProducesResponseType<RetentionView>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, RetentionSweeper sweeper, IOptions<RetentionOptions> options,
        IConfiguration configuration, ArchiveFiles files, Marten.IDocumentStore store, StorageNames names, TimeProvider clock, Pruner pruner,
        IOptions<PruningOptions> pruning)
    {
        if (access.Require(context, Role.Admin) is { } denied) return denied.ToResult();
        var ct = context.RequestAborted;
        var policy = options.Value;
        var now = clock.GetUtcNow();
        var next = await sweeper.PreviewAsync(now, ct);

        await using var session = store.QuerySession();
        var totals = await session.RowsAsync(
            $"select count(*), coalesce(sum(events), 0)::bigint, coalesce(sum(bytes), 0)::bigint from {names.Own(ArchivedRunStore.TableName)} where archived_version > 0",
            r => (r.GetInt64(0), r.GetInt64(1), r.GetInt64(2)), ct);
        var (runs, events, bytes) = totals[0];
        var view = new RetentionView(
            new RetentionPolicyView(policy.Enabled, policy.ArchiveAfter?.ToString(), files.Root, policy.SweepInterval.ToString(), policy.BatchSize,
                RetentionOptions.LateEventsGrace(configuration).ToString(), policy.Sweeper, policy.Parallelism, policy.ChunkEvents, policy.MinFreeBytes, policy.Vacuum,
                pruning.Value.Enabled, pruner.Policy.KeepRejectionsFor.ToString(), pruner.Policy.KeepDeliveriesFor.ToString()),
            next,
            new ArchiveTotals(runs, events, bytes, files.FreeBytes()),
            await sweeper.RecentAsync(10, ct));
        return Results.Json(view, RetentionSweeper.ReportJson);
    }

    [WolverinePost("/api/runs/{id}/restore", Name = "RestoreRun")]
    [JsonBody(typeof(RestoreRun), Optional = true)]
    [Accepts(Credential.AdminKey)]
    [Refuses(ProblemCodes.RunNotFound, ProblemCodes.RunNotArchived, ProblemCodes.ArchiveCorrupt, Contended = true)]
    [Tags("Retention")]
    [EndpointSummary("Put an archived run's events back into PostgreSQL, all or nothing, after checking its archive (admin key)")]
    [EndpointDescription("Every event comes back with its sequence, version and timestamps; none is processed again (no webhook is sent twice, no standing changes). The run then stays in PostgreSQL for a whole window before it can be archived again. A damaged archive is refused with archive-corrupt and nothing changes.")]
    [ProducesResponseType<RestoredRun>(200)]
    public static async Task<IResult> Restore(string id, HttpContext context, RequestGate gate, IValidator<RestoreRun> validator, RunRestorer restorer,
        RejectionLog rejections)
    {
        var admission = await gate.Admit<RestoreRun>(context, validator, [Role.Admin], runId: id, bodyOptional: true);
        if (admission.Refusal is not null) return admission.Refusal;
        try
        {
            return Results.Json(await restorer.RestoreAsync(id, admission.Request!.Reason, context.RequestAborted), LedgerJson.Options);
        }
        catch (ProblemException e) when (e.Problem.Status < 500)
        {
            return await rejections.Refuse(context, e.Problem, admission.Raw);
        }
    }
}
