using Ledger.Infrastructure;
using Marten;
using Marten.Pagination;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Leaderboards;

public sealed record LeaderboardRow(int Rank, string Participant, string RunId, double Score, double? TieBreak, DateTimeOffset CompletedAt);

public sealed record Leaderboard(string BoardId, Ranking Ranking, int Page, int PageSize, long Participants, IReadOnlyList<LeaderboardRow> Rows);

public static class GetLeaderboardEndpoint
{
    [WolverineGet("/api/boards/{id}/leaderboard", Name = "GetLeaderboard")]
    [Tags("Leaderboards")]
    [EndpointSummary("Best succeeded run per participant, ranked (admin or read key)")]
    [EndpointDescription("Served from the async standings projection: a verdict appears within the daemon's polling delay (milliseconds under normal load).")]
    [ProducesResponseType<Leaderboard>(200), ProducesResponseType<Problem>(404)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, IDocumentStore store, int? page, int? pageSize)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);

        await using var session = store.QuerySession();
        var board = await session.LoadAsync<Board>(id, context.RequestAborted);
        if (board is null) return BoardEndpoints.BoardNotFound(id).ToResult();

        var ranked = Ranked(session.Query<Standing>().Where(s => s.Board == id && s.BestRunId != null), board.Ranking);
        var standings = await ranked.ToPagedListAsync(number, size, context.RequestAborted);
        var first = (number - 1) * size + 1;
        var rows = standings.Select((s, i) => new LeaderboardRow(first + i, s.Participant, s.BestRunId!, s.BestScore!.Value,
            s.BestTieBreak, s.BestCompletedAt!.Value)).ToList();
        return Results.Json(new Leaderboard(id, board.Ranking, number, size, standings.TotalItemCount, rows), LedgerJson.Options);
    }

    private static IQueryable<Standing> Ranked(IQueryable<Standing> standings, Ranking ranking)
    {
        var byScore = ranking.Direction == Direction.Max
            ? standings.OrderByDescending(s => s.BestScore)
            : standings.OrderBy(s => s.BestScore);
        if (ranking.TieBreakScore is not null)
        {
            byScore = ranking.TieBreakDirection == Direction.Max
                ? byScore.ThenByDescending(s => s.BestTieBreak)
                : byScore.ThenBy(s => s.BestTieBreak);
        }
        return byScore.ThenBy(s => s.BestCompletedAt).ThenBy(s => s.BestRunId);
    }
}
