using Ledger.Infrastructure;
using Marten;
using Marten.Pagination;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Forensics;

/// <summary>
/// Refused requests of authenticated callers, each kept whole up to its caller's budget for the hour
/// (<c>items</c>, redacted of secrets; samples of the others are among them, marked
/// <c>unauthenticated</c> or <c>overBudget</c>), the counts per hour and reason of requests refused
/// for want of valid credentials (<c>unauthenticated</c>, since <c>since</c>), and those per hour,
/// reason and caller of the refusals beyond a caller's budget (<c>overBudget</c>).
/// </summary>
public sealed record RejectionPage(IReadOnlyList<Rejection> Items, int Page, int PageSize, long Total,
    IReadOnlyList<RefusalCount> Unauthenticated, IReadOnlyList<RefusalCount> OverBudget);

public static class GetRejectionsEndpoint
{
    [WolverineGet("/api/rejections", Name = "GetRejections")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Tags("Forensics")]
    [EndpointSummary("Refused requests with their reason, newest first, and the hourly counts of those refused for want of credentials (admin or read key)")]
    [ProducesResponseType<RejectionPage>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, IDocumentStore store,
        CountedRefusals counted, TimeProvider clock, string? runId, string? reason, string? since,
        int? page, int? pageSize)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);
        if (!QueryValues.TryTime(since, "since", out var from, out var badTime)) return badTime!.ToResult();

        await using var session = store.QuerySession();
        IQueryable<Rejection> query = session.Query<Rejection>();
        if (!string.IsNullOrEmpty(runId)) query = query.Where(r => r.RunId == runId);
        if (!string.IsNullOrEmpty(reason)) query = query.Where(r => r.Reason == reason);
        var items = await query.OrderByDescending(r => r.At).ToPagedListAsync(number, size, context.RequestAborted);
        var countsSince = from ?? clock.GetUtcNow().AddDays(-7);
        var unauthenticated = await counted.ReadAsync(countsSince, reason, authenticated: false, context.RequestAborted);
        var overBudget = await counted.ReadAsync(countsSince, reason, authenticated: true, context.RequestAborted);
        return Results.Json(new RejectionPage(items.ToList(), number, size, items.TotalItemCount, unauthenticated, overBudget), LedgerJson.Options);
    }
}
