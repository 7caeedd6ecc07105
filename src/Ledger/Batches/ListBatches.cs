using Ledger.Infrastructure;
using Marten;
using Marten.Pagination;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Batches;

/// <summary>A batch as listed: its definition in brief; <c>GET /api/batches/{id}</c> reconciles it.</summary>
public sealed record BatchSummary(string BatchId, string? Title, int Expected, DateTimeOffset CreatedAt);

public sealed record BatchList(IReadOnlyList<BatchSummary> Items, int Page, int PageSize, long Total);

public static class ListBatchesEndpoint
{
    [WolverineGet("/api/batches", Name = "ListBatches")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Tags("Batches")]
    [EndpointSummary("The defined batches with the number of runs each expects, newest first, paged (admin or read key)")]
    [ProducesResponseType<BatchList>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, IDocumentStore store, int? page, int? pageSize)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);
        return Results.Json(await PageAsync(store, number, size, context.RequestAborted), LedgerJson.Options);
    }

    /// <summary>One page of batches, newest first (shared with the console's /batches).</summary>
    public static async Task<BatchList> PageAsync(IDocumentStore store, int page, int pageSize, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        // Only the count of the expected runs is read, not the list (a batch may expect thousands).
        var items = await session.Query<Batch>().OrderByDescending(b => b.CreatedAt).ThenBy(b => b.Id)
            .Select(b => new BatchSummary(b.Id, b.Title, b.Expected.Count, b.CreatedAt))
            .ToPagedListAsync(page, pageSize, ct);
        return new BatchList(items.ToList(), page, pageSize, items.TotalItemCount);
    }
}
