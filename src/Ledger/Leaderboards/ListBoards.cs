using Ledger.Infrastructure;
using Marten;
using Marten.Pagination;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Leaderboards;

public sealed record BoardList(IReadOnlyList<Board> Items, int Page, int PageSize, long Total);

public static class ListBoardsEndpoint
{
    [WolverineGet("/api/boards", Name = "ListBoards")]
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Tags("Leaderboards")]
    [EndpointSummary("The defined boards with their ranking, newest first, paged (admin or read key)")]
    [ProducesResponseType<BoardList>(200)]
    public static async Task<IResult> Get(HttpContext context, Access access, IDocumentStore store, int? page, int? pageSize)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);
        return Results.Json(await PageAsync(store, number, size, context.RequestAborted), LedgerJson.Options);
    }

    /// <summary>One page of boards, newest first (shared with the console's /boards).</summary>
    public static async Task<BoardList> PageAsync(IDocumentStore store, int page, int pageSize, CancellationToken ct)
    {
        await using var session = store.QuerySession();
        var items = await session.Query<Board>().OrderByDescending(b => b.CreatedAt).ThenBy(b => b.Id).ToPagedListAsync(page, pageSize, ct);
        return new BoardList(items.ToList(), page, pageSize, items.TotalItemCount);
    }
}
