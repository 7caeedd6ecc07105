using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Options;

namespace Ledger.Leaderboards;

/// <summary>Bound from <c>Ledger:Leaderboards</c>.</summary>
public sealed class LeaderboardOptions
{
    public const string Section = "Ledger:Leaderboards";

    /// <summary>
    /// How long a page of a live board, once read, answers later reads of the same page on this
    /// instance (0: every read goes to the database). Bounds how much older than the standings
    /// projection an answer can be; the bench measures a new verdict's delay to the board with it.
    /// </summary>
    public int PageFreshnessMilliseconds { get; set; } = 250;
}

/// <summary>
/// The live board's pages, each read from the database at most once per freshness window per
/// instance, however many readers ask (one read in flight per page; the others wait for it).
/// Boards under heavy reading then cost the database a few reads per second per page, not one per
/// request. Boards as of a time are not cached here.
/// </summary>
public sealed class BoardPageCache(IOptions<LeaderboardOptions> options)
{
    private const int MaxPages = 4096;
    private readonly ConcurrentDictionary<(string Board, int Page, int Size), Entry> _pages = new();

    private sealed record Entry(Task<byte[]> Read, long Started);

    /// <summary>The page's answer, as the JSON body it is sent as (serialized once per window too).</summary>
    public Task<byte[]> Get(string board, int page, int size, Func<Task<byte[]>> read)
    {
        var freshness = options.Value.PageFreshnessMilliseconds;
        if (freshness <= 0) return read();
        var key = (board, page, size);
        while (true)
        {
            if (_pages.TryGetValue(key, out var entry) && Fresh(entry, freshness)) return entry.Read;
            if (_pages.Count >= MaxPages) _pages.Clear();
            var next = new Entry(Refresh(read), Stopwatch.GetTimestamp());
            var won = entry is null ? _pages.TryAdd(key, next) : _pages.TryUpdate(key, next, entry);
            if (won) return next.Read;
        }
    }

    private static bool Fresh(Entry entry, int freshness) =>
        !entry.Read.IsFaulted && !entry.Read.IsCanceled
        && Stopwatch.GetElapsedTime(entry.Started).TotalMilliseconds < freshness;

    // Not tied to the request that started it: a cancelled reader must not fail the others waiting on the same read.
    private static Task<byte[]> Refresh(Func<Task<byte[]>> read) => Task.Run(read);
}
