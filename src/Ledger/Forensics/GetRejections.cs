using Ledger.Infrastructure;
using Marten;
using Marten.Pagination;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Forensics;

public sealed record RejectionPage(IReadOnlyList<Rejection> Items, int Page, int PageSize, long Total);

public static class GetRejectionsEndpoint
{
    [WolverineGet("/api/rejections", Name = "GetRejections")]
    [Tags("Forensics")]
    [EndpointSummary("Refused requests with their reason, newest first (admin or read key)")]
    [ProducesResponseType<RejectionPage>(200)]
    [ProducesResponseType<Problem>(401)]
    public static async Task<IResult> Get(HttpContext context, Access access, IDocumentStore store,
        string? runId, string? reason, int? page, int? pageSize)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);

        await using var session = store.QuerySession();
        IQueryable<Rejection> query = session.Query<Rejection>();
        if (!string.IsNullOrEmpty(runId)) query = query.Where(r => r.RunId == runId);
        if (!string.IsNullOrEmpty(reason)) query = query.Where(r => r.Reason == reason);
        var items = await query.OrderByDescending(r => r.At).ToPagedListAsync(number, size, context.RequestAborted);
        return Results.Json(new RejectionPage(items.ToList(), number, size, items.TotalItemCount), LedgerJson.Options);
    }
}
