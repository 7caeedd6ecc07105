using Ledger.Contract;
using Ledger.Infrastructure;
using System.Text.Json;
using Npgsql;
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
    [EndpointDescription("Served from the async standings projection: a verdict appears within the daemon's polling delay plus Ledger:Leaderboards:PageFreshnessMilliseconds (250 ms by default; under a second in the bench while 200 runs/s finish). ?at=TIME: the board as it stood then, from the projection's history of changes.")]
    [ProducesResponseType<Leaderboard>(200)]
    public static async Task<IResult> Get(string id, HttpContext context, Access access, BoardCatalog boards,
        ReadDatabase database, StorageNames names, BoardPageCache pages, int? page, int? pageSize, string? at)
    {
        if (access.Require(context, Role.Admin, Role.Reader) is { } denied) return denied.ToResult();
        var (number, size) = Paging.Normalize(page, pageSize);
        if (!QueryValues.TryTime(at, "at", out var asOf, out var badTime)) return badTime!.ToResult();

        var board = await boards.Find(id, context.RequestAborted);
        if (board is null) return BoardEndpoints.BoardNotFound(id).ToResult();
        if (asOf is null)
        {
            var body = await pages.Get(board.Id, number, size, async () =>
            {
                var (now, count) = await Read(database, names, board, null, number, size, CancellationToken.None);
                return JsonSerializer.SerializeToUtf8Bytes(new Leaderboard(board.Id, board.Ranking, null, number, size, count, now), LedgerJson.Options);
            }).WaitAsync(context.RequestAborted);
            return Results.Bytes(body, "application/json; charset=utf-8");
        }
        var (rows, total) = await Read(database, names, board, asOf, number, size, context.RequestAborted);
        return Results.Json(new Leaderboard(id, board.Ranking, asOf, number, size, total, rows), LedgerJson.Options);
    }

    /// <summary>The current board: one range of the rank index of the standings table, and its count.</summary>
    public static Task<(List<LeaderboardRow> Rows, long Total)> Current(ReadDatabase database, StorageNames names, Board board,
        int page, int size, CancellationToken ct) => Read(database, names, board, null, page, size, ct);

    /// <summary>
    /// One page of the board now, or as it stood at <paramref name="asOf"/>: then each participant's
    /// latest change of best at or before that time (the projection's change history), ranked by the
    /// same stored rank key. Both answered in the database, in one round trip with the count.
    /// </summary>
    public static Task<(List<LeaderboardRow> Rows, long Total)> Read(ReadDatabase database, StorageNames names, Board board,
        DateTimeOffset? asOf, int page, int size, CancellationToken ct) =>
        ConnectionSettings.RetryStale(() => ReadOnce(database, names, board, asOf, page, size, ct));

    private static async Task<(List<LeaderboardRow> Rows, long Total)> ReadOnce(ReadDatabase database, StorageNames names, Board board,
        DateTimeOffset? asOf, int page, int size, CancellationToken ct)
    {
        var sql = BoardQuery.For(names, asOf is not null);
        var rows = new List<LeaderboardRow>(size);
        long? total = null;
        await using (var batch = database.Source.CreateBatch())
        {
            batch.BatchCommands.Add(Command(sql.Page, paging: true));
            // The page of a board as of a time counts its rows itself (one pass over the history); the live board's count is an index-only scan.
            if (!sql.PageCounts) batch.BatchCommands.Add(Command(sql.Count, paging: false));
            await using var reader = await batch.ExecuteReaderAsync(ct);
            while (await reader.ReadAsync(ct))
            {
                rows.Add(new LeaderboardRow((page - 1) * size + rows.Count + 1, reader.GetString(0), reader.GetString(1), reader.GetDouble(2),
                    reader.IsDBNull(3) ? null : reader.GetDouble(3), reader.GetFieldValue<DateTimeOffset>(4)));
                if (sql.PageCounts) total = reader.GetInt64(5);
            }
            if (!sql.PageCounts && await reader.NextResultAsync(ct) && await reader.ReadAsync(ct)) total = reader.GetInt64(0);
        }
        if (total is null)
        {
            // A page past the end of a board as of a time: count on its own.
            await using var count = database.Source.CreateBatch();
            count.BatchCommands.Add(Command(sql.Count, paging: false));
            total = (long)(await count.ExecuteScalarAsync(ct))!;
        }
        return (rows, total.Value);

        NpgsqlBatchCommand Command(string text, bool paging)
        {
            var command = new NpgsqlBatchCommand(text);
            foreach (var parameter in BoardQuery.Parameters(board.Id, asOf, page, size, paging)) command.Parameters.Add(parameter);
            return command;
        }
    }
}

/// <summary>
/// The SQL of a board's page and count, now or as of a time; ordered by the stored rank key only
/// (RankingRule). <see cref="PageCounts"/>: the page carries the board's count as a sixth column.
/// </summary>
public sealed record BoardQuery(string Page, string Count, bool PageCounts)
{
    public static BoardQuery For(StorageNames names, bool asOf)
    {
        // As of a time: each participant's one change in force then (at <= T < superseded_at).
        var source = asOf
            ? $"""
              select participant, run_id, score, tie_break, completed_at, rank_key
              from {names.Own(StandingsProjection.ChangesTable)} where board = @board and superseded_at > @at and at <= @at
              """
            : $"select participant, run_id, score, tie_break, completed_at, rank_key from {names.Own(StandingsProjection.CurrentTable)} where board = @board";
        var count = asOf ? ", count(*) over ()" : "";
        return new BoardQuery(
            $"select participant, run_id, score, tie_break, completed_at{count} from ({source}) b where rank_key is not null order by rank_key limit @size offset @offset",
            $"select count(*) from ({source}) b where rank_key is not null",
            asOf);
    }
    public static IEnumerable<NpgsqlParameter> Parameters(string board, DateTimeOffset? asOf, int page, int size, bool paging)
    {
        yield return new NpgsqlParameter("board", board);
        if (asOf is { } at) yield return new NpgsqlParameter("at", at);
        if (!paging) yield break;
        yield return new NpgsqlParameter("size", size);
        yield return new NpgsqlParameter("offset", (page - 1) * size);
    }
}
