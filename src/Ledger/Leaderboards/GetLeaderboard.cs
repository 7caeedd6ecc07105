using Ledger.Infrastructure;
using Marten;
using Marten.Events;
using Marten.Pagination;
using Microsoft.AspNetCore.Mvc;
using Wolverine.Http;

namespace Ledger.Leaderboards;

/// <summary>A ranked participant; <see cref="History"/> is the stream whose events put it there.</summary>
public sealed record LeaderboardRow(int Rank, string Participant, string RunId, double Score, double? TieBreak, DateTimeOffset CompletedAt)
{
    public string History => $"/api/runs/{Uri.EscapeDataString(RunId)}/events";
}

public sealed record Leaderboard(string BoardId, Ranking Ranking, DateTimeOffset? AsOf, int Page, int PageSize, long Participants,
    IReadOnlyList<LeaderboardRow> Rows);

public static class GetLeaderboardEndpoint
{
    [WolverineGet("/api/boards/{id}/leaderboard", Name = "GetLeaderboard")]
    [Tags("Leaderboards")]
    [EndpointSummary("Best succeeded run per participant, ranked (admin or read key)")]
    [EndpointDescription("Served from the async standings projection: a verdict appears within the daemon's polling delay (milliseconds under normal load).")]
    [ProducesResponseType<Leaderboard>(200), ProducesResponseType<Problem>(404)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, IDocumentStore store, int? page, int? pageSize, string? at)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);
        if (!QueryValues.TryTime(at, "at", out var asOf, out var badTime)) return badTime!;

        await using var session = store.QuerySession();
        var board = await session.LoadAsync<Board>(id, context.RequestAborted);
        if (board is null) return BoardEndpoints.BoardNotFound(id).ToResult();
        if (asOf is { } time) return Results.Json(await AsOf(session, board, time, number, size, context.RequestAborted), LedgerJson.Options);

        var ranked = Ranked(session.Query<Standing>().Where(s => s.Board == id && s.BestRunId != null), board.Ranking);
        var standings = await ranked.ToPagedListAsync(number, size, context.RequestAborted);
        var first = (number - 1) * size + 1;
        var rows = standings.Select((s, i) => new LeaderboardRow(first + i, s.Participant, s.BestRunId!, s.BestScore!.Value,
            s.BestTieBreak, s.BestCompletedAt!.Value)).ToList();
        return Results.Json(new Leaderboard(id, board.Ranking, null, number, size, standings.TotalItemCount, rows), LedgerJson.Options);
    }

    /// <summary>
    /// The board as it stood at a time: the board's verdicts up to then, folded exactly as the
    /// standings projection folds them. A forensic read: it scans the board's verdict events.
    /// </summary>
    private static async Task<Leaderboard> AsOf(IQuerySession session, Board board, DateTimeOffset time, int page, int size, CancellationToken ct)
    {
        var verdicts = await session.Events.QueryAllRawEvents()
            .Where(e => e.EventTypesAre(typeof(Runs.VerdictReached)))
            .OrderBy(e => e.Sequence)
            .ToListAsync(ct);
        var standings = new Dictionary<string, Standing>(StringComparer.Ordinal);
        foreach (var e in verdicts)
        {
            if (e.Data is not Runs.VerdictReached { Participant: { } participant, Ranking: not null } verdict
                || verdict.Board != board.Id || verdict.At > time) continue;
            if (!standings.TryGetValue(participant, out var standing))
            {
                standings[participant] = standing = new Standing { Id = Standing.Key(board.Id, participant), Board = board.Id, Participant = participant };
            }
            standing.Record(verdict, e.Sequence);
        }

        var order = new ResultOrder(board.Ranking);
        var ranked = standings.Values
            .Where(s => s.BestRunId is not null)
            .Select(s => (s.Participant, Best: new StandingResult(s.BestRunId!, s.BestScore!.Value, s.BestTieBreak, s.BestCompletedAt!.Value)))
            .OrderBy(s => s.Best, order)
            .ToList();
        var first = (page - 1) * size;
        var rows = ranked.Skip(first).Take(size)
            .Select((s, i) => new LeaderboardRow(first + i + 1, s.Participant, s.Best.RunId, s.Best.Score, s.Best.TieBreak, s.Best.CompletedAt))
            .ToList();
        return new Leaderboard(board.Id, board.Ranking, time, page, size, ranked.Count, rows);
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
