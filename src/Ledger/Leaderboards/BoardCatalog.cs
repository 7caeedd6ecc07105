using System.Collections.Concurrent;
using Marten;

namespace Ledger.Leaderboards;

/// <summary>
/// Boards are immutable once defined, so a board read once can be kept for the life of the
/// process, on every instance: a leaderboard read or a registration needs no round trip for it.
/// </summary>
public sealed class BoardCatalog(IDocumentStore store)
{
    private readonly ConcurrentDictionary<string, Board> _boards = new(StringComparer.Ordinal);

    public async Task<Board?> Find(string id, CancellationToken ct)
    {
        if (_boards.TryGetValue(id, out var known)) return known;
        await using var session = store.QuerySession();
        var board = await session.LoadAsync<Board>(id, ct);
        // Only boards that exist are kept: one defined a moment later must be found then.
        return board is null ? null : _boards.GetOrAdd(id, board);
    }
}
