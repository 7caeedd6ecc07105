using Ledger.Infrastructure;
using Ledger.Infrastructure.OpenApi;
using Marten;
using Marten.Events;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
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
    [Accepts(Credential.AdminKey, Credential.ReadKey)]
    [Refuses(ProblemCodes.BoardNotFound)]
    [Tags("Leaderboards")]
    [EndpointSummary("Best succeeded run per participant, ranked (admin or read key)")]
    [EndpointDescription("Served from the async standings projection: a verdict appears within the daemon's polling delay (milliseconds under normal load).")]
    [ProducesResponseType<Leaderboard>(200)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, IDocumentStore store, BoardCatalog boards,
        ReadDatabase database, StorageNames names, int? page, int? pageSize, string? at)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);
        if (!QueryValues.TryTime(at, "at", out var asOf, out var badTime)) return badTime!.ToResult();

        var board = await boards.Find(id, context.RequestAborted);
        if (board is null) return BoardEndpoints.BoardNotFound(id).ToResult();
        if (asOf is { } time)
        {
            await using var session = store.QuerySession();
            return Results.Json(await AsOf(session, board, time, number, size, context.RequestAborted), LedgerJson.Options);
        }

        var (rows, total) = await Current(database, names, board, number, size, context.RequestAborted);
        return Results.Json(new Leaderboard(id, board.Ranking, null, number, size, total, rows), LedgerJson.Options);
    }

    /// <summary>
    /// The board as it stood at a time: the board's verdicts up to then, folded exactly as the
    /// standings projection folds them. A forensic read: it scans the board's verdict events.
    /// </summary>
    internal static async Task<Leaderboard> AsOf(IQuerySession session, Board board, DateTimeOffset time, int page, int size, CancellationToken ct)
    {
        var verdicts = await session.Events.QueryAllRawEvents()
            .Where(e => e.EventTypesAre(typeof(Runs.VerdictReached)))
            .OrderBy(e => e.Sequence)
            .ToListAsync(ct);
        var standings = new Dictionary<string, Standing>(StringComparer.Ordinal);
        foreach (var e in verdicts)
        {
            if (e.Data is Runs.VerdictReached verdict && verdict.Board == board.Id && verdict.At <= time)
            {
                Standing.Fold(standings, verdict, e.Sequence);
            }
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

    /// <summary>
    /// One page of the board from the standings' own columns (duplicated out of the documents),
    /// so a read never unpacks a participant's result history: one indexed, sorted query.
    /// </summary>
    internal static async Task<(List<LeaderboardRow> Rows, long Total)> Current(ReadDatabase database, StorageNames names, Board board,
        int page, int size, CancellationToken ct)
    {
        var ranking = board.Ranking;
        var score = ranking.Direction == Direction.Max ? "desc" : "asc";
        var tieBreak = ranking.TieBreakScore is null ? "" : $"best_tie_break {(ranking.TieBreakDirection == Direction.Max ? "desc" : "asc")} nulls last, ";
        await using var command = database.Source.CreateCommand($"""
            select participant, best_run_id, best_score, best_tie_break, best_completed_at, count(*) over ()
            from {names.Table<Standing>()}
            where board = @board and best_run_id is not null
            order by best_score {score}, {tieBreak}best_completed_at asc, best_run_id collate "C" asc
            limit @size offset @offset
            """);
        command.Parameters.AddWithValue("board", board.Id);
        command.Parameters.AddWithValue("size", size);
        command.Parameters.AddWithValue("offset", (page - 1) * size);

        var rows = new List<LeaderboardRow>(size);
        long total = 0;
        await using var reader = await command.ExecuteReaderAsync(ct);
        while (await reader.ReadAsync(ct))
        {
            total = reader.GetInt64(5);
            rows.Add(new LeaderboardRow((page - 1) * size + rows.Count + 1, reader.GetString(0), reader.GetString(1), reader.GetDouble(2),
                reader.IsDBNull(3) ? null : reader.GetDouble(3), reader.GetFieldValue<DateTimeOffset>(4)));
        }
        if (rows.Count == 0 && page > 1)
        {
            await using var count = database.Source.CreateCommand(
                $"select count(*) from {names.Table<Standing>()} where board = @board and best_run_id is not null");
            count.Parameters.AddWithValue("board", board.Id);
            total = (long)(await count.ExecuteScalarAsync(ct))!;
        }
        return (rows, total);
    }
}
